"""Trace-friendly output transforms of the heads: exp-mode points, confidences, poses, scores, 6D rotations."""
from __future__ import annotations

import torch

SCORE_EPS = 1e-6


def expm1(x: torch.Tensor) -> torch.Tensor:
    """exp(x) - 1 written out (the dynamo ONNX exporter rejects torch.expm1)."""
    return torch.exp(x) - 1


def exp_points(xyz: torch.Tensor) -> torch.Tensor:
    """depth_mode ('exp', -inf, inf): xyz / |xyz| * (exp(|xyz|) - 1); (..., 3) -> (..., 3)."""
    d = xyz.norm(dim=-1, keepdim=True)
    return xyz / d.clip(min=1e-8) * expm1(d)


def exp_conf(x: torch.Tensor) -> torch.Tensor:
    """conf_mode ('exp', 1, inf): 1 + exp(x)."""
    return 1 + x.exp()


def dense_outputs(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DPT map (B, 4, H, W) -> points (B, H, W, 3) and confidence (B, H, W)."""
    fmap = out.permute(0, 2, 3, 1)  # (B, H, W, 4)
    return exp_points(fmap[..., 0:3]), exp_conf(fmap[..., 3])


def rgb_output(out: torch.Tensor, eps: float = SCORE_EPS) -> torch.Tensor:
    """rgb head (B, 3, H, W) -> (B, H, W, 3) in [-1, 1]: (sigmoid*(1-2eps)+eps - 0.5) * 2."""
    res = torch.sigmoid(out.permute(0, 2, 3, 1)) * (1 - 2 * eps) + eps
    return (res - 0.5) * 2


def score(x: torch.Tensor, eps: float = SCORE_EPS) -> torch.Tensor:
    """sigmoid(x) * (1 - 2eps) + eps (detection scores and mask)."""
    return torch.sigmoid(x) * (1 - 2 * eps) + eps


def standardize_quaternion(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternion (..., 4) wxyz with w >= 0 (normalised like F.normalize, eps 1e-12)."""
    q = q / q.norm(p=2, dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(q[..., 0:1] < 0, -q, q)


def pose_output(out: torch.Tensor) -> torch.Tensor:
    """pose head (B, 7) -> [t * (exp|t| - 1)/|t| (3), standardised unit quaternion wxyz (4)] (B, 7)."""
    trans, quats = out[..., 0:3], out[..., 3:7]
    d = trans.norm(dim=-1, keepdim=True)
    trans = trans * (expm1(d) / d.clip(min=1e-8))
    return torch.cat([trans, standardize_quaternion(quats)], dim=-1)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) wxyz (not necessarily unit) -> (..., 3, 3) rotation."""
    r, i, j, k = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    two_s = 2.0 / (q * q).sum(-1)
    rows = [
        1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
        two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
        two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j),
    ]
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def pose_to_c2w(pose: torch.Tensor) -> torch.Tensor:
    """camera_pose (B, 7) -> camera-to-world (B, 4, 4)."""
    R = quaternion_to_matrix(pose[:, 3:7])  # (B, 3, 3)
    top = torch.cat([R, pose[:, :3, None]], dim=-1)  # (B, 3, 4)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=pose.dtype, device=pose.device).expand(pose.shape[0], 1, 4)
    return torch.cat([top, bottom], dim=1)


def cross3(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cross product of (..., 3) vectors, written out (ONNX has no Cross op)."""
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return torch.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], dim=-1)


def gram_schmidt(m: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(..., 3, 2) two column vectors -> (..., 3, 3) rotation [x | y | x cross y] (norms clamped at eps)."""
    x, y = m[..., 0], m[..., 1]  # (..., 3)
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(eps)
    y = y - (x * y).sum(dim=-1, keepdim=True) * x
    y = y / y.norm(dim=-1, keepdim=True).clamp_min(eps)
    return torch.stack([x, y, cross3(x, y)], dim=-1)


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """(..., J*6) -> (..., J, 3, 3): each 6-vector read as a 3x2 matrix (columns = first two axes)."""
    lead = x.shape[:-1]
    m = x.reshape(lead + (x.shape[-1] // 6, 3, 2))
    return gram_schmidt(m)
