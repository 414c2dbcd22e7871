"""The demo's scene post-processing (host side): Weiszfeld focal, world points, pose chaining across resets,
unpadding of MHMR-resolution maps, and rotation-vector conversions."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

WEISZFELD_ITERS = 10


def pixel_grid(height: int, width: int) -> torch.Tensor:
    """(H, W, 2) int64 grid with [..., 0] = x (column) and [..., 1] = y (row)."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([xs, ys], dim=-1)


def weiszfeld_focal(pts3d: torch.Tensor, pp: torch.Tensor) -> torch.Tensor:
    """Focal length that best reprojects camera-frame points pts3d (B, H, W, 3) given principal points pp
    (B, 2): least-squares start, then 10 reweighted (L1, Weiszfeld) iterations; clipped at >= 0. -> (B,)."""
    B, H, W, _ = pts3d.shape
    pixels = pixel_grid(H, W).to(pts3d.device).view(1, -1, 2) - pp.view(-1, 1, 2)  # (B, HW, 2)
    pts = pts3d.flatten(1, 2)  # (B, HW, 3)
    xy_over_z = (pts[..., :2] / pts[..., 2:3]).nan_to_num(posinf=0, neginf=0)  # (B, HW, 2)
    dot_xy_px = (xy_over_z * pixels).sum(dim=-1)  # (B, HW)
    dot_xy_xy = xy_over_z.square().sum(dim=-1)  # (B, HW)
    focal = dot_xy_px.mean(dim=1) / dot_xy_xy.mean(dim=1)
    for _ in range(WEISZFELD_ITERS):
        residual = (pixels - focal.view(-1, 1, 1) * xy_over_z).norm(dim=-1)
        w = residual.clip(min=1e-8).reciprocal()
        focal = (w * dot_xy_px).mean(dim=1) / (w * dot_xy_xy).mean(dim=1)
    focal_base = max(H, W) / (2 * math.tan(math.radians(60) / 2))
    return focal.clip(min=0.0 * focal_base, max=math.inf * focal_base)


def transform_points(T: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Apply 4x4 transforms T (B, 4, 4) to points (B, H, W, 3) -> (B, H, W, 3): R p + t."""
    return torch.einsum("bij, bhwj -> bhwi", T[:, :3, :3], pts) + T[:, None, None, :3, 3]


def chain_poses(c2w: torch.Tensor, reset: torch.Tensor) -> torch.Tensor:
    """Chain segment poses across resets: c2w_f <- (product of c2w of earlier reset frames) @ c2w_f.

    c2w (F, 4, 4) per kept frame, reset (F,) bool (the frame that ends a segment). Unchanged if no reset.
    """
    if not bool(reset.any()):
        return c2w
    eye = torch.eye(4, dtype=c2w.dtype, device=c2w.device)
    bases = torch.where(reset[:, None, None], c2w, eye)
    cum = torch.empty_like(bases)
    cum[0] = bases[0]
    for i in range(1, len(bases)):
        cum[i] = cum[i - 1] @ bases[i]
    shifted = torch.cat([eye[None], cum[:-1]], dim=0)
    return torch.einsum("bij,bjk->bik", shifted, c2w)


def unpad_image(img: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C, R, R) map of the padded square -> (B, C, H, W): nearest resize to max(H, W), centre crop."""
    side = max(height, width)
    big = F.interpolate(img, size=(side, side), mode="nearest")
    top, left = (side - height) // 2, (side - width) // 2
    return big[:, :, top:top + height, left:left + width]


def rotmat_to_unitquat(R: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) rotations -> (N, 4) unit quaternions, xyzw, via the branch on the largest of
    (R00, R11, R22, trace) (numerically stable; the sign is whatever that branch yields)."""
    n = R.shape[0]
    diag = torch.diagonal(R, dim1=1, dim2=2)  # (N, 3)
    decision = torch.cat([diag, diag.sum(dim=1, keepdim=True)], dim=1)  # (N, 4)
    choice = decision.argmax(dim=1)
    q = torch.empty((n, 4), dtype=R.dtype, device=R.device)
    rows = torch.nonzero(choice != 3, as_tuple=True)[0]
    i = choice[rows]
    j = (i + 1) % 3
    k = (j + 1) % 3
    q[rows, i] = 1 - decision[rows, -1] + 2 * R[rows, i, i]
    q[rows, j] = R[rows, j, i] + R[rows, i, j]
    q[rows, k] = R[rows, k, i] + R[rows, i, k]
    q[rows, 3] = R[rows, k, j] - R[rows, j, k]
    rows = torch.nonzero(choice == 3, as_tuple=True)[0]
    q[rows, 0] = R[rows, 2, 1] - R[rows, 1, 2]
    q[rows, 1] = R[rows, 0, 2] - R[rows, 2, 0]
    q[rows, 2] = R[rows, 1, 0] - R[rows, 0, 1]
    q[rows, 3] = 1 + decision[rows, -1]
    return q / torch.norm(q, dim=1)[:, None]


def unitquat_to_rotvec(q: torch.Tensor) -> torch.Tensor:
    """(N, 4) xyzw unit quaternions -> (N, 3) rotation vectors of angle in [0, pi] (w made >= 0 first)."""
    q = q.clone()
    q[q[:, 3] < 0] *= -1
    half = torch.atan2(torch.norm(q[:, :3], dim=1), q[:, 3])
    angle = 2 * half
    small = torch.abs(angle) <= 1e-3
    scale = torch.empty_like(angle)
    a_s = angle[small]
    scale[small] = 2 + a_s ** 2 / 12 + 7 * a_s ** 4 / 2880
    scale[~small] = angle[~small] / torch.sin(half[~small])
    return scale[:, None] * q[:, :3]


def rotmat_to_rotvec(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3) axis-angle."""
    lead = R.shape[:-2]
    return unitquat_to_rotvec(rotmat_to_unitquat(R.reshape(-1, 3, 3))).reshape(lead + (3,))


def rotvec_to_rotmat(rotvec: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 3, 3): Rodrigues, first-order approximation below `eps` radians."""
    lead = rotvec.shape[:-1]
    r = rotvec.reshape(-1, 3)
    theta = torch.norm(r, dim=-1)
    axis = r / torch.clamp_min(theta[..., None], eps)
    kx, ky, kz = axis[:, 0], axis[:, 1], axis[:, 2]
    s, c = torch.sin(theta), torch.cos(theta)
    omc = 1 - c
    xs, ys, zs = kx * s, ky * s, kz * s
    xyc, xzc, yzc = kx * ky * omc, kx * kz * omc, ky * kz * omc
    xxc, yyc, zzc = kx ** 2 * omc, ky ** 2 * omc, kz ** 2 * omc
    rodrigues = torch.stack([1 - yyc - zzc, xyc - zs, xzc + ys,
                             xyc + zs, 1 - xxc - zzc, -xs + yzc,
                             xzc - ys, xs + yzc, 1 - xxc - yyc], dim=-1).reshape(-1, 3, 3)
    x, y, z = r[:, 0], r[:, 1], r[:, 2]
    one = torch.ones_like(x)
    first_order = torch.stack([one, -z, y, z, one, -x, -y, x, one], dim=-1).reshape(-1, 3, 3)
    out = torch.where((theta < eps)[:, None, None], first_order, rodrigues)
    return out.reshape(lead + (3, 3))
