"""Torch modules that compute the three deployment graphs of `runtime/graphs.py` on top of the faithful model.

Each module's `forward` takes the graph's inputs in spec order and returns its outputs in spec order, so the
same module is what `torch.onnx.export` traces and what the torch backend runs. Constant RoPE tables (image
grid with the pose token at (-1, -1), state grid) are computed once here, analytically, and become initializers;
the human slots take the rows of the image table at their `human_patch` (a run-time gather, no trigonometry).
Batch copies are `repeat` (Tile), never a traced `expand`: with a dynamic stream axis the TorchScript exporter writes
an expand's size as INT64 Equal/Where data, which the TensorRT check rejects; Tile takes its repeats as a shape.

Multi-stream graphs (`streams` = N > 1, see runtime/graphs.py) run the same code on B streams at once: axis 0
of every tensor is the stream axis, the human slots are (B, K) rows (each row gathers its own dino/enc tokens
with a GatherElements and its own RoPE rows with a Gather, INT32 indices), the key bias, `first`, `ttt3r`, the
TTT3R gate and the pose query are per row. Single-stream graphs take the (K,) slot vectors and (1,) flags of
today's spec; the only difference is which gather op a slot vector of rank 1 or 2 takes (a static choice).

Padded human slots are exact: every attention that reads them as keys gets an additive -1e9 key bias (its
softmax weight is exactly 0 in fp32), the TTT3R logit mean sums over valid keys and divides by their count,
and the slots' own outputs are zeroed. Nothing here branches on data, uses INT64 data tensors, NonZero, einsum,
expm1 or a Cross op.
"""
from __future__ import annotations

import torch
from torch import nn

from human3r_edge.runtime.graphs import DECODER, ENCODER, LEAN_DROPPED, SMPL_HEAD, graph_specs
from human3r_edge.runtime.iospec import GraphSpec

from human3r_edge.export.model import Human3R
from human3r_edge.export.model.blocks import ROPE_BASE, Rope, key_bias
from human3r_edge.export.model.postprocess import dense_outputs, pose_output, rgb_output
from human3r_edge.export.model.rope import grid_positions, rope_tables, state_positions

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int32": torch.int32, "int64": torch.int64,
                 "bool": torch.bool, "uint8": torch.uint8}


def _tables(pos: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 1, N, head_dim) cos and sin of integer positions (1, N, 2), contiguous fp32 copies."""
    cos, sin = rope_tables(pos, head_dim, ROPE_BASE)
    return cos.contiguous(), sin.contiguous()


class _RopeBank(nn.Module):
    """Named cos/sin buffers; `rope(name)` returns them as a `Rope`."""

    def add(self, name: str, pos: torch.Tensor, head_dim: int) -> None:
        cos, sin = _tables(pos, head_dim)
        self.register_buffer(f"{name}_cos", cos, persistent=False)
        self.register_buffer(f"{name}_sin", sin, persistent=False)

    def rope(self, name: str) -> Rope:
        return Rope(getattr(self, f"{name}_cos"), getattr(self, f"{name}_sin"))

    def with_slots(self, name: str, patch: torch.Tensor, skip: int = 1) -> Rope:
        """Table `name` followed by its rows `skip + patch`: the human slots at their patches.

        patch (K,) int32 (single-stream: tables (1, 1, T+K, hd)) or (B, K) int32 (one row of slots per stream:
        tables (B, 1, T+K, hd), each stream's slots at its own patches)."""
        cos, sin = self.rope(name)
        idx = patch + skip  # int32
        if idx.dim() == 1:
            return Rope(torch.cat([cos, cos.index_select(2, idx)], dim=2),
                        torch.cat([sin, sin.index_select(2, idx)], dim=2))
        batch, k = idx.shape[0], idx.shape[1]
        flat = idx.reshape(-1)  # (B*K,): a plain Gather of table rows, INT32 indices

        def slots(t: torch.Tensor) -> torch.Tensor:
            rows = t[0, 0].index_select(0, flat).reshape(-1, 1, k, t.shape[-1])  # (B, 1, K, hd)
            return torch.cat([t.repeat(batch, 1, 1, 1), rows], dim=2)

        return Rope(slots(cos), slots(sin))


def gather_slots(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """tokens (B, N, C) at the slots `index`: (K,) int32 (B = 1, a Gather) or (B, K) int32 (row b reads its own
    tokens: a GatherElements with INT32 indices) -> (B, K, C)."""
    if index.dim() == 1:
        return tokens.index_select(1, index)
    return torch.gather(tokens, 1, index.unsqueeze(-1).repeat(1, 1, tokens.shape[-1]))


class EncoderGraph(nn.Module):
    """img (B,3,H,W), img_mhmr (B,3,R,R) -> enc_tokens, dino_tokens, det_scores, det_offsets, human_mask (B = 1
    single-stream)."""

    def __init__(self, model: Human3R, width: int, height: int) -> None:
        super().__init__()
        self.model = model
        cfg = model.cfg
        model.backbone.encoder.freeze_pos_embed(cfg.mhmr_grid)  # the bicubic resize becomes a constant
        p = cfg.patch_size
        dev = model.pose_token.device
        self.ropes = _RopeBank()
        self.ropes.add("img", grid_positions(height // p, width // p, dev), cfg.enc_head_dim)

    def forward(self, img: torch.Tensor, img_mhmr: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.model
        rope = self.ropes.rope("img")
        x = m.patch_embed(img)  # (1, N, Ce)
        for blk in m.enc_blocks:
            x = blk(x, rope)
        enc = m.enc_norm(x)  # (1, N, Ce)
        dino = m.encode_human(img_mhmr)  # (1, g*g, bd)
        scores, offsets = m.detect(dino)  # (1, g, g), (1, g, g, 2)
        mask = m.human_mask(dino)  # (1, R, R)
        return enc, dino, scores, offsets, mask


class DecoderGraph(nn.Module):
    """One recurrent step over K padded human slots; inputs and outputs in the order of `graph_specs`.

    Inputs: enc_tokens (1,N,Ce), dino_tokens (1,g*g,bd), state (1,S,D), mem (1,M,2D), human_cell (K,) int32,
    human_patch (K,) int32, human_valid (K,) 0/1 float, first (1,) float, ttt3r (1,) float.
    Batched (multi-stream) form: B rows on axis 0 of each tensor, human_* (B, K), first/ttt3r (B,).
    `lean` drops the cross-view DPT with final_transform and the rgb DPT.
    """

    def __init__(self, model: Human3R, width: int, height: int, max_people: int, lean: bool = False) -> None:
        super().__init__()
        self.model = model
        self.height, self.width, self.slots, self.lean = height, width, max_people, lean
        cfg = model.cfg
        p = cfg.patch_size
        dev = model.pose_token.device
        img_pos = grid_positions(height // p, width // p, dev)  # (1, N, 2)
        self.num_patches = int(img_pos.shape[1])
        x_pos = torch.cat([-torch.ones(1, 1, 2, dtype=torch.int64, device=dev), img_pos], dim=1)  # pose at (-1,-1)
        s_pos = state_positions(cfg.state_size, cfg.state_grid_width, dev)  # (1, S, 2)
        hd, hs = cfg.dec_head_dim, cfg.state_head_dim
        self.ropes = _RopeBank()
        self.ropes.add("x_d", x_pos, hd)  # [pose | image] in the image-decoder heads
        self.ropes.add("x_s", x_pos, hs)  # [pose | image] as keys of the state decoder
        self.ropes.add("s_d", s_pos, hd)  # state as keys of the image decoder
        self.ropes.add("s_s", s_pos, hs)  # state in the state-decoder heads
        self.ropes.add("img_d", img_pos, hd)  # image tokens in final_transform

    def forward(self, enc_tokens: torch.Tensor, dino_tokens: torch.Tensor, state: torch.Tensor, mem: torch.Tensor,
                human_cell: torch.Tensor, human_patch: torch.Tensor, human_valid: torch.Tensor, first: torch.Tensor,
                ttt3r: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m, cfg = self.model, self.model.cfg
        N, H, W = self.num_patches, self.height, self.width
        # human prompts at their patches
        K = self.slots
        dino_h = gather_slots(dino_tokens, human_cell)  # (B, K, bd)
        enc_h = gather_slots(enc_tokens, human_patch)  # (B, K, Ce)
        prompts = m.fuse_humans(dino_h, enc_h)  # (B, K, D)
        x_rope_d = self.ropes.with_slots("x_d", human_patch)  # (B, 1, 1+N+K, hd)
        x_rope_s = self.ropes.with_slots("x_s", human_patch)  # (B, 1, 1+N+K, hs)
        s_rope_d, s_rope_s = self.ropes.rope("s_d"), self.ropes.rope("s_s")
        slot_valid = human_valid.reshape(-1, K)  # (B, K)
        ones = torch.ones(1, 1 + N, dtype=human_valid.dtype, device=human_valid.device)
        if human_valid.dim() > 1:  # one row per stream
            ones = ones.repeat(slot_valid.shape[0], 1)
        valid = torch.cat([ones, slot_valid], dim=1)  # (B, 1+N+K)
        bias = key_bias(valid)  # (B, 1, 1, 1+N+K), -1e9 on padded slots

        pose_q = m.pose_query(enc_tokens, mem, first)  # (B, 1, D): per row, pose_token where first
        x = torch.cat([pose_q, m.decoder_embed(enc_tokens), prompts], dim=1)  # (B, 1+N+K, D)
        L = cfg.dec_depth
        mid = (L * 2 // 4, L * 3 // 4)
        layers: dict[int, torch.Tensor] = {}
        logits: list[torch.Tensor] = []
        s = state
        for i, (blk_s, blk_x) in enumerate(zip(m.dec_blocks_state, m.dec_blocks), start=1):
            s_new, logit_sum = blk_s(s, x, s_rope_s, x_rope_s, None, bias, valid, explicit=True)
            x, _ = blk_x(x, s, x_rope_d, s_rope_d, bias, None)
            s = s_new
            if logit_sum is not None:
                logits.append(logit_sum)  # (B, S) sum over heads and valid keys of this layer
            if i in mid:
                layers[i] = x
        logit_total = logits[0]
        for extra in logits[1:]:
            logit_total = logit_total + extra
        s = m.dec_norm_state(s)  # (B, S, D)
        x = m.dec_norm(x)  # (B, 1+N+K, D)
        n_keys = valid.sum(dim=1, keepdim=True)  # (B, 1): 1 + N + valid humans of each row
        logit_mean = logit_total / (n_keys * float(L * cfg.state_dec_num_heads))  # (B, S)
        gate = ttt3r * (1.0 - first)  # (B,): TTT3R only after the first frame of a segment, per row
        state_out = m.next_state(state, s, logit_mean, gate)
        mem_out = m.update_mem(mem, enc_tokens, x[:, 0:1])

        head = m.downstream_head
        enc = enc_tokens
        mid1 = layers[mid[0]][:, 1:1 + N]
        mid2 = layers[mid[1]][:, 1:1 + N]
        pose_tok, tokens = x[:, 0], x[:, 1:1 + N]  # (B, D), (B, N, D)
        camera_pose = pose_output(head.pose_head(pose_tok))  # (B, 7)
        pts_self, conf_self = dense_outputs(head.dpt_self([enc, mid1, mid2, tokens], H, W))
        human_tokens = x[:, 1 + N:] * slot_valid.unsqueeze(-1)  # (B, K, D), zeros in padded slots
        outs = {"state_out": state_out, "mem_out": mem_out, "camera_pose": camera_pose, "pts3d_self": pts_self,
                "conf_self": conf_self}
        if not self.lean:
            tok = tokens
            rope = self.ropes.rope("img_d")
            for blk in head.final_transform:
                tok = blk(tok, pose_tok, rope)
            outs["pts3d_other"], outs["conf_other"] = dense_outputs(head.dpt_cross([enc, mid1, mid2, tok], H, W))
            outs["rgb"] = rgb_output(head.dpt_rgb([enc, mid1, mid2, tokens], H, W))
        outs["human_tokens"] = human_tokens
        outs["human_dino_tokens"] = dino_h
        outs["ttt3r_gate"] = torch.sigmoid(logit_mean)
        return tuple(outs[k] for k in self.output_names())

    def output_names(self) -> list[str]:
        names = ["state_out", "mem_out", "camera_pose", "pts3d_self", "conf_self", "pts3d_other", "conf_other",
                 "rgb", "human_tokens", "human_dino_tokens", "ttt3r_gate"]
        return [n for n in names if not (self.lean and n in LEAN_DROPPED)]


class SmplHeadGraph(nn.Module):
    """human_tokens (B,K,D), human_dino_tokens (B,K,bd) -> rotmat (B,K,53,3,3), betas, expression, transl (B = 1
    single-stream)."""

    def __init__(self, model: Human3R) -> None:
        super().__init__()
        self.model = model

    def forward(self, human_tokens: torch.Tensor, human_dino_tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.smpl_heads(human_tokens, human_dino_tokens)


def build_graphs(model: Human3R, width: int, height: int, max_people: int = 16, lean: bool = False,
                 streams: int = 1) -> tuple[tuple[GraphSpec, nn.Module], ...]:
    """(spec, module) for the encoder, decoder and SMPL-X head of `model` at `width`x`height` with K slots.

    `streams` = N > 1: the multi-stream specs (`graph_specs(..., streams=N)`); the modules take B rows on axis 0
    (human_* (B, K), first/ttt3r (B,)). The modules share `model`'s parameters (no copies). Building the
    encoder freezes the DINOv2 position embedding of `model` for its MHMR grid.
    """
    specs = graph_specs(model.cfg, width, height, max_people, lean, streams=streams)
    mods: dict[str, nn.Module] = {
        ENCODER: EncoderGraph(model, width, height),
        DECODER: DecoderGraph(model, width, height, max_people, lean),
        SMPL_HEAD: SmplHeadGraph(model),
    }
    return tuple((s, mods[s.name].eval()) for s in specs)


def example_inputs(spec: GraphSpec, device: str | torch.device = "cpu", seed: int = 0, batch: int | None = None
                   ) -> tuple[torch.Tensor, ...]:
    """Plausible inputs for tracing `spec` (valid indices, 0/1 flags, values in [-1, 1]), in input order.

    `batch`: axis 0 of the batched (multi-stream) tensors (default: the spec's maximum N)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for t in spec.inputs:
        dt = _TORCH_DTYPES[t.dtype]
        shape = t.shape_for(batch)
        if dt == torch.int32:
            value = torch.zeros(shape, dtype=dt)
        elif t.name in ("human_valid", "first", "ttt3r"):
            value = torch.ones(shape, dtype=dt)
        else:
            value = (torch.rand(shape, generator=gen) * 2 - 1).to(dt)
        out.append(value.to(device))
    return tuple(out)


def torch_dtype(name: str) -> torch.dtype:
    return _TORCH_DTYPES[name]
