"""Multi-stream exports (issue #16) on the ONNX Runtime backends: per-stream state rows in shared sessions.

A toy streams=3 export (same weights as the single-stream toy): batch rows equal single-stream runs of the same
stream, absent rows are bit-identical, reset_streams resets only its rows, bad slots are refused. ort-cpu runs for
real; ort-cuda's IOBinding code runs through the CPU stand-in (tests/support/fake_gpu/ort_gpu.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from human3r_edge.errors import Human3RError
from human3r_edge.runtime.backends import open_backend
from human3r_edge.runtime.iospec import ExportSpec
from support.streams_check import (SCHEDULE, STATE, check_reset_rows, drive_schedule, frames_per_stream, run_batch,
                                   single_reference, write_pair)
from support.toy_export import stream_feeds

N = 3


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    return write_pair(tmp_path_factory.mktemp("streams"), N)


@pytest.fixture(scope="module")
def reference(pair) -> dict:
    return single_reference(lambda d: open_backend("ort-cpu", d), pair[0], N, max(frames_per_stream(SCHEDULE, N)))


def _initial(d: Path) -> dict[str, np.ndarray]:
    with np.load(d / "initial_state.npz") as z:
        return {k: z[k] for k in z.files}


def test_toy_export_is_multi_stream(pair):
    spec = ExportSpec.load(pair[1])
    assert spec.streams == N
    assert all(t.batched for g in spec.graphs for t in (*g.inputs, *g.outputs))
    assert spec.graph("decoder").input("human_valid").shape == (N, spec.max_people)
    assert _initial(pair[1])["state"].shape[0] == 1  # one row, tiled by the backends


def test_ort_cpu_rows_match_single_stream_and_absent_rows_stay(pair, reference):
    spec = ExportSpec.load(pair[1])
    with open_backend("ort-cpu", pair[1]) as be:
        assert be.streams == N
        init = _initial(pair[1])
        for k in STATE:
            assert be.read_state(k).shape == (N,) + init[k].shape[1:]
        identical = drive_schedule(be, spec, reference)
        assert identical == 2 * sum(N - len(b) for b in SCHEDULE)
        check_reset_rows(be, spec, reference, init)


def test_ort_cpu_bad_slots_are_refused(pair):
    spec = ExportSpec.load(pair[1])
    feeds = stream_feeds(spec, 0, [0, 1])
    with open_backend("ort-cpu", pair[1]) as be:
        for bad in (None, [0, 0], [0, 3], [-1, 0], [True, False], [], "ab"):
            with pytest.raises(Human3RError):
                be.run("encoder", feeds["encoder"], slots=bad)
        with pytest.raises(Human3RError, match="incompatible shape"):  # 2 rows fed, 3 slots named
            be.run("encoder", feeds["encoder"], slots=[0, 1, 2])
        with pytest.raises(Human3RError):
            be.reset_streams([3])
        be.run("encoder", feeds["encoder"], slots=[0, 1])
        with pytest.raises(Human3RError, match="linked to a run of other streams"):
            be.run("decoder", feeds["decoder"], slots=[1, 0])
        state = be.read_state("state")
        assert np.array_equal(state, np.repeat(_initial(pair[1])["state"], N, axis=0))  # the refusals touched nothing


def test_single_stream_export_keeps_slot_zero_only(pair):
    from support.toy_export import toy_feeds

    spec = ExportSpec.load(pair[0])
    feeds = toy_feeds(spec, 0)
    with open_backend("ort-cpu", pair[0]) as be:
        assert be.streams == 1
        a = be.run("encoder", feeds["encoder"], slots=[0])
        b = be.run("encoder", feeds["encoder"])
        assert all(np.array_equal(a[k], b[k]) for k in a)
        with pytest.raises(Human3RError):
            be.run("encoder", feeds["encoder"], slots=[1])


def test_batch_of_one_equals_full_batch_row(pair):
    """The same stream alone (B=1) and inside a batch of 3 gives the same row (the dynamic axis, no padding)."""
    spec = ExportSpec.load(pair[1])
    with open_backend("ort-cpu", pair[1]) as be:
        alone = run_batch(be, spec, [1], [0])
        be.reset_state()
        full = run_batch(be, spec, [0, 1, 2], [0, 0, 0])
    for k, v in alone.items():
        np.testing.assert_allclose(full[k][1], v[0], rtol=0, atol=3e-5 * max(float(np.abs(v).max()), 1e-30))


# ------------------------------------------------------------------------------------------ ort-cuda stand-in
@pytest.fixture
def sim_cuda(monkeypatch):
    from support.fake_gpu import install
    from human3r_edge.runtime import backends

    gpu = install(monkeypatch)
    monkeypatch.setitem(backends.BACKENDS, "ort-cuda", "support.fake_gpu.ort_gpu:SimulatedOrtCudaBackend")
    yield gpu
    assert not gpu.dev.violations


def test_ort_bound_rows_match_single_stream(sim_cuda, pair, reference):
    spec = ExportSpec.load(pair[1])
    with open_backend("ort-cuda", pair[1]) as be:
        assert type(be).__name__ == "SimulatedOrtCudaBackend"
        identical = drive_schedule(be, spec, reference)
        assert identical == 2 * sum(N - len(b) for b in SCHEDULE)
        check_reset_rows(be, spec, reference, _initial(pair[1]))


def test_ort_trt_profile_shapes_cover_every_input(pair):
    """ort-trt (and `check`, which takes the same providers()) builds every engine with profile 1..N on axis 0."""
    from human3r_edge.runtime.backends.ort import OrtTrtBackend

    spec = ExportSpec.load(pair[1])
    opts = dict(OrtTrtBackend(spec, pair[1]).providers()[0][1])
    parsed = {}
    for key in ("min", "opt", "max"):
        parsed[key] = {e.split(":")[0]: tuple(int(d) for d in e.split(":")[1].split("x"))
                       for e in opts[f"trt_profile_{key}_shapes"].split(",")}
    inputs = {t.name: t.shape for g in spec.graphs for t in g.inputs}
    assert set(parsed["min"]) == set(parsed["opt"]) == set(parsed["max"]) == set(inputs)
    for name, shape in inputs.items():
        assert parsed["min"][name] == (1, *shape[1:])
        assert parsed["opt"][name] == parsed["max"][name] == (N, *shape[1:])
    single = dict(OrtTrtBackend(ExportSpec.load(pair[0]), pair[0]).providers()[0][1])
    assert not any(k.startswith("trt_profile") for k in single)


# ------------------------------------------------------------------------------------------ the test double
def test_fake_backend_understands_slots():
    """support.doubles.FakeBackend with streams=N (used by the multi-stream pipeline tests): per-slot state
    rows and encoder call counts, absent rows untouched, reset_streams per row, single-stream unchanged."""
    from support.doubles import FakeBackend
    from support.toy_export import stack_rows, toy_feeds, unbatched

    fb = FakeBackend(people={0: lambda i: [(1, 2, 0.9)], 2: lambda i: [(3, 3, 0.8)] if i >= 1 else []}, streams=N)
    spec, single = fb.spec, unbatched(fb.spec)
    assert spec.streams == N and fb.row_spec.streams == 1

    def step(slots):
        per = [toy_feeds(single, 1, s) for s in slots]
        out = {}
        for g in spec.graphs:
            out.update(fb.run(g.name, stack_rows(spec, g.name, [p[g.name] for p in per]), slots=slots))
        return out

    with fb:
        a = step([2, 0])
        assert a["det_scores"][1, 1, 2] == np.float32(0.9) and a["det_scores"][0].max() == 0  # slot 2: call 0
        b = step([2])
        assert b["det_scores"][0, 3, 3] == np.float32(0.8)  # slot 2's second call
        state = fb.read_state("state")
        assert state[2, 0, 0] == 2 and state[0, 0, 0] == 1 and state[1, 0, 0] == 0  # steps per slot
        fb.reset_streams([2])
        state = fb.read_state("state")
        assert state[2, 0, 0] == 0 and state[0, 0, 0] == 1
        assert [s for g, s in fb.slot_calls if g == "decoder"] == [(2, 0), (2,)]
    single_fb = FakeBackend()
    assert single_fb.spec.streams == 1 and single_fb.row_spec is single_fb.spec


# ------------------------------------------------------------------------------------------ the real exporter
REAL_SCHEDULE = [[2, 0], [1], [0, 1, 2]]


@pytest.fixture(scope="module")
def real_pair(tmp_path_factory):
    from support.ci import require
    from support.goldens import goldens_root
    from support.streams_check import golden_stream_pair

    d = goldens_root() / "tiny_a"
    require((d / "checkpoint.pth").is_file(), f"golden tiny_a not found under {goldens_root()}",
            "CI=true: goldens are required")
    return golden_stream_pair(tmp_path_factory, d, N)


def test_real_tiny_a_export_rows_match_single_stream(real_pair):
    """`export --streams 3` of the tiny_a checkpoint on ort-cpu and on the ort-cuda code (CPU stand-in): rows
    equal the single-stream export's runs, absent rows bit-identical, reset_streams per row."""
    from support.fake_gpu import install
    from human3r_edge.runtime import backends

    one, many = real_pair
    spec = ExportSpec.load(many)
    assert spec.streams == N
    ref = single_reference(lambda d: open_backend("ort-cpu", d), one, N, max(frames_per_stream(REAL_SCHEDULE, N)))
    with open_backend("ort-cpu", many) as be:
        assert drive_schedule(be, spec, ref, REAL_SCHEDULE) == 2 * sum(N - len(b) for b in REAL_SCHEDULE)
        check_reset_rows(be, spec, ref, _initial(many))
    with pytest.MonkeyPatch.context() as mp:
        gpu = install(mp)
        mp.setitem(backends.BACKENDS, "ort-cuda", "support.fake_gpu.ort_gpu:SimulatedOrtCudaBackend")
        with open_backend("ort-cuda", many) as be:
            assert drive_schedule(be, spec, ref, REAL_SCHEDULE) == 2 * sum(N - len(b) for b in REAL_SCHEDULE)
        assert not gpu.dev.violations
