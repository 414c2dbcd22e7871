"""The compiled CPU skinning kernels (kernels/smplx_cpu.c via runtime/smplx/native.py): the same results as the
numpy path, the fallbacks when they cannot be built, the on-disk cache, and concurrent use."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from human3r_edge.errors import Human3RError
from human3r_edge.runtime.smplx import native
from human3r_edge.runtime.smplx.skinning import SMPLXModel
from human3r_edge.runtime.smplx.synthetic import write_synthetic_smplx
from support.smplx_inputs import random_params


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return str(write_synthetic_smplx(tmp_path_factory.mktemp("smplx_native"), seed=11, compress=False))


@pytest.fixture(scope="module")
def pair(model_file):
    if native.load_native() is None:
        pytest.skip(f"compiled kernels unavailable here: {native.native_status()}")
    return SMPLXModel.load(model_file, backend="native"), SMPLXModel.load(model_file, backend="numpy")


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A process state where the kernels were never loaded, with an empty cache directory."""
    monkeypatch.setenv("HUMAN3R_NATIVE_CACHE", str(tmp_path / "cache"))
    native._reset_for_tests()
    yield tmp_path / "cache"
    native._reset_for_tests()


@pytest.mark.parametrize("P", [1, 2, 3, 5, 8, 9, 16, 17])
def test_native_equals_numpy(pair, P):
    """Every people count through every register tile (8, 4, 2, 1 and their mixes), with and without c2w."""
    nat, ref = pair
    rot, betas, expr, transl, c2w = random_params(np.random.default_rng(P), P)
    for c in (c2w, None):
        a, b = nat.skin(rot, betas, expr, transl, c), ref.skin(rot, betas, expr, transl, c)
        for name in ("v_cam", "j_cam", "transl_pelvis", "v_world", "j_world"):
            x, y = getattr(a, name), getattr(b, name)
            if c is None and name in ("v_world", "j_world"):
                assert x is None and y is None
                continue
            assert x.shape == y.shape and x.dtype == np.float32
            assert np.abs(x - y).max() <= 2e-6, (P, name, np.abs(x - y).max())


def test_native_model_keeps_one_basis_copy(pair):
    nat, ref = pair
    assert nat._blend_basis is None  # only the blocked layout until someone asks for the planar one
    assert nat.blend_basis_nbytes == ref.blend_basis_nbytes
    np.testing.assert_array_equal(nat.blend_basis, ref.blend_basis)  # rebuilt exactly (e.g. for the GPU upload)
    assert not nat.blend_basis.flags.writeable


def test_scratch_buffers_are_only_those_a_path_uses(pair):
    """The compiled path asks for v_posed alone: a native model does not hold the numpy stages' transforms
    (8 MB per 16 people). Buffers grow to the largest P and are reused for smaller ones."""
    nat, ref = pair
    x = random_params(np.random.default_rng(5), 16)

    def scratch(model, *args):
        got = {}
        t = threading.Thread(target=lambda: (model.skin(*args), got.update(model._workspace.bufs)))
        t.start()
        t.join()
        return got

    assert set(scratch(nat, *x)) == {"v_posed"}
    bufs = scratch(ref, *x)
    assert set(bufs) == {"v_posed", "T", "planar", "tmp"} and bufs["T"].shape[0] == 16
    ref.skin(*x)  # this (main) thread's own buffers, grown to 16 people
    big = {k: v.ctypes.data for k, v in ref._workspace.bufs.items()}
    small = random_params(np.random.default_rng(6), 3)
    a = ref.skin(*small)
    assert {k: v.ctypes.data for k, v in ref._workspace.bufs.items()} == big  # reused, not reallocated
    assert np.abs(a.v_cam - nat.skin(*small).v_cam).max() <= 2e-6


def test_concurrent_calls_from_threads(pair):
    nat, _ = pair
    inputs = [random_params(np.random.default_rng(100 + i), 6) for i in range(4)]
    want = [nat.skin(*x).v_world for x in inputs]
    got: list = [None] * 8
    errors = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                got[i] = nat.skin(*inputs[i % 4]).v_world
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(8):
        np.testing.assert_array_equal(got[i], want[i % 4])


def test_disabled_by_environment(model_file, fresh, monkeypatch):
    monkeypatch.setenv("HUMAN3R_SMPLX_NATIVE", "0")
    assert native.load_native() is None and "disabled" in native.native_status()
    assert SMPLXModel.load(model_file).backend == "numpy"
    with pytest.raises(Human3RError, match="backend='native' unavailable.*disabled"):
        SMPLXModel.load(model_file, backend="native")


def test_no_compiler_falls_back_to_numpy(model_file, fresh, monkeypatch):
    monkeypatch.setattr(native, "_compiler", lambda: None)
    assert SMPLXModel.load(model_file).backend == "numpy"
    assert "no C compiler" in native.native_status()


def test_failing_compiler_falls_back_with_its_message(model_file, fresh, monkeypatch, tmp_path):
    bad = tmp_path / "badcc"
    bad.write_text("#!/bin/sh\necho 'badcc: cannot compile' >&2\nexit 1\n")
    bad.chmod(0o755)
    monkeypatch.setenv("CC", str(bad))
    assert SMPLXModel.load(model_file).backend == "numpy"
    assert "unavailable" in native.native_status() and "cannot compile" in native.native_status()
    assert not list(fresh.glob("*.so")) and not list(fresh.glob(".smplx_cpu-*"))  # no partial library left


def test_library_is_cached_on_disk(fresh):
    if native._compiler() is None:
        pytest.skip("no C compiler")
    first = native.load_native()
    assert first is not None
    libs = list(fresh.glob("smplx_cpu-*.so"))
    assert len(libs) == 1 and first.path == libs[0]
    stamp = libs[0].stat().st_mtime_ns
    native._reset_for_tests()
    again = native.load_native()
    assert again is not None and again.path == libs[0] and libs[0].stat().st_mtime_ns == stamp  # not rebuilt


def test_bad_backend_arguments(model_file):
    with pytest.raises(Human3RError, match="unknown backend"):
        SMPLXModel.load(model_file, backend="cuda")
    if native.load_native() is not None:
        with pytest.raises(Human3RError, match="needs float32 storage"):
            SMPLXModel.load(model_file, blend_dtype=np.float16, backend="native")
    assert SMPLXModel.load(model_file, blend_dtype=np.float16).backend == "numpy"  # auto: fp16 stays on numpy


def test_sparse_weights_round_trip():
    rng = np.random.default_rng(0)
    w = np.zeros((55, 50), np.float32)
    for v in range(50):
        joints = rng.choice(55, size=rng.integers(1, 5), replace=False)
        w[joints, v] = rng.random(len(joints))
    idx, val = native.sparse_weights(w)
    assert idx.shape == val.shape == (50, 4) and idx.dtype == np.int32
    dense = np.zeros_like(w)
    for v in range(50):
        np.add.at(dense[:, v], idx[v], val[v])
    np.testing.assert_array_equal(dense, w)


def test_dense_weights_use_the_dense_skinning_stage(model_file, pair):
    """A model whose vertices have many non-zero weights (more than SPARSE_MAX_KW) keeps the compiled blend but
    skins with the dense numpy stages; both give the numpy path's result."""
    import dataclasses

    from human3r_edge.runtime.smplx.model_file import load_smplx_file
    from human3r_edge.runtime.smplx.skinning import SPARSE_MAX_KW

    data = load_smplx_file(model_file)
    rng = np.random.default_rng(3)
    w = data.weights + 0.05 * rng.random(data.weights.shape).astype(data.weights.dtype)  # every joint non-zero
    dense = dataclasses.replace(data, weights=w / w.sum(1, keepdims=True))
    nat, ref = SMPLXModel(dense, backend="native"), SMPLXModel(dense, backend="numpy")
    assert nat.native is not None and not nat.native_skinning and nat._w_idx.shape[1] > SPARSE_MAX_KW
    assert pair[0].native_skinning  # the synthetic model's sparse weights take the sparse kernel
    x = random_params(np.random.default_rng(4), 9)
    a, b = nat.skin(*x), ref.skin(*x)
    assert np.abs(a.v_world - b.v_world).max() <= 2e-6 and np.abs(a.j_cam - b.j_cam).max() <= 2e-6
