"""The preview video: the model input with each person's projected mesh drawn in its track colour."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.errors import Human3RError, msg


def track_color(track_id: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour per track id (golden-ratio hue steps)."""
    import colorsys

    h = (0.61803398875 * track_id + 0.12) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_meshes(image_rgb: np.ndarray, people: Any, K: np.ndarray, faces: np.ndarray | None,
                scale: int = 1, alpha: float = 0.7) -> np.ndarray:
    """The image (H, W, 3) uint8 RGB upscaled by `scale` with each person's SMPL-X mesh projected and shaded
    (back faces culled, depth-sorted in slabs). Returns a new (H*scale, W*scale, 3) uint8 RGB image."""
    import cv2

    img = np.ascontiguousarray(image_rgb)
    if scale != 1:
        img = cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    canvas = img.copy()
    k = np.asarray(K, np.float64)
    if not np.all(np.isfinite(k)) or k[0, 0] <= 0:
        return img
    order = sorted(people, key=lambda p: -float(p.transl[2]))  # far people first
    for p in order:
        color = np.array(track_color(p.track_id), np.float64)
        if p.vertices_cam is not None and faces is not None:
            _draw_mesh(canvas, np.asarray(p.vertices_cam, np.float64), faces, k, scale, color)
        u = (k[0, 0] * p.transl[0] / max(p.transl[2], 1e-6) + k[0, 2]) * scale
        v = (k[1, 1] * p.transl[1] / max(p.transl[2], 1e-6) + k[1, 2]) * scale
        if np.isfinite(u) and np.isfinite(v) and abs(u) < 1e5 and abs(v) < 1e5:
            cv2.putText(canvas, str(p.track_id), (int(u), int(v)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * scale,
                        tuple(int(c) for c in color), max(1, scale // 2), cv2.LINE_AA)
    return cv2.addWeighted(canvas, alpha, img, 1.0 - alpha, 0.0)


def _draw_mesh(canvas: np.ndarray, v: np.ndarray, faces: np.ndarray, k: np.ndarray, scale: int,
               color: np.ndarray, slabs: int = 8, shades: int = 6) -> None:
    import cv2

    tri = v[faces]  # (F, 3, 3) camera coordinates
    z = tri[:, :, 2]
    front = np.all(z > 1e-3, axis=1)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    center = tri.mean(axis=1)
    facing = -np.sum(normal * center, axis=1) / (np.linalg.norm(normal, axis=1) * np.linalg.norm(center, axis=1)
                                                  + 1e-12)
    keep = front & (facing > 0)
    if not np.any(keep):
        return
    tri, facing, depth = tri[keep], facing[keep], center[keep, 2]
    uv = np.stack([k[0, 0] * tri[..., 0] / tri[..., 2] + k[0, 2], k[1, 1] * tri[..., 1] / tri[..., 2] + k[1, 2]],
                  -1) * scale
    inside = np.all(np.abs(uv) < 1e5, axis=(1, 2))
    uv, facing, depth = uv[inside], facing[inside], depth[inside]
    pts = np.rint(uv).astype(np.int32)  # (F, 3, 2)
    order = np.argsort(-depth)  # back to front
    shade = np.minimum((facing * shades).astype(np.int64), shades - 1)
    for slab in np.array_split(order, slabs):
        for s in range(shades):
            sel = slab[shade[slab] == s]
            if sel.size:
                c = color * (0.35 + 0.65 * (s + 0.5) / shades)
                cv2.fillPoly(canvas, list(pts[sel]), tuple(int(x) for x in c), cv2.LINE_AA)


class PreviewWriter:
    """preview.mp4 through OpenCV's VideoWriter (mp4v), written to a temp name and renamed on close."""

    def __init__(self, path: Path, fps: float, size_wh: tuple[int, int]) -> None:
        import cv2

        self.path = path
        self.tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
        self.size = size_wh
        self.writer: Any = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), size_wh)
        if not self.writer.isOpened():
            raise Human3RError(msg(str(path), "OpenCV cannot write mp4v video", hint="an OpenCV build with FFmpeg"))
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        if (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size)
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self.writer is None:
            return
        self.writer.release()
        self.writer = None
        if self.frames:
            os.replace(self.tmp, self.path)
        else:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
