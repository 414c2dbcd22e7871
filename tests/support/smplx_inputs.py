"""Seeded random SMPL-X inputs for the skinning tests: rotations, shapes, expressions, translations, a camera."""
from __future__ import annotations

import numpy as np


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3, 3) float32 rotation matrices from normalised Gaussian quaternions."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    R = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                  2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                  2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], 1)
    return R.reshape(n, 3, 3).astype(np.float32)


def random_params(rng: np.random.Generator, P: int) -> tuple[np.ndarray, ...]:
    """(rotmat (P, 53, 3, 3), betas (P, 10), expression (P, 10), transl (P, 3), c2w (4, 4)) float32."""
    rot = random_rotations(rng, P * 53).reshape(P, 53, 3, 3)
    betas = rng.normal(size=(P, 10)).astype(np.float32) * 1.5
    expr = rng.normal(size=(P, 10)).astype(np.float32) * 1.5
    transl = (rng.normal(size=(P, 3)) + [0.0, 0.0, 5.0]).astype(np.float32)
    c2w = np.eye(4, dtype=np.float32)
    c2w[:3, :3] = random_rotations(rng, 1)[0]
    c2w[:3, 3] = rng.normal(size=3)
    return rot, betas, expr, transl, c2w
