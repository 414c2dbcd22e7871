"""Host-side person detection: 3x3 NMS, score threshold, head locations and the decoder's K human slots.

The reference keeps every cell with NMS score >= 0.3 and has no cap. The decoder graph has K static slots, so
when more than K cells pass, this module keeps the K highest scores (ties: lower row-major index first), keeps
them in row-major order, and warns once per `Detector`. With <= K detections it is exactly the reference.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from human3r_edge.errors import Human3RError, msg
from human3r_edge.runtime.preprocess import unpad_uv

DETECTION_THRESHOLD = 0.3  # hard-coded in the reference (apply_threshold(0.3, ...), inclusive)
DINO_PATCH = 14
CUT3R_PATCH = 16


def nms3x3(scores: np.ndarray) -> np.ndarray:
    """Zero every cell that is not the maximum of its 3x3 neighbourhood (exact equality, -inf padding).

    scores (g, g) float32 -> new (g, g) float32 array.
    """
    s = np.asarray(scores, np.float32)
    if s.ndim != 2:
        raise Human3RError(msg("detection scores", "must be (g, g)", s.shape))
    pad = np.pad(s, 1, mode="constant", constant_values=-np.inf)
    h, w = s.shape
    peak = s.copy()
    for dy in range(3):
        for dx in range(3):
            np.maximum(peak, pad[dy:dy + h, dx:dx + w], out=peak)
    return np.where(peak == s, s, np.float32(0.0)).astype(np.float32)


def threshold_cells(scores: np.ndarray, threshold: float = DETECTION_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Row-major (h, w) indices (int64) of the cells with score >= threshold (compared in float32)."""
    h, w = np.nonzero(np.asarray(scores, np.float32) >= np.float32(threshold))
    return h.astype(np.int64), w.astype(np.int64)


def head_locations(h: np.ndarray, w: np.ndarray, offsets: np.ndarray, patch: int = DINO_PATCH) -> np.ndarray:
    """Head (x, y) in padded-square pixels: ((w, h) + 0.5 + offset) * patch. offsets (n, 2) -> (n, 2) float32."""
    cells = np.stack([w, h], axis=-1).astype(np.float32)  # (n, 2) as (x, y)
    return ((cells + np.float32(0.5) + np.asarray(offsets, np.float32)) * np.float32(patch)).astype(np.float32)


@dataclass(frozen=True)
class Detections:
    """The people found in one frame, in slot order (row-major over the score grid). Arrays are owned by it."""

    cells_hw: np.ndarray  # (n, 2) int64 DINOv2 cell (h, w)
    scores: np.ndarray  # (n,) float32 NMS score
    loc_square: np.ndarray  # (n, 2) float32 head (x, y) in the padded R x R image (may lie outside it)
    loc_image: np.ndarray  # (n, 2) float32 head (x, y) in CUT3R image pixels (unpadded, clamped)
    patch_yx: np.ndarray  # (n, 2) int64 CUT3R patch (y, x) holding the head: the human token's RoPE position
    dropped: int = 0  # detections beyond the K slots (not passed to the decoder)

    @property
    def count(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 2), np.int64), np.zeros(0, np.float32), np.zeros((0, 2), np.float32),
                          np.zeros((0, 2), np.float32), np.zeros((0, 2), np.int64))


@dataclass(frozen=True)
class Slots:
    """Host feeds of the decoder's K human slots (see graphs.py)."""

    human_cell: np.ndarray  # (K,) int32 h*g+w
    human_patch: np.ndarray  # (K,) int32 y*(W/16)+x
    human_valid: np.ndarray  # (K,) float32 1 for the first n slots

    def feeds(self) -> dict[str, np.ndarray]:
        return {"human_cell": self.human_cell, "human_patch": self.human_patch, "human_valid": self.human_valid}


def keep_top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices (sorted ascending) of the k highest scores; ties favour the lower index."""
    if scores.shape[0] <= k:
        return np.arange(scores.shape[0])
    order = np.lexsort((np.arange(scores.shape[0]), -scores.astype(np.float64)))
    return np.sort(order[:k])


class Detector:
    """Turns the encoder's score and offset maps into detections and slot feeds.

    image_hw: (H, W) of the CUT3R image; square: R of the DINOv2 branch; grid: g = R // 14; slots: K of the
    export; max_people: an optional lower cap (<= K).
    """

    def __init__(self, image_hw: tuple[int, int], square: int, grid: int, slots: int,
                 max_people: int | None = None, threshold: float = DETECTION_THRESHOLD) -> None:
        if max_people is not None and not 1 <= max_people <= slots:
            raise Human3RError(msg("max_people", "out of range", max_people, f"1..{slots} (the export's K slots)",
                                   "re-export with --max-people to get more slots"))
        self.height, self.width = image_hw
        self.square = square
        self.grid = grid
        self.slots = slots
        self.cap = slots if max_people is None else max_people
        self.threshold = threshold
        self.warned = False

    def detect(self, det_scores: np.ndarray, det_offsets: np.ndarray) -> Detections:
        """det_scores (g, g) or (1, g, g) before NMS, det_offsets (g, g, 2) or (1, g, g, 2) -> Detections."""
        g = self.grid
        scores = np.asarray(det_scores, np.float32).reshape(g, g)
        offsets = np.asarray(det_offsets, np.float32).reshape(g, g, 2)
        peaks = nms3x3(scores)
        h, w = threshold_cells(peaks, self.threshold)
        sc = peaks[h, w]
        keep = keep_top(sc, self.cap)
        dropped = int(h.shape[0] - keep.shape[0])
        if dropped and not self.warned:
            warnings.warn(msg("detection", f"more people than the {self.cap} kept per frame", h.shape[0],
                              hint="kept the highest scores; further frames warn no more"), stacklevel=2)
            self.warned = True
        h, w, sc = h[keep], w[keep], sc[keep]
        loc = head_locations(h, w, offsets[h, w])
        loc_img = unpad_uv(loc, size=self.square, height=self.height, width=self.width).reshape(-1, 2)
        patch = np.floor_divide(loc_img, np.float32(CUT3R_PATCH)).astype(np.int64)  # (n, 2) as (x, y)
        return Detections(np.stack([h, w], -1).astype(np.int64).reshape(-1, 2), sc.astype(np.float32), loc,
                          loc_img, patch[:, ::-1].copy(), dropped)

    def slots_for(self, det: Detections) -> Slots:
        """Slot feeds: the first det.count slots hold the detections, the rest are zero padding."""
        k = self.slots
        n = det.count
        cell = np.zeros(k, np.int32)
        patch = np.zeros(k, np.int32)
        valid = np.zeros(k, np.float32)
        cell[:n] = det.cells_hw[:, 0] * self.grid + det.cells_hw[:, 1]
        patch[:n] = det.patch_yx[:, 0] * (self.width // CUT3R_PATCH) + det.patch_yx[:, 1]
        valid[:n] = 1.0
        return Slots(cell, patch, valid)
