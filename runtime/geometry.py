"""Camera geometry on the host: 7-d pose -> 4x4 c2w, Weiszfeld focal, world points, pose chaining across resets."""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from human3r_edge.errors import Human3RError, msg

WEISZFELD_ITERS = 10


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit-or-not quaternions (..., 4) as (w, x, y, z) -> rotation matrices (..., 3, 3), same dtype."""
    q = np.asarray(q)
    w, x, y, z = (q[..., i] for i in range(4))
    two_s = 2.0 / np.sum(q * q, axis=-1)
    rows = (
        1 - two_s * (y * y + z * z), two_s * (x * y - z * w), two_s * (x * z + y * w),
        two_s * (x * y + z * w), 1 - two_s * (x * x + z * z), two_s * (y * z - x * w),
        two_s * (x * z - y * w), two_s * (y * z + x * w), 1 - two_s * (x * x + y * y),
    )
    return np.stack(rows, axis=-1).reshape(q.shape[:-1] + (3, 3)).astype(q.dtype, copy=False)


def matrix_to_quaternion(r: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) wxyz with w >= 0 (float64, Shepperd's method)."""
    r = np.asarray(r, np.float64)
    m = r.reshape(-1, 3, 3)
    tr = np.trace(m, axis1=1, axis2=2)
    diag = np.stack([tr, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], -1)  # pick the numerically largest component
    k = np.argmax(diag, axis=-1)
    q = np.empty((m.shape[0], 4))
    for case in range(4):
        sel = k == case
        a = m[sel]
        if case == 0:
            s = np.sqrt(np.maximum(1.0 + tr[sel], 1e-300)) * 2  # 4w
            q[sel] = np.stack([0.25 * s, (a[:, 2, 1] - a[:, 1, 2]) / s, (a[:, 0, 2] - a[:, 2, 0]) / s,
                               (a[:, 1, 0] - a[:, 0, 1]) / s], -1)
        else:
            i = case - 1
            j, l = (i + 1) % 3, (i + 2) % 3
            s = np.sqrt(np.maximum(1.0 + a[:, i, i] - a[:, j, j] - a[:, l, l], 1e-300)) * 2  # 4 * q_i
            v = np.empty((a.shape[0], 3))
            v[:, i] = 0.25 * s
            v[:, j] = (a[:, j, i] + a[:, i, j]) / s
            v[:, l] = (a[:, l, i] + a[:, i, l]) / s
            w = (a[:, l, j] - a[:, j, l]) / s
            q[sel] = np.concatenate([w[:, None], v], -1)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    return q.reshape(r.shape[:-2] + (4,))


def rotmat_to_axis_angle(r: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> axis-angle vectors (..., 3) float32, angle in [0, pi] (stable near pi)."""
    q = matrix_to_quaternion(r)
    v = q[..., 1:]
    sin_half = np.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, q[..., :1])
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(sin_half > 1e-12, angle / sin_half, 2.0)  # small angles: angle/sin(angle/2) -> 2
    return (v * scale).astype(np.float32)


def pose_to_c2w(pose: np.ndarray) -> np.ndarray:
    """The pose head's encoding (..., 7) = translation (3) + quaternion wxyz (4) -> camera-to-world (..., 4, 4)."""
    pose = np.asarray(pose, dtype=np.float32)
    if pose.shape[-1] != 7:
        raise Human3RError(msg("camera pose", "last axis must be 7 (t, q_wxyz)", pose.shape))
    out = np.zeros(pose.shape[:-1] + (4, 4), np.float32)
    out[..., :3, :3] = quaternion_to_matrix(pose[..., 3:7])
    out[..., :3, 3] = pose[..., :3]
    out[..., 3, 3] = 1.0
    return out


def transform_points(c2w: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to points (..., 3) float32 -> new (..., 3) float32 array."""
    c2w = np.asarray(c2w, np.float32)
    pts = np.asarray(pts, np.float32)
    return pts @ c2w[:3, :3].T + c2w[:3, 3]


def principal_point(width: int, height: int) -> tuple[float, float]:
    """The demo's principal point (W//2, H//2) in pixels."""
    return float(width // 2), float(height // 2)


@lru_cache(maxsize=8)
def _pixel_offsets(width: int, height: int) -> np.ndarray:
    """(H*W, 2) float32 pixel offsets (x - W//2, y - H//2) from the principal point, row-major. Read-only, cached."""
    cx, cy = principal_point(width, height)
    u, v = np.meshgrid(np.arange(width, dtype=np.float32) - np.float32(cx),
                       np.arange(height, dtype=np.float32) - np.float32(cy), indexing="xy")
    out = np.ascontiguousarray(np.stack([u.reshape(-1), v.reshape(-1)], axis=1), np.float32)
    out.setflags(write=False)
    return out


def _mean32(a: Any) -> np.float32:
    """Mean as torch's CPU `mean` computes it for float32: a float32 sum, then a float32 division by n."""
    return np.float32(np.sum(a, dtype=np.float32)) / np.float32(a.shape[0])


def weiszfeld_focal(pts_self: np.ndarray, iters: int = WEISZFELD_ITERS) -> float:
    """Focal (pixels) of a point map in its own camera frame, by the reference's Weiszfeld estimate.

    pts_self (H, W, 3) float32. Principal point (W//2, H//2); robust L1 reprojection fit (least-squares start,
    `iters` reweightings with weights 1 / max(|px - f xy|, 1e-8)), clipped at 0 from below.
    Degenerate maps: NaN when no pixel has a finite x/z, y/z (all z = 0: the ratio 0/0); 0 when the fit is
    negative (clipped). `run` writes NaN as null in cameras.json and the 0 as 0.
    Computed exactly as the reference (dust3r's estimate_focal_knowing_depth): float32 throughout, the residual
    in its direct form |px - f xy|, means as float32 sums divided by n. A float64 or rearranged residual
    (|px|^2 - 2 f <xy,px> + f^2 |xy|^2) weights the few pixels with a near-zero residual differently (the weight
    is 1 / residual), which moved sensitive frames by up to 1.9e-4 of max|focal| over a 60-frame sequence.
    """
    pts = np.asarray(pts_self)
    if pts.ndim != 3 or pts.shape[-1] != 3:
        raise Human3RError(msg("point map", "must be (H, W, 3)", pts.shape))
    h, w, _ = pts.shape
    px = _pixel_offsets(w, h)  # (HW, 2)
    p = pts.reshape(-1, 3).astype(np.float32, copy=False)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        xy = p[:, :2] / p[:, 2:3]  # (HW, 2) float32
        # nan_to_num(posinf=0, neginf=0) as the reference: NaN (0/0) becomes 0 too
        np.nan_to_num(xy, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        dot_xy_px = np.sum(xy * px, axis=1, dtype=np.float32)  # (HW,)
        dot_xy_xy = np.sum(xy * xy, axis=1, dtype=np.float32)
        focal = _mean32(dot_xy_px) / _mean32(dot_xy_xy)  # a degenerate map: 0 / 0 = NaN, as the reference
        tiny = np.float32(1e-8)
        for _ in range(iters):
            d = px - focal * xy  # (HW, 2) the direct residual
            res = np.sqrt(np.sum(d * d, axis=1, dtype=np.float32))
            wgt = np.float32(1.0) / np.maximum(res, tiny)
            focal = _mean32(wgt * dot_xy_px) / _mean32(wgt * dot_xy_xy)
    if not math.isfinite(float(focal)):
        return float("nan")
    return max(float(focal), 0.0)


def model_to_source_intrinsics(K: np.ndarray, src_width: int, src_height: int, size: int) -> np.ndarray:
    """K (3, 3) of the model image -> K (3, 3) float64 of the source frame it was made from (`run --fit exact`,
    the default: resize the long side to `size` = max(export W, H), then the reference's centre crop).

    A model pixel u (pixel centres at integers) comes from source pixel (u + crop_left + 0.5) * sx - 0.5 with
    sx = src_width / resized_width (likewise v), so f_src = f * sx and c_src = (c + crop_left + 0.5) * sx - 0.5.
    NaN stays NaN (a degenerate focal)."""
    from human3r_edge.runtime.preprocess import crop_box, resized_size

    w1, h1 = resized_size(src_width, src_height, size)
    x0, y0, _, _ = (int(round(v)) for v in crop_box(w1, h1, size))
    sx, sy = src_width / w1, src_height / h1
    k = np.asarray(K, np.float64).copy()
    k[0, 0] *= sx
    k[1, 1] *= sy
    k[0, 2] = (k[0, 2] + x0 + 0.5) * sx - 0.5
    k[1, 2] = (k[1, 2] + y0 + 0.5) * sy - 0.5
    return k


def intrinsics(focal: float, width: int, height: int) -> np.ndarray:
    """K (3, 3) float32 = [[f, 0, W//2], [0, f, H//2], [0, 0, 1]]."""
    cx, cy = principal_point(width, height)
    k = np.eye(3, dtype=np.float32)
    k[0, 0] = k[1, 1] = focal
    k[0, 2], k[1, 2] = cx, cy
    return k


class PoseChain:
    """Chains segment poses into one world frame across state resets (the demo's cumulative product).

    After a reset the model's poses are relative to the reset frame's camera, so every later pose is
    left-multiplied by the product of the reset frames' segment poses. Scale is not aligned across segments
    (neither does the reference).
    """

    def __init__(self) -> None:
        self.base = np.eye(4, dtype=np.float32)  # (4, 4) world <- current segment

    def reset(self) -> None:
        self.base = np.eye(4, dtype=np.float32)

    def world(self, c2w_segment: np.ndarray) -> np.ndarray:
        """Segment c2w (4, 4) -> world c2w (4, 4) float32 (a new array)."""
        return (self.base @ np.asarray(c2w_segment, np.float32)).astype(np.float32)

    def on_reset(self, c2w_segment: np.ndarray) -> None:
        """Call with the reset frame's segment c2w after its own world pose was taken."""
        self.base = self.world(c2w_segment)


def chain_poses(c2w_segment: np.ndarray, reset_flags: np.ndarray) -> np.ndarray:
    """Batch form for tests and offline use: (F, 4, 4) segment poses + (F,) reset flags -> (F, 4, 4) world."""
    chain = PoseChain()
    out = np.empty_like(np.asarray(c2w_segment, np.float32))
    for i, (c2w, flag) in enumerate(zip(c2w_segment, reset_flags)):
        out[i] = chain.world(c2w)
        if flag:
            chain.on_reset(c2w)
    return out
