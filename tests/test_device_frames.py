"""GPU preprocessing wired into the runtime: kernels write the engine's inputs, device frames are read in place.

Runs on this CPU machine through the strict TensorRT/pycuda stand-in (tests/support/fake_gpu): engines are the
ONNX graphs on ONNX Runtime CPU and the preprocessing kernels run from the same .cu source in host emulation.
"""
from __future__ import annotations

import numpy as np
import pytest

from human3r_edge.runtime import preprocess as pp
from human3r_edge.runtime.backends import open_backend
from human3r_edge.runtime.device_frames import device_frame_layout
from human3r_edge.errors import Human3RError
from human3r_edge.runtime.session import PreparedFrame, Session, SessionOptions
from support.exports import random_tiny_export
from support.fake_gpu import fake_gpu  # noqa: F401  (fixture)

STEP = 2.0 / 255.0  # one uint8 step in [-1, 1]


def _frame(seed: int, h: int = 120, w: int = 160) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(base, 8, 0), 8, 1))  # blocky: resampling matters


def test_device_frame_layout():
    cai = {"shape": (120, 160, 3), "typestr": "|u1", "data": (4096, False), "strides": None, "version": 3}
    assert device_frame_layout(cai) == (4096, 120, 160, 3, 480)
    assert device_frame_layout({**cai, "strides": (512, 3, 1)}) == (4096, 120, 160, 3, 512)  # row pitch
    assert device_frame_layout({**cai, "shape": (120, 160), "strides": None}) == (4096, 120, 160, 1, 160)
    assert device_frame_layout({**cai, "shape": (120, 160, 4)}) == (4096, 120, 160, 4, 640)
    assert device_frame_layout({**cai, "typestr": "<f4"}) is None  # other dtypes: copied to the host
    assert device_frame_layout({**cai, "strides": (480, 1, 19200)}) is None  # planar: not a row layout
    assert device_frame_layout({**cai, "strides": (100, 3, 1)}) is None  # pitch shorter than a row
    assert device_frame_layout({**cai, "shape": (3, 120, 160)}) is None


@pytest.fixture
def engines(fake_gpu, tmp_path_factory, tmp_path):
    from human3r_edge.export.trt_build import BuildOptions, build_engines

    onnx_dir = random_tiny_export(tmp_path_factory)
    build_engines(onnx_dir, tmp_path / "engines", BuildOptions(precision="fp32", progress=False))
    return tmp_path / "engines"


def _read(fake_gpu, ptr: int, shape: tuple) -> np.ndarray:
    out = np.empty(shape, np.float32)
    fake_gpu.cuda.memcpy_dtoh(out, ptr)
    return out


def test_gpu_preprocessing_feeds_the_engine_and_matches_the_cpu(fake_gpu, engines):
    frames = [_frame(i) for i in range(3)]
    got, fed = [], []
    with Session(open_backend("trt", engines), None, SessionOptions(skin=False)) as s:
        assert s.gpu_preprocessor is not None and s.reader_transform is None
        R = s.square
        for f in frames:
            r = s.step(f)
            img = _read(fake_gpu, s.backend.device_buffer("img"), (1, 3, 96, 128))[0]
            mhmr = _read(fake_gpu, s.backend.device_buffer("img_mhmr"), (1, 3, R, R))[0]
            cpu = pp.preprocess_rgb(f, 128)
            assert np.abs(img - cpu).max() <= STEP  # the kernels' output is what the encoder read
            assert np.abs(mhmr - pp.pad_image(img, R)[0]).max() <= 1e-5
            np.testing.assert_array_equal(r.image, np.rint((img + 1) * 127.5).clip(0, 255).astype(np.uint8)
                                          .transpose(1, 2, 0))
            got.append(r)
            fed.append((img, mhmr))
        kernels = [op for op in fake_gpu.dev.log if "kernel" in op]
        assert any("pil_resize_h_kernel" in op for op in kernels) and any("bilinear_pad" in op for op in kernels)
    # the same images through the host-feed path give the same results: ON_DEVICE fed exactly those buffers
    with Session(open_backend("trt", engines), None, SessionOptions(skin=False, preprocessing="cpu")) as s:
        assert s.gpu_preprocessor is None
        for (img, mhmr), a in zip(fed, got):
            b = s.process(PreparedFrame(img, mhmr, (120, 160), 0.0))
            np.testing.assert_array_equal(a.c2w, b.c2w)
            assert a.track_ids == b.track_ids


def test_device_frames_are_read_in_place(fake_gpu, engines):
    f = _frame(7)
    pitch = 512  # a row-pitched device image (e.g. from a hardware decoder)
    padded = np.zeros((120, pitch), np.uint8)
    padded[:, :480] = f.reshape(120, 480)

    class DeviceFrame:
        def __init__(self, ptr: int) -> None:
            self.__cuda_array_interface__ = {"shape": (120, 160, 3), "typestr": "|u1", "data": (ptr, False),
                                             "strides": (pitch, 3, 1), "version": 3, "stream": None}

    with Session(open_backend("trt", engines), None, SessionOptions(skin=False)) as s:
        dev = fake_gpu.cuda.mem_alloc(padded.nbytes)  # the backend's context is current inside the session
        fake_gpu.cuda.memcpy_htod(dev, padded)
        frame = DeviceFrame(int(dev))
        n_log = len(fake_gpu.dev.log)
        on_device = s.step(frame)
        new_ops = fake_gpu.dev.log[n_log:]
        assert s.gpu_preprocessor.zero_copy_frames == 1
        first_engine = next(i for i, op in enumerate(new_ops) if op.startswith("enqueue"))
        # nothing uploaded before the encoder ran: the frame was read in place and the images written on the device
        assert not any("htod" in op for op in new_ops[:first_engine]), new_ops[:first_engine]
        assert new_ops[0] == "kernel pil_resize_h_kernel"
        img_dev = _read(fake_gpu, s.backend.device_buffer("img"), (3, 96, 128))
        dev.free()
    with Session(open_backend("trt", engines), None, SessionOptions(skin=False)) as s:
        from_host = s.step(f)
        assert s.gpu_preprocessor.zero_copy_frames == 0
        np.testing.assert_array_equal(_read(fake_gpu, s.backend.device_buffer("img"), (3, 96, 128)), img_dev)
    np.testing.assert_array_equal(on_device.image, from_host.image)
    np.testing.assert_array_equal(on_device.c2w, from_host.c2w)


def test_prepared_device_frames_must_be_processed_in_order(fake_gpu, engines):
    with Session(open_backend("trt", engines), None, SessionOptions(skin=False)) as s:
        first = s.prepare(_frame(1))
        assert first.device_token and first.img_mhmr is None
        second = s.prepare(_frame(2))
        with pytest.raises(Human3RError, match="overwritten by a later prepare"):
            s.process(first)
        s.process(second)
        # a frame whose size does not fit the export takes the CPU path (and its error)
        with pytest.raises(Human3RError, match="does not preprocess to the export resolution"):
            s.step(_frame(3, 160, 120))
        tiny = fake_gpu.cuda.mem_alloc(10 * 10 * 3)

        class TinyDeviceFrame:
            __cuda_array_interface__ = {"shape": (10, 10, 3), "typestr": "|u1", "data": (int(tiny), False),
                                        "strides": None, "version": 3}

        with pytest.raises(Human3RError, match="smaller than one 16-px patch"):
            s.step(TinyDeviceFrame())
        tiny.free()


def test_gpu_preprocessing_needs_device_buffers(tmp_path_factory):
    export = random_tiny_export(tmp_path_factory)
    with pytest.raises(Human3RError, match="no device input buffers"):
        with Session(open_backend("ort-cpu", export), None, SessionOptions(preprocessing="gpu")):
            pass
    with pytest.raises(Human3RError, match="preprocessing"):
        SessionOptions(preprocessing="fpga")
    with Session(open_backend("ort-cpu", export), None, SessionOptions()) as s:  # auto: the CPU here
        assert s.gpu_preprocessor is None and s.reader_transform is not None


def test_run_cli_on_trt_preprocesses_and_skins_on_the_gpu(fake_gpu, engines, tmp_path, synthetic_smplx):
    """`human3r-edge run --backend trt`: the reader thread only decodes; the kernels preprocess and skin."""
    import json

    from PIL import Image

    from human3r_edge.cli import main

    src = tmp_path / "frames"
    src.mkdir()
    for i in range(3):
        Image.fromarray(_frame(i)).save(src / f"{i:03d}.png")
    out = tmp_path / "out"
    rc = main(["run", str(src), "--engines", str(engines), "--smplx-model", str(synthetic_smplx), "--backend",
               "trt", "--out", str(out), "--no-progress", "--no-scene"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 3 and summary["settings"]["preprocessing"] == "auto"
    kernels = {op.split()[1] for op in fake_gpu.dev.log if op.startswith("kernel ")}
    assert {"pil_resize_h_kernel", "bilinear_pad_kernel"} <= kernels
    assert any("skin" in k for k in kernels), kernels
    assert len((out / "trajectory.tum").read_text().splitlines()) == 3


class _PitchedFrame:
    """A uint8 (H, W, C) image in device memory with a row pitch wider than the row: what a decoder hands out."""

    def __init__(self, dev: object, h: int, w: int, c: int, pitch: int) -> None:
        self.dev = dev  # keeps the allocation alive
        self.__cuda_array_interface__ = {"shape": (h, w, c), "typestr": "|u1", "data": (int(dev), False),
                                         "strides": (pitch, c, 1), "version": 3, "stream": None}


@pytest.mark.gpu
def test_real_gpu_zero_copy_frames_match_the_cpu():
    """On a real GPU: GpuFramePreparer reads contiguous and row-pitched CUDA frames in place, writes the engine's
    input buffers, and the images equal the CPU path within one uint8 step."""
    try:
        import pycuda.autoinit  # noqa: F401
        import pycuda.driver as cuda
    except Exception as exc:  # ImportError, or no device / driver
        pytest.skip(f"needs pycuda and an NVIDIA GPU: {exc!r}")
    from types import SimpleNamespace

    from human3r_edge.runtime.device_frames import GpuFramePreparer

    size, R, h0, w0 = 512, 896, 720, 1280
    H, W = pp.output_shape(w0, h0, size)
    bufs = {"img": cuda.mem_alloc(3 * H * W * 4), "img_mhmr": cuda.mem_alloc(3 * R * R * 4)}
    backend = SimpleNamespace(accepts_device_feeds=True, name="real-gpu", spec=SimpleNamespace(resolution=(W, H)),
                              stream=cuda.Stream(), device_buffer=lambda name: bufs[name])
    prep = GpuFramePreparer(backend, size, R)
    for seed, pitch in ((0, w0 * 3), (1, w0 * 3 + 512)):
        frame = _frame(seed, h0, w0)
        dev = cuda.mem_alloc(pitch * h0)
        for y in range(h0):
            cuda.memcpy_htod(int(dev) + y * pitch, frame[y])
        img, hw = prep.prepare(_PitchedFrame(dev, h0, w0, 3, pitch), "RGB")
        ref = pp.preprocess_rgb(frame, size)
        assert hw == (h0, w0) and np.abs(img - ref).max() <= STEP
        on_dev = np.empty((3, R, R), np.float32)
        cuda.memcpy_dtoh(on_dev, bufs["img_mhmr"])
        assert np.abs(on_dev - pp.pad_image(ref, R)[0]).max() <= STEP
    assert prep.zero_copy_frames == 2


# ---------------------------------------------------------------------------------------------- ONNX Runtime
def _host_bound_backends(gpu=None):
    """OrtBoundBackend (the ort-cuda / ort-trt code) on ONNX Runtime's CPU EP: IOBinding and ping-pong state in
    host OrtValues; the second class also takes ON_DEVICE feeds through the strict pycuda stand-in `gpu` (its real
    ensure_cuda_context / stream), the OrtValues' host memory mapped as device memory (cudaHostRegister-style,
    same address) and the preprocessing kernels emulated (kernels/host_emu)."""
    import ctypes

    from support.ort_cpu_bound import OrtCpuBoundBackend as HostBound

    class HostBoundDeviceFeeds(HostBound):
        accepts_device_feeds = True  # type: ignore[assignment]
        fed: list = []
        mapped: list = []

        def device_buffer(self, name):
            ptr = super().device_buffer(name)
            v = self._values[name]
            n = int(np.prod(v.shape())) * np.dtype(v.numpy().dtype).itemsize
            view = np.ctypeslib.as_array((ctypes.c_uint8 * n).from_address(ptr))
            self.mapped.append(view)
            gpu.dev.map_host(view, f"OrtValue {name}")
            return ptr

        def _run_impl(self, graph, feeds, fetch):
            self.fed.append({k: type(v).__name__ for k, v in feeds.items()})
            return super()._run_impl(graph, feeds, fetch)

    return HostBound, HostBoundDeviceFeeds


@pytest.fixture
def onnx_export(tmp_path_factory):
    return random_tiny_export(tmp_path_factory)


def test_iobinding_backend_matches_ort_cpu(onnx_export):
    """The IOBinding code of ort-cuda / ort-trt on the CPU EP, through a Session on the real tiny export (the
    toy-export test in test_ort_backend.py checks the ping-pong itself): the plain ort-cpu results frame after
    frame, and no device feeds on a CPU device."""
    from human3r_edge.runtime.backends.ort import OrtCpuBackend
    from human3r_edge.runtime.iospec import ExportSpec

    HostBound, _ = _host_bound_backends()
    spec = ExportSpec.load(onnx_export)
    frames = [_frame(i) for i in range(4)]
    with Session(HostBound(spec, onnx_export, strict_device=False), None, SessionOptions(skin=False)) as a, \
            Session(OrtCpuBackend(spec, onnx_export), None, SessionOptions(skin=False)) as b:
        assert not a.backend.accepts_device_feeds and a.gpu_preprocessor is None
        for f in frames:
            ra, rb = a.step(f), b.step(f)
            np.testing.assert_allclose(ra.c2w, rb.c2w, atol=1e-6)
            assert ra.track_ids == rb.track_ids
        name = spec.graphs[0].state[0].input if spec.graphs[0].state else None
        for g in spec.graphs:
            for p in g.state:
                np.testing.assert_allclose(a.backend.read_state(p.input), b.backend.read_state(p.input), atol=1e-5)
        assert name is None or a.backend.read_state(name).shape
    with pytest.raises(Human3RError, match="not a device backend"):
        HostBound(spec, onnx_export, strict_device=False).device_buffer("img")


def test_ort_backends_take_kernel_written_device_feeds(onnx_export, fake_gpu):
    """GPU preprocessing on the ONNX Runtime GPU backends: the kernels write the session's input OrtValues
    (device_buffer = their data_ptr), run gets ON_DEVICE for both images, device frames are read in place, and
    the results equal the CPU preprocessing path."""
    from human3r_edge.runtime.iospec import ExportSpec

    HostBound, HostBoundDeviceFeeds = _host_bound_backends(fake_gpu)
    spec = ExportSpec.load(onnx_export)
    frames = [_frame(i) for i in range(3)]
    with Session(HostBoundDeviceFeeds(spec, onnx_export, strict_device=False), None, SessionOptions(skin=False, preprocessing="gpu")) as s:
        assert s.gpu_preprocessor is not None and s.reader_transform is None
        be = s.backend
        assert be.device_buffer("img") == be.device_value("img").data_ptr()
        got = [s.step(f) for f in frames]
        held = np.ascontiguousarray(frames[0])
        fake_gpu.dev.map_host(held, "a producer's device frame")

        class DeviceFrame:  # host memory stands in for device memory in this emulation
            __cuda_array_interface__ = {"shape": held.shape, "typestr": "|u1", "data": (held.ctypes.data, False),
                                        "strides": None, "version": 3, "stream": None}

        s.reset()
        in_place = s.step(DeviceFrame())
        assert s.gpu_preprocessor.zero_copy_frames == 1
        encoder_feeds = [f for f in be.fed if "img" in f]
        assert encoder_feeds and all(f["img"] == "OnDevice" and f["img_mhmr"] == "OnDevice" for f in encoder_feeds)
        with pytest.raises(Human3RError, match="not a host input"):
            be.device_buffer("no_such_tensor")
    with Session(HostBound(spec, onnx_export, strict_device=False), None, SessionOptions(skin=False)) as ref:
        for f, r in zip(frames, got):
            want = ref.step(f)
            np.testing.assert_array_equal(r.image, want.image)
            np.testing.assert_allclose(r.c2w, want.c2w, atol=1e-6)
            assert r.track_ids == want.track_ids
        ref.reset()
        np.testing.assert_allclose(in_place.c2w, ref.step(frames[0]).c2w, atol=1e-6)


@pytest.mark.gpu
def test_real_gpu_kernels_feed_buffers_of_a_cuda_runtime_library():
    """What ort-cuda / ort-trt rely on, on a real GPU: OrtBoundBackend's ensure_cuda_context / stream put pycuda in
    the context a CUDA-runtime library uses (torch stands in for ONNX Runtime's CUDA EP: both allocate through
    the runtime API), the kernels write that library's buffers, and a CUDA torch tensor frame is read in place,
    also when another (non-primary) context was current before."""
    try:
        import pycuda.driver  # noqa: F401
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
    except Exception as exc:
        pytest.skip(f"needs pycuda, a CUDA build of torch and an NVIDIA GPU: {exc!r}")
    from types import SimpleNamespace

    from human3r_edge.runtime.backends.ort import OrtBoundBackend
    from human3r_edge.runtime.device_frames import GpuFramePreparer

    class Owner:  # OrtBoundBackend's CUDA-context code, without an ONNX Runtime session
        _cuda = _cuda_ctx = _cuda_stream = None
        opts = SimpleNamespace(device_id=0)
        ensure_cuda_context = OrtBoundBackend.ensure_cuda_context
        stream = OrtBoundBackend.stream
        _release_cuda = OrtBoundBackend._release_cuda

    import pycuda.driver as cuda

    cuda.init()
    other = cuda.Device(0).make_context()  # a non-primary context current first, as pycuda.autoinit leaves one
    owner = Owner()
    try:
        stream = owner.stream
        size, R, h0, w0 = 512, 896, 720, 1280
        H, W = pp.output_shape(w0, h0, size)
        bufs = {"img": torch.zeros((1, 3, H, W), device="cuda"), "img_mhmr": torch.zeros((1, 3, R, R), device="cuda")}
        backend = SimpleNamespace(accepts_device_feeds=True, name="runtime-api buffers", stream=stream,
                                  spec=SimpleNamespace(resolution=(W, H)),
                                  device_buffer=lambda name: bufs[name].data_ptr(),
                                  ensure_cuda_context=owner.ensure_cuda_context)
        prep = GpuFramePreparer(backend, size, R)
        frame = _frame(5, h0, w0)
        img, hw = prep.prepare(torch.from_numpy(frame).cuda(), "RGB")
        torch.cuda.synchronize()
        ref = pp.preprocess_rgb(frame, size)
        assert prep.zero_copy_frames == 1 and hw == (h0, w0)
        assert np.abs(img - ref).max() <= STEP
        assert np.abs(bufs["img"].cpu().numpy()[0] - ref).max() <= STEP
        assert np.abs(bufs["img_mhmr"].cpu().numpy()[0] - pp.pad_image(ref, R)[0]).max() <= STEP
    finally:
        owner._release_cuda()
        assert cuda.Context.get_current().handle == other.handle  # the primary context was pushed and popped, nothing else
        other.pop()
        other.detach()
