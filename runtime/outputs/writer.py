"""Output files of `human3r-edge run`, in formats common tools open; every write is atomic (temp file + rename).

    trajectory.tum          TUM RGB-D format `timestamp tx ty tz qx qy qz qw` (c2w, world frame), evo-readable
    cameras.json            per frame: intrinsics K (3x3), focal, c2w (4x4), segment; image size; conventions
    people/track_NNNN.npz   per track: frame_index, timestamp and SMPL-X parameters under the smplx keyword names
    scene.ply               fused world points with colour: confidence-filtered, people masked out, voxel-averaged
    depth/NNNNNN.npy|.png   optional per-frame depth (float32 npy, or 16-bit PNG in millimetres)
    meshes/NNNNNN_track_NNNN.ply|.obj   optional per-frame SMPL-X meshes in world coordinates
    preview.mp4             optional: the model input with the projected meshes, one colour per track (mp4v); a
                            frame whose Weiszfeld focal is degenerate (0 or NaN) is drawn with a 60-degree FOV
    summary.json            status (running / complete / interrupted / failed / incomplete_input), frames, FPS,
                            per-stage ms, backend, versions, input report, error

trajectory.tum is the commit record: each frame's line is appended (one write) before any other file of that
frame is written. The other growing files (cameras, tracks, scene) are rewritten atomically from memory every
`flush_seconds` (scene.ply every `scene_flush_frames` frames or `scene_flush_seconds`) and on `close()`, which
the CLI also calls on a stop signal. After any stop, SIGKILL included, every file parses and none holds a frame
the trajectory lacks; scene.ply (header `comment frames N`) lags it by at most `scene_flush_frames` frames.
Nothing is written before the first frame (no empty trajectory or 0-point scene). See docs/outputs.md.
Memory: the cameras and per-track parameters grow by ~2 kB per person-frame (the trajectory is on disk only);
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

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from human3r_edge.errors import Human3RError, msg
from human3r_edge.runtime.geometry import intrinsics, rotmat_to_axis_angle
from human3r_edge.runtime.outputs.atomic import atomic_file, atomic_write, ensure_writable_dir, save_npz
from human3r_edge.runtime.outputs.formats import (depth_png16_bytes, obj_mesh_bytes, ply_mesh_bytes, ply_points_bytes,
                                                  tum_line)
from human3r_edge.runtime.outputs.preview import PreviewWriter, draw_meshes
from human3r_edge.runtime.outputs.scene import VoxelScene

if TYPE_CHECKING:
    from human3r_edge.runtime.session import FrameResult


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
    flush_seconds: float = 5.0  # rewrite cameras/tracks this often (the trajectory is appended per frame)
    scene_flush_seconds: float = 30.0  # and the (larger) scene.ply this often,
    scene_flush_frames: int = 300  # or after this many frames: scene.ply is never more frames behind than this

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
        self._tum_fd: int | None = None  # trajectory.tum, opened O_APPEND at the first frame (the commit record)
        self.cameras: list[dict] = []
        self.tracks: dict[int, _Track] = {}
        self.scene = VoxelScene(options.voxel_size, options.max_scene_points) if options.scene else None
        self.preview: PreviewWriter | None = None
        self.image_wh: tuple[int, int] | None = None
        self.frames = 0  # frames committed (their trajectory line is written)
        self.scene_frames = 0  # frames fused into the last written scene.ply
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
    def add(self, r: "FrameResult") -> None:
        """Record one FrameResult (it is not modified; arrays are copied where kept)."""
        if self._closed:
            raise Human3RError(msg("output writer", "already closed"))
        o = self.options
        h, w = r.image.shape[:2]
        self.image_wh = (w, h)
        ts = r.timestamp if r.timestamp is not None else r.index / o.fps
        self._commit(tum_line(ts, r.c2w))  # first: no per-frame file ever exists for a frame not in the trajectory
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
        scene_due = self.scene is not None and (now - self._last_scene > o.scene_flush_seconds
                                                or self.frames - self.scene_frames >= o.scene_flush_frames)
        if scene_due or now - self._last_flush > o.flush_seconds:
            self.flush(scene=scene_due)

    def _commit(self, line: str) -> None:
        """Append one trajectory line with a single write(2) on an O_APPEND descriptor: a killed process leaves
        whole lines (the page cache keeps them; only a power loss could lose the tail, which fsync would cover)."""
        if self._tum_fd is None:
            self._tum_fd = os.open(self.dir / "trajectory.tum", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND,
                                   0o666)
        data = (line + "\n").encode()
        if os.write(self._tum_fd, data) != len(data):
            raise Human3RError(msg(str(self.dir / "trajectory.tum"), "short write", hint="is the disk full?"))

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
        """Rewrite the growing files from memory (atomically); the trajectory is already on disk."""
        if self.frames == 0:
            return  # nothing to write: no empty files that could pass for results
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
            atomic_write(self.dir / "scene.ply", ply_points_bytes(pts, col, self.frames))
            self.scene_frames = self.frames
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
            if self._tum_fd is not None:
                os.close(self._tum_fd)
                self._tum_fd = None
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
        self._hurry = threading.Event()
        self.dropped = 0  # queued frames not written because hurry() was called (never in any file)
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
            if self._hurry.is_set():
                self.dropped += 1
                continue
            if self._error is None:  # after a failure the remaining frames are dropped
                try:
                    self.writer.add(item)
                except BaseException as exc:  # re-raised once in the producer
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None and not self._reported:
            self._reported = True
            raise self._error

    def add(self, r: "FrameResult") -> None:
        self._raise()
        self._queue.put(r)

    def hurry(self) -> None:
        """Drop the frames still queued (a second stop request): close() then only finishes the frame in hand
        and writes the files. Safe from a signal handler (sets an Event)."""
        self._hurry.set()

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
