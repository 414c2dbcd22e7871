"""The preprocessing CUDA kernels, through the host emulation, against runtime.preprocess (the reference path)."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from human3r_edge.runtime.preprocess_gpu import CudaPreprocessor, make_plan, pil_filter_tables
from human3r_edge.errors import BackendUnavailable, Human3RError
from human3r_edge.runtime.preprocess import pad_image, preprocess_rgb
from support.fake_gpu import fake_gpu, primary_gpu  # noqa: F401  (fixtures)

pytestmark = pytest.mark.skipif(not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")),
                                reason="the host emulation needs a C++ compiler (g++ or $CXX)")
STEP = 2.0 / 255.0  # one uint8 step in [-1, 1]


def _frame(rng, h, w, c):
    ramp = np.linspace(0, 160, w)[None, :, None] + np.linspace(0, 60, h)[:, None, None]
    x = rng.integers(0, 96, size=(h, w, max(c, 1))) + ramp
    x = np.clip(x, 0, 255).astype(np.uint8)
    return x[:, :, 0] if c == 0 else x


@pytest.fixture
def emu(primary_gpu):
    """The launcher on the strict stand-in (tests/support/fake_gpu), kernels run by the host emulation."""
    return dict(driver=primary_gpu.cuda, compiler=primary_gpu.compiler)


@pytest.mark.parametrize("h,w,c,size,R,order", [
    (150, 200, 3, 128, 112, "RGB"),    # the goldens' geometry, LANCZOS shrink
    (480, 640, 3, 512, 224, "BGR"),    # OpenCV channel order
    (200, 300, 3, 512, 112, "RGB"),    # enlarging: BICUBIC
    (640, 360, 4, 512, 112, "RGB"),    # portrait RGBA (alpha dropped)
    (120, 160, 0, 128, 56, "RGB"),     # grayscale (H, W)
    (256, 256, 3, 128, 112, "RGB"),    # square frame: cropped to 4:3
    (1080, 1920, 3, 512, 224, "RGB"),  # 1080p -> 512x288, wide filter support
    (96, 128, 3, 128, 112, "RGB"),     # no resize at all (PIL skips both passes)
])
def test_emulated_kernels_match_cpu_preprocessing(emu, h, w, c, size, R, order):
    fr = _frame(np.random.default_rng(h * w), h, w, c)
    pre = CudaPreprocessor(size, R, **emu)
    img, mhmr = pre.process(fr, order)
    ref = preprocess_rgb(fr, size, channel_order=order)
    ref_m, _ = pad_image(ref, R)
    assert img.shape == ref.shape and mhmr.shape == ref_m.shape == (3, R, R)
    e_img, e_pad = float(np.abs(img - ref).max()), float(np.abs(mhmr - ref_m).max())
    print(f"{w}x{h}x{c} {pre.plan.resample}: max diff {e_img / STEP:.2f} uint8 steps (img), {e_pad:.2e} (pad)")
    assert e_img <= STEP and e_pad <= STEP


def test_goldens_inputs_reproduced(golden_dir, require_golden, emu):
    g = np.load(golden_dir / "golden.npz")
    frames, img_ref, mhmr_ref = g["input/raw_frames_uint8"], g["input/img"], g["input/img_mhmr"]
    kept = g["meta/kept_step_index"]
    pre = CudaPreprocessor(int(g["meta/size_arg"]), int(g["meta/mhmr_img_res"]), **emu)
    for f, step in enumerate(kept):
        img, mhmr = pre.process(frames[f])
        assert np.abs(img - img_ref[step]).max() <= STEP
        assert np.abs(mhmr - mhmr_ref[step]).max() <= 1e-5


@pytest.mark.parametrize("resample,pil", [("lanczos", Image.Resampling.LANCZOS), ("bicubic", Image.Resampling.BICUBIC)])
@pytest.mark.parametrize("src,dst", [(200, 128), (1920, 512), (300, 512), (7, 5)])
def test_tables_reproduce_pil_on_one_row(resample, pil, src, dst):
    row = np.random.default_rng(src).integers(0, 256, size=(1, src), dtype=np.uint8)
    want = np.asarray(Image.fromarray(row, "L").resize((dst, 1), pil))[0].astype(np.int64)
    xmin, xcount, coeff = pil_filter_tables(src, dst, resample)
    got = np.empty(dst, np.int64)
    for o in range(dst):
        acc = (1 << 21) + int((row[0, xmin[o]:xmin[o] + xcount[o]].astype(np.int64) * coeff[o, :xcount[o]]).sum())
        got[o] = min(max(acc >> 22, 0), 255)
    np.testing.assert_array_equal(got, want)


def test_plan_geometry():
    p = make_plan(1080, 1920, 512, 896)
    assert (p.height, p.width, p.resample) == (288, 512, "lanczos")
    assert (p.pad.new_h, p.pad.new_w, p.pad.top, p.pad.left) == (504, 896, 196, 0)
    assert p.y_first >= 0 and p.y_first + p.n_rows <= 1080


def test_bad_frames_are_clear_errors(emu):
    pre = CudaPreprocessor(128, 112, **emu)
    with pytest.raises(Human3RError, match="frame dtype not supported: float32"):
        pre.process(np.zeros((96, 128, 3), np.float32))
    with pytest.raises(Human3RError, match="frame shape not supported"):
        pre.process(np.zeros((96, 128, 2), np.uint8))
    with pytest.raises(Human3RError, match="unknown channel order"):
        pre.process(np.zeros((96, 128, 3), np.uint8), "RGBA")
    with pytest.raises(Human3RError, match="model cannot take"):
        pre.process(np.zeros((2, 400, 3), np.uint8))  # resizes to 128x1: no 16-row crop exists
    # a non-contiguous view is accepted (copied once before upload) and gives the same image
    fr = _frame(np.random.default_rng(0), 150, 400, 3)
    view = fr[:, ::2]
    np.testing.assert_array_equal(pre.process(view)[0], pre.process(np.ascontiguousarray(view))[0])


def test_without_pycuda_the_launcher_says_so():
    try:
        import pycuda  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match="pycuda is not installed"):
            CudaPreprocessor(512, 896)
    else:
        pytest.skip("pycuda is installed here; the GPU test covers it")


@pytest.mark.gpu
def test_real_gpu_matches_cpu():
    try:
        import pycuda.autoinit  # noqa: F401
    except Exception as exc:
        pytest.skip(f"needs pycuda and an NVIDIA GPU: {exc!r}")
    fr = _frame(np.random.default_rng(1), 1080, 1920, 3)
    img, mhmr = CudaPreprocessor(512, 896).process(fr)
    ref = preprocess_rgb(fr, 512)
    assert np.abs(img - ref).max() <= STEP and np.abs(mhmr - pad_image(ref, 896)[0]).max() <= STEP


@pytest.mark.gpu
def test_real_gpu_cuda_graph_replays_the_kernels():
    """runtime/cuda_util.CudaGraphs against the real driver: the preprocessing kernels captured once on a stream,
    then replayed on a new frame written into the same buffer, give that frame's images."""
    try:
        import pycuda.autoinit  # noqa: F401
        import pycuda.driver as cuda
    except Exception as exc:
        pytest.skip(f"needs pycuda and an NVIDIA GPU: {exc!r}")
    from human3r_edge.runtime.cuda_util import CudaGraphs

    rng = np.random.default_rng(3)
    first, second = _frame(rng, 720, 1280, 3), _frame(rng, 720, 1280, 3)
    pre = CudaPreprocessor(512, 896)
    stream = cuda.Stream()
    args = pre.upload(first)
    plan = pre.launch(*args, stream=stream)  # warm-up: tables and buffers exist before the capture
    stream.synchronize()
    graphs = CudaGraphs()
    graphs.begin_capture(stream.handle)
    pre.launch(*args, stream=stream)
    graph = graphs.end_capture(stream.handle)
    exe = graphs.instantiate(graph)
    try:
        cuda.memcpy_htod(args[0], second)
        graphs.launch(exe, stream.handle)
        stream.synchronize()
        img = np.empty((3, plan.height, plan.width), np.float32)
        mhmr = np.empty((3, 896, 896), np.float32)
        cuda.memcpy_dtoh(img, pre.img_dev)
        cuda.memcpy_dtoh(mhmr, pre.mhmr_dev)
    finally:
        graphs.destroy(graph, exe)
    ref = preprocess_rgb(second, 512)
    assert np.abs(img - ref).max() <= STEP and np.abs(mhmr - pad_image(ref, 896)[0]).max() <= STEP
    assert np.abs(img - preprocess_rgb(first, 512)).max() > 0.1  # the replay read the new frame
