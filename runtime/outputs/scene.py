"""The fused scene: confidence-filtered, people-masked world points averaged in a capped voxel grid."""
from __future__ import annotations

import numpy as np


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
