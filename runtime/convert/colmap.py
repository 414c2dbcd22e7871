"""Write a run folder as a COLMAP text model: cameras.txt, images.txt, points3D.txt (pure text, no dependency).

Conventions (COLMAP's): one PINHOLE camera per image (the focal is estimated per frame), `fx fy cx cy` in pixels
of the SOURCE frames with the centre of the top-left pixel at (0.5, 0.5); images.txt holds world-to-camera poses
(QW QX QY QZ TX TY TZ, x right, y down, z forward: the run's OpenCV convention) named NNNNNN.png after the source
frame number (extract frames with `ffmpeg -i VIDEO -start_number 0 %06d.png`); points3D.txt holds the fused scene
points with an empty track (the run does not keep 2D observations) and error 0.

The model image is the source frame resized (PIL, pixel centres scale) and centre-cropped (runtime/preprocess.py),
or resized to cover and cropped with `--fit crop`; a model-image pixel u maps to the source pixel
(u + crop_left + 0.5) * W0 / W1 in COLMAP's coordinates, and K is mapped the same way.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from human3r_edge.runtime.geometry import matrix_to_quaternion
from human3r_edge.runtime.outputs.atomic import atomic_write
from human3r_edge.runtime.convert.run_folder import RunFolder


@dataclass(frozen=True)
class PixelMap:
    """Model-image pixel index u -> COLMAP source pixel coordinate (u + ox + 0.5) * sx (same for v with oy, sy)."""

    sx: float = 1.0
    sy: float = 1.0
    ox: float = 0.0
    oy: float = 0.0
    source_wh: tuple[int, int] | None = None  # None: cameras stay in model-image pixels
    how: str = "model-image pixels"

    def K(self, K: np.ndarray) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in COLMAP source pixels of a model-image K (3, 3)."""
        return (float(K[0, 0] * self.sx), float(K[1, 1] * self.sy), float((K[0, 2] + self.ox + 0.5) * self.sx),
                float((K[1, 2] + self.oy + 0.5) * self.sy))


@dataclass
class ColmapReport:
    path: Path
    cameras: int = 0
    images: int = 0
    points: int = 0
    pixels: str = ""
    notes: list[str] = field(default_factory=list)


def pixel_map(model_wh: tuple[int, int], source_wh: tuple[int, int] | None) -> PixelMap:
    """How the run turned a source frame of `source_wh` into the model image of `model_wh` (runtime/session.py):
    the reference's resize + centre crop when it gives the model size, else --fit crop's cover + crop."""
    from human3r_edge.runtime.preprocess import crop_box, output_shape, resized_size

    if source_wh is None or not all(model_wh):
        return PixelMap()
    (w, h), (w0, h0) = model_wh, source_wh
    size = max(w, h)
    try:
        exact = output_shape(w0, h0, size) == (h, w)
    except ValueError:
        exact = False
    if exact:
        w1, h1 = resized_size(w0, h0, size)
        left, top = (int(round(v)) for v in crop_box(w1, h1, size)[:2])
        how = "source pixels (resize + centre crop)"
    else:
        scale = max(w / w0, h / h0)
        w1, h1 = max(w, round(w0 * scale)), max(h, round(h0 * scale))
        left, top = (w1 - w) // 2, (h1 - h) // 2
        how = "source pixels (cover + crop, --fit crop)"
    return PixelMap(w0 / w1, h0 / h1, float(left), float(top), (w0, h0), how)


def probe_source_size(source: str | None) -> tuple[int, int] | None:
    """(W, H) of a run's source (video file or image folder), or None when it cannot be opened here."""
    if not source:
        return None
    p = Path(source)
    if p.is_dir():
        from PIL import Image

        for f in sorted(p.iterdir()):
            try:
                with Image.open(f) as im:
                    from PIL.ImageOps import exif_transpose

                    return exif_transpose(im).size
            except OSError:
                continue
        return None
    if p.is_file():
        import cv2

        cap = cv2.VideoCapture(str(p))
        try:
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        finally:
            cap.release()
        return (w, h) if w > 0 and h > 0 else None
    return None


def write_colmap(rf: RunFolder, out: Path, source_wh: tuple[int, int] | None = None,
                 max_points: int = 500_000) -> ColmapReport:
    """Write cameras.txt, images.txt and points3D.txt of `rf` into the folder `out`."""
    rep = ColmapReport(out)
    if source_wh is None:
        source_wh = probe_source_size(rf.summary.get("source"))
        if source_wh is None and rf.frames:
            rep.notes.append("the run's source could not be opened here: cameras are in model-image pixels "
                             "(pass --source-size WxH for source pixels)")
    pm = pixel_map((rf.width, rf.height), source_wh)
    rep.pixels = pm.how
    W, H = pm.source_wh or (rf.width, rf.height)
    cams, imgs = io.StringIO(), io.StringIO()
    cams.write("# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
               f"# Number of cameras: {len(rf.frames)}\n")
    imgs.write("# Image list with two lines of data per image:\n"
               "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n#   POINTS2D[] as (X, Y, POINT3D_ID)\n"
               f"# Number of images: {len(rf.frames)}, mean observations per image: 0\n")
    fallback = 0
    for i, fr in enumerate(rf.frames, start=1):
        fallback += not fr.focal_ok
        fx, fy, cx, cy = pm.K(rf.camera_K(fr))
        cams.write(f"{i} PINHOLE {W} {H} {fx:.10g} {fy:.10g} {cx:.10g} {cy:.10g}\n")
        u, _, vt = np.linalg.svd(fr.c2w[:3, :3])  # c2w is stored in float32: re-orthonormalise it
        R = (u @ vt).T  # world-to-camera rotation
        q = matrix_to_quaternion(R)
        t = -R @ fr.c2w[:3, 3]
        imgs.write(f"{i} {q[0]:.12g} {q[1]:.12g} {q[2]:.12g} {q[3]:.12g} {t[0]:.12g} {t[1]:.12g} {t[2]:.12g} "
                   f"{i} {fr.index:06d}.png\n\n")
    if fallback:
        rep.notes.append(f"{fallback} of {len(rf.frames)} frames had a degenerate focal (0 or NaN): their cameras "
                         "use a 60-degree FOV (as the preview does)")
    pts, col = rf.scene_points()
    if pts.shape[0] > max_points:
        keep = np.sort(np.random.default_rng(0).choice(pts.shape[0], max_points, replace=False))
        rep.notes.append(f"points decimated {pts.shape[0]} -> {max_points} (--max-points)")
        pts, col = pts[keep], col[keep]
    p3 = io.StringIO()
    p3.write("# 3D point list with one line of data per point:\n"
             "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n"
             f"# Number of points: {pts.shape[0]}, mean track length: 0\n")
    if pts.shape[0]:
        table = np.concatenate([np.arange(1, pts.shape[0] + 1)[:, None], pts.astype(np.float64),
                                col.astype(np.float64), np.zeros((pts.shape[0], 1))], 1)
        np.savetxt(p3, table, fmt="%d %.7g %.7g %.7g %d %d %d %d")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "cameras.txt", cams.getvalue())
    atomic_write(out / "images.txt", imgs.getvalue())
    atomic_write(out / "points3D.txt", p3.getvalue())
    rep.cameras = rep.images = len(rf.frames)
    rep.points = int(pts.shape[0])
    return rep
