"""CUDA contexts and teardown on the GPU path, through the strict stand-in (tests/support/fake_gpu).

Bug 1 (issue 13): GPU skinning next to an ONNX Runtime GPU backend must run in the primary context.
Bug 3 (issue 13): a backend frees its streams, pinned and device memory before it releases its context.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from human3r_edge.runtime.backends import BACKENDS, open_backend
from support.exports import random_tiny_export
from support.fake_gpu import ContractViolation, fake_gpu  # noqa: F401  (fixture)
from support.toy_export import run_frames, write_toy_export


def _frame(seed: int, h: int = 120, w: int = 160) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(base, 8, 0), 8, 1))


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    return random_tiny_export(tmp_path_factory)


@pytest.fixture
def frames_dir(tmp_path):
    src = tmp_path / "frames"
    src.mkdir()
    for i in range(3):
        Image.fromarray(_frame(i)).save(src / f"{i:03d}.png")
    return src


# ------------------------------------------------------------------------------------------ the stand-in itself
def test_stand_in_models_primary_and_created_contexts(fake_gpu):
    """What pycuda and the CUDA runtime do to a thread's contexts (pycuda cuda.hpp; cudaSetDevice)."""
    import pycuda.driver as cuda

    dev = fake_gpu.dev
    other = cuda.Device(0).make_context()  # as pycuda.autoinit: a new, non-primary context, pushed
    assert cuda.Context.get_current() is other and other.handle != dev.primary_cu
    buf = cuda.mem_alloc(64)
    dev.cuda_set_device()  # ONNX Runtime's CUDA EP on a Run: the primary context becomes current
    with pytest.raises(ContractViolation, match="invalid resource handle"):
        cuda.memset_d8_async(buf, 0, 64)
    fake_gpu.take_violations()
    buf.free()  # pycuda activates the allocation's own (still valid) context to free it
    other.detach()  # pops it: it was current
    assert cuda.Context.get_current() is None
    primary = cuda.Device(0).retain_primary_context()
    primary.push()
    kept = cuda.pagelocked_empty((4,), np.float32)
    stream = cuda.Stream()
    cuda.Context.pop()
    primary.detach()
    with pytest.raises(ContractViolation, match="detached"):
        kept.base.free()  # pycuda: cannot_activate_dead_context, swallowed: the pinned memory leaks
    del kept
    fake_gpu.take_violations()
    del stream  # its destructor: the same swallowed error, recorded (and reported by the fixture)
    assert any("stream" in v and "detached" in v for v in fake_gpu.take_violations())


def test_other_thread_has_its_own_context_stack(fake_gpu):
    import threading

    import pycuda.driver as cuda

    ctx = cuda.Device(0).retain_primary_context()
    ctx.push()
    seen = []
    t = threading.Thread(target=lambda: seen.append(cuda.Context.get_current()))
    t.start()
    t.join()
    assert seen == [None] and cuda.Context.get_current() is ctx
    cuda.Context.pop()
    ctx.detach()


# ------------------------------------------------------------------------------------------ bug 1
def test_gpu_skinning_next_to_ort_cuda_runs_in_the_primary_context(fake_gpu, tiny_export, frames_dir, tmp_path,
                                                                  synthetic_smplx, monkeypatch):
    """`run --backend ort-cuda --skinning gpu --preprocessing cpu`: the skinning kernels run in the context
    ONNX Runtime makes current on every Run (the primary one), not in a pycuda.autoinit context."""
    from human3r_edge.cli import main

    monkeypatch.setitem(BACKENDS, "ort-cuda", "support.fake_gpu.ort_gpu:SimulatedOrtCudaBackend")
    out = tmp_path / "out"
    rc = main(["run", str(frames_dir), "--engines", str(tiny_export), "--smplx-model", str(synthetic_smplx),
               "--backend", "ort-cuda", "--out", str(out), "--no-progress", "--no-scene", "--skinning", "gpu",
               "--preprocessing", "cpu"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["skinning_used"] == "cuda"
    assert any(op.startswith("kernel smplx_skin") for op in fake_gpu.dev.log)  # skinning really ran on the GPU
    assert fake_gpu.dev.bytes_in_use == 0 and not fake_gpu.dev.live_pinned  # and was freed with the backend


def test_no_autoinit_in_the_runtime():
    """pycuda.autoinit makes a non-primary context: nothing in runtime/ or kernels/ may import it."""
    from pathlib import Path

    import human3r_edge.kernels as kernels
    import human3r_edge.runtime as runtime

    offenders = []
    for root in (Path(runtime.__file__).parent, Path(kernels.__file__).parent):
        for p in root.rglob("*.py"):
            text = p.read_text()
            if "import pycuda.autoinit" in text or "pycuda.autoinit)" in text:
                offenders.append(str(p))
    assert not offenders


# ------------------------------------------------------------------------------------------ bug 3
@pytest.fixture
def toy_engines(fake_gpu, tmp_path):
    from human3r_edge.export.trt_build import BuildOptions, build_engines

    toy = tmp_path / "toy"
    toy.mkdir()
    write_toy_export(toy)
    build_engines(toy, tmp_path / "engines", BuildOptions(progress=False))
    return tmp_path / "engines"


def _nothing_live(dev) -> None:
    assert dev.bytes_in_use == 0, [a.tag for a in dev.allocs.values() if a.alive]
    assert not dev.live_pinned, list(dev.live_pinned.values())
    assert set(dev.streams) == {0}, "a stream outlived its backend"
    assert dev.context_depth == 0


@pytest.mark.parametrize("cuda_graph", [False, True], ids=["enqueue", "cuda-graph"])
def test_100_activate_deactivate_cycles_leave_no_live_allocation(fake_gpu, toy_engines, cuda_graph):
    from human3r_edge.runtime.iospec import ExportSpec

    spec = ExportSpec.load(toy_engines)
    be = open_backend("trt", toy_engines, cuda_graph=cuda_graph)
    for cycle in range(100):
        with be:
            if cycle < 2:
                run_frames(be, spec, 3)
        import gc

        gc.collect()
        assert not fake_gpu.dev.violations, fake_gpu.dev.violations[:3]
        _nothing_live(fake_gpu.dev)


def test_gpu_frame_preparer_outliving_its_backend_does_not_leak(fake_gpu, tiny_export, tmp_path):
    from human3r_edge.export.trt_build import BuildOptions, build_engines
    from human3r_edge.runtime.session import Session, SessionOptions

    build_engines(tiny_export, tmp_path / "engines", BuildOptions(precision="fp32", progress=False))
    with Session(open_backend("trt", tmp_path / "engines"), None, SessionOptions(skin=False)) as s:
        s.step(_frame(0))
        preparer = s.gpu_preprocessor  # the caller keeps it past the session
    import gc

    gc.collect()
    assert not fake_gpu.dev.violations, fake_gpu.dev.violations[:3]
    _nothing_live(fake_gpu.dev)
    del preparer


# ------------------------------------------------------------------------------------------ risks 12 and 15
class _TorchLikeFrame:
    """A uint8 (H, W, 3) CUDA frame as torch exports it: __cuda_array_interface__ v2, no "stream" key."""

    def __init__(self, alloc, shape, stream_key=False, stream=None):
        self.alloc = alloc
        self.__cuda_array_interface__ = {"shape": shape, "typestr": "|u1", "data": (int(alloc), False),
                                         "strides": None, "version": 2}
        if stream_key:
            self.__cuda_array_interface__["stream"] = stream


def _produce(cuda, frame: np.ndarray):
    """Write `frame` into device memory on a producer stream, leaving the copy queued (not yet done)."""
    dev = cuda.mem_alloc(frame.nbytes)
    staging = cuda.pagelocked_empty(frame.shape, np.uint8)
    staging[:] = frame
    producer = cuda.Stream()
    cuda.memcpy_htod_async(dev, staging, producer)
    return dev, staging, producer


@pytest.mark.parametrize("how", ["no-stream-key", "stream-argument"])
def test_device_frame_waits_for_its_producer(fake_gpu, tiny_export, tmp_path, how):
    """Risk 12: a CUDA frame whose producer's copy is still queued must not be read before it lands."""
    from human3r_edge.export.trt_build import BuildOptions, build_engines
    from human3r_edge.runtime.session import Session, SessionOptions

    build_engines(tiny_export, tmp_path / "engines", BuildOptions(precision="fp32", progress=False))
    f = _frame(3)
    with Session(open_backend("trt", tmp_path / "engines"), None, SessionOptions(skin=False)) as s:
        want = s.step(f).image
        s.reset()
        dev, staging, producer = _produce(fake_gpu.cuda, f)
        frame = _TorchLikeFrame(dev, f.shape)
        got = s.step(frame, stream=producer if how == "stream-argument" else None).image
        assert s.gpu_preprocessor.zero_copy_frames == 1
        np.testing.assert_array_equal(got, want)
        producer.synchronize()
        dev.free()
        staging.base.free()
        del producer


def test_cuda_frame_on_a_cpu_backend_without_a_context(fake_gpu, tiny_export):
    """Risk 15: ort-cpu, no CUDA context current: the frame is copied through the primary context (where torch
    allocates), not refused with pycuda's raw LogicError."""
    from human3r_edge.runtime.session import Session, SessionOptions

    cuda = fake_gpu.cuda
    f = _frame(5)
    primary = cuda.Device(0).retain_primary_context()
    primary.push()
    dev, staging, producer = _produce(cuda, f)
    cuda.Context.pop()  # the producer (torch) keeps its context to itself: nothing is current here
    with Session(open_backend("ort-cpu", tiny_export), None, SessionOptions(skin=False)) as s:
        got = s.step(_TorchLikeFrame(dev, f.shape)).image
        s.reset()
        want = s.step(f).image
    np.testing.assert_array_equal(got, want)
    assert cuda.Context.get_current() is None
    primary.push()
    dev.free()
    staging.base.free()
    del producer
    cuda.Context.pop()
    primary.detach()
