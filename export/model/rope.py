"""2-D rotary position embedding (RoPE100) with cos/sin computed analytically from signed positions."""
from __future__ import annotations

import torch


def inv_frequencies(head_dim: int, base: float = 100.0) -> torch.Tensor:
    """Per-axis inverse frequencies, (head_dim // 4,) float32: `1 / base**(2i / (head_dim/2))`.

    Each head is split in two halves (y then x); each half rotates channel pairs (m, m + head_dim//4).
    """
    half = head_dim // 2
    exponent = torch.arange(0, half, 2, dtype=torch.float32) / half
    return 1.0 / (base ** exponent)


def rope_tables(pos: torch.Tensor, head_dim: int, base: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables for positions `pos` (B, N, 2) integer (y, x); returns two (B, 1, N, head_dim) fp32.

    The angle is `pos * inv_freq` in fp32 for any signed position, so the pose token at (-1, -1) rotates by
    -theta (no lookup table, no wrap-around). Channel layout per head: [y-half | x-half], each half being
    [angles | angles] to pair channel m with m + head_dim//4.
    """
    inv = inv_frequencies(head_dim, base).to(pos.device)  # (Q,)
    p = pos.to(torch.float32)  # (B, N, 2)
    ang_y = p[..., 0:1] * inv  # (B, N, Q)
    ang_x = p[..., 1:2] * inv  # (B, N, Q)
    ang = torch.cat([ang_y, ang_y, ang_x, ang_x], dim=-1)  # (B, N, head_dim)
    return ang.cos().unsqueeze(1), ang.sin().unsqueeze(1)


def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(..., D) with D = 2*h: within each half [a | b] -> [-b | a] (the partner of channel m is m +- D/4)."""
    d = x.shape[-1]
    q = d // 4
    y1, y2, x1, x2 = x[..., :q], x[..., q:2 * q], x[..., 2 * q:3 * q], x[..., 3 * q:]
    return torch.cat([-y2, y1, -x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, heads, N, head_dim) fp32 by the tables from `rope_tables`: `x*cos + rot(x)*sin`."""
    return x * cos + _rotate_pairs(x) * sin


def apply_rope_fp16_storage(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The CroCo encoder's quirk: q/k are stored in float16 around RoPE (math in fp32), then back to fp32.

    x (B, heads, N, head_dim) fp32 -> fp32 tensor carrying two float16 roundings (before and after RoPE).
    """
    x16 = x.to(torch.float16).to(torch.float32)
    return apply_rope(x16, cos, sin).to(torch.float16).to(torch.float32)


def grid_positions(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, height*width, 2) int64 (y, x) positions of a row-major patch grid."""
    ys = torch.arange(height, device=device).repeat_interleave(width)
    xs = torch.arange(width, device=device).repeat(height)
    return torch.stack([ys, xs], dim=-1).unsqueeze(0)


def state_positions(state_size: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, state_size, 2) int64 positions (i // width, i % width) of the state tokens."""
    i = torch.arange(state_size, device=device)
    return torch.stack([i // width, i % width], dim=-1).unsqueeze(0)
