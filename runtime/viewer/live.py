"""`human3r-edge run --viewer`: stream the scene to a viser web viewer while the pipeline runs.

The viewer never slows the pipeline down: `offer()` (called by the frame loop) only swaps a reference into a
one-slot mailbox and returns; a daemon thread draws the newest frame at most `max_hz` times a second. A frame
that is replaced in the mailbox before the thread takes it is dropped, and counted. What is drawn:
  - the fused point cloud: confident points of every drawn frame, decimated to `points_per_frame`, one cloud
    node per frame (only new points are sent), capped at `max_points` (the oldest nodes are removed first);
  - the camera frustum with the model image as its panel, and the camera path;
  - each person's SMPL-X mesh (world frame), coloured by track; people not in the frame are hidden.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any, Callable

import numpy as np

from human3r_edge.runtime.viewer.scene import DEFAULT_HOST, DEFAULT_PORT, SceneView


def add_viewer_arguments(p: argparse.ArgumentParser) -> None:
    """The `run` flags of the live viewer."""
    g = p.add_argument_group("live viewer (needs the [viewer] extra: pip install 'human3r-edge[viewer]')")
    g.add_argument("--viewer", action="store_true", help="serve a live 3D web viewer (viser) while running")
    g.add_argument("--viewer-port", type=int, default=DEFAULT_PORT, help="TCP port of the live viewer")
    g.add_argument("--viewer-host", default=DEFAULT_HOST, help="address the live viewer binds: 127.0.0.1 = this "
                   "machine only; 0.0.0.0 exposes it to the network (e.g. a headless Jetson to a laptop)")
    g.add_argument("--viewer-linger", type=float, default=0.0, metavar="S", help="keep serving the final scene S "
                   "seconds after the run ends (-1: until Ctrl-C)")


class LiveViewer:
    """A SceneView fed from the frame loop through a one-slot mailbox, drawn by its own thread."""

    def __init__(self, view: SceneView, faces: np.ndarray, max_hz: float = 10.0, points_per_frame: int = 4000,
                 max_points: int = 200_000) -> None:
        self.view, self.faces = view, np.asarray(faces, np.int64)
        self.min_period = 1.0 / max_hz
        self.points_per_frame, self.max_points = points_per_frame, max_points
        self.offered = self.drawn = self.dropped = 0
        self.max_clients = 0
        self._slot: Any = None
        self._cv = threading.Condition()
        self._closing = False
        self._chunks: list[tuple[str, int]] = []  # (node name, points) of the drawn frames' clouds, oldest first
        self._path: list[np.ndarray] = []
        self._rng = np.random.default_rng(0)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="live-viewer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------ frame loop side
    def offer(self, r: Any) -> None:
        """Hand a FrameResult over without waiting; a frame still waiting in the slot is dropped."""
        with self._cv:
            self.offered += 1
            if self._slot is not None:
                self.dropped += 1
            self._slot = r
            self._cv.notify()

    # ------------------------------------------------------------------------------------------ drawing thread
    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._slot is None and not self._closing:
                    self._cv.wait(0.5)
                if self._slot is None:
                    return
                r, self._slot = self._slot, None
            start = time.monotonic()
            try:
                self._draw(r)
            except Exception as exc:  # a viewer problem never stops the run: report it once and stop drawing
                self.error = exc
                print(f"human3r-edge run | viewer stopped drawing: {type(exc).__name__}: {exc}", file=sys.stderr)
                return
            self.drawn += 1
            self.max_clients = max(self.max_clients, self.view.clients())
            wait = start + self.min_period - time.monotonic()  # at most max_hz draws a second
            if wait > 0:
                time.sleep(wait)

    def _draw(self, r: Any) -> None:
        v = self.view
        if r.points_world is not None:
            ok = np.isfinite(r.points_world).all(-1)
            if r.confidence is not None:
                ok &= r.confidence > 1.0
            idx = np.flatnonzero(ok.reshape(-1))
            if idx.size > self.points_per_frame:
                idx = self._rng.choice(idx, self.points_per_frame, replace=False)
            # one cloud node per drawn frame: only the new points are sent; the oldest nodes go beyond the cap
            name = f"/points/{int(r.index):06d}"
            v.set_points(r.points_world.reshape(-1, 3)[idx].astype(np.float32), r.image.reshape(-1, 3)[idx], name)
            self._chunks.append((name, int(idx.size)))
            while sum(n for _, n in self._chunks) > self.max_points:
                v.remove_points(self._chunks.pop(0)[0])
        h, w = r.image.shape[:2]
        K = np.asarray(r.intrinsics, np.float64)
        v.set_camera(np.asarray(r.c2w, np.float64), K, w, h, image=r.image[::2, ::2])
        self._path.append(np.asarray(r.c2w, np.float64)[:3, 3])
        if len(self._path) == 2 or (len(self._path) > 2 and len(self._path) % 10 == 0):
            v.set_trajectory(np.stack(self._path))
        seen = set()
        for p in r.people:
            if p.vertices_world is not None:
                v.set_person(int(p.track_id), p.vertices_world, self.faces)
                seen.add(int(p.track_id))
        for tid in v.people:
            if tid not in seen:
                v.set_person(tid, None, self.faces)

    # ------------------------------------------------------------------------------------------ end
    def close(self, linger: float = 0.0, stop: Callable[[], bool] = lambda: False) -> dict:
        """Draw the last frame, keep serving `linger` s (-1: until `stop()` or Ctrl-C), stop; returns the report
        for summary.json."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join(timeout=30)
        end = float("inf") if linger < 0 else time.monotonic() + linger
        try:
            while time.monotonic() < end and not stop():
                self.max_clients = max(self.max_clients, self.view.clients())
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        report = {"url": self.view.url, "frames_offered": self.offered, "frames_drawn": self.drawn,
                  "frames_dropped": self.dropped, "max_clients": self.max_clients,
                  "scene_nodes": self.view.node_names(), "error": None if self.error is None else str(self.error)}
        self.view.stop()
        print(f"human3r-edge run | live viewer: drew {self.drawn} of {self.offered} frames ({self.dropped} dropped "
              f"so as not to slow the pipeline), {self.max_clients} browsers at most", file=sys.stderr)
        return report


def open_live_viewer(args: argparse.Namespace, faces: np.ndarray) -> LiveViewer | None:
    """The live viewer `run --viewer` asked for, or None. Raises Human3RError (port in use: exit 2) or
    BackendUnavailable (viser missing: exit 3)."""
    if not getattr(args, "viewer", False):
        return None
    view = SceneView(args.viewer_host, args.viewer_port, flag="--viewer-port")
    print(f"human3r-edge run | live viewer at {view.url}", file=sys.stderr, flush=True)
    return LiveViewer(view, faces)
