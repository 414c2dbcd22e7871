"""GPU frame preprocessing (kernels/preprocess.cu): PIL-exact filter tables computed here, pycuda launcher.

The CUT3R image is `runtime.preprocess.preprocess_rgb(frame, size)` and the human-branch image is
`runtime.preprocess.pad_image(img, R)`; this module produces both on the GPU. The tables reproduce PIL's
`precompute_coeffs` + `normalize_coeffs_8bpc` (double precision, then 22-bit fixed point) and torch's bilinear
source-index formula, so the kernels' integer and float arithmetic matches the CPU path (tested through the
host emulation). pycuda is imported lazily; `driver` may be the strict stand-in of tests/support/fake_gpu.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from human3r_edge.errors import BackendUnavailable, Human3RError, msg
from human3r_edge.runtime.preprocess import crop_box, output_shape, pad_geometry, resized_size
from human3r_edge.kernels.build import load_module

PRECISION_BITS = 22  # PIL: 32 - 8 - 2
_SUPPORT = {"lanczos": 3.0, "bicubic": 2.0}
_BLOCK = 128


def _lanczos(x: float) -> float:
    def sinc(v: float) -> float:
        if v == 0.0:
            return 1.0
        v = v * math.pi
        return math.sin(v) / v

    return sinc(x) * sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


def _bicubic(x: float) -> float:
    a = -0.5
    x = -x if x < 0.0 else x
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


@lru_cache(maxsize=64)
def pil_filter_tables(in_size: int, out_size: int, resample: str, first: int = 0, count: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PIL's resampling taps for outputs first .. first+count-1 of an in_size -> out_size resize along one axis.

    Returns (xmin (n,) int32 first source index, xcount (n,) int32 tap count, coeff (n, ksize) int32 weights in
    PIL's 22-bit fixed point). An unchanged size gives one tap of weight 1 (PIL skips that pass). Read-only, cached.
    """
    if resample not in _SUPPORT:
        raise ValueError(msg("pil_filter_tables", "unknown filter", repr(resample), sorted(_SUPPORT)))
    n = out_size - first if count is None else count
    if in_size == out_size:
        xmin = np.arange(first, first + n, dtype=np.int32)
        xcount = np.ones(n, np.int32)
        coeff = np.full((n, 1), 1 << PRECISION_BITS, np.int32)
    else:
        filt = _lanczos if resample == "lanczos" else _bicubic
        scale = float(np.float32(in_size) - np.float32(0.0)) / out_size  # PIL: (double)(box1 - box0) / outSize
        filterscale = max(scale, 1.0)
        support = _SUPPORT[resample] * filterscale
        ksize = int(math.ceil(support)) * 2 + 1
        xmin, xcount = np.zeros(n, np.int32), np.zeros(n, np.int32)
        coeff = np.zeros((n, ksize), np.int32)
        ss = 1.0 / filterscale
        for o in range(n):
            center = (first + o + 0.5) * scale
            lo = max(int(center - support + 0.5), 0)  # int() truncates toward zero, as C's cast
            hi = min(int(center + support + 0.5), in_size) - lo
            w = [filt((x + lo - center + 0.5) * ss) for x in range(hi)]
            ww = 0.0
            for v in w:  # sequential sum, as PIL
                ww += v
            for x, v in enumerate(w):
                k = v / ww if ww != 0.0 else v
                coeff[o, x] = int(-0.5 + k * (1 << PRECISION_BITS)) if k < 0 else int(0.5 + k * (1 << PRECISION_BITS))
            xmin[o], xcount[o] = lo, hi
    for a in (xmin, xcount, coeff):
        a.setflags(write=False)
    return xmin, xcount, coeff


@lru_cache(maxsize=64)
def bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torch's bilinear (align_corners=False) taps along one axis: out[j] = in[i0]*w0 + in[i1]*w1. Read-only."""
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    j = np.arange(out_size, dtype=f32) + f32(0.5)
    src = (np.float64(scale) * j.astype(np.float64) - 0.5).astype(f32)  # one rounding: fma(scale, j+0.5, -0.5)
    src = np.maximum(src, f32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam = np.clip(src - i0.astype(f32), f32(0), f32(1)).astype(f32)
    i1 = i0 + (i0 < in_size - 1)
    if in_size == out_size:
        i0 = i1 = np.arange(out_size, dtype=np.int64)
        lam = np.zeros(out_size, f32)
    out = (i0.astype(np.int32), i1.astype(np.int32), (f32(1) - lam).astype(f32), lam)
    for a in out:
        a.setflags(write=False)
    return out


@dataclass(frozen=True)
class PreprocessPlan:
    """Everything the three kernels need for one input frame size (tables are host arrays, read-only)."""

    h0: int
    w0: int
    height: int  # H of the CUT3R image
    width: int  # W
    size: int  # R of the human-branch square
    resample: str  # 'lanczos' (shrinking) or 'bicubic' (enlarging)
    y_first: int  # first source row the vertical taps read
    n_rows: int  # source rows resampled horizontally
    h_tables: tuple[np.ndarray, np.ndarray, np.ndarray]
    v_tables: tuple[np.ndarray, np.ndarray, np.ndarray]  # ymin relative to y_first
    pad: Any  # runtime.preprocess.PadInfo
    pad_taps_y: tuple[np.ndarray, ...]
    pad_taps_x: tuple[np.ndarray, ...]


def make_plan(h0: int, w0: int, size: int, mhmr_res: int, square_ok: bool = False) -> PreprocessPlan:
    """Tables for a (h0, w0) frame: resize to `size` (long side), centre crop, and pad to mhmr_res squared."""
    H, W = output_shape(w0, h0, size, square_ok)
    w1, h1 = resized_size(w0, h0, size)
    x0, y0, _, _ = (int(round(v)) for v in crop_box(w1, h1, size, square_ok))  # PIL.crop's rounding
    resample = "lanczos" if max(w0, h0) > max(w1, h1) else "bicubic"
    hx = pil_filter_tables(w0, w1, resample, x0, W)
    vy, vc, vk = pil_filter_tables(h0, h1, resample, y0, H)
    y_first = int(vy.min())
    n_rows = int((vy + vc).max()) - y_first
    v_rel = (vy - y_first).astype(np.int32)
    v_rel.setflags(write=False)
    pad = pad_geometry(H, W, mhmr_res)
    return PreprocessPlan(h0, w0, H, W, mhmr_res, resample, y_first, n_rows, hx, (v_rel, vc, vk), pad,
                          bilinear_taps(H, pad.new_h), bilinear_taps(W, pad.new_w))


def _frame_layout(frame: np.ndarray, channel_order: str) -> tuple[np.ndarray, int, int]:
    """Validate a uint8 frame like preprocess_rgb; returns (contiguous (H, W, C) array, channels, bgr flag)."""
    order = str(channel_order).upper()
    if order not in ("RGB", "BGR"):
        raise Human3RError(msg("preprocess (GPU)", "unknown channel order", repr(channel_order), "'RGB' or 'BGR'"))
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        raise Human3RError(msg("preprocess (GPU)", "frame dtype not supported", a.dtype, "uint8"))
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise Human3RError(msg("preprocess (GPU)", "frame shape not supported", a.shape,
                               "(H, W, 3), (H, W, 4) or (H, W) / (H, W, 1)"))
    return np.ascontiguousarray(a), int(a.shape[2]), int(order == "BGR" and a.shape[2] > 1)


def _import_pycuda() -> tuple[Any, Any]:
    try:
        import pycuda.compiler as compiler  # noqa: PLC0415 - lazy by design
        import pycuda.driver as driver  # noqa: PLC0415
    except ImportError as exc:
        raise BackendUnavailable(msg("CUDA preprocessing", "pycuda is not installed", repr(exc), "pycuda >= 2024.1",
                                     "pip install 'human3r-edge[gpu]', or use runtime.preprocess on the CPU")) from exc
    return driver, compiler


def _kernel_pointer(ptr: Any) -> Any:
    """A device address as a kernel argument: pycuda refuses plain Python ints (TensorRT buffers, CUDA array
    interface addresses), so those become np.uintp; allocations and None pass through."""
    if isinstance(ptr, (int, np.integer)) and not isinstance(ptr, (bool, np.bool_)):
        return np.uintp(int(ptr))
    return ptr


class CudaPreprocessor:
    """Frame -> (CUT3R image (3, H, W), human-branch image (3, R, R)) float32 on the GPU.

    Tables are built and uploaded once per input frame size (cached); output device buffers are reallocated
    only when the output size changes. After `launch`, `img_dev` and `mhmr_dev` hold the results (owned by this
    object, valid until the next call) and can be bound directly as engine inputs. Not thread-safe.
    """

    def __init__(self, size: int, mhmr_res: int, *, square_ok: bool = False, driver: Any = None,
                 compiler: Any = None) -> None:
        if driver is None:  # compiler: unused (the kernels load from shipped PTX); kept for old callers
            driver, compiler = _import_pycuda()
        self.driver = driver
        self.size, self.mhmr_res, self.square_ok = int(size), int(mhmr_res), square_ok
        self._module = load_module(driver, "preprocess.cu")  # into the current context: the backend's primary one
        self._h = self._module.get_function("pil_resize_h_kernel")
        self._v = self._module.get_function("pil_resize_v_kernel")
        self._pad = self._module.get_function("bilinear_pad_kernel")
        self._plans: dict[tuple[int, int], tuple[PreprocessPlan, dict[str, Any]]] = {}
        self._buffers: dict[str, tuple[int, Any]] = {}
        self.plan: PreprocessPlan | None = None
        self.img_dev: Any = None
        self.mhmr_dev: Any = None

    def _alloc(self, name: str, nbytes: int) -> Any:
        have = self._buffers.get(name)
        if have is None or have[0] < nbytes:
            self._buffers[name] = (nbytes, self.driver.mem_alloc(max(nbytes, 4)))
        return self._buffers[name][1]

    def _upload(self, arr: np.ndarray) -> Any:
        arr = np.ascontiguousarray(arr)
        dev = self.driver.mem_alloc(max(arr.nbytes, 4))
        self.driver.memcpy_htod(dev, arr)
        return dev

    def _plan_for(self, h0: int, w0: int) -> tuple[PreprocessPlan, dict[str, Any]]:
        key = (h0, w0)
        if key not in self._plans:
            plan = make_plan(h0, w0, self.size, self.mhmr_res, self.square_ok)
            host = {"hx": plan.h_tables[0], "hc": plan.h_tables[1], "hk": plan.h_tables[2],
                    "vy": plan.v_tables[0], "vc": plan.v_tables[1], "vk": plan.v_tables[2],
                    "py0": plan.pad_taps_y[0], "py1": plan.pad_taps_y[1], "pwy0": plan.pad_taps_y[2],
                    "pwy1": plan.pad_taps_y[3], "px0": plan.pad_taps_x[0], "px1": plan.pad_taps_x[1],
                    "pwx0": plan.pad_taps_x[2], "pwx1": plan.pad_taps_x[3]}
            dev = {k: self._upload(v) for k, v in host.items()}
            dev["_host"] = host  # keeps the uploaded arrays referenced for the plan's lifetime
            self._plans[key] = (plan, dev)
        return self._plans[key]

    def launch(self, frame_ptr: Any, h0: int, w0: int, channels: int, pitch: int, bgr: bool = False, *,
               img_out: Any = None, mhmr_out: Any = None, stream: Any = None) -> PreprocessPlan:
        """Preprocess a uint8 (h0, w0, channels) frame already on the device (row pitch in bytes).

        Results land in `img_dev` (3, H, W) and `mhmr_dev` (3, R, R) float32: this object's buffers, or the
        caller's `img_out` / `mhmr_out` device pointers (e.g. an engine's input buffers: no copy at all), which
        must hold 3*H*W and 3*R*R floats. Kernels are queued on `stream` (None: the default stream), in order;
        the frame must stay valid until they have run. Returns the plan (sizes, geometry).
        """
        frame_ptr, img_out, mhmr_out = (_kernel_pointer(x) for x in (frame_ptr, img_out, mhmr_out))
        plan, t = self._plan_for(int(h0), int(w0))
        H, W, R = plan.height, plan.width, plan.size
        tmp = self._alloc("tmp", plan.n_rows * W * 3)
        self.img_dev = self._alloc("img", 3 * H * W * 4) if img_out is None else img_out
        self.mhmr_dev = self._alloc("mhmr", 3 * R * R * 4) if mhmr_out is None else mhmr_out
        i32 = np.int32
        gx = (W + _BLOCK - 1) // _BLOCK
        on = {} if stream is None else {"stream": stream}
        self._h(frame_ptr, i32(pitch), i32(channels), i32(bool(bgr)), i32(plan.y_first), i32(plan.n_rows), t["hx"],
                t["hc"], t["hk"], i32(plan.h_tables[2].shape[1]), i32(W), tmp, block=(_BLOCK, 1, 1),
                grid=(gx, plan.n_rows), **on)
        self._v(tmp, i32(W), i32(H), t["vy"], t["vc"], t["vk"], i32(plan.v_tables[2].shape[1]), self.img_dev,
                block=(_BLOCK, 1, 1), grid=(gx, H), **on)
        p = plan.pad
        self._pad(self.img_dev, i32(H), i32(W), i32(R), i32(p.top), i32(p.left), i32(p.new_h), i32(p.new_w),
                  t["py0"], t["py1"], t["pwy0"], t["pwy1"], t["px0"], t["px1"], t["pwx0"], t["pwx1"], self.mhmr_dev,
                  block=(_BLOCK, 1, 1), grid=((R + _BLOCK - 1) // _BLOCK, R), **on)
        self.plan = plan
        return plan

    def close(self) -> None:
        """Free every device buffer and table now, while their CUDA context is alive (after it is detached
        pycuda cannot free them: they would leak). Unusable afterwards."""
        for _, alloc in self._buffers.values():
            alloc.free()
        for _, dev in self._plans.values():
            for k, v in dev.items():
                if k != "_host":
                    v.free()
        self._buffers, self._plans = {}, {}
        self.img_dev = self.mhmr_dev = self.plan = None

    def upload(self, frame: np.ndarray, channel_order: str = "RGB") -> tuple[Any, int, int, int, int, bool]:
        """Copy a host uint8 frame into this object's device frame buffer (synchronously).

        Returns the arguments `launch` takes for it: (pointer, h0, w0, channels, pitch, bgr).
        """
        a, channels, bgr = _frame_layout(frame, channel_order)
        h0, w0 = a.shape[:2]
        dev = self._alloc("frame", a.nbytes)
        self.driver.memcpy_htod(dev, a)
        return dev, h0, w0, channels, w0 * channels, bool(bgr)

    def process(self, frame: np.ndarray, channel_order: str = "RGB") -> tuple[np.ndarray, np.ndarray]:
        """Host frame in, host images out: (3, H, W) and (3, R, R) float32, new arrays owned by the caller.

        frame: (H0, W0, 3|4) or (H0, W0[, 1]) uint8 in `channel_order` ('RGB' or 'BGR'), as preprocess_rgb.
        """
        plan = self.launch(*self.upload(frame, channel_order))
        img = np.empty((3, plan.height, plan.width), np.float32)
        mhmr = np.empty((3, plan.size, plan.size), np.float32)
        self.driver.memcpy_dtoh(img, self.img_dev)
        self.driver.memcpy_dtoh(mhmr, self.mhmr_dev)
        return img, mhmr
