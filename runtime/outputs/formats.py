"""Bytes of the output file formats: TUM lines, PLY points and meshes, OBJ, 16-bit depth PNG."""
from __future__ import annotations

import io

import numpy as np

from human3r_edge.errors import Human3RError, msg
from human3r_edge.runtime.geometry import matrix_to_quaternion


def tum_line(timestamp: float, c2w: np.ndarray) -> str:
    """One TUM trajectory line `timestamp tx ty tz qx qy qz qw` for a camera-to-world 4x4."""
    q = matrix_to_quaternion(np.asarray(c2w, np.float64)[:3, :3])  # w, x, y, z
    t = np.asarray(c2w, np.float64)[:3, 3]
    vals = [timestamp, *t, q[1], q[2], q[3], q[0]]
    return " ".join(f"{v:.9g}" for v in vals)


def ply_points_bytes(points: np.ndarray, colors: np.ndarray, frames: int | None = None) -> bytes:
    """Binary little-endian PLY: (N, 3) float32 positions + (N, 3) uint8 RGB; `frames`: how many frames are fused
    in (a `comment frames N` header line)."""
    n = int(points.shape[0])
    rec = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                             ("blue", "u1")])
    for i, k in enumerate("xyz"):
        rec[k] = points[:, i]
    for i, k in enumerate(("red", "green", "blue")):
        rec[k] = colors[:, i]
    header = ("ply\nformat binary_little_endian 1.0\ncomment human3r-edge fused scene\n"
              + (f"comment frames {frames}\n" if frames is not None else "")
              + f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
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
