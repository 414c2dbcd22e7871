"""Frame objects -> host uint8 images: numpy, DLPack and CUDA (`__cuda_array_interface__`) frames, their checks,
and the cover-crop fit. Used by the Session (CPU preprocessing) and by device_frames (GPU preprocessing)."""
from __future__ import annotations

from typing import Any

import numpy as np

from human3r_edge.errors import Human3RError, msg
from human3r_edge.runtime import preprocess as pp


MIN_SIDE = 16  # one CUT3R patch


def to_host_frame(frame: Any, stream: Any = None) -> np.ndarray:
    """Any supported frame object -> a numpy array view or copy (no dtype/shape normalisation yet).
    stream: the CUDA stream that produced a device frame (see `Session.step`)."""
    if isinstance(frame, np.ndarray):
        return frame
    if hasattr(frame, "__cuda_array_interface__"):
        return _cuda_to_host(frame.__cuda_array_interface__, stream)
    if hasattr(frame, "__dlpack__"):
        try:
            return np.from_dlpack(frame)
        except (BufferError, RuntimeError, TypeError, ValueError) as exc:
            raise Human3RError(msg("frame", "DLPack object numpy cannot read", f"{type(frame).__name__}: {exc}",
                                   "a CPU array (HWC)", "copy device tensors to the host first")) from exc
    if hasattr(frame, "__array_interface__") or hasattr(frame, "__array__"):
        return np.asarray(frame)
    raise Human3RError(msg("frame", "unsupported frame type", type(frame).__name__,
                           "a numpy array, a DLPack object or a __cuda_array_interface__ object"))


def _cuda_to_host(cai: dict, stream: Any = None) -> np.ndarray:
    """Copy a C-contiguous CUDA frame to the host, after its producer's work (see cuda_util.producer_stream).

    Works on any backend: with no CUDA context current (e.g. ort-cpu), the device's primary context (the one
    torch and CuPy use) is made current for the copy and released again."""
    try:
        import pycuda.driver as cuda  # noqa: F401  (lazy: only for device frames)
    except ImportError as exc:
        raise Human3RError(msg("frame", "device (CUDA) frame but pycuda is not installed", None,
                               hint="pass a host numpy array, or install pycuda")) from exc
    from human3r_edge.runtime.cuda_util import producer_stream, wait_for_producer

    shape = tuple(int(s) for s in cai["shape"])
    dtype = np.dtype(cai["typestr"])
    if cai.get("strides") not in (None, tuple(np.empty(shape, dtype).strides)):
        raise Human3RError(msg("frame", "non-contiguous device frame", cai.get("strides"),
                               "a C-contiguous CUDA array", "call .contiguous() on it first"))
    host = np.empty(shape, dtype)
    ctx = None
    try:
        if cuda.Context.get_current() is None:
            cuda.init()
            ctx = cuda.Device(0).retain_primary_context()
            ctx.push()
        wait_for_producer(cuda, producer_stream(cai, stream))
        cuda.memcpy_dtoh(host, int(cai["data"][0]))
    except Human3RError:
        raise
    except Exception as exc:  # pycuda's LogicError / RuntimeError: no device, a pointer of another context, ...
        raise Human3RError(msg("frame", "the CUDA frame could not be copied to the host", repr(exc)[:300],
                               "device memory of this process's GPU 0, in its primary context (torch, CuPy)",
                               "pass a host numpy array, or use a GPU backend (trt, ort-cuda, ort-trt)")) from exc
    finally:
        if ctx is not None:
            cuda.Context.pop()
            ctx.detach()
    return host


def normalize_frame(frame: Any, stream: Any = None) -> np.ndarray:
    """A frame as (H, W), (H, W, 1|3|4) uint8 (channel order untouched). Raises Human3RError on bad input.
    stream: the CUDA stream that produced a device frame (see `Session.step`)."""
    a = to_host_frame(frame, stream)
    if a.ndim == 3 and a.shape[-1] not in (1, 3, 4) and a.shape[0] in (1, 3, 4):
        raise Human3RError(msg("frame", "channels-first layout", a.shape, "(H, W, C) channels-last",
                               "transpose it, e.g. x.transpose(1, 2, 0)"))
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (1, 3, 4)):
        raise Human3RError(msg("frame", "unsupported shape", a.shape, "(H, W, 3), (H, W, 4), (H, W, 1) or (H, W)"))
    check_frame_size(int(a.shape[0]), int(a.shape[1]))
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return (a >> 8).astype(np.uint8)
    if a.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(a)))
        if bad:
            raise Human3RError(msg("frame", "non-finite values (NaN/inf) in a float frame", f"{bad} values",
                                   "finite RGB in [0, 1]"))
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise Human3RError(msg("frame", "float frame outside [0, 1]", f"[{lo:g}, {hi:g}]", "values in [0, 1]",
                                   "pass 0..255 pixels as uint8, or divide by 255"))
        return np.rint(a.astype(np.float32) * np.float32(255.0)).astype(np.uint8)
    raise Human3RError(msg("frame", "unsupported dtype", a.dtype, "uint8, uint16 or float in [0, 1]"))


def check_frame_size(h: int, w: int) -> None:
    """Refuse a frame smaller than one CUT3R patch (Human3RError)."""
    if min(h, w) < MIN_SIDE:
        raise Human3RError(msg("frame", f"smaller than one {MIN_SIDE}-px patch", f"{w}x{h}",
                               f"at least {MIN_SIDE}x{MIN_SIDE} pixels"))


def to_image_u8(img: np.ndarray) -> np.ndarray:
    """(3, H, W) float32 in [-1, 1] -> (H, W, 3) uint8 (exact inverse of the preprocessing's normalisation)."""
    return np.ascontiguousarray(np.rint((img + 1.0) * 127.5).clip(0, 255).astype(np.uint8).transpose(1, 2, 0))


def cover_crop(a: np.ndarray, width: int, height: int, order: str) -> np.ndarray:
    """Resize (PIL, LANCZOS down / BICUBIC up) to cover width x height, centre-crop, normalise to [-1, 1]."""
    from PIL import Image

    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 3:
        a = a[:, :, :3]
        if order == "BGR":
            a = a[:, :, ::-1]
    img = Image.fromarray(np.ascontiguousarray(a)).convert("RGB")
    w0, h0 = img.size
    scale = max(width / w0, height / h0)
    w1, h1 = max(width, round(w0 * scale)), max(height, round(h0 * scale))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    img = img.resize((w1, h1), resample)
    left, top = (w1 - width) // 2, (h1 - height) // 2
    img = img.crop((left, top, left + width, top + height))
    return pp.u8_to_unit(np.asarray(img))
