"""Multi-stream runtime on the GPU backends (issue #16 item 6), through the strict CPU stand-in
(tests/support/fake_gpu): batched GPU preprocessing (the kernels write row b of the batched img / img_mhmr device
buffers, the batch runs with ON_DEVICE feeds, reset subsets move their rows), batched skinning (one call for the
people of every stream of a batch), against single-stream Sessions on the same stand-in.

Exports: the tiny_a golden's checkpoint, streams=1 and streams=3 (shared with the other multi-stream tests),
engines built by `build` through the stand-in (engines = the ONNX graphs on ONNX Runtime CPU)."""
from __future__ import annotations

import numpy as np
import pytest

from human3r_edge.runtime.multistream import DeviceBoundFrame, MultiSession, StreamEnd
from human3r_edge.runtime.pipeline import PipelineOptions
from human3r_edge.runtime.session import Session, SessionOptions, skin_batch
from support.ci import require
from support.streams_check import close as _close
from support.fake_gpu import fake_gpu, install  # noqa: F401  (fixture)
from support.goldens import goldens_root

N = 3


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """(streams=1 engines, streams=3 engines, the golden's raw frames)."""
    gdir = goldens_root() / "tiny_a"
    require((gdir / "checkpoint.pth").is_file(), f"golden tiny_a not found under {goldens_root()}",
            "CI=true: goldens are required")
    from human3r_edge.export.trt_build import BuildOptions, build_engines
    from support.streams_check import golden_stream_pair

    one, many = golden_stream_pair(tmp_path_factory, gdir, N)
    with np.load(gdir / "golden.npz") as z:
        frames = z["input/raw_frames_uint8"].copy()
    out = tmp_path_factory.mktemp("multistream_gpu_engines")
    with pytest.MonkeyPatch.context() as mp:
        install(mp)
        for src, name in ((one, "e1"), (many, "e3")):
            build_engines(src, out / name, BuildOptions(precision="fp32", progress=False))
    return out / "e1", out / "e3", frames, one, many


def _same_stream(got, ref, what, skinned):
    assert len(got) == len(ref), (what, len(got), len(ref))
    assert [r.index for r in got] == [r.index for r in ref]
    assert [r.segment for r in got] == [r.segment for r in ref]
    assert [r.track_ids for r in got] == [r.track_ids for r in ref], what  # identical detections and track ids
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a.image, b.image)  # the kernels' CUT3R image, read back per row
    for attr in ("c2w", "intrinsics", "points_cam", "confidence"):
        _close([getattr(r, attr) for r in got], [getattr(r, attr) for r in ref], f"{what} {attr}")
    people = [(p, q) for a, b in zip(got, ref) for p, q in zip(a.people, b.people)]
    assert people, f"{what}: no people to compare"
    attrs = ["head_uv", "score", "rotmat", "betas", "expression", "transl"]
    if skinned:
        attrs += ["vertices_cam", "joints_cam", "vertices_world", "joints_world", "smplx_transl"]
        assert all(p.vertices_world is not None for p, _ in people)
    for attr in attrs:
        _close([getattr(p, attr) for p, _ in people], [getattr(q, attr) for _, q in people], f"{what} {attr}")


def _sources(frames):
    fr = frames
    big = [np.repeat(np.repeat(f, 2, axis=0), 2, axis=1) for f in fr[:3]]  # another frame size, same export size
    lists = {"fwd": list(fr), "rev": list(fr[::-1]), "short": big}  # "short" ends early
    opts = {"fwd": SessionOptions(dense=True, preprocessing="gpu", pipeline=PipelineOptions(reset_interval=2)),
            "rev": SessionOptions(dense=True, preprocessing="gpu"),
            "short": SessionOptions(dense=True, preprocessing="gpu")}
    return lists, opts


def _spy(ms, calls):
    """Count the kernels' row writes and the device row moves of a MultiSession's GPU preparer."""
    gpu = ms.gpu_preprocessor
    prepare, move = gpu.prepare, gpu.move_rows

    def spy_prepare(*a, **k):
        calls["rows"].append(k.get("row", 0))
        return prepare(*a, **k)

    def spy_move(rows):
        calls["moves"].append(list(rows))
        return move(rows)

    gpu.prepare = spy_prepare
    gpu.move_rows = spy_move
    ms.pipeline.move_device_rows = spy_move


def _feeds_spy(be, seen):
    run = be._run_streams

    def spy(graph, feeds, fetch, slots):
        if "img" in feeds:
            seen.append((type(feeds["img"]).__name__, type(feeds["img_mhmr"]).__name__, tuple(slots)))
        return run(graph, feeds, fetch, slots)

    be._run_streams = spy


def test_trt_parity_gpu_preprocessing_and_batched_skinning(fake_gpu, engines, synthetic_smplx):
    """Three sources (one with reset_interval=2, one at twice the frame size that ends early) through
    `MultiSession.run` on the trt stand-in with GPU preprocessing and one skinning call per batch equal single
    trt Sessions (GPU preprocessing, per-stream skinning) within 3e-5 max|ref|, with identical track ids."""
    from human3r_edge.runtime.backends import open_backend
    from human3r_edge.runtime.smplx.skinning import SMPLXModel

    e1, e3, frames = engines[:3]
    model = SMPLXModel.load(synthetic_smplx)
    lists, opts = _sources(frames)
    ref = {}
    for sid, fl in lists.items():
        with Session(open_backend("trt", e1), model, opts[sid]) as s:
            assert s.gpu_preprocessor is not None
            ref[sid] = [s.step(f) for f in fl]
    skin_calls: list[int] = []

    class CountingModel:  # the same model; counts skinning calls and their people
        def __init__(self, m):
            self.model = m

        def skin(self, rot, *a):
            skin_calls.append(int(rot.shape[0]))
            return self.model.skin(rot, *a)

    calls: dict = {"rows": [], "moves": []}
    seen: list = []
    got: dict = {sid: [] for sid in lists}
    with MultiSession(open_backend("trt", e3), CountingModel(model), opts["rev"], stream_options=opts,
                      batch_timeout_ms=5000) as ms:
        assert ms.gpu_preprocessor is not None
        _spy(ms, calls)
        _feeds_spy(ms.backend, seen)
        for sid, item in ms.run(lists, with_ends=True):
            if not isinstance(item, StreamEnd):
                got[sid].append(item)
        assert ms.status == {"fwd": "finished", "rev": "finished", "short": "finished"}
    for sid in lists:
        _same_stream(got[sid], ref[sid], sid, skinned=True)
    total = sum(len(v) for v in lists.values())
    assert len(calls["rows"]) == total and max(calls["rows"]) == N - 1  # every frame by the kernels, rows 0..2
    assert seen and all(a == b == "OnDevice" for a, b, _ in seen)  # every encoder run: ON_DEVICE feeds
    # fwd resets after frames 1, 3, 5 (reset_interval=2); with rev present that is a reset of some rows only
    assert calls["moves"], "no reset of a subset of rows was exercised"
    assert len([s for _, _, s in seen if len(s) == 1]) >= len(calls["moves"])  # duplicate views: batches of one
    assert len(skin_calls) < sum(1 for v in got.values() for r in v if r.people)  # people of streams skinned together
    kernels = {op.split()[1] for op in fake_gpu.dev.log if op.startswith("kernel ")}
    assert {"pil_resize_h_kernel", "bilinear_pad_kernel"} <= kernels
    assert not fake_gpu.dev.violations


def _ort_cuda_device_feeds(gpu):
    """ort-cuda on the stand-in (support.fake_gpu.ort_gpu: the OrtBoundBackend code with the CUDA EP's context
    switches) taking device feeds: its input OrtValues' host memory mapped as device memory (same address), as
    tests/test_device_frames.py does for the single-stream path."""
    import ctypes

    from support.fake_gpu.ort_gpu import SimulatedOrtCudaBackend

    class OrtCudaDeviceFeeds(SimulatedOrtCudaBackend):
        accepts_device_feeds = True  # type: ignore[assignment]

        def device_buffer(self, name):
            ptr = int(self._values[name].data_ptr())
            mapped = self.__dict__.setdefault("mapped", {})
            if ptr not in mapped:
                v = self._values[name]
                n = int(np.prod(v.shape())) * np.dtype(v.numpy().dtype).itemsize
                view = np.ctypeslib.as_array((ctypes.c_uint8 * n).from_address(ptr))
                mapped[ptr] = view
                gpu.dev.map_host(view, f"OrtValue {name}")
            return ptr

    return OrtCudaDeviceFeeds


@pytest.mark.parametrize("kind", ["trt", "trt-cuda-graph", "ort-cuda"])
def test_step_rows_reset_subset_and_cpu_rows(fake_gpu, engines, kind):
    """`step` schedules on the trt (enqueue and CUDA graphs) and ort-cuda stand-ins: a stream on
    preprocessing='cpu' (its rows uploaded) next to GPU rows, resets of one row of three (rows moved on the
    device), device frames read in place in a batch row; equal to single Sessions on the same stand-in with GPU
    preprocessing."""
    from human3r_edge.runtime.backends import open_backend
    from human3r_edge.runtime.iospec import ExportSpec

    e1, e3, frames, one, many = engines
    if kind.startswith("trt"):
        def backend(d):
            return open_backend("trt", d, cuda_graph=kind == "trt-cuda-graph")
    else:
        cls = _ort_cuda_device_feeds(fake_gpu)
        e1, e3 = one, many

        def backend(d):
            return cls(ExportSpec.load(d), d)
    fr = list(frames[:5])
    opts = {"a": SessionOptions(dense=True, preprocessing="gpu", pipeline=PipelineOptions(reset_interval=2)),
            "b": SessionOptions(dense=True, preprocessing="cpu"),
            "c": SessionOptions(dense=True, preprocessing="auto", pipeline=PipelineOptions(reset_interval=3))}
    streams = {"a": fr, "b": fr[::-1], "c": fr[1:] + fr[:1]}
    ref = {}
    for sid, fl in streams.items():
        with Session(backend(e1), None, opts[sid]) as s:
            assert (s.gpu_preprocessor is None) == (sid == "b")
            ref[sid] = [s.step(f) for f in fl]
    calls: dict = {"rows": [], "moves": []}
    got: dict = {sid: [] for sid in streams}
    schedule = [("a", "b", "c"), ("a", "c"), ("a", "b", "c"), ("b",), ("a", "b", "c"), ("c",)]
    pos = {sid: 0 for sid in streams}
    seen: list = []
    with MultiSession(backend(e3), None, SessionOptions(dense=True), stream_options=opts) as ms:
        assert ms.gpu_preprocessor is not None
        _spy(ms, calls)
        _feeds_spy(ms.backend, seen)
        for ids in schedule:
            batch = {sid: streams[sid][pos[sid]] for sid in ids}
            if ids == ("a", "c"):  # a's frame as a device frame, read in place by the kernels
                held = np.ascontiguousarray(batch["a"])
                fake_gpu.dev.map_host(held, "a producer's device frame")

                class DeviceFrame:
                    __cuda_array_interface__ = {"shape": held.shape, "typestr": "|u1",
                                                "data": (held.ctypes.data, False), "strides": None, "version": 3,
                                                "stream": None}
                batch["a"] = DeviceFrame()
                assert isinstance(ms._accept("a", batch["a"]), DeviceBoundFrame)
                zc = ms.gpu_preprocessor.zero_copy_frames
            out = ms.step(batch)
            assert list(out) == list(ids)
            for sid in ids:
                got[sid].append(out[sid])
                pos[sid] += 1
        assert ms.gpu_preprocessor.zero_copy_frames == zc + 1
    for sid in streams:
        _same_stream(got[sid], ref[sid][:pos[sid]], sid, skinned=False)
    # a (slot 0) resets after its 2nd and 4th frames (batches 2 and 5), c (slot 2) after its 3rd (batch 3: rows
    # a, b, c -> row 2 moved to row 0 for c's duplicate view)
    assert calls["moves"] == [[0], [2], [0]]
    # encoder runs: batches 1, 2, its duplicate view, 3, its duplicate, 4 (b alone: host feeds), 5, duplicate, 6
    assert [a for a, _, _ in seen] == ["OnDevice"] * 5 + ["ndarray"] + ["OnDevice"] * 3
    if kind == "trt-cuda-graph":  # one graph per (engine, batch size) of the multi-stream engines, launched
        assert fake_gpu.libcuda.calls.count("cuGraphLaunch") > 0
    assert not fake_gpu.dev.violations


def test_batched_skinning_equals_per_stream(synthetic_smplx):
    """skin_batch: one call for the people of every stream (split by a skinner's max_people) equals per-stream
    skin(..., c2w) within float rounding; a batch with one stream to skin is that call exactly."""
    from types import SimpleNamespace

    from human3r_edge.runtime.smplx.skinning import SMPLXModel
    from support.smplx_inputs import random_params

    model = SMPLXModel.load(synthetic_smplx)
    rng = np.random.default_rng(3)
    outs, opts = [], []
    for i, n in enumerate([2, 0, 3, 1]):
        rot, betas, expr, transl, c2w = random_params(rng, max(n, 1))
        c2w = np.asarray(c2w, np.float32)
        smpl = {"smpl_rotmat": rot[:n], "smpl_shape": betas[:n], "smpl_expression": expr[:n],
                "smpl_transl": transl[:n]}
        outs.append(SimpleNamespace(smpl=smpl, c2w=c2w, detections=SimpleNamespace(count=n)))
        opts.append(SessionOptions(skin=i != 3))  # the last stream does not skin
    calls: list[int] = []

    class Chunked:  # a skinner with GPU-style fixed buffers of 2 people
        max_people = 2

        def skin(self, rot, *a):
            assert rot.shape[0] <= 2
            calls.append(int(rot.shape[0]))
            return model.skin(rot, *a)

    for skinner, want_calls in ((model, None), (Chunked(), [2, 2, 1])):
        calls.clear()
        got = skin_batch(skinner, outs, opts)
        assert got[1] is None and got[3] is None
        if want_calls is not None:
            assert calls == want_calls
        for i in (0, 2):
            s = outs[i].smpl
            ref = model.skin(s["smpl_rotmat"], s["smpl_shape"], s["smpl_expression"], s["smpl_transl"], outs[i].c2w)
            for k in ("v_cam", "j_cam", "transl_pelvis", "v_world", "j_world"):
                a, b = getattr(got[i], k), getattr(ref, k)
                assert a.shape == b.shape
                assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(b).max()), k
    one = [outs[0], outs[1]]
    got = skin_batch(model, one, opts[:2])
    s = outs[0].smpl
    ref = model.skin(s["smpl_rotmat"], s["smpl_shape"], s["smpl_expression"], s["smpl_transl"], outs[0].c2w)
    np.testing.assert_array_equal(got[0].v_world, ref.v_world)


def test_gpu_preprocessing_choice_and_errors(fake_gpu, engines):
    """'auto' preprocesses on the GPU where the backend takes device feeds (trt) and on the host elsewhere
    (ort-cpu); 'gpu' on ort-cpu is the clear error Session gives; a frame that does not preprocess to the export
    size is refused as on the host path, before any model work, and a size change fails its stream alone."""
    from human3r_edge.errors import Human3RError
    from human3r_edge.runtime.backends import open_backend

    e1, e3, frames, one, many = engines
    with MultiSession.open(many, "ort-cpu", intra_op_threads=1) as ms:
        assert ms.gpu_preprocessor is None
        assert not isinstance(ms._accept("x", frames[0]), DeviceBoundFrame)
    with pytest.raises(Human3RError, match="no device input buffers"):
        with MultiSession.open(many, "ort-cpu", options=SessionOptions(preprocessing="gpu")):
            pass
    with MultiSession(open_backend("trt", e3), None) as ms:
        assert ms.gpu_preprocessor is not None
        portrait = np.ascontiguousarray(frames[0].transpose(1, 0, 2))
        with pytest.raises(Human3RError, match="does not preprocess to the export resolution"):
            ms.step({"a": frames[0], "b": portrait})
        assert ms.stream_ids == [] and ms.gpu_preprocessor.zero_copy_frames == 0
        ms.step({"a": frames[0], "b": frames[1]})
        big = np.repeat(np.repeat(frames[2], 2, axis=0), 2, axis=1)
        with pytest.raises(Human3RError, match="size changed mid-run"):
            ms.step({"a": frames[2], "b": big})
        assert ms.status["b"].startswith("failed") and ms.status["a"] == "running"
        assert ms.step({"a": frames[2]})["a"].index == 1
