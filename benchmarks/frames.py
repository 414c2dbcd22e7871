"""Deterministic synthetic video frames for the benchmarks (the weights are random, so content only has to vary)."""
from __future__ import annotations

import numpy as np

def synthetic_frames(width: int, height: int, n: int, seed: int = 0) -> list[np.ndarray]:
    """n deterministic RGB uint8 frames (height, width, 3): smooth colour fields, a slow pan, three moving
    figure-like blobs and mild noise (stands in for video; the weights are random, so content only has to vary)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for i in range(n):
        img = np.empty((height, width, 3), np.float32)
        img[..., 0] = 120 + 70 * np.cos((xx + 4 * i) / 61.0 + yy / 83.0)
        img[..., 1] = 100 + 80 * yy / height
        img[..., 2] = 90 + 70 * np.sin((xx - 3 * i) / 47.0)
        for k in range(3):
            cx = (0.2 + 0.3 * k) * width + 3 * i * (1 - k)
            cy = 0.55 * height
            body = (xx - cx) ** 2 / (0.04 * width) ** 2 + (yy - cy) ** 2 / (0.25 * height) ** 2 < 1
            head = (xx - cx) ** 2 + (yy - cy + 0.32 * height) ** 2 < (0.05 * height) ** 2
            img[body | head] = (60 + 70 * k, 50 + 40 * k, 190 - 60 * k)
        img += rng.normal(0, 3, size=img.shape).astype(np.float32)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out
