"""Torch-free per-frame preprocessing, bit-identical to the reference demo (`load_images`, `pad_image`, `unpad_*`).

    frame (H0, W0) uint8 --PIL resize of the long side to `size` (LANCZOS when shrinking, else BICUBIC)--> (H1, W1)
          --centre crop to multiples of 16--> --(x/255 - 0.5)/0.5--> img (3, H, W) float32 in [-1, 1]
    img --bilinear (align_corners=False, no antialias) to fit RxR, int() sizes--> --centre pad with -1-->
          img_mhmr (3, R, R)   (the ImageNet normalisation happens inside the model / encoder graph)

The first resize is PIL's own (as in the reference), so it is exact. The bilinear resize re-implements torch's
generic CPU kernel, including the fused multiply-adds its x86 build uses, and matches it bit for bit.
Note: the reference demo writes video frames to JPEG before reading them; frames given here as arrays skip that.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Union

import numpy as np
from PIL import Image
from PIL.ImageOps import exif_transpose

from human3r_edge.errors import Human3RError, msg

PATCH = 16  # CUT3R patch size: the crop makes both sides multiples of it
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# PIL modes whose conversion to RGB clips to 255 instead of rescaling (16/32-bit integer and float images)
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}

PathLike = Union[str, "os.PathLike[str]"]


def _u8_to_unit_lut() -> np.ndarray:
    """The reference's ToTensor + Normalize(0.5, 0.5) for each uint8 value, in the same float32 op order."""
    x = np.arange(256, dtype=np.float32) / np.float32(255.0)
    return (x - np.float32(0.5)) / np.float32(0.5)  # (256,) float32


_LUT = _u8_to_unit_lut()


# ------------------------------------------------------------------------------------------ CUT3R image
def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size <= 0:
        raise Human3RError(msg("preprocess", "size must be a positive int", repr(size), "e.g. 512 (the demo's --size)"))


def _long_edge(width: int, height: int, size: int) -> int:
    """Target long side: `size`, except the reference's 224 branch, which brings the SHORT side to 224."""
    return round(size * max(width / height, height / width)) if size == 224 else size


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(W1, H1) after the reference's long-side resize (`round(x * long / max(W, H))` per side)."""
    long_edge = _long_edge(width, height, size)
    s = max(width, height)
    return int(round(width * long_edge / s)), int(round(height * long_edge / s))


def crop_box(width: int, height: int, size: int, square_ok: bool = False) -> tuple[float, float, float, float]:
    """The reference's centre-crop box (left, top, right, bottom) for a resized image of `width` x `height`."""
    cx, cy = width // 2, height // 2
    if size == 224:  # reference branch for the 224 linear-head models: a centred square
        half = min(cx, cy)
        return (cx - half, cy - half, cx + half, cy + half)
    halfw, halfh = ((2 * cx) // 16) * 8, ((2 * cy) // 16) * 8
    if not square_ok and width == height:
        h34 = 3 * halfw / 4  # square frames become 4:3 landscape (a float: PIL.crop rounds it)
        return (cx - halfw, cy - h34, cx + halfw, cy + h34)
    return (cx - halfw, cy - halfh, cx + halfw, cy + halfh)


def output_shape(width: int, height: int, size: int, square_ok: bool = False) -> tuple[int, int]:
    """(H, W) of the CUT3R image for a `width` x `height` frame, without touching pixels.

    Raises Human3RError if the result is not a positive multiple of 16 on both sides (the model cannot take it).
    """
    _check_size(size)
    if width <= 0 or height <= 0:
        raise Human3RError(msg("preprocess", "empty frame", f"{width}x{height}", "a frame with pixels"))
    w1, h1 = resized_size(width, height, size)
    x0, y0, x1, y1 = (int(round(v)) for v in crop_box(w1, h1, size, square_ok))  # PIL.crop's rounding
    h, w = abs(y1 - y0), abs(x1 - x0)
    if h < PATCH or w < PATCH or h % PATCH or w % PATCH:
        raise Human3RError(
            msg("preprocess", "frame gives an image the model cannot take", f"{width}x{height} -> resize "
                f"{w1}x{h1} -> crop {w}x{h} (WxH)", f"both sides positive multiples of {PATCH}",
                "the frame is too small or too elongated for this --size (square frames are cropped to 4:3, "
                "so their size must be a multiple of 64)"))
    return h, w


def preprocess_pil(img: Image.Image, size: int, square_ok: bool = False) -> np.ndarray:
    """Reference `load_images` on an already opened PIL image (after EXIF transpose).

    Returns a new (3, H, W) float32 C-contiguous array in [-1, 1], owned by the caller.
    """
    _check_size(size)
    if img.mode in _HIGH_DEPTH_MODES:
        raise Human3RError(
            msg("preprocess", "16/32-bit or float image", f"PIL mode {img.mode!r}", "an 8-bit image (L, RGB, RGBA, P)",
                "PIL would clip it to 255 instead of rescaling; convert it to 8 bits first"))
    if img.mode != "RGB":
        img = img.convert("RGB")  # as the reference: L replicated, alpha dropped (not composited), P expanded
    h, w = output_shape(img.size[0], img.size[1], size, square_ok)
    w1, h1 = resized_size(img.size[0], img.size[1], size)
    shrink = max(img.size) > _long_edge(img.size[0], img.size[1], size)
    img = img.resize((w1, h1), Image.Resampling.LANCZOS if shrink else Image.Resampling.BICUBIC)
    img = img.crop(crop_box(w1, h1, size, square_ok))
    if img.size != (w, h):  # output_shape and PIL disagree: would be a bug here, not a user error
        raise Human3RError(msg("preprocess", "internal crop size mismatch", img.size, (w, h)))
    return u8_to_unit(np.asarray(img))


def u8_to_unit(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 `(x/255 - 0.5)/0.5`, bit-identical to ToTensor+Normalize(0.5)."""
    h, w = rgb.shape[:2]
    out = np.empty((3, h, w), np.float32)  # (3, H, W)
    for c in range(3):
        np.take(_LUT, rgb[:, :, c], out=out[c], mode="clip")  # uint8 indices: always in range
    return out


def preprocess_rgb(frame: np.ndarray, size: int, *, channel_order: str = "RGB", square_ok: bool = False
                   ) -> np.ndarray:
    """A decoded frame -> the CUT3R image, exactly as the reference's `load_images` would make it from that frame.

    frame: (H0, W0, 3) uint8 in `channel_order` ('RGB', or 'BGR' for OpenCV frames); (H0, W0) or (H0, W0, 1)
    grayscale uint8 is replicated to RGB; (H0, W0, 4) RGBA/BGRA has its alpha dropped (as PIL's convert('RGB')).
    Other dtypes (uint16, float) are refused. The frame is not modified and not retained.
    Returns a new (3, H, W) float32 array in [-1, 1] owned by the caller; H, W = `output_shape(W0, H0, size)`.
    """
    order = str(channel_order).upper()
    if order not in ("RGB", "BGR"):
        raise Human3RError(msg("preprocess", "unknown channel order", repr(channel_order), "'RGB' or 'BGR'"))
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        hint = ("scale 16-bit frames to 8 bits first, e.g. (x >> 8).astype(np.uint8)" if a.dtype == np.uint16 else
                "pass the decoded 0..255 uint8 pixels, not normalised floats")
        raise Human3RError(msg("preprocess", "frame dtype not supported", a.dtype, "uint8", hint))
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        img = Image.fromarray(np.ascontiguousarray(a), "L")
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        a = np.ascontiguousarray(a)
        h0, w0, c = a.shape
        if order == "BGR":  # PIL unpacks BGR / BGRX rows itself: cheaper than a reversed numpy copy
            img = Image.frombuffer("RGB", (w0, h0), a, "raw", "BGR" if c == 3 else "BGRX", 0, 1)
        else:
            img = Image.fromarray(a, "RGB" if c == 3 else "RGBA")
    else:
        raise Human3RError(msg("preprocess", "frame shape not supported", a.shape,
                               "(H, W, 3) colour, (H, W, 4) with alpha, or (H, W) / (H, W, 1) grayscale"))
    return preprocess_pil(img, size, square_ok)


def load_image(path: PathLike, size: int, *, square_ok: bool = False) -> np.ndarray:
    """Open an image file as the reference does (PIL, EXIF transpose, RGB) and preprocess it.

    Returns a new (3, H, W) float32 array in [-1, 1] owned by the caller.
    """
    return preprocess_pil(_open_image(path), size, square_ok)


def read_rgb(path: PathLike) -> np.ndarray:
    """Open an image file as the reference does (PIL, EXIF transpose) -> (H, W, 3) uint8 RGB, owned by the caller
    (what `load_image` preprocesses; the GPU preprocessing kernels take it)."""
    img = _open_image(path)
    if img.mode in _HIGH_DEPTH_MODES:
        raise Human3RError(msg("read_rgb", "16/32-bit or float image", f"PIL mode {img.mode!r}", "an 8-bit image"))
    return np.asarray(img.convert("RGB")).copy()


def _open_image(path: PathLike) -> Image.Image:
    try:
        with Image.open(os.fspath(path)) as im:
            im.load()
            img = exif_transpose(im)
    except (OSError, SyntaxError) as exc:  # PIL raises UnidentifiedImageError (an OSError) or SyntaxError
        raise Human3RError(msg(f"image {os.fspath(path)}", "cannot be read", repr(exc),
                               "a readable image file (jpg, png, bmp)")) from exc
    return img


# ------------------------------------------------------------------------------------------ human branch
@dataclass(frozen=True)
class PadInfo:
    """Geometry of `pad_image`: the (H, W) image was resized to (new_h, new_w) and placed at (left, top) in RxR."""

    height: int
    width: int
    size: int  # R
    new_h: int
    new_w: int
    top: int
    left: int
    scale: float  # min(R/H, R/W) (python float, as the reference computes it)


def pad_geometry(height: int, width: int, size: int) -> PadInfo:
    """The reference `pad_image` geometry: `int()`-truncated scaled sizes, floor-centred padding."""
    if height <= 0 or width <= 0 or size <= 0:
        raise Human3RError(msg("pad_image", "sizes must be positive", (height, width, size)))
    scale = min(size / height, size / width)
    new_h, new_w = int(height * scale), int(width * scale)
    if new_h <= 0 or new_w <= 0:
        raise Human3RError(msg("pad_image", "image too elongated for the square", f"{width}x{height} -> "
                               f"{new_w}x{new_h} in {size}x{size}", "both resized sides >= 1"))
    return PadInfo(height, width, size, new_h, new_w, (size - new_h) // 2, (size - new_w) // 2, scale)


_BAND = 64  # output rows per vertical pass of resize_bilinear (keeps its float64 temporaries in cache)


def _fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray | float) -> np.ndarray:
    """float32 fused multiply-add `round(a*b + c)`, emulated in float64: a*b of two float32 is exact there, and the
    double rounding of the sum can only differ from a true fma for sums within 2^-29 ulp of a float32 tie."""
    t = a.astype(np.float64)
    t *= b
    t += c
    return t.astype(np.float32)


@lru_cache(maxsize=32)
def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of torch's CPU bilinear kernel along one axis (align_corners=False), float32 math.

    The source index is `scale*(j+0.5) - 0.5` evaluated as one fused multiply-add, as torch's x86 build computes it
    (a separate multiply flips a weight by one ulp, e.g. j=3 for 128->112).
    Returns (i0, i1, w0, w1): out[j] = in[i0[j]] * w0[j] + in[i1[j]] * w1[j]. Cached; read-only.
    """
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    src = _fma32(np.full(out_size, scale, f32), np.arange(out_size, dtype=f32) + f32(0.5), -0.5)
    src = np.maximum(src, f32(0))  # (out,)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam = np.clip(src - i0.astype(f32), f32(0), f32(1)).astype(f32)
    i1 = i0 + (i0 < in_size - 1)
    if in_size == out_size:  # torch copies: one tap of weight 1 (so a NaN neighbour cannot leak in)
        i0 = i1 = np.arange(out_size, dtype=np.int64)
        lam = np.zeros(out_size, f32)
    w0 = (f32(1) - lam).astype(f32)
    for a in (i0, i1, w0, lam):
        a.setflags(write=False)
    return i0, i1, w0, lam


def resize_bilinear(img: np.ndarray, out_h: int, out_w: int, out: np.ndarray | None = None) -> np.ndarray:
    """torch `F.interpolate(img, (out_h, out_w), mode='bilinear', align_corners=False)` (no antialias) in numpy.

    Reproduces torch's generic CPU kernel bit for bit: per output, `fma(row0, wy0, row1*wy1)` where each row value is
    `fma(x0, wx0, x1*wx1)` (torch's x86 build contracts `t0*w0 + t1*w1` this way).
    img: (..., H, W) float32. out: optional (..., out_h, out_w) float32 view to write into.
    Returns `out` (or a new array owned by the caller).
    """
    x = np.ascontiguousarray(img, dtype=np.float32)
    h, w = x.shape[-2:]
    y0, y1, wy0, wy1 = _linear_taps(h, out_h)
    x0, x1, wx0, wx1 = _linear_taps(w, out_w)
    if out is None:
        out = np.empty(x.shape[:-2] + (out_h, out_w), np.float32)
    # horizontal pass on every source row first: the same operations per output value as torch's kernel
    right = np.take(x, x1, axis=-1)
    right *= wx1
    row = _fma32(np.take(x, x0, axis=-1), wx0, right)  # (..., H, out_w) C-contiguous
    # vertical pass, band by band
    for s in range(0, out_h, _BAND):
        e = min(out_h, s + _BAND)
        below = np.take(row, y1[s:e], axis=-2)
        below *= wy1[s:e, None]
        out[..., s:e, :] = _fma32(np.take(row, y0[s:e], axis=-2), wy0[s:e, None], below)  # (..., band, out_w)
    return out


def pad_image(img: np.ndarray, size: int, pad_value: float = -1.0) -> tuple[np.ndarray, PadInfo]:
    """Reference `pad_image`: fit the image into a `size` x `size` square (bilinear), centre it, pad.

    img: (3, H, W) or (B, 3, H, W) float32 in [-1, 1] (any leading dims work). size: R.
    Returns (padded (..., R, R) float32, PadInfo). The padded array is new and owned by the caller.
    """
    x = np.asarray(img)
    if x.ndim < 2 or x.dtype != np.float32:
        raise Human3RError(msg("pad_image", "expected a float32 (..., H, W) array", f"{x.dtype} {x.shape}",
                               "(3, H, W) float32 from preprocess_rgb"))
    info = pad_geometry(int(x.shape[-2]), int(x.shape[-1]), int(size))
    out = np.full(x.shape[:-2] + (size, size), pad_value, np.float32)  # (..., R, R)
    view = out[..., info.top:info.top + info.new_h, info.left:info.left + info.new_w]
    resize_bilinear(x, info.new_h, info.new_w, out=view)
    return out, info


def imagenet_normalize(img_mhmr: np.ndarray) -> np.ndarray:
    """What the model does to `img_mhmr` before DINOv2: `((x*0.5+0.5) - mean) / std` per channel.

    img_mhmr: (..., 3, R, R) float32. Returns a new float32 array. (The exported graphs do this themselves.)
    """
    mean = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, np.float32)[:, None, None]
    return ((np.asarray(img_mhmr, np.float32) * np.float32(0.5) + np.float32(0.5)) - mean) / std


def unpad_uv(uv: np.ndarray, size: int, height: int, width: int) -> np.ndarray:
    """Reference `unpad_uv`: (x, y) pixels in the padded RxR square -> (x, y) pixels of the H x W CUT3R image.

    Proportional scale max(H, W)/R, integer centring offsets, then clamped to [0, W-1] x [0, H-1] (it is not the
    exact inverse of `pad_image`). uv: (..., 2) float. Returns a new (..., 2) float32 array.
    """
    f32 = np.float32
    m = max(int(height), int(width))
    scale = f32(m) / f32(size)  # the reference divides a 0-d int32 tensor: a float32 quotient
    out = np.asarray(uv, dtype=f32) * scale
    out -= np.asarray([(m - width) // 2, (m - height) // 2], dtype=f32)
    np.clip(out[..., 0], f32(0), f32(width - 1), out=out[..., 0])
    np.clip(out[..., 1], f32(0), f32(height - 1), out=out[..., 1])
    return out


def uv_to_patch_index(uv: np.ndarray, width: int, patch: int = PATCH) -> np.ndarray:
    """Row-major CUT3R patch index `(y // p) * (W // p) + (x // p)` of unpadded (x, y) pixels; (n, 2) -> (n,) int32.

    Floor division in float32 then truncation, as the reference's `(loc // patch).int()`.
    """
    cell = np.floor_divide(np.asarray(uv, np.float32), np.float32(patch)).astype(np.int32)  # (n, 2) (x, y)
    return cell[..., 1] * np.int32(width // patch) + cell[..., 0]


@lru_cache(maxsize=32)
def _nearest_index(in_size: int, out_size: int) -> np.ndarray:
    """Source index of torch's CPU 'nearest' resize for each output index (float32 scale, floorf, clamp)."""
    j = np.arange(out_size, dtype=np.int64)
    if out_size == in_size:
        idx = j
    elif out_size == 2 * in_size:
        idx = j >> 1
    else:
        scale = np.float32(in_size) / np.float32(out_size)
        idx = np.minimum(np.floor(j.astype(np.float32) * scale).astype(np.int64), in_size - 1)
    idx.setflags(write=False)
    return idx


def unpad_image(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reference `unpad_image`: nearest-resize a padded square map to max(H, W) squared, then centre-crop H x W.

    img: (..., S, S) any dtype (S = R for masks, R/14 for score maps). Returns a new (..., H, W) array.
    """
    x = np.asarray(img)
    m = max(int(height), int(width))
    top, left = (m - height) // 2, (m - width) // 2
    rows = _nearest_index(x.shape[-2], m)[top:top + height]
    cols = _nearest_index(x.shape[-1], m)[left:left + width]
    return x[..., rows[:, None], cols[None, :]]


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PATCH", "PadInfo", "crop_box", "imagenet_normalize", "load_image",
           "output_shape", "pad_geometry", "pad_image", "preprocess_pil", "preprocess_rgb", "resize_bilinear",
           "resized_size", "u8_to_unit", "unpad_image", "unpad_uv", "uv_to_patch_index"]
