"""Data-dependent human detection steps (host side, not traced): 3x3 NMS, thresholding, head locations and
their mapping from the padded MHMR square to CUT3R patches."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

DETECTION_THRESHOLD = 0.3  # hard-coded in the reference (score >= 0.3 after NMS)


class Detections(NamedTuple):
    """n detections of one frame, in row-major order of the score map."""

    h: torch.Tensor  # (n,) int64 DINOv2 cell row
    w: torch.Tensor  # (n,) int64 DINOv2 cell column
    loc: torch.Tensor  # (n, 2) float32 head (x, y) in padded-MHMR pixels
    patch_x: torch.Tensor  # (n,) int64 CUT3R patch column of the head
    patch_y: torch.Tensor  # (n,) int64 CUT3R patch row of the head

    def cells(self, grid: int) -> torch.Tensor:
        """(n,) int64 row-major DINOv2 cell index h*grid + w."""
        return self.h * grid + self.w

    def patches(self, width_patches: int) -> torch.Tensor:
        """(n,) int64 row-major CUT3R patch index y*(W/16) + x."""
        return self.patch_y * width_patches + self.patch_x


def nms(scores: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Keep local maxima: scores (B, g, g) -> same shape with every non-maximum of its 3x3 window set to 0.

    A cell survives only if it equals the window max exactly (ties all survive, as in the reference).
    """
    heat = scores.unsqueeze(1)  # (B, 1, g, g)
    hmax = F.max_pool2d(heat, (kernel, kernel), stride=1, padding=(kernel - 1) // 2)
    return (heat * (hmax == heat).float()).squeeze(1)


def unpad_uv(uv: torch.Tensor, side: int, height: int, width: int) -> torch.Tensor:
    """Map (n, 2) (x, y) pixels of the padded side x side square to the height x width image.

    Proportional scale max(H, W) / side, minus the integer centre-padding offsets, clamped into the image
    (not the exact inverse of pad_image, which truncates sizes; this is the reference's mapping).
    """
    h = torch.tensor(height, dtype=torch.int32)
    w = torch.tensor(width, dtype=torch.int32)
    big = torch.maximum(h, w)
    scaled = uv * (big / side)
    offset = torch.stack([(big - w) // 2, (big - h) // 2]).to(uv.dtype)
    out = scaled - offset
    x = out[:, 0].clamp(0, width - 1)
    y = out[:, 1].clamp(0, height - 1)
    return torch.stack([x, y], dim=-1)


def find_humans(scores_nms: torch.Tensor, offsets: torch.Tensor, side: int, height: int, width: int,
                mhmr_patch: int = 14, cut3r_patch: int = 16, threshold: float = DETECTION_THRESHOLD
                ) -> Detections:
    """Detections of one frame.

    scores_nms (g, g) after `nms`; offsets (g, g, 2) (dx, dy) in cells; side = R; height/width = CUT3R image.
    Head location ((w, h) + 0.5 + offset) * 14 (may leave the image); its CUT3R patch is the floor-divided
    clamped unpadded location.
    """
    h_id, w_id = torch.where(scores_nms >= threshold)  # row-major order
    off = offsets[h_id, w_id]  # (n, 2)
    loc = (torch.stack([w_id, h_id], dim=-1) + 0.5 + off) * mhmr_patch  # (n, 2) float32
    uv = unpad_uv(loc, side, height, width)
    patch = torch.div(uv, cut3r_patch, rounding_mode="floor").to(torch.int32).to(torch.int64)
    return Detections(h_id, w_id, loc, patch[:, 0], patch[:, 1])
