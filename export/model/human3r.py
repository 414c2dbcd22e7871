"""The Human3R network (CUT3R + Multi-HMR human branch), decomposed into trace-friendly per-stage methods.

Stages (each a method; shapes for batch 1, N = (H/16)(W/16) image tokens, K human slots, S state tokens):
    encode_image(img)                          (1,3,H,W)   -> enc_tokens (1,N,Ce)
    encode_human(img_mhmr)                     (1,3,R,R)   -> dino_tokens (1,g*g,bd)
    detect(dino_tokens)                                     -> scores (1,g,g), offsets (1,g,g,2)
    human_mask(dino_tokens)                                 -> (1,R,R)
    gather_humans(enc, dino, cell, patch, W)                -> dino_h (1,K,bd), enc_h (1,K,Ce), pos (1,K,2)
    fuse_humans(dino_h, enc_h)                              -> human prompts (1,K,D)
    pose_query(enc_tokens, mem, first)                      -> (1,1,D)
    decode(...)                                             -> DecoderOut (hooks, final tokens, state, TTT3R)
    heads(hooks, height, width)                             -> pose, self/cross point maps, rgb
    update_mem(mem, enc_tokens, pose_out)                   -> (1,M,2D)
    next_state(state, new_state, logit_mean, gate)          -> (1,S,D)
    smpl_heads(human_tokens, dino_h)                        -> rotmat, betas, expression, transl
Detection thresholding, NMS, gathers by detection, tracking, resets and pose chaining are host work
(see detection.py, tracking.py and export/reference.py).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from human3r_edge.runtime.config import Human3RConfig
from human3r_edge.errors import Human3RError, msg

from human3r_edge.export.model.blocks import LN_EPS, DecoderBlock, EncoderBlock, LocalMemory, PatchEmbed, key_bias, make_rope
from human3r_edge.export.model.dinov2 import Dinov2Backbone, imagenet_normalize
from human3r_edge.export.model.heads import DownstreamHead
from human3r_edge.export.model.postprocess import dense_outputs, exp_points, pose_output, rgb_output, rot6d_to_rotmat, score
from human3r_edge.export.model.rope import grid_positions, state_positions

RAY_MAP_HEADS = 16  # hard-coded in the reference's ray-map encoder


class DecoderOut(NamedTuple):
    """Result of `Human3R.decode` (batch 1, N image tokens, K human slots)."""

    hooks: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    """DPT inputs: raw encoder tokens (1,N,Ce), two mid decoder layers (1,N,D) without pose/human tokens,
    and the dec_norm-ed final [pose | image] tokens (1,1+N,D)."""
    final_tokens: torch.Tensor  # (1, 1+N+K, D) dec_norm-ed last layer: [pose | image | humans]
    new_state: torch.Tensor  # (1, S, D) dec_norm_state-ed state (before any TTT3R gating)
    ttt3r_logit_mean: torch.Tensor | None  # (1, S) mean pre-softmax state->image logit, if computed


class Human3R(nn.Module):
    """Human3R with the official state-dict layout (names, shapes, alias keys, buffers)."""

    def __init__(self, cfg: Human3RConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ce, dd, bb = cfg.enc_embed_dim, cfg.dec_embed_dim, cfg.backbone_spec
        # own parameters first: this is the reference's state-dict order
        self.pose_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.masked_img_token = nn.Parameter(torch.zeros(1, ce))
        self.masked_ray_map_token = nn.Parameter(torch.zeros(1, ce))
        self.masked_smpl_token = nn.Parameter(torch.zeros(1, ce))
        self.mhmr_masked_smpl_token = nn.Parameter(torch.zeros(1, bb.embed_dim))
        self.mhmr_masked_img_token = nn.Parameter(torch.zeros(1, bb.embed_dim))
        self.patch_embed = PatchEmbed(3, ce, cfg.patch_size)
        self.patch_embed_ray_map = PatchEmbed(6, ce, cfg.patch_size)
        self.enc_blocks = nn.ModuleList([EncoderBlock(ce, cfg.enc_num_heads, cfg.mlp_ratio, fp16_rope=True)
                                         for _ in range(cfg.enc_depth)])
        self.enc_norm = nn.LayerNorm(ce, eps=LN_EPS)
        self.decoder_embed = nn.Linear(ce, dd)
        self.dec_blocks = nn.ModuleList([DecoderBlock(dd, cfg.dec_num_heads, cfg.mlp_ratio)
                                         for _ in range(cfg.dec_depth)])
        self.dec_norm = nn.LayerNorm(dd, eps=LN_EPS)
        self.enc_blocks_ray_map = nn.ModuleList([EncoderBlock(ce, RAY_MAP_HEADS, 4.0)
                                                 for _ in range(cfg.ray_enc_depth)])
        self.enc_norm_ray_map = nn.LayerNorm(ce, eps=LN_EPS)
        self.pose_retriever = LocalMemory(cfg.local_mem_size, ce, dd, cfg.dec_num_heads)
        self.register_tokens = nn.Embedding(cfg.state_size, ce)
        self.backbone = Dinov2Backbone(bb.embed_dim, bb.depth, bb.num_heads, bb.patch_size, bb.pos_grid,
                                       bb.mlp_ratio)
        self.decoder_embed_state = nn.Linear(ce, dd)
        self.dec_blocks_state = nn.ModuleList([DecoderBlock(dd, cfg.state_dec_num_heads, cfg.mlp_ratio)
                                               for _ in range(cfg.dec_depth)])
        self.dec_norm_state = nn.LayerNorm(dd, eps=LN_EPS)
        self.downstream_head = DownstreamHead(cfg)

    # ------------------------------------------------------------------ positions (static per resolution)
    def image_positions(self, height: int, width: int) -> torch.Tensor:
        """(1, N, 2) int64 (y, x) RoPE positions of the image patches."""
        p = self.cfg.patch_size
        return grid_positions(height // p, width // p, self.pose_token.device)

    def state_positions(self) -> torch.Tensor:
        """(1, S, 2) int64 RoPE positions of the state tokens on a grid of even width."""
        return state_positions(self.cfg.state_size, self.cfg.state_grid_width, self.pose_token.device)

    # ------------------------------------------------------------------ encoders
    def encode_image(self, img: torch.Tensor) -> torch.Tensor:
        """img (1, 3, H, W) in [-1, 1] -> enc_tokens (1, N, Ce) after enc_norm (RoPE with fp16 q/k storage)."""
        x = self.patch_embed(img)  # (B, N, Ce)
        pos = self.image_positions(img.shape[-2], img.shape[-1]).expand(img.shape[0], -1, -1)
        rope = make_rope(pos, self.cfg.enc_head_dim)
        for blk in self.enc_blocks:
            x = blk(x, rope)
        return self.enc_norm(x)

    def encode_ray_map(self, ray_map: torch.Tensor) -> torch.Tensor:
        """ray_map (1, 6, H, W) -> (1, N, Ce). Loaded for completeness; the Human3R demo never runs it."""
        x = self.patch_embed_ray_map(ray_map)
        pos = self.image_positions(ray_map.shape[-2], ray_map.shape[-1]).expand(ray_map.shape[0], -1, -1)
        rope = make_rope(pos, self.cfg.enc_embed_dim // RAY_MAP_HEADS)
        for blk in self.enc_blocks_ray_map:
            x = blk(x, rope)
        return self.enc_norm_ray_map(x)

    def encode_human(self, img_mhmr: torch.Tensor) -> torch.Tensor:
        """img_mhmr (1, 3, R, R) padded [-1, 1] image -> DINOv2 tokens (1, g*g, bd) (final norm, no cls)."""
        return self.backbone(imagenet_normalize(img_mhmr))

    # ------------------------------------------------------------------ human branch heads
    def detect(self, dino_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """dino_tokens (1, g*g, bd) -> scores (1, g, g) (sigmoid with eps, before NMS), offsets (1, g, g, 2)."""
        g = self.cfg.mhmr_grid
        head = self.downstream_head
        scores = score(head.mlp_classif(dino_tokens)).reshape(-1, g, g)
        offsets = head.mlp_offset(dino_tokens).reshape(-1, g, g, 2)
        return scores, offsets

    def human_mask(self, dino_tokens: torch.Tensor) -> torch.Tensor:
        """dino_tokens (1, g*g, bd) -> human mask (1, R, R): per-token 14x14 patches, pixel-shuffled."""
        g, p = self.cfg.mhmr_grid, self.cfg.backbone_spec.patch_size
        m = score(self.downstream_head.mlp_msk(dino_tokens))  # (B, g*g, p*p)
        m = m.reshape(-1, g, g, p, p).permute(0, 1, 3, 2, 4)  # (B, g, p, g, p)
        return m.reshape(-1, g * p, g * p)

    def gather_humans(self, enc_tokens: torch.Tensor, dino_tokens: torch.Tensor, human_cell: torch.Tensor,
                      human_patch: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens and RoPE positions of K detections.

        human_cell (K,) int: DINOv2 cell h*g+w; human_patch (K,) int: CUT3R patch y*(W/16)+x; width: image W.
        Returns dino_h (1, K, bd), enc_h (1, K, Ce), pos (1, K, 2) int64 (y, x).
        """
        wp = width // self.cfg.patch_size
        cell = human_cell.to(torch.int64)
        patch = human_patch.to(torch.int64)
        dino_h = dino_tokens.index_select(1, cell)
        enc_h = enc_tokens.index_select(1, patch)
        pos = torch.stack([patch // wp, patch % wp], dim=-1).unsqueeze(0)
        return dino_h, enc_h, pos

    def fuse_humans(self, dino_h: torch.Tensor, enc_h: torch.Tensor) -> torch.Tensor:
        """Human prompts: mlp_fuse([DINOv2 head token | CUT3R token at the head patch]), (1, K, D)."""
        return self.downstream_head.mlp_fuse(torch.cat([dino_h, enc_h], dim=-1))

    # ------------------------------------------------------------------ recurrent state
    def initial_state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned initial state (1, S, D) = decoder_embed_state(register_tokens) and memory (1, M, 2D)."""
        state = self.decoder_embed_state(self.register_tokens.weight.unsqueeze(0))
        return state, self.pose_retriever.mem

    def pose_query(self, enc_tokens: torch.Tensor, mem: torch.Tensor, first: bool | torch.Tensor) -> torch.Tensor:
        """Pose token for the decoder, (1, 1, D): `pose_token` on the first frame of a segment, else the
        retriever's answer to mean(enc_tokens). `first` is a Python bool or a (1,) float tensor (1.0 = first)."""
        if isinstance(first, bool):
            if first:
                return self.pose_token.expand(enc_tokens.shape[0], -1, -1)
            return self.pose_retriever.inquire(enc_tokens.mean(dim=1, keepdim=True), mem)
        retrieved = self.pose_retriever.inquire(enc_tokens.mean(dim=1, keepdim=True), mem)
        return torch.where(first.reshape(-1, 1, 1) > 0.5, self.pose_token, retrieved)

    def update_mem(self, mem: torch.Tensor, enc_tokens: torch.Tensor, pose_out: torch.Tensor) -> torch.Tensor:
        """Write (proj_q(mean(enc_tokens)), refined pose token (1,1,D)) into mem (1, M, 2D); never gated."""
        return self.pose_retriever.update(mem, enc_tokens.mean(dim=1, keepdim=True), pose_out)

    def next_state(self, state: torch.Tensor, new_state: torch.Tensor, logit_mean: torch.Tensor | None,
                   gate: bool | torch.Tensor) -> torch.Tensor:
        """State after a step: `new*m + old*(1-m)` with m = sigmoid(TTT3R logit mean) when gating, else m = 1.

        gate: Python bool, or (1,) float tensor (1.0 = gate; the caller clears it on the first frame of a
        segment). state/new_state (1, S, D), logit_mean (1, S).
        """
        if isinstance(gate, bool):
            if not gate or logit_mean is None:
                return new_state
            m = torch.sigmoid(logit_mean).unsqueeze(-1)  # (1, S, 1)
        elif logit_mean is None:
            raise Human3RError(msg("next_state", "a tensor gate needs the TTT3R logit mean", None,
                                   hint="decode with ttt3r=True"))
        else:
            m = torch.where(gate.reshape(-1, 1, 1) > 0.5, torch.sigmoid(logit_mean).unsqueeze(-1),
                            torch.ones_like(logit_mean).unsqueeze(-1))
        return new_state * m + state * (1 - m)

    # ------------------------------------------------------------------ decoder
    def decode(self, enc_tokens: torch.Tensor, pose_query: torch.Tensor, state: torch.Tensor, height: int,
               width: int, human_tokens: torch.Tensor | None = None, human_pos: torch.Tensor | None = None,
               human_valid: torch.Tensor | None = None, ttt3r: bool = True) -> DecoderOut:
        """The paired image/state decoders.

        enc_tokens (1, N, Ce) of an image of `height` x `width`; pose_query (1, 1, D); state (1, S, D);
        human_tokens (1, K, D) with human_pos (1, K, 2) int64 (y, x) RoPE positions; human_valid (1, K) 0/1
        float marks real slots (None = all real). Padded slots are
        masked out of every attention that reads them as keys and out of the TTT3R mean, so with masks the
        image and state outputs equal those of the unpadded call. `ttt3r`: compute the state->image logits
        explicitly and return their mean (the reference's TTT3R path); else use fused attention.
        """
        B, N, _ = enc_tokens.shape
        dev = enc_tokens.device
        img_pos = self.image_positions(height, width).expand(B, -1, -1)  # (B, N, 2)
        x = self.decoder_embed(enc_tokens)  # (B, N, D)
        pose_pos = -torch.ones(B, 1, 2, dtype=torch.int64, device=dev)
        parts, pos_parts = [pose_query, x], [pose_pos, img_pos]
        valid = None
        if human_tokens is not None:
            if human_pos is None:
                raise Human3RError(msg("decode", "human_tokens given without human_pos", None, "(1, K, 2) positions"))
            parts.append(human_tokens)
            pos_parts.append(human_pos.to(torch.int64))
            if human_valid is not None:
                ones = torch.ones(B, 1 + N, dtype=torch.float32, device=dev)
                valid = torch.cat([ones, human_valid.to(torch.float32).reshape(B, -1)], dim=1)  # (B, 1+N+K)
        x = torch.cat(parts, dim=1)  # (B, 1+N+K, D)
        xpos = torch.cat(pos_parts, dim=1)  # (B, 1+N+K, 2)
        spos = self.state_positions().expand(B, -1, -1)
        hd, hs = self.cfg.dec_head_dim, self.cfg.state_head_dim
        x_rope_d, x_rope_s = make_rope(xpos, hd), make_rope(xpos, hs)
        s_rope_d, s_rope_s = make_rope(spos, hd), make_rope(spos, hs)
        bias = key_bias(valid)

        L = self.cfg.dec_depth
        mid = {L * 2 // 4, L * 3 // 4}
        layers: dict[int, torch.Tensor] = {}
        logit_total = None
        s = state
        for i, (blk_s, blk_x) in enumerate(zip(self.dec_blocks_state, self.dec_blocks), start=1):
            s_new, logit_sum = blk_s(s, x, s_rope_s, x_rope_s, None, bias, valid, explicit=ttt3r)
            x, _ = blk_x(x, s, x_rope_d, s_rope_d, bias, None)
            s = s_new
            if logit_sum is not None:
                logit_total = logit_sum if logit_total is None else logit_total + logit_sum
            if i in mid:
                layers[i] = x
        s = self.dec_norm_state(s)
        x = self.dec_norm(x)

        logit_mean = None
        if logit_total is not None:
            n_keys = float(x.shape[1]) if valid is None else valid.sum(dim=1, keepdim=True)
            logit_mean = logit_total / (n_keys * (L * self.cfg.state_dec_num_heads))
        hooks = (enc_tokens, layers[L * 2 // 4][:, 1:1 + N], layers[L * 3 // 4][:, 1:1 + N], x[:, :1 + N])
        return DecoderOut(hooks, x, s, logit_mean)

    # ------------------------------------------------------------------ heads
    def heads(self, hooks: tuple[torch.Tensor, ...], height: int, width: int, cross: bool = True,
              rgb: bool = True) -> dict[str, torch.Tensor]:
        """Pose and dense heads from `DecoderOut.hooks`.

        Returns camera_pose (1, 7), pts3d_self (1, H, W, 3), conf_self (1, H, W) and, if requested,
        pts3d_other / conf_other (cross DPT after final_transform) and rgb (1, H, W, 3).
        """
        head = self.downstream_head
        enc, mid1, mid2, final = hooks
        pose_tok = final[:, 0]  # (1, D)
        tokens = final[:, 1:]  # (1, N, D)
        out = {"camera_pose": pose_output(head.pose_head(pose_tok))}
        pts, conf = dense_outputs(head.dpt_self([enc, mid1, mid2, tokens], height, width))
        out["pts3d_self"], out["conf_self"] = pts, conf
        if rgb:
            out["rgb"] = rgb_output(head.dpt_rgb([enc, mid1, mid2, tokens], height, width))
        if cross:
            pos = self.image_positions(height, width).expand(tokens.shape[0], -1, -1)
            rope = make_rope(pos, self.cfg.dec_head_dim)
            tok = tokens
            for blk in head.final_transform:
                tok = blk(tok, pose_tok, rope)
            pts, conf = dense_outputs(head.dpt_cross([enc, mid1, mid2, tok], height, width))
            out["pts3d_other"], out["conf_other"] = pts, conf
        return out

    def smpl_heads(self, human_tokens: torch.Tensor, dino_h: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """SMPL-X parameters of K humans.

        human_tokens (1, K, D) dec_norm-ed final decoder tokens; dino_h (1, K, bd) raw DINOv2 head tokens.
        Returns rotmat (1, K, 53, 3, 3), betas (1, K, 10), expression (1, K, 10), transl (1, K, 3) (head joint,
        camera coordinates, exp mode; the translation head reads only the decoder token and has no init).
        """
        head = self.downstream_head
        tok = torch.cat([human_tokens, dino_h], dim=-1)  # (1, K, D + bd)
        body = head.decpose(tok) + head.init_body_pose  # (1, K, 318)
        betas = head.decshape(tok) + head.init_betas
        cam = head.deccam(tok[..., :self.cfg.dec_embed_dim])
        expression = head.decexpression(tok) + head.init_expression
        return rot6d_to_rotmat(body), betas, expression, exp_points(cam)
