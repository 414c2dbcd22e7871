"""Transformer building blocks of CroCo/CUT3R: MLP, self/cross attention with 2-D RoPE, encoder and decoder
blocks, adaLN-modulated blocks (final_transform) and the pose retriever's local memory."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from human3r_edge.export.model.rope import apply_rope, apply_rope_fp16_storage, rope_tables

LN_EPS = 1e-6
ROPE_BASE = 100.0
# additive logit bias of an invalid key: exp() of it underflows to exactly 0 in fp32 (and it becomes -inf in fp16)
MASK_BIAS = -1e9


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2 (timm/CroCo `Mlp`; keys `fc1`, `fc2`)."""

    def __init__(self, dim: int, hidden: int, out: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Layers(nn.Module):
    """Linear -> GELU -> Linear under `layers.{0,2}`."""

    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MlpStack(nn.Module):
    """Linear -> GELU -> Linear under `mlp.layers.{0,2}` (the reference's `SMPLDecoder(Mlp_flex)` layout)."""

    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self.mlp = _Layers(dim, hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def key_bias(valid: torch.Tensor | None) -> torch.Tensor | None:
    """Additive attention bias (B, 1, 1, Nk) from a key-validity mask (B, Nk) of 0/1 floats or bools."""
    if valid is None:
        return None
    v = valid.to(torch.float32)
    return ((1.0 - v) * MASK_BIAS).unsqueeze(1).unsqueeze(1)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
           bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v with q (B, h, Nq, d), k/v (B, h, Nk, d) -> (B, h, Nq, d)."""
    if bias is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)


class Rope(NamedTuple):
    """Precomputed cos/sin tables (B, 1, N, head_dim) for one token set."""

    cos: torch.Tensor
    sin: torch.Tensor


def make_rope(pos: torch.Tensor | None, head_dim: int) -> Rope | None:
    if pos is None:
        return None
    return Rope(*rope_tables(pos, head_dim, ROPE_BASE))


class SelfAttention(nn.Module):
    """Multi-head self-attention with optional 2-D RoPE on q and k (keys `qkv`, `proj`).

    `fp16_rope` reproduces the CroCo encoder, which stores q and k in float16 around RoPE.
    """

    def __init__(self, dim: int, num_heads: int, fp16_rope: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fp16_rope = fp16_rope
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: Rope | None, bias: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).transpose(1, 3)  # (B, h, 3, N, d)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, h, N, d)
        if rope is not None:
            rot = apply_rope_fp16_storage if self.fp16_rope else apply_rope
            q = rot(q, rope.cos, rope.sin)
            k = rot(k, rope.cos, rope.sin)
        out = attend(q, k, v, self.scale, bias)  # (B, h, N, d)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class CrossAttention(nn.Module):
    """Multi-head cross-attention with RoPE (q at its own positions, k at the key side's); keys
    `projq`, `projk`, `projv`, `proj`.

    With `explicit=True` the softmax is written out so the pre-softmax logits can be reduced for TTT3R:
    the second output is the sum over heads and valid keys of the logits, (B, Nq), and the valid-key count.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.projq = nn.Linear(dim, dim)
        self.projk = nn.Linear(dim, dim)
        self.projv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, key: torch.Tensor, qrope: Rope | None, krope: Rope | None,
                bias: torch.Tensor | None = None, key_valid: torch.Tensor | None = None,
                explicit: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, Nq, C = query.shape
        Nk = key.shape[1]
        h, d = self.num_heads, C // self.num_heads
        q = self.projq(query).reshape(B, Nq, h, d).permute(0, 2, 1, 3)  # (B, h, Nq, d)
        k = self.projk(key).reshape(B, Nk, h, d).permute(0, 2, 1, 3)  # (B, h, Nk, d)
        v = self.projv(key).reshape(B, Nk, h, d).permute(0, 2, 1, 3)  # (B, h, Nk, d)
        if qrope is not None:
            q = apply_rope(q, qrope.cos, qrope.sin)
        if krope is not None:
            k = apply_rope(k, krope.cos, krope.sin)
        if not explicit:
            out = attend(q, k, v, self.scale, bias)
            return self.proj(out.transpose(1, 2).reshape(B, Nq, C)), None
        logits = (q @ k.transpose(-2, -1)) * self.scale  # (B, h, Nq, Nk)
        weights = (logits if bias is None else logits + bias).softmax(dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(B, Nq, C)
        if key_valid is None:
            logit_sum = logits.sum(dim=(1, 3))  # (B, Nq)
        else:
            logit_sum = (logits * key_valid.to(logits.dtype)[:, None, None, :]).sum(dim=(1, 3))  # (B, Nq)
        return self.proj(out), logit_sum


class EncoderBlock(nn.Module):
    """Pre-LN ViT block: x + attn(norm1(x)); x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, fp16_rope: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = SelfAttention(dim, num_heads, fp16_rope=fp16_rope)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, rope: Rope | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """CroCo decoder block: self-attn, cross-attn to the (normalised) other stream, MLP.

    Keys: norm1, attn, cross_attn, norm2, norm3, mlp, norm_y.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = SelfAttention(dim, num_heads)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.norm3 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor, y: torch.Tensor, xrope: Rope | None = None, yrope: Rope | None = None,
                x_bias: torch.Tensor | None = None, y_bias: torch.Tensor | None = None,
                y_valid: torch.Tensor | None = None, explicit: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, Nx, C) queries, y (B, Ny, C) memory; `x_bias`/`y_bias` mask invalid keys of x / y.

        Returns the new x and, when `explicit`, the per-query sum of cross-attention logits (B, Nx).
        """
        x = x + self.attn(self.norm1(x), xrope, x_bias)
        y_ = self.norm_y(y)
        cross, logit_sum = self.cross_attn(self.norm2(x), y_, xrope, yrope, y_bias, y_valid, explicit)
        x = x + cross
        return x + self.mlp(self.norm3(x)), logit_sum


class ModLN(nn.Module):
    """adaLN: LayerNorm(x) * (1 + scale) + shift, with (shift, scale) = Linear(SiLU(mod)); keys norm, mlp.1."""

    def __init__(self, dim: int, mod_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(mod_dim, dim * 2))

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        shift, scale = self.mlp(mod).chunk(2, dim=-1)  # (B, C) each
        return self.norm(x) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class ModulatedBlock(nn.Module):
    """`ConditionModulationBlock` of final_transform: ViT block whose norms are modulated by the pose token."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = ModLN(dim, dim)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = ModLN(dim, dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, mod: torch.Tensor, rope: Rope | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x, mod), rope)
        return x + self.mlp(self.norm2(x, mod))


class PatchEmbed(nn.Module):
    """Conv patchify (key `proj`): (B, C, H, W) -> (B, H/p * W/p, D) row-major."""

    def __init__(self, in_chans: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class LocalMemory(nn.Module):
    """CUT3R pose retriever: a learned memory read by a query and written by (query, refined pose) pairs.

    Width 2*D, `depth` read and write DecoderBlocks, no RoPE. Keys: masked_token, mem, proj_q, write_blocks,
    read_blocks.
    """

    def __init__(self, size: int, k_dim: int, v_dim: int, num_heads: int, depth: int = 2) -> None:
        super().__init__()
        self.v_dim = v_dim
        self.masked_token = nn.Parameter(torch.zeros(1, 1, v_dim))
        self.mem = nn.Parameter(torch.zeros(1, size, 2 * v_dim))
        self.proj_q = nn.Linear(k_dim, v_dim)
        self.write_blocks = nn.ModuleList([DecoderBlock(2 * v_dim, num_heads) for _ in range(depth)])
        self.read_blocks = nn.ModuleList([DecoderBlock(2 * v_dim, num_heads) for _ in range(depth)])

    def inquire(self, query: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        """query (B, 1, k_dim), mem (B, M, 2*v_dim) -> retrieved pose token (B, 1, v_dim)."""
        x = self.proj_q(query)  # (B, 1, v_dim)
        x = torch.cat([x, self.masked_token.expand_as(x)], dim=-1)  # (B, 1, 2*v_dim); expand_as: see dinov2
        for blk in self.read_blocks:
            x, _ = blk(x, mem)
        return x[..., -self.v_dim:]

    def update(self, mem: torch.Tensor, feat_k: torch.Tensor, feat_v: torch.Tensor) -> torch.Tensor:
        """mem (B, M, 2*v_dim), feat_k (B, 1, k_dim), feat_v (B, 1, v_dim) -> new mem (B, M, 2*v_dim)."""
        feat = torch.cat([self.proj_q(feat_k), feat_v], dim=-1)  # (B, 1, 2*v_dim)
        for blk in self.write_blocks:
            mem, _ = blk(mem, feat)
        return mem
