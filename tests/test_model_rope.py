"""2-D RoPE: analytic cos/sin, the pose token at (-1,-1) rotates by -theta, relative-position property, fp16 quirk."""
from __future__ import annotations

import numpy as np
import torch

from human3r_edge.export.model.rope import (apply_rope, apply_rope_fp16_storage, grid_positions, inv_frequencies,
                                            rope_tables, state_positions)


def _rotate(x: torch.Tensor, pos: list[tuple[int, int]], head_dim: int) -> torch.Tensor:
    p = torch.tensor([pos], dtype=torch.int64)  # (1, N, 2)
    cos, sin = rope_tables(p, head_dim)
    return apply_rope(x, cos, sin)


def test_inv_frequencies_formula():
    inv = inv_frequencies(64).numpy()
    q = np.arange(16)
    np.testing.assert_allclose(inv, 100.0 ** (-q / 16), rtol=1e-6)


def test_pose_position_rotates_by_minus_theta():
    torch.manual_seed(0)
    d = 16
    x = torch.randn(1, 2, 1, d)  # (B, heads, N, head_dim)
    y = _rotate(x, [(-1, -1)], d)
    theta = inv_frequencies(d).numpy()  # (d/4,)
    q = d // 4
    xn, yn = x.numpy()[0, :, 0], y.numpy()[0, :, 0]
    for half in (0, 2 * q):  # y half then x half; channel m pairs with m + q
        u, v = xn[:, half:half + q], xn[:, half + q:half + 2 * q]
        c, s = np.cos(-theta), np.sin(-theta)
        np.testing.assert_allclose(yn[:, half:half + q], u * c - v * s, atol=1e-6)
        np.testing.assert_allclose(yn[:, half + q:half + 2 * q], v * c + u * s, atol=1e-6)
    # and it undoes the rotation at (+1, +1) (no wrap-around into a table)
    back = _rotate(_rotate(x, [(1, 1)], d), [(-1, -1)], d)
    torch.testing.assert_close(back, x, atol=1e-6, rtol=0)


def test_rope_is_relative():
    torch.manual_seed(1)
    d = 32
    q, k = torch.randn(1, 1, 1, d), torch.randn(1, 1, 1, d)
    dot = []
    for shift in (0, 3, -5):
        rq = _rotate(q, [(2 + shift, 7 + shift)], d)
        rk = _rotate(k, [(-1 + shift, 4 + shift)], d)
        dot.append(float((rq * rk).sum()))
    np.testing.assert_allclose(dot, dot[0], rtol=1e-5)


def test_fp16_storage_rounds_before_and_after():
    torch.manual_seed(2)
    x = torch.randn(1, 2, 5, 16) * 3
    cos, sin = rope_tables(grid_positions(1, 5), 16)
    y = apply_rope_fp16_storage(x, cos, sin)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, y.half().float(), atol=0, rtol=0)  # representable in fp16
    ref = apply_rope(x.half().float(), cos, sin).half().float()
    torch.testing.assert_close(y, ref, atol=0, rtol=0)
    assert not torch.equal(y, apply_rope(x, cos, sin))


def test_positions():
    p = grid_positions(2, 3)[0].tolist()
    assert p == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    s = state_positions(10, 4)[0].tolist()
    assert s[5] == [1, 1] and s[9] == [2, 1]
