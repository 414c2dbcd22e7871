"""The viser scene both viewers draw into: point cloud, camera frustum and path, one mesh per person track.

viser is imported lazily (the `[viewer]` extra); everything here is in the run's world frame (OpenCV: y down), so
the viewer's up direction is -y. Scene node names: /points, /camera, /trajectory, /people/track_NNNN.
"""
from __future__ import annotations

import errno
import math
import socket
from typing import Any

import numpy as np

from human3r_edge.errors import BackendUnavailable, Human3RError, msg
from human3r_edge.runtime.geometry import matrix_to_quaternion
from human3r_edge.runtime.outputs.preview import track_color

DEFAULT_HOST = "127.0.0.1"  # loopback: a Jetson serves its viewer to the network only with --host 0.0.0.0
DEFAULT_PORT = 8080


def import_viser() -> Any:
    try:
        import viser
    except ImportError as exc:
        raise BackendUnavailable(msg("viewer", "viser is not installed", f"{type(exc).__name__}: {exc}",
                                     hint="pip install 'human3r-edge[viewer]' (or pip install viser)")) from exc
    return viser


def check_port_free(host: str, port: int, flag: str = "--port") -> None:
    """Raise Human3RError when `host:port` cannot be bound (in use, or not an address of this machine)."""
    if not 0 < port < 65536:
        raise Human3RError(msg(flag, "not a TCP port", port, "1..65535"))
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Human3RError(msg(f"host {host}", "cannot be resolved", exc.strerror,
                               "an address of this machine", "127.0.0.1 (this machine only) or 0.0.0.0 (all)")) from exc
    fam, _, _, _, addr = infos[0]
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is not "in use"
    try:
        s.bind(addr)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise Human3RError(msg(f"{flag} {port}", "already in use", f"{host}:{port}", "a free port",
                                   f"pass another {flag} (e.g. {flag} {port + 1}), or stop the program using it "
                                   f"(`ss -ltnp | grep :{port}`)")) from exc
        raise Human3RError(msg(f"host {host}:{port}", "cannot be bound", exc.strerror,
                               hint="use 127.0.0.1 or 0.0.0.0, or a port above 1023 without root")) from exc
    finally:
        s.close()


def _wxyz(R: np.ndarray) -> np.ndarray:
    return matrix_to_quaternion(np.asarray(R, np.float64))


class SceneView:
    """A viser server holding the scene. Thread-safe enough for one writer thread (viser queues messages)."""

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, flag: str = "--port") -> None:
        viser = import_viser()
        check_port_free(host, port, flag)
        self.server = viser.ViserServer(host=host, port=port, verbose=False)
        if self.server.get_port() != port:  # viser moves on to the next port by itself: refuse instead
            self.server.stop()
            raise Human3RError(msg(f"{flag} {port}", "already in use", f"{host}:{port}", "a free port",
                                   f"pass another {flag}"))
        self.host, self.port = host, port
        self.server.scene.set_up_direction("-y")
        self.people: dict[int, Any] = {}
        self.clouds: dict[str, Any] = {}  # point cloud nodes by name: "/points" (replay), "/points/NNNNNN" (live)
        self.point_size = 0.01

    @property
    def url(self) -> str:
        return f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '::') else self.host}:{self.port}"

    @property
    def points(self) -> Any:
        """The "/points" cloud handle (replay), or None."""
        return self.clouds.get("/points")

    def set_points(self, points: np.ndarray, colors: np.ndarray, name: str = "/points") -> None:
        """points (N, 3) float32 world, colors (N, 3) uint8; replaces the cloud called `name`."""
        if points.shape[0] == 0:
            return
        self.clouds[name] = self.server.scene.add_point_cloud(name, np.asarray(points, np.float32),
                                                              np.asarray(colors, np.uint8), point_size=self.point_size)

    def remove_points(self, name: str) -> None:
        h = self.clouds.pop(name, None)
        if h is not None:
            h.remove()

    def look_from(self, c2w: np.ndarray, target: np.ndarray, extent: float) -> None:
        """Initial view of new browsers: from behind and above the camera `c2w`, looking at `target` (3,), far
        enough back to see a scene of radius `extent`."""
        eye, tgt = np.asarray(c2w[:3, 3], np.float64), np.asarray(target, np.float64)
        back = eye - tgt - 0.5 * c2w[:3, 2] - 0.5 * c2w[:3, 1]  # behind the camera and up (-y)
        n = float(np.linalg.norm(back))
        back = back / n if n > 1e-9 else np.array([0.0, -0.5, -1.0]) / math.sqrt(1.25)
        cam = self.server.initial_camera
        cam.position = tgt + back * max(2.0 * extent, 1.0)
        cam.look_at = tgt
        cam.up = (0.0, -1.0, 0.0)

    def set_point_size(self, size: float) -> None:
        self.point_size = float(size)
        for h in self.clouds.values():
            h.point_size = self.point_size

    def set_camera(self, c2w: np.ndarray, K: np.ndarray | None, width: int, height: int,
                   image: np.ndarray | None = None) -> None:
        """The current camera as a frustum (60-degree FOV when K is missing or degenerate)."""
        f = float(K[1, 1]) if K is not None and np.isfinite(K).all() and K[1, 1] > 0 else None
        fov = 2.0 * math.atan(height / (2.0 * f)) if f and height else math.radians(60.0)
        self.server.scene.add_camera_frustum("/camera", fov=fov, aspect=(width / height) if height else 4 / 3,
                                             scale=0.15, color=(255, 80, 40), image=image,
                                             wxyz=_wxyz(c2w[:3, :3]), position=np.asarray(c2w[:3, 3], np.float64))

    def set_trajectory(self, positions: np.ndarray) -> None:
        """positions (N, 3): the camera path as line segments."""
        p = np.asarray(positions, np.float32)
        if p.shape[0] < 2:
            return
        seg = np.stack([p[:-1], p[1:]], 1)  # (N-1, 2, 3)
        self.server.scene.add_line_segments("/trajectory", seg, (255, 140, 0), thickness=2.0,
                                            thickness_units="screen")

    def set_person(self, track_id: int, vertices: np.ndarray | None, faces: np.ndarray, visible: bool = True) -> None:
        """Show track `track_id` with (V, 3) world vertices, or hide it (vertices None / not visible)."""
        h = self.people.get(track_id)
        if vertices is None:
            if h is not None:
                h.visible = False
            return
        if h is None:
            self.people[track_id] = self.server.scene.add_mesh_simple(
                f"/people/track_{track_id:04d}", np.asarray(vertices, np.float32), np.asarray(faces, np.uint32),
                color=track_color(track_id), side="double", visible=visible)
        else:
            h.vertices = np.asarray(vertices, np.float32)
            h.visible = visible

    def node_names(self) -> list[str]:
        """Names of the scene nodes this view added that the server holds (server-side scene state)."""
        names = (sorted(self.clouds) + ["/camera", "/trajectory"]
                 + [f"/people/track_{t:04d}" for t in sorted(self.people)])
        return [n for n in names if self.server.scene.get_handle_by_name(n) is not None]

    def clients(self) -> int:
        return len(self.server.get_clients())

    def stop(self) -> None:
        self.server.stop()
