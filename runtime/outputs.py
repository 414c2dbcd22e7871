"""Output files of `human3r-edge run`, in formats common tools open; every write is atomic (temp file + rename).

    trajectory.tum          TUM RGB-D format `timestamp tx ty tz qx qy qz qw` (c2w, world frame), evo-readable
    cameras.json            per frame: intrinsics K (3x3), focal, c2w (4x4), segment; image size; conventions
    people/track_NNNN.npz   per track: frame_index, timestamp and SMPL-X parameters under the smplx keyword names
    scene.ply               fused world points with colour: confidence-filtered, people masked out, voxel-averaged
    depth/NNNNNN.npy|.png   optional per-frame depth (float32 npy, or 16-bit PNG in millimetres)
    meshes/NNNNNN_track_NNNN.ply|.obj   optional per-frame SMPL-X meshes in world coordinates
    preview.mp4             optional: the model input with the projected meshes, one colour per track (mp4v); a
                            frame whose Weiszfeld focal is degenerate (0 or NaN) is drawn with a 60-degree FOV
    summary.json            frames, FPS, per-stage ms, backend, versions

The growing files (trajectory, cameras, tracks, scene) are rewritten from memory every `flush_seconds` and on
`close()`, which the CLI also calls on Ctrl-C: every finished frame is then in valid files, and a hard kill leaves
the previous complete versions. Memory: the trajectory and per-track parameters grow by ~2 kB per person-frame;
the scene is a voxel grid capped at `max_scene_points` (the voxel size doubles when the cap is hit).

People npz keys (F = frames the track appears in):
    frame_index (F,) int64, timestamp (F,) float64 (NaN when unknown), score (F,) float32,
    global_orient (F, 3), body_pose (F, 63), left_hand_pose (F, 45), right_hand_pose (F, 45), jaw_pose (F, 3):
        axis-angle, as the smplx package takes them by default (pose2rot=True);
    rotmat (F, 53, 3, 3): the same rotations as matrices, exactly as the network predicts them
        (global, 21 body, 15 left hand, 15 right hand, jaw); smplx 0.1.28's SMPLX.forward only takes axis-angle;
    betas (F, 10), expression (F, 10);
    transl (F, 3): smplx's translation (only when an SMPL-X model was given): smplx (neutral, flat_hand_mean,
        10 betas, 10 expression) called with these keys gives the body in the CAMERA frame of each frame;
    transl_head_cam (F, 3): Human3R's own translation = the head joint in camera coordinates (Human3R poses the
        body with zero global orientation, rotates it about the pelvis and moves the head joint here);
    c2w (F, 4, 4): the camera pose of each frame, to bring camera-frame results into the world frame.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .errors import Human3RError, msg
from .geometry import intrinsics, matrix_to_quaternion, rotmat_to_axis_angle

# ------------------------------------------------------------------------------------------------ atomic writes


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temp file next to `path` for binary writing; on success it replaces `path` atomically."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    with atomic_file(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    named: dict[str, Any] = dict(arrays)
    with atomic_file(path) as f:
        np.savez(f, **named)


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and prove a file can be written in it; a clear Human3RError otherwise."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=p)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise Human3RError(msg(f"output directory {p}", "not writable", f"{type(exc).__name__}: {exc.strerror}",
                               "a directory this user can create files in", "choose another --out")) from exc
    return p


# ------------------------------------------------------------------------------------------------ file formats
def tum_line(timestamp: float, c2w: np.ndarray) -> str:
    """One TUM trajectory line `timestamp tx ty tz qx qy qz qw` for a camera-to-world 4x4."""
    q = matrix_to_quaternion(np.asarray(c2w, np.float64)[:3, :3])  # w, x, y, z
    t = np.asarray(c2w, np.float64)[:3, 3]
    vals = [timestamp, *t, q[1], q[2], q[3], q[0]]
    return " ".join(f"{v:.9g}" for v in vals)


def ply_points_bytes(points: np.ndarray, colors: np.ndarray) -> bytes:
    """Binary little-endian PLY: (N, 3) float32 positions + (N, 3) uint8 RGB."""
    n = int(points.shape[0])
    rec = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                             ("blue", "u1")])
    for i, k in enumerate("xyz"):
        rec[k] = points[:, i]
    for i, k in enumerate(("red", "green", "blue")):
        rec[k] = colors[:, i]
    header = ("ply\nformat binary_little_endian 1.0\ncomment human3r-edge fused scene\n"
              f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    return header.encode("ascii") + rec.tobytes()


def ply_mesh_bytes(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """Binary little-endian PLY mesh: (V, 3) float32 vertices, (F, 3) int faces."""
    v = np.ascontiguousarray(vertices, "<f4")
    f = np.empty(faces.shape[0], dtype=[("n", "u1"), ("i", "<i4", (3,))])
    f["n"] = 3
    f["i"] = faces
    header = ("ply\nformat binary_little_endian 1.0\ncomment human3r-edge SMPL-X mesh (world frame)\n"
              f"element vertex {v.shape[0]}\nproperty float x\nproperty float y\nproperty float z\n"
              f"element face {faces.shape[0]}\nproperty list uchar int vertex_indices\nend_header\n")
    return header.encode("ascii") + v.tobytes() + f.tobytes()


def obj_mesh_bytes(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    buf = io.StringIO()
    buf.write("# human3r-edge SMPL-X mesh (world frame)\n")
    np.savetxt(buf, vertices, fmt="v %.6f %.6f %.6f")
    np.savetxt(buf, np.asarray(faces) + 1, fmt="f %d %d %d")
    return buf.getvalue().encode("ascii")


def depth_png16_bytes(depth: np.ndarray, scale: float) -> bytes:
    import cv2

    d = np.nan_to_num(np.asarray(depth, np.float64) * scale, nan=0.0, posinf=0.0, neginf=0.0)
    ok, buf = cv2.imencode(".png", np.clip(np.rint(d), 0, 65535).astype(np.uint16))
    if not ok:
        raise Human3RError(msg("depth png", "OpenCV could not encode it"))
    return buf.tobytes()


# ------------------------------------------------------------------------------------------------ scene
class VoxelScene:
    """Running voxel-grid average of coloured world points, with a cap on the number of voxels."""

    def __init__(self, voxel_size: float | None = None, max_points: int = 2_000_000) -> None:
        self.voxel = voxel_size
        self.max_points = max_points
        self.keys = np.zeros(0, np.int64)
        self.sums = np.zeros((0, 7), np.float64)  # x, y, z, r, g, b, count
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_n = 0

    def _key(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self.voxel is not None
        ijk = np.floor(pts / self.voxel).astype(np.int64)
        ok = np.all(np.abs(ijk) < (1 << 20), axis=1)
        ijk = ijk[ok] + (1 << 20)
        return (ijk[:, 0] << 42) | (ijk[:, 1] << 21) | ijk[:, 2], ok

    @staticmethod
    def _reduce(keys: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        uk, inv = np.unique(keys, return_inverse=True)
        out = np.zeros((uk.shape[0], vals.shape[1]), np.float64)
        for c in range(vals.shape[1]):
            out[:, c] = np.bincount(inv, weights=vals[:, c], minlength=uk.shape[0])
        return uk, out

    def add(self, points: np.ndarray, colors: np.ndarray) -> None:
        """points (N, 3) float32 world, colors (N, 3) uint8."""
        pts = np.asarray(points, np.float64).reshape(-1, 3)
        good = np.all(np.isfinite(pts), axis=1)
        pts, col = pts[good], np.asarray(colors, np.float64).reshape(-1, 3)[good]
        if pts.shape[0] == 0:
            return
        if self.voxel is None:  # auto: 1/100 of the median distance of the first points
            self.voxel = max(float(np.median(np.linalg.norm(pts, axis=1))) / 100.0, 1e-6)
        keys, ok = self._key(pts)
        vals = np.concatenate([pts[ok], col[ok], np.ones((int(ok.sum()), 1))], axis=1)
        keys, vals = self._reduce(keys, vals)
        self._pending.append((keys, vals))
        self._pending_n += keys.shape[0]
        if self._pending_n > max(200_000, self.keys.shape[0] // 2):
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self.keys] + [k for k, _ in self._pending])
        vals = np.concatenate([self.sums] + [v for _, v in self._pending])
        self._pending, self._pending_n = [], 0
        self.keys, self.sums = self._reduce(keys, vals)
        while self.keys.shape[0] > self.max_points:
            assert self.voxel is not None
            self.voxel *= 2.0
            centroids = self.sums[:, :3] / self.sums[:, 6:7]
            keys, ok = self._key(centroids)
            self.keys, self.sums = self._reduce(keys, self.sums[ok])

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """(M, 3) float32 voxel centroids and (M, 3) uint8 mean colours."""
        self._merge()
        cnt = self.sums[:, 6:7]
        if cnt.shape[0] == 0:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        return ((self.sums[:, :3] / cnt).astype(np.float32),
                np.clip(np.rint(self.sums[:, 3:6] / cnt), 0, 255).astype(np.uint8))


# ------------------------------------------------------------------------------------------------ preview
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


# ------------------------------------------------------------------------------------------------ the writer
@dataclass(frozen=True)
class OutputOptions:
    """What `OutputWriter` writes."""

    scene: bool = True
    conf_threshold: float = 2.0  # keep points with confidence > this (the demo command's --vis_threshold 2)
    mask_threshold: float = 0.1  # human mask > this removes a point (the demo's --msk_threshold)
    mask_dilate: int = 10  # disk radius the human mask is grown by, in pixels of a 512-px-wide image (the demo's
    #                        --mask_morph at --size 512; scaled to the model image's long side)
    voxel_size: float | None = None  # None: 1/100 of the first frame's median point distance
    max_scene_points: int = 2_000_000
    save_depth: bool = False
    depth_format: str = "npy"  # 'npy' (float32) or 'png' (uint16, depth * depth_png_scale)
    depth_png_scale: float = 1000.0  # model units (metres) -> millimetres
    save_meshes: bool = False
    mesh_format: str = "ply"  # 'ply' (binary) or 'obj'
    preview: bool = False
    fps: float = 30.0  # of the source: preview frame rate, and timestamps = index / fps when the source has none
    flush_seconds: float = 5.0  # rewrite trajectory/cameras/tracks this often
    scene_flush_seconds: float = 30.0  # and the (larger) scene.ply this often

    def __post_init__(self) -> None:
        if self.depth_format not in ("npy", "png"):
            raise Human3RError(msg("depth_format", "unknown", repr(self.depth_format), "'npy' or 'png'"))
        if self.mesh_format not in ("ply", "obj"):
            raise Human3RError(msg("mesh_format", "unknown", repr(self.mesh_format), "'ply' or 'obj'"))

    @property
    def needs_dense(self) -> bool:
        return self.scene or self.save_depth

    @property
    def needs_mask(self) -> bool:
        return self.scene


@dataclass
class _Track:
    frames: list[int] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    rotmat: list[np.ndarray] = field(default_factory=list)
    betas: list[np.ndarray] = field(default_factory=list)
    expression: list[np.ndarray] = field(default_factory=list)
    transl: list[np.ndarray] = field(default_factory=list)
    smplx_transl: list[np.ndarray | None] = field(default_factory=list)
    c2w: list[np.ndarray] = field(default_factory=list)
    dirty: bool = True


class OutputWriter:
    """Collects FrameResults and writes the output files into `out_dir` (see the module docstring).

    faces: (F, 3) SMPL-X faces for meshes and the preview. Use as a context manager or call close().
    """

    def __init__(self, out_dir: str | os.PathLike, options: OutputOptions = OutputOptions(),
                 faces: np.ndarray | None = None) -> None:
        self.dir = ensure_writable_dir(out_dir)
        self.options = options
        self.faces = None if faces is None else np.asarray(faces, np.int64)
        self.tum: list[str] = []
        self.cameras: list[dict] = []
        self.tracks: dict[int, _Track] = {}
        self.scene = VoxelScene(options.voxel_size, options.max_scene_points) if options.scene else None
        self.preview: PreviewWriter | None = None
        self.image_wh: tuple[int, int] | None = None
        self.frames = 0
        self._last_flush = self._last_scene = time.monotonic()
        self._closed = False
        for sub, on in (("people", True), ("depth", options.save_depth), ("meshes", options.save_meshes)):
            if on:
                (self.dir / sub).mkdir(exist_ok=True)

    def __enter__(self) -> "OutputWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------------- per frame
    def add(self, r: Any) -> None:
        """Record one FrameResult (it is not modified; arrays are copied where kept)."""
        if self._closed:
            raise Human3RError(msg("output writer", "already closed"))
        o = self.options
        h, w = r.image.shape[:2]
        self.image_wh = (w, h)
        ts = r.timestamp if r.timestamp is not None else r.index / o.fps
        self.tum.append(tum_line(ts, r.c2w))
        self.cameras.append({"index": int(r.index), "timestamp": float(ts), "segment": int(r.segment),
                             "focal": _json_float(r.focal), "K": _json_list(r.intrinsics),
                             "c2w": _json_list(r.c2w)})
        for p in r.people:
            self._add_person(r, p, ts)
        if o.save_depth and r.depth is not None:
            stem = self.dir / "depth" / f"{r.index:06d}"
            if o.depth_format == "npy":
                with atomic_file(stem.with_suffix(".npy")) as f:
                    np.save(f, r.depth.astype(np.float32))
            else:
                atomic_write(stem.with_suffix(".png"), depth_png16_bytes(r.depth, o.depth_png_scale))
        if o.save_meshes and self.faces is not None:
            for p in r.people:
                if p.vertices_world is None:
                    continue
                name = self.dir / "meshes" / f"{r.index:06d}_track_{p.track_id:04d}.{o.mesh_format}"
                data = (ply_mesh_bytes if o.mesh_format == "ply" else obj_mesh_bytes)(p.vertices_world, self.faces)
                atomic_write(name, data)
        if self.scene is not None and r.points_world is not None:
            self._add_scene(r)
        if o.preview:
            self._add_preview(r)
        self.frames += 1
        now = time.monotonic()
        if now - self._last_flush > o.flush_seconds:
            self.flush(scene=now - self._last_scene > o.scene_flush_seconds)

    def _add_person(self, r: Any, p: Any, ts: float) -> None:
        t = self.tracks.setdefault(int(p.track_id), _Track())
        t.frames.append(int(r.index))
        t.timestamps.append(float(ts))
        t.scores.append(float(p.score))
        t.rotmat.append(np.asarray(p.rotmat, np.float32).copy())
        t.betas.append(np.asarray(p.betas, np.float32).copy())
        t.expression.append(np.asarray(p.expression, np.float32).copy())
        t.transl.append(np.asarray(p.transl, np.float32).copy())
        st = getattr(p, "smplx_transl", None)
        t.smplx_transl.append(None if st is None else np.asarray(st, np.float32).copy())
        t.c2w.append(np.asarray(r.c2w, np.float32).copy())
        t.dirty = True

    def _add_scene(self, r: Any) -> None:
        import cv2

        o = self.options
        assert self.scene is not None
        keep = np.isfinite(r.confidence) & (r.confidence > o.conf_threshold)
        if r.human_mask is not None:
            fg = (r.human_mask > o.mask_threshold).astype(np.uint8)
            radius = int(round(o.mask_dilate * max(r.image.shape[:2]) / 512))
            if radius > 0:
                d = 2 * radius + 1
                fg = cv2.dilate(fg, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d)))
            keep &= fg == 0
        self.scene.add(r.points_world[keep], r.image[keep])

    def _add_preview(self, r: Any) -> None:
        h, w = r.image.shape[:2]
        scale = max(1, int(math.ceil(480 / w)))
        if self.preview is None:
            self.preview = PreviewWriter(self.dir / "preview.mp4", self.options.fps, (w * scale, h * scale))
        k = np.asarray(r.intrinsics, np.float64)
        if not np.all(np.isfinite(k)) or k[0, 0] <= 0:  # degenerate Weiszfeld focal: draw with a 60 deg FOV
            k = intrinsics(max(w, h) / (2.0 * math.tan(math.radians(30.0))), w, h)
        self.preview.write(draw_meshes(r.image, r.people, k, self.faces, scale))

    # ---------------------------------------------------------------------------------------------- files
    def flush(self, scene: bool = True) -> None:
        """Rewrite the growing files from memory (atomically)."""
        atomic_write(self.dir / "trajectory.tum", "".join(line + "\n" for line in self.tum))
        w, h = self.image_wh or (0, 0)
        atomic_write(self.dir / "cameras.json", json.dumps({
            "width": w, "height": h,
            "convention": "OpenCV camera (x right, y down, z forward); c2w maps camera to world coordinates; "
                          "pixels of the model image (the frame resized and centre-cropped as the reference)",
            "frames": self.cameras}, indent=None, separators=(",", ":")))
        for tid, t in self.tracks.items():
            if t.dirty:
                self._write_track(tid, t)
        if scene and self.scene is not None:
            pts, col = self.scene.points()
            atomic_write(self.dir / "scene.ply", ply_points_bytes(pts, col))
            self._last_scene = time.monotonic()
        self._last_flush = time.monotonic()

    def _write_track(self, tid: int, t: _Track) -> None:
        rot = np.stack(t.rotmat)  # (F, 53, 3, 3)
        aa = rotmat_to_axis_angle(rot)  # (F, 53, 3)
        f = rot.shape[0]
        extra = {}
        if all(x is not None for x in t.smplx_transl):
            extra["transl"] = np.stack(t.smplx_transl)  # type: ignore[arg-type]
        save_npz(self.dir / "people" / f"track_{tid:04d}.npz", **extra,
                 frame_index=np.asarray(t.frames, np.int64), timestamp=np.asarray(t.timestamps, np.float64),
                 score=np.asarray(t.scores, np.float32),
                 global_orient=aa[:, 0].reshape(f, 3), body_pose=aa[:, 1:22].reshape(f, 63),
                 left_hand_pose=aa[:, 22:37].reshape(f, 45), right_hand_pose=aa[:, 37:52].reshape(f, 45),
                 jaw_pose=aa[:, 52].reshape(f, 3), rotmat=rot, betas=np.stack(t.betas),
                 expression=np.stack(t.expression), transl_head_cam=np.stack(t.transl), c2w=np.stack(t.c2w))
        t.dirty = False

    def close(self, summary: dict | None = None) -> None:
        """Write every file in its final state (also on Ctrl-C); idempotent; summary.json if given."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            if self.preview is not None:
                self.preview.close()
            if summary is not None:
                atomic_write(self.dir / "summary.json", json.dumps(summary, indent=1, default=_json_default))

    def write_summary(self, summary: dict) -> None:
        atomic_write(self.dir / "summary.json", json.dumps(summary, indent=1, default=_json_default))

    def written(self) -> list[Path]:
        return sorted(p for p in self.dir.rglob("*") if p.is_file() and not p.name.startswith("."))


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None


def _json_list(a: np.ndarray) -> list:
    return [[_json_float(v) for v in row] for row in np.asarray(a, np.float64)]


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return _json_float(float(o))
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


class BackgroundWriter:
    """Runs an OutputWriter in a worker thread so drawing, fusing and encoding overlap inference.

    `add(result)` hands the FrameResult over (results are immutable and owned by the caller, so no copy); the
    queue is bounded (back-pressure keeps memory constant). An exception in the worker is re-raised by the next
    `add` or by `close`. `close(summary)` writes every queued frame, then closes the writer (also on Ctrl-C).
    """

    def __init__(self, writer: OutputWriter, queue_size: int = 8) -> None:
        import queue
        import threading

        self.writer = writer
        self._queue: Any = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._reported = False
        self._thread = threading.Thread(target=self._work, name="human3r-outputs", daemon=True)
        self._thread.start()
        self._closed = False

    @property
    def scene(self) -> VoxelScene | None:
        return self.writer.scene

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:  # after a failure the remaining frames are dropped
                try:
                    self.writer.add(item)
                except BaseException as exc:  # re-raised once in the producer
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None and not self._reported:
            self._reported = True
            raise self._error

    def add(self, r: Any) -> None:
        self._raise()
        self._queue.put(r)

    def close(self, summary: dict | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        try:
            self._raise()
        finally:
            self.writer.close(summary)
