"""The GStreamer element's pieces that need no GStreamer: buffer mapping for every format (strides, plane offsets),
NV12 on the CPU and the CUDA NV12 kernel (host emulation) against OpenCV, the overlay write-back, K brought back to
frame pixels, and the property checks (runtime/gst/frames.py, kernels/nv12.cu and its launcher
cuda_memory._Nv12Converter, stream.run_args)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from human3r_edge.errors import Human3RError
from human3r_edge.runtime.gst.frames import (FORMATS, Layout, check_format, frame_intrinsics, host_view,
                                              write_rgb)
from support.fake_gpu import fake_gpu, primary_gpu  # noqa: F401  (fixtures)

H, W, PAD = 48, 64, 32  # rows padded by PAD bytes, as decoders do


def _nv12_buffer(rgb: np.ndarray, pad: int = PAD) -> tuple[bytearray, Layout, np.ndarray]:
    """An NV12 buffer with padded rows and a gap between the planes -> (memory, layout, I420 reference bytes)."""
    h, w = rgb.shape[:2]
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    stride = w + pad
    y_off, uv_off = 16, 16 + h * stride + 64
    mem = bytearray(uv_off + (h // 2) * stride)
    a = np.frombuffer(mem, np.uint8)
    a[y_off:y_off + h * stride].reshape(h, stride)[:, :w] = i420[:h]
    chroma = i420[h:].reshape(2, h // 2, w // 2)
    uv = a[uv_off:].reshape(h // 2, stride)[:, :w].reshape(h // 2, w // 2, 2)
    uv[..., 0], uv[..., 1] = chroma[0], chroma[1]
    return mem, Layout("NV12", w, h, (y_off, uv_off), (stride, stride)), i420


def _nv12_reference(i420: np.ndarray, h: int, w: int) -> np.ndarray:
    chroma = i420[h:].reshape(2, h // 2, w // 2)
    nv12 = np.concatenate([i420[:h], np.stack(chroma, -1).reshape(h // 2, w)])
    return cv2.cvtColor(nv12, cv2.COLOR_YUV2RGB_NV12)


@pytest.mark.parametrize("fmt", ["RGB", "BGR", "RGBA", "BGRA"])
def test_packed_formats_are_read_in_place(fmt):
    c, order = FORMATS[fmt]
    rng = np.random.default_rng(0)
    stride = W * c + PAD
    mem = bytearray(8 + H * stride)
    frame = rng.integers(0, 256, size=(H, W, c), dtype=np.uint8)
    np.frombuffer(mem, np.uint8)[8:].reshape(H, stride)[:, :W * c] = frame.reshape(H, -1)
    view, got_order = host_view(memoryview(bytes(mem)), Layout(fmt, W, H, (8,), (stride,)))
    assert got_order == order and view.shape == (H, W, c) and np.array_equal(view, frame)
    assert not view.flags.writeable and not view.flags.owndata  # a read-only view of the mapping, no copy


def test_nv12_cpu_conversion_matches_opencv():
    rgb = np.random.default_rng(1).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    mem, layout, i420 = _nv12_buffer(rgb)
    view, order = host_view(memoryview(bytes(mem)), layout)
    assert order == "RGB" and np.array_equal(view, _nv12_reference(i420, H, W))


def test_nv12_cuda_kernel_matches_the_cpu_path_in_host_emulation():
    """kernels/nv12.cu in the host emulation, and its CPU reference, against runtime/gst's CPU conversion."""
    import ctypes

    from human3r_edge.kernels.build import kernel_source
    from human3r_edge.kernels.host_emu import compile_module

    rgb = np.random.default_rng(2).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    mem, layout, _ = _nv12_buffer(rgb)
    a = np.frombuffer(mem, np.uint8)
    y, uv = a[layout.offsets[0]:], a[layout.offsets[1]:]
    out = np.zeros((H, W, 3), np.uint8)
    mod = compile_module(kernel_source("nv12.cu"))
    fn = mod.get_function("nv12_to_rgb")
    fn(y, np.int32(layout.strides[0]), uv, np.int32(layout.strides[1]), out, np.int32(W), np.int32(H),
       block=(32, 8, 1), grid=((W + 31) // 32, (H + 7) // 8))
    cpu, _ = host_view(memoryview(bytes(mem)), layout)
    assert np.array_equal(out, cpu)  # exact: the same integer formulas as OpenCV
    ref = np.zeros_like(out)
    p = ctypes.c_void_p
    mod.host_function("nv12_to_rgb_cpu", None, [p, ctypes.c_int, p, ctypes.c_int, p, ctypes.c_int, ctypes.c_int])(
        y.ctypes.data, layout.strides[0], uv.ctypes.data, layout.strides[1], ref.ctypes.data, W, H)
    assert np.array_equal(ref, cpu)


@pytest.mark.parametrize("w,h", [(W, H), (70, 38)])  # 70x38: partial blocks in both grid dimensions
def test_nv12_converter_loads_shipped_ptx_and_matches_opencv(primary_gpu, w, h):
    """The memory:CUDAMemory NV12 path as the element runs it: _Nv12Converter loads kernels/nv12.cu from its
    shipped PTX (module_from_buffer; no nvcc at run time) on the strict stand-in, converts a pitched NV12 device
    buffer on a stream, and the result equals the CPU conversion runtime/gst uses (OpenCV, BT.601 limited range)."""
    from human3r_edge.runtime.gst.cuda_memory import _Nv12Converter

    cuda = primary_gpu.cuda
    rgb = np.random.default_rng(3).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    mem, layout, _ = _nv12_buffer(rgb)
    host = np.frombuffer(mem, np.uint8)
    dev = cuda.mem_alloc(host.nbytes)
    cuda.memcpy_htod(dev, host)
    conv = _Nv12Converter(cuda)
    stream = cuda.Stream()
    out = conv(int(dev) + layout.offsets[0], layout.strides[0], int(dev) + layout.offsets[1], layout.strides[1],
               w, h, stream)
    stream.synchronize()
    got = np.empty((h, w, 3), np.uint8)
    cuda.memcpy_dtoh(got, out)
    cpu, order = host_view(memoryview(bytes(mem)), layout)
    assert order == "RGB" and np.array_equal(got, cpu)
    assert conv(int(dev) + layout.offsets[0], layout.strides[0], int(dev) + layout.offsets[1], layout.strides[1],
                w, h, stream) is out  # the output buffer is reused while the size stays
    stream.synchronize()
    assert primary_gpu.dev.nvcc_runs == 0  # loaded from PTX, not compiled at run time


@pytest.mark.parametrize("fmt", ["RGB", "BGRA", "NV12"])
def test_overlay_write_back_round_trips(fmt):
    rgb = np.random.default_rng(3).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    c, _ = FORMATS[fmt]
    if fmt == "NV12":
        mem, layout, _ = _nv12_buffer(np.zeros_like(rgb))
    else:
        layout = Layout(fmt, W, H, (0,), (W * c + PAD,))
        mem = bytearray(H * (W * c + PAD))
    write_rgb(memoryview(mem), layout, rgb)
    back, order = host_view(memoryview(mem), layout)
    back = back[..., 2::-1] if order == "BGR" else back[..., :3]
    # NV12 loses what 8-bit YUV with 2x2 chroma loses: exactly OpenCV's RGB -> I420 -> RGB round trip
    want = _nv12_reference(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), H, W) if fmt == "NV12" else rgb
    print(f"{fmt}: overlay round trip max error vs the input {np.abs(back.astype(int) - rgb).max()}")
    assert np.array_equal(back, want)


def test_frame_intrinsics_map_model_pixels_back_to_the_frame():
    from human3r_edge.runtime.preprocess import crop_box, resized_size

    w0, h0, size = 320, 240, 128
    k = np.array([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]])
    kf = frame_intrinsics(k, w0, h0, size)
    w1, h1 = resized_size(w0, h0, size)
    left, top, _, _ = crop_box(w1, h1, size)
    p = np.array([0.3, -0.2, 2.0])
    u, v = (k @ p)[:2] / p[2]
    uf, vf = (kf @ p)[:2] / p[2]
    assert np.allclose([uf, vf], [(u + left) * w0 / w1, (v + top) * h0 / h1])


def test_unsupported_formats_and_odd_nv12_are_refused():
    with pytest.raises(Human3RError, match=r"human3r caps \| unsupported video format: GRAY8.*Hint: put `videoco"):
        check_format("GRAY8", W, H)
    with pytest.raises(Human3RError, match="NV12 frame with an odd side"):
        check_format("NV12", 63, 48)
    check_format("NV12", W, H)


def test_property_checks_name_the_property(tmp_path):
    from human3r_edge.runtime.gst.stream import run_args

    base = {"engines": None, "checkpoint": None, "backend": "ort-cpu", "smplx-model": None, "out": None,
            "overwrite": False, "reset-interval": 0, "max-people": 0, "preprocessing": "auto", "skinning": "auto",
            "fit": "exact"}
    with pytest.raises(Human3RError, match="human3r engines / checkpoint | exactly one must be set"):
        run_args(base, "gst")
    with pytest.raises(Human3RError, match=r"human3r engines=\S+ \| folder not found"):
        run_args({**base, "engines": str(tmp_path / "nope")}, "gst")
    with pytest.raises(Human3RError, match=r"human3r backend \| unknown value: 'torch'"):
        run_args({**base, "backend": "torch"}, "gst")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "export.json").write_text("{}")
    with pytest.raises(Human3RError, match=r"human3r smplx-model=None \| file not found"):
        run_args({**base, "engines": str(tmp_path / "e")}, "gst")
    (tmp_path / "m.npz").write_bytes(b"")
    args = run_args({**base, "engines": str(tmp_path / "e"), "smplx-model": str(tmp_path / "m.npz"),
                     "reset-interval": 100, "max-people": 2}, "gst")
    assert args.reset_interval == 100 and args.max_people == 2 and args.out is None and args.max_remembered == 256
