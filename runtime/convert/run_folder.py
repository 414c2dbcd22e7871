"""Read a `human3r-edge run` output folder (finished, interrupted or empty) for the exporters and the viewer.

Everything is optional: a run killed before its first flush has a trajectory.tum and no cameras.json; one killed
before its first frame has nothing. `RunFolder.read` keeps what exists and lists what is missing in `notes`, so a
converter can convert what exists and say how much. Pose conventions are those of runtime/outputs/writer.py: OpenCV
cameras (x right, y down, z forward), c2w maps camera to world, K in pixels of the model image.
"""
from __future__ import annotations

import json
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from human3r_edge.errors import Human3RError, msg
from human3r_edge.runtime.geometry import intrinsics, quaternion_to_matrix

FALLBACK_FOV_DEG = 60.0  # degenerate Weiszfeld focal (0 or NaN): the same 60-degree FOV as the preview
TRACK_KEYS = ("frame_index", "rotmat", "betas", "expression", "transl_head_cam", "c2w")


@dataclass(frozen=True)
class CameraFrame:
    """One processed frame: index (source frame number), timestamp (s), K (3, 3) model-image pixels, c2w (4, 4)."""

    index: int
    timestamp: float
    K: np.ndarray  # (3, 3) float64; K[0, 0] <= 0 or NaN when the focal was degenerate (see `focal_ok`)
    c2w: np.ndarray  # (4, 4) float64
    focal_ok: bool = True


@dataclass(frozen=True)
class Track:
    """One person track (people/track_NNNN.npz), F = frames it appears in. Arrays float64 unless noted."""

    track_id: int
    frame_index: np.ndarray  # (F,) int64 source frame numbers
    rotmat: np.ndarray  # (F, 53, 3, 3) global, 21 body, 15 left hand, 15 right hand, jaw
    betas: np.ndarray  # (F, 10)
    expression: np.ndarray  # (F, 10)
    transl_head_cam: np.ndarray  # (F, 3) head joint in the camera frame
    c2w: np.ndarray  # (F, 4, 4)

    def select(self, keep: np.ndarray) -> "Track":
        """The frames where the boolean mask `keep` (F,) is true."""
        return Track(self.track_id, self.frame_index[keep], self.rotmat[keep], self.betas[keep],
                     self.expression[keep], self.transl_head_cam[keep], self.c2w[keep])


@dataclass
class RunFolder:
    """What a run folder holds. `frames` are sorted by index; `notes` say what was missing or skipped."""

    path: Path
    width: int = 0  # model image size (pixels); 0 when cameras.json is missing
    height: int = 0
    frames: list[CameraFrame] = field(default_factory=list)
    tracks: dict[int, Track] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------------------------------ reading
    @staticmethod
    def read(path: str | Path) -> "RunFolder":
        """Read the folder; raises Human3RError only when `path` is not a folder (bad input, exit 2)."""
        p = Path(path)
        if not p.is_dir():
            raise Human3RError(msg(f"run folder {p}", "not a folder" if p.exists() else "does not exist",
                                   hint="pass the --out folder of `human3r-edge run`"))
        rf = RunFolder(p)
        rf.summary = _read_json(p / "summary.json", rf.notes) or {}
        rf._read_cameras()
        rf._read_tracks()
        return rf

    def _read_cameras(self) -> None:
        cams = _read_json(self.path / "cameras.json", self.notes)
        if cams is not None:
            self.width, self.height = int(cams.get("width", 0)), int(cams.get("height", 0))
            for f in cams.get("frames", []):
                try:
                    K = np.array(f["K"], np.float64).reshape(3, 3)
                    c2w = np.array(f["c2w"], np.float64).reshape(4, 4)
                    ts = float("nan") if f.get("timestamp") is None else float(f["timestamp"])
                    ok = bool(np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0)
                    self.frames.append(CameraFrame(int(f["index"]), ts, K, c2w, ok))
                except (KeyError, TypeError, ValueError):
                    self.notes.append(f"cameras.json: frame entry {f!r:.60} unreadable, skipped")
        tum = self.path / "trajectory.tum"
        if tum.is_file():  # appended per frame: may hold frames that the last cameras.json flush did not
            rows = _read_tum(tum, self.notes)
            n_known = len(self.frames)
            idx = [f.index for f in self.frames]
            step = int(np.median(np.diff(idx))) if len(idx) >= 2 else 1
            last = idx[-1] if idx else -step
            for k, row in enumerate(rows[n_known:], start=1):
                c2w = np.eye(4)
                c2w[:3, :3] = quaternion_to_matrix(np.array([row[7], row[4], row[5], row[6]]))
                c2w[:3, 3] = row[1:4]
                self.frames.append(CameraFrame(last + k * max(step, 1), float(row[0]), np.full((3, 3), np.nan),
                                               c2w, False))
            if len(rows) > n_known:
                self.notes.append(f"trajectory.tum: {len(rows) - n_known} frames newer than cameras.json "
                                  "(interrupted run): their poses are used, their intrinsics are unknown")
        elif cams is None:
            self.notes.append("no cameras.json nor trajectory.tum: no camera frames")
        self.frames.sort(key=lambda fr: fr.index)

    def _read_tracks(self) -> None:
        d = self.path / "people"
        if not d.is_dir():
            self.notes.append("no people/ folder: no tracks")
            return
        for f in sorted(d.glob("track_*.npz")):
            m = re.fullmatch(r"track_(\d+)\.npz", f.name)
            if m is None:
                continue
            try:
                with np.load(f) as z:
                    missing = [k for k in TRACK_KEYS if k not in z.files]
                    if missing:
                        self.notes.append(f"{f.name}: missing keys {missing}, skipped")
                        continue
                    a = {k: np.asarray(z[k]) for k in TRACK_KEYS}
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # truncated / not an npz
                self.notes.append(f"{f.name}: unreadable ({type(exc).__name__}), skipped")
                continue
            tid = int(m.group(1))
            n = a["frame_index"].shape[0]
            self.tracks[tid] = Track(tid, a["frame_index"].astype(np.int64),
                                     a["rotmat"].astype(np.float64).reshape(n, 53, 3, 3),
                                     a["betas"].astype(np.float64).reshape(n, -1),
                                     a["expression"].astype(np.float64).reshape(n, -1),
                                     a["transl_head_cam"].astype(np.float64).reshape(n, 3),
                                     a["c2w"].astype(np.float64).reshape(n, 4, 4))

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def fps(self) -> float:
        """Frames per second of the frames' timestamps (median step), 30 when unknown."""
        ts = np.array([f.timestamp for f in self.frames], np.float64)
        idx = np.array([f.index for f in self.frames], np.float64)
        if ts.size >= 2 and np.isfinite(ts).all():
            step = np.median(np.diff(ts) / np.maximum(np.diff(idx), 1))
            if step > 0:
                return float(1.0 / step)
        return 30.0

    def times(self) -> np.ndarray:
        """(N,) float64 seconds of `frames` (timestamps; index / fps where a timestamp is NaN)."""
        fps = self.fps
        t = np.array([f.timestamp if math.isfinite(f.timestamp) else f.index / fps for f in self.frames])
        if t.size > 1 and np.any(np.diff(t) <= 0):  # glTF keys must increase: fall back to the frame numbers
            t = np.array([f.index / fps for f in self.frames], np.float64)
        return t

    def camera_K(self, fr: CameraFrame) -> np.ndarray:
        """K (3, 3) float64 of a frame; a 60-degree-FOV K where the focal was degenerate (fr.focal_ok False)."""
        if fr.focal_ok:
            return fr.K
        w, h = self.width or 512, self.height or 384
        return intrinsics(max(w, h) / (2.0 * math.tan(math.radians(FALLBACK_FOV_DEG / 2))), w, h).astype(np.float64)

    def scene_points(self) -> tuple[np.ndarray, np.ndarray]:
        """scene.ply as (N, 3) float32 points and (N, 3) uint8 colours; empty arrays when absent/unreadable."""
        p = self.path / "scene.ply"
        empty = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        if not p.is_file():
            self.notes.append("no scene.ply: no point cloud")
            return empty
        try:
            return read_points_ply(p)
        except Human3RError as exc:
            self.notes.append(str(exc))
            return empty

    def depth(self, index: int) -> np.ndarray | None:
        """depth/NNNNNN.npy (float32 z, model-image pixels) or .png (millimetres) of a frame, or None."""
        stem = self.path / "depth" / f"{index:06d}"
        if stem.with_suffix(".npy").is_file():
            return np.load(stem.with_suffix(".npy")).astype(np.float32)
        if stem.with_suffix(".png").is_file():
            import cv2

            d = cv2.imread(str(stem.with_suffix(".png")), cv2.IMREAD_UNCHANGED)
            return None if d is None else d.astype(np.float32) / 1000.0
        return None


# ---------------------------------------------------------------------------------------------- selection
def parse_frame_range(text: str | None) -> tuple[int | None, int | None]:
    """`a:b` (source frame numbers, b exclusive, either side may be empty) -> (a, b). Raises Human3RError."""
    if text is None:
        return None, None
    m = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", text)
    if m is None:
        raise Human3RError(msg("--frames", "not a frame range", repr(text), "a:b (source frame numbers, b "
                               "exclusive; either may be left out), e.g. 10:50 or :100",
                               "frame numbers are those of cameras.json 'index'"))
    a = int(m.group(1)) if m.group(1) else None
    b = int(m.group(2)) if m.group(2) else None
    if a is not None and b is not None and b <= a:
        raise Human3RError(msg("--frames", "empty range", repr(text), "a:b with b > a"))
    return a, b


def select(rf: RunFolder, tracks: list[int] | None, frames: str | None) -> RunFolder:
    """A copy of `rf` restricted to the given track ids and frame range. Unknown tracks, or a range that holds
    none of the run's frames, raise Human3RError (exit 2)."""
    a, b = parse_frame_range(frames)
    out = RunFolder(rf.path, rf.width, rf.height, summary=rf.summary, notes=list(rf.notes))

    def inside(i: np.ndarray) -> np.ndarray:
        return (i >= (a if a is not None else -1)) & (i < (b if b is not None else np.iinfo(np.int64).max))

    out.frames = [f for f in rf.frames if inside(np.int64(f.index))]
    if frames is not None and rf.frames and not out.frames:
        lo, hi = rf.frames[0].index, rf.frames[-1].index
        raise Human3RError(msg("--frames", "holds none of the run's frames", repr(frames),
                               f"a range overlapping the run's frames {lo}..{hi}"))
    if tracks is not None:
        unknown = sorted(set(tracks) - set(rf.tracks))
        if unknown:
            have = ", ".join(str(t) for t in sorted(rf.tracks)) or "none"
            raise Human3RError(msg("--tracks", "unknown track ids", unknown, f"ids of people/track_NNNN.npz "
                                   f"(this run has: {have})"))
    for tid, t in rf.tracks.items():
        if tracks is not None and tid not in tracks:
            continue
        keep = inside(t.frame_index)
        if keep.any():
            out.tracks[tid] = t.select(keep)
        elif tracks is not None:
            out.notes.append(f"track {tid}: no frames in --frames {frames}, skipped")
    return out


# ---------------------------------------------------------------------------------------------- files
def read_points_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The binary little-endian point PLY that runtime/outputs/writer.py writes (float x y z, uchar r g b)."""
    data = path.read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise Human3RError(msg(str(path), "not a PLY file", hint="a scene.ply written by `human3r-edge run`"))
    header = data[:end].decode("ascii", "replace").splitlines()
    m = [ln for ln in header if ln.startswith("element vertex ")]
    n = int(m[0].split()[2]) if m else 0
    rec = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    body = data[end + len(b"end_header\n"):]
    if "format binary_little_endian 1.0" not in header or len(body) < n * rec.itemsize:
        raise Human3RError(msg(str(path), "truncated or unexpected PLY layout", f"{len(body)} bytes for {n} points",
                               "binary little-endian x y z float, r g b uchar"))
    a = np.frombuffer(body, rec, count=n)
    pts = np.stack([a["x"], a["y"], a["z"]], 1).astype(np.float32)
    col = np.stack([a["r"], a["g"], a["b"]], 1).astype(np.uint8)
    return pts, col


def _read_json(path: Path, notes: list[str]) -> dict | None:
    if not path.is_file():
        notes.append(f"no {path.name}")
        return None
    try:
        out = json.loads(path.read_text())
        return out if isinstance(out, dict) else None
    except (OSError, ValueError) as exc:
        notes.append(f"{path.name}: unreadable ({type(exc).__name__}), ignored")
        return None


def _read_tum(path: Path, notes: list[str]) -> list[np.ndarray]:
    rows = []
    for ln in path.read_text(errors="replace").splitlines():
        parts = ln.split()
        if len(parts) != 8 or ln.startswith("#"):
            continue
        try:
            rows.append(np.array([float(x) for x in parts]))
        except ValueError:
            notes.append("trajectory.tum: unreadable line skipped")
    return rows
