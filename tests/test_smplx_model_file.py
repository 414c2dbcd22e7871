"""SMPL-X model-file loading: the official npz layout, the numpy-only pickle path, and every refusal."""
from __future__ import annotations

import io
import os
import pickle
import re
import sys
import types
import zipfile

import numpy as np
import pytest

from human3r_edge.errors import CheckpointError, Human3RError
from human3r_edge.runtime.smplx.model_file import REQUIRED, SMPLXData, load_smplx_file
from human3r_edge.runtime.smplx.synthetic import _write_npz, make_synthetic_smplx, write_synthetic_smplx


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    return make_synthetic_smplx(seed=3)


@pytest.fixture(scope="module")
def compact(arrays) -> dict[str, np.ndarray]:
    """The same model with smaller storage (20 shape components, float16 posedirs): fast to write and read."""
    out = dict(arrays)
    out["shapedirs"] = np.concatenate([arrays["shapedirs"][:, :, :10], arrays["shapedirs"][:, :, 300:310]], 2)
    out["posedirs"] = arrays["posedirs"].astype(np.float16)
    return out


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, arrays) -> str:
    p = tmp_path_factory.mktemp("smplx") / "SMPLX_NEUTRAL.npz"
    _write_npz(p, arrays, compress=False)
    return str(p)


def _variant(tmp_path, arrays, **changes) -> str:
    out = dict(arrays)
    for k, v in changes.items():
        if v is None:
            out.pop(k)
        else:
            out[k] = v
    p = tmp_path / "model.npz"
    _write_npz(p, out, compress=False)
    return str(p)


def test_loads_synthetic_npz_and_skips_object_arrays(model_path, arrays):
    data = load_smplx_file(model_path)
    assert isinstance(data, SMPLXData)
    assert data.v_template.shape == (10475, 3) and data.faces.shape == (20908, 3)
    assert data.shapedirs.shape == (10475, 3, 20)  # 10 shape PCs + expression PCs 300..309
    np.testing.assert_array_equal(data.shapedirs[:, :, 10:], arrays["shapedirs"][:, :, 300:310])
    assert data.parents[0] == -1 and data.parents[15] == 12
    # the file really holds object arrays that plain allow_pickle=False loading cannot read
    with np.load(model_path, allow_pickle=False) as z:
        with pytest.raises(ValueError):
            z["joint2num"]


def test_folder_path_finds_the_neutral_model(model_path):
    assert load_smplx_file(os.path.dirname(model_path)).source == model_path


def test_goldens_model_loads(synthetic_smplx):
    data = load_smplx_file(synthetic_smplx)
    assert data.posedirs.shape == (10475, 3, 486)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="file not found.*smpl-x.is.tue.mpg.de"):
        load_smplx_file(tmp_path / "nope.npz")


@pytest.mark.parametrize("key", ["weights", "posedirs", "kintree_table"])
def test_missing_key_is_named(tmp_path, compact, key):
    with pytest.raises(CheckpointError, match=f"missing keys: \\['{key}'\\]"):
        load_smplx_file(_variant(tmp_path, compact, **{key: None}))


@pytest.mark.parametrize("key,bad", [("v_template", np.zeros((6890, 3))), ("weights", np.zeros((10475, 24))),
                                     ("posedirs", np.zeros((10475, 3, 207)))])
def test_wrong_shape_is_named(tmp_path, compact, key, bad):
    with pytest.raises(CheckpointError, match=re.escape(f"key '{key}' has the wrong shape: {bad.shape}")):
        load_smplx_file(_variant(tmp_path, compact, **{key: bad}))


def test_wrong_dtype_object_array_and_nan_are_refused(tmp_path, compact):
    with pytest.raises(CheckpointError, match="'weights' has the wrong dtype"):
        load_smplx_file(_variant(tmp_path, compact, weights=compact["weights"].astype(np.int32)))
    obj = np.empty((10475, 3), dtype=object)
    with pytest.raises(CheckpointError, match="'v_template' is a pickled object array"):
        load_smplx_file(_variant(tmp_path, compact, v_template=obj))
    nan = compact["v_template"].copy()
    nan[5, 1] = np.nan
    with pytest.raises(CheckpointError, match="'v_template' holds NaN or inf"):
        load_smplx_file(_variant(tmp_path, compact, v_template=nan))
    tree = compact["kintree_table"].copy()
    tree[0, 5] = 3
    with pytest.raises(CheckpointError, match="kinematic tree differs from SMPL-X"):
        load_smplx_file(_variant(tmp_path, compact, kintree_table=tree))


@pytest.mark.parametrize("fraction", [0.5, 0.999])
def test_truncated_npz_is_a_clear_error(tmp_path, model_path, fraction):
    raw = open(model_path, "rb").read()
    p = tmp_path / "SMPLX_NEUTRAL.npz"
    p.write_bytes(raw[: int(len(raw) * fraction)])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_smplx_file(p)


def test_corrupt_member_is_a_clear_error(tmp_path, compact):
    p = tmp_path / "m.npz"
    _write_npz(p, compact, compress=True)
    raw = bytearray(p.read_bytes())
    with zipfile.ZipFile(p) as zf:
        info = zf.getinfo("weights.npy")
    start = info.header_offset + 30 + len(info.filename) + 40  # inside the compressed payload
    raw[start:start + 64] = bytes(64)
    p.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_smplx_file(p)


def test_not_a_model_file(tmp_path):
    p = tmp_path / "x.npz"
    p.write_bytes(b"hello world, not a zip")
    with pytest.raises(CheckpointError, match="not an .npz archive or a pickle"):
        load_smplx_file(p)


# ------------------------------------------------------------------------------------------ the .pkl path
class _FakeCsc:
    """Pickles like scipy.sparse's csc_matrix (same module path and state dict); scipy is not installed here."""

    def __init__(self, dense: np.ndarray) -> None:
        rows, cols = np.nonzero(dense.T)  # column-major order
        self._shape = dense.shape
        self.maxprint = 50
        self.indices = cols.astype(np.int32)  # row index of each stored value
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=dense.shape[1]))]).astype(np.int32)
        self.data = dense.T[rows, cols]


def _pickle_with_fake_scipy(obj, protocol: int) -> bytes:
    mod = types.ModuleType("scipy.sparse._csc")
    _FakeCsc.__module__, _FakeCsc.__qualname__, _FakeCsc.__name__ = "scipy.sparse._csc", "csc_matrix", "csc_matrix"
    mod.csc_matrix = _FakeCsc
    saved = {k: sys.modules.get(k) for k in ("scipy", "scipy.sparse", "scipy.sparse._csc")}
    sys.modules.update({"scipy": types.ModuleType("scipy"), "scipy.sparse": types.ModuleType("scipy.sparse"),
                        "scipy.sparse._csc": mod})
    try:
        return pickle.dumps(obj, protocol=protocol)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def test_unpickler_protocol_0_small_arrays():
    from human3r_edge.runtime.smplx.model_file import _CscRecord, _NumpyOnlyUnpickler
    dense = np.array([[0.0, 2.0, 0.0], [1.5, 0.0, 3.0]])
    obj = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.float64(2.5), "c": _FakeCsc(dense)}
    got = _NumpyOnlyUnpickler(io.BytesIO(_pickle_with_fake_scipy(obj, 0)), encoding="latin1").load()
    np.testing.assert_array_equal(got["a"], obj["a"])
    assert got["s"] == 2.5 and isinstance(got["c"], _CscRecord)
    np.testing.assert_array_equal(got["c"].to_dense(), dense)


@pytest.mark.parametrize("protocol", [2, 4])  # 2: what Python 2 wrote for the official .pkl
def test_pkl_with_csc_regressor_loads_like_the_npz(tmp_path, compact, protocol):
    content = {k: v for k, v in compact.items() if v.dtype != object}
    content["J_regressor"] = _FakeCsc(compact["J_regressor"])
    content["joint2num"] = {"pelvis": 0, "head": 15}  # plain dicts need no globals
    p = tmp_path / "SMPLX_NEUTRAL.pkl"
    p.write_bytes(_pickle_with_fake_scipy(content, protocol))
    assert b"scipy.sparse._csc" in p.read_bytes()
    npz = tmp_path / "SMPLX_NEUTRAL.npz"
    _write_npz(npz, compact, compress=False)
    got, want = load_smplx_file(p), load_smplx_file(npz)
    for field in ("v_template", "faces", "shapedirs", "posedirs", "j_regressor", "weights", "lmk_bary_coords"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/h3r_pwned_by_pickle",))


def test_pkl_refuses_code_and_unknown_classes(tmp_path):
    marker = "/tmp/h3r_pwned_by_pickle"
    if os.path.exists(marker):
        os.remove(marker)
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"v_template": _Evil()}, protocol=2))
    with pytest.raises(CheckpointError, match="refused global: (posix|os).system"):
        load_smplx_file(p)
    assert not os.path.exists(marker)
    chumpy = b"\x80\x02cchumpy.ch\nCh\nq\x00)\x81q\x01."
    p.write_bytes(chumpy)
    with pytest.raises(CheckpointError, match="refused global: chumpy.ch.Ch.*chumpy-based pickles"):
        load_smplx_file(p)


def test_pkl_refuses_object_arrays_and_truncation(tmp_path, compact):
    p = tmp_path / "obj.pkl"
    p.write_bytes(pickle.dumps({"v_template": np.array([1, "a"], dtype=object)}, protocol=2))
    with pytest.raises(CheckpointError, match="refused dtype"):
        load_smplx_file(p)
    content = {k: v for k, v in compact.items() if v.dtype != object}
    raw = pickle.dumps(content, protocol=2)
    p.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt pickle"):
        load_smplx_file(p)


def test_errors_are_value_errors():
    assert issubclass(CheckpointError, Human3RError) and issubclass(CheckpointError, ValueError)
    assert set(REQUIRED) >= {"v_template", "posedirs", "J_regressor", "weights"}


def test_write_synthetic_is_atomic_and_loadable(tmp_path):
    p = write_synthetic_smplx(tmp_path, seed=11, compress=True)
    assert p.name == "SMPLX_NEUTRAL.npz" and not list(tmp_path.glob("*.tmp*"))
    assert load_smplx_file(p).v_template.shape == (10475, 3)
    assert io.BytesIO(p.read_bytes()).read(2) == b"PK"
