"""GStreamer video buffers in system memory as numpy frames for `Session.prepare`, and the overlay written back.

A buffer is mapped read-only (READ|WRITE only when the overlay draws into it) and wrapped as a strided numpy view
of the mapped memory: no copy. Strides and plane offsets come from the buffer's GstVideoMeta when it has one,
else from the negotiated GstVideoInfo. NV12 is converted to RGB here on the CPU (one pass, OpenCV's BT.601
integer formulas); device NV12 (memory:CUDAMemory) is handled in cuda_memory.py. The view must not outlive the
mapping: the element unmaps after `Session.prepare` returns (the Session never keeps an input frame).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from human3r_edge.errors import Human3RError, msg

# caps format -> (channels of the packed frame or 0 for planar NV12, channel order the Session is told)
FORMATS: dict[str, tuple[int, str]] = {"RGB": (3, "RGB"), "BGR": (3, "BGR"), "RGBA": (4, "RGB"),
                                       "BGRA": (4, "BGR"), "NV12": (0, "RGB")}


@dataclass(frozen=True)
class Layout:
    """Where the pixels of one video buffer lie inside its mapped memory."""

    format: str  # one of FORMATS
    width: int
    height: int
    offsets: tuple[int, ...]  # bytes from the start of the mapping, per plane
    strides: tuple[int, ...]  # bytes per row, per plane


def check_format(fmt: str, width: int, height: int) -> None:
    """Refuse what the element cannot read (Human3RError in the project's shape)."""
    if fmt not in FORMATS:
        raise Human3RError(msg("human3r caps", "unsupported video format", fmt, " / ".join(FORMATS),
                               "put `videoconvert` before human3r"))
    if fmt == "NV12" and (width % 2 or height % 2):
        raise Human3RError(msg("human3r caps", "NV12 frame with an odd side", f"{width}x{height}",
                               "even width and height", "put `videoconvert ! video/x-raw,format=RGB` before human3r"))


def host_view(data: memoryview, layout: Layout) -> tuple[np.ndarray, str]:
    """The frame as numpy over the mapped memory `data` (no copy for packed formats) and its channel order.

    Returns ((H, W, 3|4) uint8 view, 'RGB'|'BGR') for packed formats, or a new (H, W, 3) RGB array for NV12.
    A read-only mapping gives a read-only view."""
    channels, order = FORMATS[layout.format]
    h, w = layout.height, layout.width
    if channels:
        return np.ndarray((h, w, channels), np.uint8, buffer=data, offset=layout.offsets[0],
                          strides=(layout.strides[0], channels, 1)), order
    y, uv = nv12_planes(data, layout)
    return nv12_to_rgb(y, uv), order


def nv12_planes(data: memoryview, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) luma and (H/2, W/2, 2) interleaved UV views of an NV12 buffer (no copy)."""
    h, w = layout.height, layout.width
    y = np.ndarray((h, w), np.uint8, buffer=data, offset=layout.offsets[0], strides=(layout.strides[0], 1))
    uv = np.ndarray((h // 2, w // 2, 2), np.uint8, buffer=data, offset=layout.offsets[1],
                    strides=(layout.strides[1], 2, 1))
    return y, uv


def nv12_to_rgb(y: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """NV12 planes -> a new (H, W, 3) uint8 RGB array (BT.601 limited range, what videoconvert assumes for SD
    and what OpenCV's COLOR_YUV2RGB_NV12 computes; the CUDA kernel kernels/nv12.cu uses the same integer math)."""
    import cv2

    return cv2.cvtColorTwoPlane(y, uv, cv2.COLOR_YUV2RGB_NV12)


def write_rgb(data: memoryview, layout: Layout, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB image into the (writable) mapped buffer in its own format (the overlay)."""
    channels, order = FORMATS[layout.format]
    src = rgb[..., ::-1] if order == "BGR" else rgb
    if channels:
        view, _ = host_view(data, layout)
        view[..., :3] = src
        return
    import cv2

    h, w = layout.height, layout.width
    i420 = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420)  # (H*3/2, W): Y, then U, then V
    y, uv = nv12_planes(data, layout)
    y[...] = i420[:h]
    chroma = i420[h:].reshape(2, h // 2, w // 2)
    uv[..., 0] = chroma[0]
    uv[..., 1] = chroma[1]


def frame_intrinsics(K: np.ndarray, width: int, height: int, size: int) -> np.ndarray:
    """K of the model image (3, 3) -> K in the input frame's pixels (the preprocessing resizes the frame to
    `size` on the long side, then centre-crops; this undoes both). Returns a new float64 (3, 3)."""
    from human3r_edge.runtime.preprocess import crop_box, resized_size

    w1, h1 = resized_size(width, height, size)
    left, top, _, _ = crop_box(w1, h1, size)
    sx, sy = width / w1, height / h1
    back = np.array([[sx, 0.0, sx * left], [0.0, sy, sy * top], [0.0, 0.0, 1.0]])
    return back @ np.asarray(K, np.float64)
