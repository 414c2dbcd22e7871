"""Exact human-slot masking: the decoder graph with K padded slots equals the unpadded model for 0, 1 and K people
(valid-slot tokens, scene outputs, new state with the TTT3R mean, memory), in torch and on ONNX Runtime."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from human3r_edge.export.assets import random_model
from human3r_edge.export.graphs_torch import DecoderGraph, EncoderGraph
from human3r_edge.runtime.config import get_config
from support.exports import random_tiny_export

W, H, K = 128, 96, 4
TOL = 1e-5  # max |graph - unpadded| <= TOL * max |unpadded| per output
CELLS = [3, 10, 5, 7]
PATCHES = [0, 13, 40, 22]


@pytest.fixture(scope="module")
def model():
    m, _ = random_model(get_config("tiny"), seed=0, calibrate=False)
    return m


@pytest.fixture(scope="module")
def encoded(model):
    gen = torch.Generator().manual_seed(5)
    img = torch.rand(1, 3, H, W, generator=gen) * 2 - 1
    mhmr = torch.rand(1, 3, 112, 112, generator=gen) * 2 - 1
    with torch.inference_mode():
        enc, dino, *_ = EncoderGraph(model, W, H)(img, mhmr)
        state, mem = model.initial_state()
        # a second, non-initial state and memory, so the TTT3R gate and the retriever both matter
        pq = model.pose_query(enc, mem, True)
        dec = model.decode(enc, pq, state, H, W, ttt3r=True)
        state2 = dec.new_state
        mem2 = model.update_mem(mem, enc, dec.final_tokens[:, :1])
    return enc, dino, state2, mem2


def unpadded(model, enc, dino, state, mem, n, first, ttt3r):
    """The reference path: exactly n human tokens, no masks (what `export/reference.py` runs)."""
    with torch.inference_mode():
        cell = torch.tensor(CELLS[:n], dtype=torch.int64)
        patch = torch.tensor(PATCHES[:n], dtype=torch.int64)
        dino_h, enc_h, hpos = model.gather_humans(enc, dino, cell, patch, W)
        prompts = model.fuse_humans(dino_h, enc_h)
        pq = model.pose_query(enc, mem, first)
        dec = model.decode(enc, pq, state, H, W, prompts, hpos, ttt3r=ttt3r)
        heads = model.heads(dec.hooks, H, W)
        N = enc.shape[1]
        out = {
            "state_out": model.next_state(state, dec.new_state, dec.ttt3r_logit_mean, ttt3r and not first),
            "mem_out": model.update_mem(mem, enc, dec.final_tokens[:, :1]),
            "human_tokens": dec.final_tokens[:, 1 + N:], "human_dino_tokens": dino_h, **heads,
        }
        if dec.ttt3r_logit_mean is not None:
            out["ttt3r_gate"] = torch.sigmoid(dec.ttt3r_logit_mean)
    return {k: v.numpy() for k, v in out.items()}


def slot_feeds(n):
    return {"human_cell": np.array(CELLS[:n] + [0] * (K - n), np.int32),
            "human_patch": np.array(PATCHES[:n] + [0] * (K - n), np.int32),
            "human_valid": np.array([1.0] * n + [0.0] * (K - n), np.float32)}


def assert_matches(got: dict, ref: dict, n: int, what: str) -> None:
    checked = 0
    for name, r in ref.items():
        g = got[name]
        if name in ("human_tokens", "human_dino_tokens"):
            assert np.all(g[:, n:] == 0) if name == "human_tokens" else True, f"{what}: padded slots not zeroed"
            g = g[:, :n]
        err = float(np.abs(g - r).max()) if r.size else 0.0
        scale = float(np.abs(r).max()) if r.size else 1.0
        assert err <= TOL * max(scale, 1e-12), f"{what} {name}: max abs {err:.3e}, scale {scale:.3e}"
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("n", [0, 1, K])
@pytest.mark.parametrize("first,ttt3r", [(False, True), (True, True), (False, False)])
def test_torch_decoder_graph_equals_unpadded(model, encoded, n, first, ttt3r):
    enc, dino, state, mem = encoded
    dec = DecoderGraph(model, W, H, K)
    feeds = {k: torch.from_numpy(v) for k, v in slot_feeds(n).items()}
    with torch.inference_mode():
        outs = dec(enc, dino, state, mem, feeds["human_cell"], feeds["human_patch"], feeds["human_valid"],
                   torch.tensor([float(first)]), torch.tensor([float(ttt3r)]))
    got = {k: v.numpy() for k, v in zip(dec.output_names(), outs)}
    ref = unpadded(model, enc, dino, state, mem, n, first, ttt3r)
    assert_matches(got, ref, n, f"torch n={n} first={first} ttt3r={ttt3r}")
    if ttt3r and not first:  # the gate really acted: the state is not the ungated decoder output
        plain = unpadded(model, enc, dino, state, mem, n, first, False)["state_out"]
        assert float(np.abs(got["state_out"] - plain).max()) > 1e-3


@pytest.fixture(scope="module")
def ort_decoder(tmp_path_factory):
    import onnxruntime as ort

    d = random_tiny_export(tmp_path_factory, W, H, K)
    return ort.InferenceSession(str(d / "decoder.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("n", [0, 1, K])
def test_onnx_decoder_equals_unpadded(model, encoded, ort_decoder, n):
    """The exported decoder (same seeded weights as `model`) on ONNX Runtime CPU against the unpadded torch path."""
    enc, dino, state, mem = encoded
    feeds = {"enc_tokens": enc.numpy(), "dino_tokens": dino.numpy(), "state": state.numpy(), "mem": mem.numpy(),
             **slot_feeds(n), "first": np.array([0.0], np.float32), "ttt3r": np.array([1.0], np.float32)}
    names = [o.name for o in ort_decoder.get_outputs()]
    got = dict(zip(names, ort_decoder.run(names, feeds)))
    assert_matches(got, unpadded(model, enc, dino, state, mem, n, False, True), n, f"onnx n={n}")


def test_padded_slot_content_is_ignored(model, encoded, ort_decoder):
    """Garbage in padded slots (their cells, patches) changes no valid output."""
    enc, dino, state, mem = encoded
    base = {"enc_tokens": enc.numpy(), "dino_tokens": dino.numpy(), "state": state.numpy(), "mem": mem.numpy(),
            **slot_feeds(1), "first": np.array([0.0], np.float32), "ttt3r": np.array([1.0], np.float32)}
    other = dict(base, human_cell=np.array([CELLS[0], 63, 17, 5], np.int32),
                 human_patch=np.array([PATCHES[0], 47, 8, 31], np.int32))
    names = [o.name for o in ort_decoder.get_outputs()]
    a = dict(zip(names, ort_decoder.run(names, base)))
    b = dict(zip(names, ort_decoder.run(names, other)))
    for name in names:
        x, y = (a[name][:, :1], b[name][:, :1]) if name == "human_tokens" else (a[name], b[name])
        if name == "human_dino_tokens":
            x, y = x[:, :1], y[:, :1]
        assert np.array_equal(x, y), name
