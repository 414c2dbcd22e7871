"""The Multi-HMR DINOv2 ViT/14 human backbone (state-dict layout of torch.hub `dinov2_vit*14`, no registers)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from human3r_edge.export.model.blocks import LN_EPS, Mlp, PatchEmbed

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATE_OFFSET = 0.1  # the hub models' historical offset in the position-embedding scale factor


class DinoAttention(nn.Module):
    """Plain multi-head self-attention (what xFormers' MemEffAttention computes); keys qkv, proj."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)  # (B, N, 3, h, d)
        q, k, v = (t.transpose(1, 2) for t in torch.unbind(qkv, 2))  # (B, h, N, d)
        out = F.scaled_dot_product_attention(q, k, v)  # default scale d**-0.5
        return self.proj(out.transpose(1, 2).contiguous().view(B, N, C))


class LayerScale(nn.Module):
    """x * gamma (key `gamma`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class DinoBlock(nn.Module):
    """x + ls1(attn(norm1(x))); x + ls2(mlp(norm2(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = DinoAttention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT with a cls token and a (1 + G*G)-token learned position embedding (G = pos_grid)."""

    def __init__(self, dim: int, depth: int, num_heads: int, patch: int = 14, pos_grid: int = 37,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.patch_size = patch
        self.embed_dim = dim
        self.pos_grid = pos_grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pos_grid * pos_grid, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # unused at inference; present in checkpoints
        self.patch_embed = PatchEmbed(3, dim, patch)
        self.blocks = nn.ModuleList([DinoBlock(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.register_buffer("fixed_pos_embed", None, persistent=False)

    def interpolated_pos_embed(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """(1, 1 + grid_h*grid_w, dim): the 37x37 table resized bicubically with scale (g + 0.1) / 37.

        Matches the hub's `interpolate_pos_encoding` exactly (same scale factors, no antialias; the table is
        returned unchanged at the native 37x37 grid).
        """
        G = self.pos_grid
        if grid_h == G and grid_w == G:
            return self.pos_embed
        table = self.pos_embed.float()
        cls_pos, patch_pos = table[:, 0], table[:, 1:]
        dim = table.shape[-1]
        scale = (float(grid_h + INTERPOLATE_OFFSET) / G, float(grid_w + INTERPOLATE_OFFSET) / G)
        patch_pos = F.interpolate(patch_pos.reshape(1, G, G, dim).permute(0, 3, 1, 2), mode="bicubic",
                                  antialias=False, scale_factor=scale)  # (1, dim, grid_h, grid_w)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat([cls_pos.unsqueeze(0), patch_pos], dim=1).to(self.pos_embed.dtype)

    def freeze_pos_embed(self, grid: int) -> None:
        """Precompute the interpolated table for a square `grid` (a constant for tracing/export)."""
        with torch.no_grad():
            self.fixed_pos_embed = self.interpolated_pos_embed(grid, grid).detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) ImageNet-normalised -> final-norm patch tokens (B, H/14 * W/14, dim), cls dropped."""
        gh, gw = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tok = self.patch_embed(x)  # (B, gh*gw, dim)
        # expand_as (Expand to a Shape), not expand(B, -1, -1): with a dynamic batch the exporter writes the sizes
        # of a traced expand as INT64 Equal/Where data, which the TensorRT check rejects
        tok = torch.cat([self.cls_token.expand_as(tok[:, :1]), tok], dim=1)  # (B, 1 + gh*gw, dim)
        pos = self.fixed_pos_embed
        if pos is None or pos.shape[1] != tok.shape[1]:
            pos = self.interpolated_pos_embed(gh, gw)
        tok = tok + pos
        for blk in self.blocks:
            tok = blk(tok)
        return self.norm(tok)[:, 1:]


class Dinov2Backbone(nn.Module):
    """Wrapper holding the ViT under `encoder` (the reference's key prefix `backbone.encoder.*`)."""

    def __init__(self, dim: int, depth: int, num_heads: int, patch: int = 14, pos_grid: int = 37,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.encoder = DinoVisionTransformer(dim, depth, num_heads, patch, pos_grid, mlp_ratio)
        self.patch_size = patch
        self.embed_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def imagenet_normalize(img: torch.Tensor) -> torch.Tensor:
    """[-1, 1] RGB (B, 3, H, W) -> ImageNet-normalised: ((x * 0.5 + 0.5) - mean) / std."""
    mean = torch.tensor(IMAGENET_MEAN, device=img.device)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD, device=img.device)[None, :, None, None]
    return (img * 0.5 + 0.5 - mean) / std
