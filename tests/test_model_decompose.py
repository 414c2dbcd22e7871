"""The decomposed stage methods: padded human slots with a validity mask are exact, tensor flags equal Python
flags, and the traced code paths avoid ops that ONNX/TensorRT cannot take."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from human3r_edge.export.model import build_model, load_smpl_mean_params
from human3r_edge.export.model import blocks, dinov2, dpt, heads, human3r, postprocess, rope
from human3r_edge.runtime.config import get_config
from human3r_edge.errors import ConfigError, Human3RError

H, W = 96, 128


@pytest.fixture(scope="module")
def tiny():
    """The tiny preset with seeded random weights (every module active)."""
    torch.manual_seed(0)
    m = build_model(get_config("tiny"))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim == 1 and ("norm" in name or name.endswith("gamma")):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.05 * torch.randn_like(p))
    return m


@pytest.fixture(scope="module")
def inputs(tiny):
    torch.manual_seed(1)
    cfg = tiny.cfg
    enc = torch.randn(1, (H // 16) * (W // 16), cfg.enc_embed_dim)
    humans = torch.randn(1, 2, cfg.dec_embed_dim)
    pos = torch.tensor([[[1, 2], [4, 7]]])
    return enc, humans, pos


def test_padded_slots_with_mask_equal_unpadded(tiny, inputs):
    enc, humans, pos = inputs
    with torch.inference_mode():
        state, mem = tiny.initial_state()
        pq = tiny.pose_query(enc, mem, True)
        ref = tiny.decode(enc, pq, state, H, W, humans, pos, ttt3r=True)
        pad = torch.cat([humans, 7 * torch.randn(1, 3, humans.shape[-1])], dim=1)  # garbage in padded slots
        ppos = torch.cat([pos, torch.tensor([[[0, 0], [5, 5], [2, 3]]])], dim=1)
        valid = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0]])
        got = tiny.decode(enc, pq, state, H, W, pad, ppos, valid, ttt3r=True)
        n = 1 + enc.shape[1] + 2
        assert torch.equal(got.new_state, ref.new_state)
        assert torch.equal(got.final_tokens[:, :n], ref.final_tokens)
        assert torch.equal(got.ttt3r_logit_mean, ref.ttt3r_logit_mean)
        for a, b in zip(got.hooks, ref.hooks):
            assert torch.equal(a, b)
        # no humans at all == every slot padded
        none = tiny.decode(enc, pq, state, H, W, humans[:, :0], pos[:, :0], ttt3r=True)
        allpad = tiny.decode(enc, pq, state, H, W, pad, ppos, torch.zeros(1, 5), ttt3r=True)
        assert torch.equal(none.new_state, allpad.new_state)
        assert torch.equal(none.ttt3r_logit_mean, allpad.ttt3r_logit_mean)
        # without padding the mean runs over every key: the gate depends on the number of humans
        assert not torch.equal(none.ttt3r_logit_mean, ref.ttt3r_logit_mean)


def test_explicit_and_fused_attention_agree(tiny, inputs):
    enc, humans, pos = inputs
    with torch.inference_mode():
        state, mem = tiny.initial_state()
        pq = tiny.pose_query(enc, mem, True)
        a = tiny.decode(enc, pq, state, H, W, humans, pos, ttt3r=True)
        b = tiny.decode(enc, pq, state, H, W, humans, pos, ttt3r=False)
    assert b.ttt3r_logit_mean is None and a.ttt3r_logit_mean.shape == (1, tiny.cfg.state_size)
    torch.testing.assert_close(a.new_state, b.new_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.final_tokens, b.final_tokens, atol=1e-5, rtol=1e-5)


def test_ttt3r_mean_matches_explicit_logits(tiny, inputs):
    """The mean is over layers x heads x all image-side keys of the pre-softmax logits (reference formula)."""
    enc, humans, pos = inputs
    logits = []
    orig = blocks.CrossAttention.forward

    def spy(self, query, key, qrope, krope, bias=None, key_valid=None, explicit=False):
        out = orig(self, query, key, qrope, krope, bias, key_valid, explicit)
        if explicit:
            B, Nq, C = query.shape
            h, d = self.num_heads, C // self.num_heads
            q = self.projq(query).reshape(B, Nq, h, d).permute(0, 2, 1, 3)
            k = self.projk(key).reshape(B, key.shape[1], h, d).permute(0, 2, 1, 3)
            q, k = rope.apply_rope(q, *qrope), rope.apply_rope(k, *krope)
            logits.append((q @ k.transpose(-2, -1)) * self.scale)
        return out

    blocks.CrossAttention.forward = spy
    try:
        with torch.inference_mode():
            state, mem = tiny.initial_state()
            out = tiny.decode(enc, tiny.pose_query(enc, mem, True), state, H, W, humans, pos, ttt3r=True)
    finally:
        blocks.CrossAttention.forward = orig
    stacked = torch.cat(logits, dim=0)  # (L, h, S, 1+N+K)
    assert stacked.shape[0] == tiny.cfg.dec_depth and stacked.shape[-1] == 1 + enc.shape[1] + 2
    ref = stacked.permute(2, 3, 0, 1).reshape(stacked.shape[2], -1).mean(dim=1)
    torch.testing.assert_close(out.ttt3r_logit_mean[0], ref, atol=1e-5, rtol=1e-5)


def test_tensor_flags_equal_python_flags(tiny, inputs):
    enc, humans, pos = inputs
    with torch.inference_mode():
        state, mem = tiny.initial_state()
        for first in (True, False):
            a = tiny.pose_query(enc, mem, first)
            b = tiny.pose_query(enc, mem, torch.tensor([float(first)]))
            assert torch.equal(a, b)
        dec = tiny.decode(enc, tiny.pose_query(enc, mem, False), state, H, W, humans, pos, ttt3r=True)
        for gate in (True, False):
            a = tiny.next_state(state, dec.new_state, dec.ttt3r_logit_mean, gate)
            b = tiny.next_state(state, dec.new_state, dec.ttt3r_logit_mean, torch.tensor([float(gate)]))
            torch.testing.assert_close(a, b, atol=0, rtol=0)
        assert torch.equal(tiny.next_state(state, dec.new_state, dec.ttt3r_logit_mean, False), dec.new_state)


def test_encoder_side_methods(tiny):
    torch.manual_seed(3)
    cfg = tiny.cfg
    R, g, p = cfg.mhmr_img_res, cfg.mhmr_grid, cfg.backbone_spec.patch_size
    with torch.inference_mode():
        enc = tiny.encode_image(torch.rand(1, 3, H, W) * 2 - 1)
        dino = tiny.encode_human(torch.rand(1, 3, R, R) * 2 - 1)
        scores, offsets = tiny.detect(dino)
        mask = tiny.human_mask(dino)
        raw = postprocess.score(tiny.downstream_head.mlp_msk(dino))  # (1, g*g, p*p)
        shuffled = F.pixel_shuffle(raw.transpose(1, 2).reshape(1, p * p, g, g), p)[:, 0]
    assert enc.shape == (1, (H // 16) * (W // 16), cfg.enc_embed_dim)
    assert dino.shape == (1, g * g, cfg.backbone_spec.embed_dim)
    assert scores.shape == (1, g, g) and offsets.shape == (1, g, g, 2) and mask.shape == (1, R, R)
    assert float(scores.min()) > 0 and float(scores.max()) < 1
    assert torch.equal(mask, shuffled)
    cell = torch.tensor([3, 10]); patch = torch.tensor([0, 13])
    dino_h, enc_h, hpos = tiny.gather_humans(enc, dino, cell, patch, W)
    assert torch.equal(dino_h[0, 1], dino[0, 10]) and torch.equal(enc_h[0, 1], enc[0, 13])
    assert hpos[0].tolist() == [[0, 0], [1, 5]]  # patch 13 of an 8-wide grid


def test_heads_and_smpl_shapes(tiny, inputs):
    enc, humans, pos = inputs
    with torch.inference_mode():
        state, mem = tiny.initial_state()
        dec = tiny.decode(enc, tiny.pose_query(enc, mem, True), state, H, W, humans, pos, ttt3r=True)
        out = tiny.heads(dec.hooks, H, W)
        rotmat, betas, expr, transl = tiny.smpl_heads(dec.final_tokens[:, -2:], torch.randn(1, 2, 64))
        new_mem = tiny.update_mem(mem, enc, dec.final_tokens[:, :1])
    assert out["pts3d_self"].shape == (1, H, W, 3) and out["conf_self"].shape == (1, H, W)
    assert out["pts3d_other"].shape == (1, H, W, 3) and out["rgb"].shape == (1, H, W, 3)
    assert float(out["conf_self"].min()) > 1 and float(out["rgb"].abs().max()) <= 1
    assert rotmat.shape == (1, 2, 53, 3, 3) and betas.shape == (1, 2, 10) and transl.shape == (1, 2, 3)
    eye = torch.eye(3).expand(1, 2, 53, 3, 3)
    torch.testing.assert_close(rotmat @ rotmat.transpose(-1, -2), eye, atol=1e-5, rtol=0)
    assert new_mem.shape == mem.shape and not torch.equal(new_mem, mem)


def test_mean_params_fill_buffers(golden_dir, require_golden, synthetic_smplx):
    from human3r_edge.export.checkpoint import load_model

    loaded, _ = load_model(golden_dir / "checkpoint.pth")
    fresh = build_model(loaded.cfg)
    load_smpl_mean_params(fresh, synthetic_smplx.parent / "smpl_mean_params.npz")
    for name in ("init_body_pose", "init_betas", "init_betas_kid", "init_cam", "init_expression"):
        assert torch.equal(getattr(fresh.downstream_head, name), getattr(loaded.downstream_head, name)), name
    with pytest.raises(Human3RError, match="cannot read"):
        load_smpl_mean_params(fresh, golden_dir / "config.json")


def test_build_refuses_too_shallow_decoder():
    with pytest.raises(ConfigError, match="dec_depth"):
        build_model(get_config("tiny").replace(dec_depth=1), device="meta")


# modules whose code the ONNX exporter traces
TRACED = [blocks, dinov2, dpt, heads, human3r, postprocess, rope]


@pytest.mark.parametrize("module", TRACED, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_traced_code_avoids_unexportable_ops(module):
    src = inspect.getsource(module)
    for bad in (".expm1(", "einsum(", "torch.cross(", "linalg.cross(", ".item()", ".tolist()", ".numpy()"):
        assert bad not in src, f"{module.__name__} uses {bad}"


def test_rope_has_no_lookup_table():
    src = inspect.getsource(rope)
    assert "F.embedding" not in src and "Embedding(" not in src and "cache" not in src
    np.testing.assert_allclose(rope.rope_tables(torch.tensor([[[-1, -1]]]), 8)[1][0, 0, 0, 0].item(),
                               -np.sin(1.0), rtol=1e-6)
