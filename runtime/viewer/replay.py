"""`human3r-edge view OUT_DIR`: replay a finished or interrupted run folder in a viser web viewer.

Timeline slider, play/pause, playback FPS, one visibility toggle per track, point size. People's meshes come from
the run's meshes/ folder (--save-meshes) where it holds the frame, else from skinning the track's parameters with
the SMPL-X model (--smplx-model or the run's summary); without either, only the cameras and the point cloud show.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.runtime.convert.run_folder import RunFolder
from human3r_edge.runtime.viewer.scene import SceneView

MAX_VIEW_POINTS = 300_000  # the browser draws every point each frame: decimate larger clouds (seeded)


def read_mesh_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The binary mesh PLY runtime/outputs/writer.py writes: (V, 3) float32 vertices, (F, 3) int64 faces."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    head = data[:end].decode("ascii").splitlines()
    nv = int(next(ln for ln in head if ln.startswith("element vertex")).split()[2])
    nf = int(next(ln for ln in head if ln.startswith("element face")).split()[2])
    v = np.frombuffer(data, "<f4", nv * 3, end).reshape(nv, 3)
    f = np.frombuffer(data, np.dtype([("n", "u1"), ("i", "<i4", (3,))]), nf, end + nv * 12)["i"]
    return v.copy(), f.astype(np.int64)


class ReplayViewer:
    """Draws frame `i` of a RunFolder into a SceneView and owns the playback GUI."""

    def __init__(self, rf: RunFolder, view: SceneView, model: Any = None) -> None:
        self.rf, self.view, self.model = rf, view, model
        self.faces: np.ndarray | None = None if model is None else np.asarray(model.faces)
        self.frame = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        server = view.server
        pts, col = rf.scene_points()
        if pts.shape[0] > MAX_VIEW_POINTS:
            keep = np.random.default_rng(0).choice(pts.shape[0], MAX_VIEW_POINTS, replace=False)
            pts, col = pts[keep], col[keep]
        self.n_points = int(pts.shape[0])
        if rf.frames:
            c = np.stack([f.c2w[:3, 3] for f in rf.frames])
            view.point_size = max(float(np.median(np.linalg.norm(c - c.mean(0), axis=1))) / 50, 0.002)
        view.set_points(pts, col)
        if rf.frames:
            cams = np.stack([f.c2w[:3, 3] for f in rf.frames])
            cloud = pts if pts.shape[0] else cams
            target = np.median(cloud, 0)
            extent = float(np.percentile(np.linalg.norm(cloud - target, axis=1), 80))
            view.look_from(rf.frames[0].c2w, target, extent)
        view.set_trajectory(np.stack([f.c2w[:3, 3] for f in rf.frames]) if rf.frames else np.zeros((0, 3)))
        n = max(len(rf.frames), 1)
        gui = server.gui
        self.slider = gui.add_slider("frame", min=0, max=n - 1, step=1, initial_value=0, disabled=n < 2)
        self.playing = gui.add_checkbox("play", initial_value=False)
        self.fps = gui.add_number("playback FPS", initial_value=round(rf.fps, 2), min=0.5, max=120.0, step=0.5)
        self.size = gui.add_slider("point size", min=0.001, max=0.1, step=0.001,
                                   initial_value=round(min(view.point_size, 0.1), 3))
        self.toggles: dict[int, Any] = {}
        with gui.add_folder("tracks"):
            for tid in sorted(rf.tracks):
                self.toggles[tid] = gui.add_checkbox(f"track {tid}", initial_value=True)
                self.toggles[tid].on_update(lambda _: self.show(self.frame))
        self.info = gui.add_markdown("")
        self.slider.on_update(lambda _: self.show(int(self.slider.value)))
        self.size.on_update(lambda _: view.set_point_size(float(self.size.value)))
        self.show(0)

    # ------------------------------------------------------------------------------------------ drawing
    def person_vertices(self, tid: int, index: int) -> np.ndarray | None:
        """(V, 3) world vertices of track `tid` at source frame `index`, or None where it is absent."""
        tr = self.rf.tracks[tid]
        hit = np.flatnonzero(tr.frame_index == index)
        if hit.size == 0:
            return None
        ply = self.rf.path / "meshes" / f"{index:06d}_track_{tid:04d}.ply"
        if ply.is_file():
            v, f = read_mesh_ply(ply)
            if self.faces is None:
                self.faces = f
            return v
        if self.model is None:
            return None
        k = int(hit[0])
        out = self.model.skin(tr.rotmat[k:k + 1].astype(np.float32), tr.betas[k:k + 1, :10].astype(np.float32),
                              tr.expression[k:k + 1, :10].astype(np.float32),
                              tr.transl_head_cam[k:k + 1].astype(np.float32), c2w=tr.c2w[k].astype(np.float32))
        return out.v_world[0]

    def show(self, i: int) -> None:
        """Draw frame number i (position in the run's frame list)."""
        with self._lock:
            if not self.rf.frames:
                return
            i = int(np.clip(i, 0, len(self.rf.frames) - 1))
            self.frame = i
            fr = self.rf.frames[i]
            self.view.set_camera(fr.c2w, fr.K if fr.focal_ok else None, self.rf.width, self.rf.height)
            shown = 0
            for tid in sorted(self.rf.tracks):
                v = self.person_vertices(tid, fr.index)
                if v is not None and self.faces is not None:
                    self.view.set_person(tid, v, self.faces, visible=bool(self.toggles[tid].value))
                    shown += v is not None and bool(self.toggles[tid].value)
                else:
                    self.view.set_person(tid, None, np.zeros((0, 3), np.int64))
            self.info.content = (f"frame **{fr.index}** ({i + 1}/{len(self.rf.frames)}), t = {fr.timestamp:.2f} s, "
                                 f"{shown} people shown")

    # ------------------------------------------------------------------------------------------ playback
    def run(self, stop: threading.Event | None = None) -> None:
        """Block, advancing the slider while `play` is ticked, until `stop` is set (or Ctrl-C)."""
        stop = stop or self._stop
        while not stop.is_set():
            if self.playing.value and len(self.rf.frames) > 1:
                nxt = (int(self.slider.value) + 1) % len(self.rf.frames)
                self.slider.value = nxt  # fires show() through on_update
                stop.wait(1.0 / max(float(self.fps.value), 0.5))
            else:
                stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()


def wait_for_clients(view: SceneView, n: int = 1, timeout: float = 30.0) -> bool:
    """True once `n` browsers are connected (tests, benchmarks)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if view.clients() >= n:
            return True
        time.sleep(0.05)
    return False
