"""`human3r-edge make-assets`: an UNTRAINED random-weight checkpoint in the official layout that our safe loader
reads, seeded and reproducible, with sane outputs (positive depth, a few detections), plus the synthetic SMPL-X
files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from human3r_edge.cli import main as cli
from human3r_edge.export.assets import random_model, synthetic_frames
from human3r_edge.export.checkpoint import load_checkpoint, load_model
from human3r_edge.runtime.config import get_config
from human3r_edge.runtime.preprocess import pad_image


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    out = tmp_path_factory.mktemp("assets")
    assert cli(["make-assets", "--config", "tiny", "--out", str(out), "--seed", "3"]) == 0
    return out


def test_files_and_official_layout(assets, capsys):
    for name in ("tiny.pth", "SMPLX_NEUTRAL.npz", "smpl_mean_params.npz"):
        assert (assets / name).is_file(), name
    ckpt = load_checkpoint(assets / "tiny.pth")  # the restricted loader: no code from the file runs
    assert ckpt.config is not None and ckpt.config.name == "tiny"
    assert ckpt.meta["untrained"] is True and "UNTRAINED" in ckpt.meta["note"] and ckpt.meta["seed"] == 3
    raw = torch.load(assets / "tiny.pth", weights_only=True)
    assert set(raw) >= {"model", "args", "epoch"} and raw["args"]["model"].startswith("ARCroco3DStereo(")
    # both names of the DPT alias keys are present (one storage), as in the official files
    assert "downstream_head.dpt_self.scratch.layer_rn.0.weight" in raw["model"]
    assert "downstream_head.dpt_self.scratch.layer1_rn.weight" in raw["model"]


def test_seeded_and_reproducible():
    cfg = get_config("tiny")
    a, _ = random_model(cfg, seed=11, calibrate=False)
    b, _ = random_model(cfg, seed=11, calibrate=False)
    c, _ = random_model(cfg, seed=12, calibrate=False)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["enc_blocks.0.attn.qkv.weight"], sc["enc_blocks.0.attn.qkv.weight"])
    # the mean-parameter buffers come from the synthetic smpl_mean_params, not zeros
    assert float(a.downstream_head.init_betas.abs().sum()) > 0


def test_outputs_are_sane(assets):
    """A few detections per synthetic frame and positive depth, through the faithful model."""
    from human3r_edge.export.model.detection import find_humans, nms

    model, ckpt = load_model(assets / "tiny.pth")
    cfg = model.cfg
    frames = synthetic_frames(128, 96, 6, seed=9)
    counts, positive = [], []
    with torch.inference_mode():
        state, mem = model.initial_state()
        for img in frames:
            x = torch.from_numpy(img)[None]
            mh = torch.from_numpy(pad_image(img, cfg.mhmr_img_res)[0])[None]
            enc = model.encode_image(x)
            scores, offsets = model.detect(model.encode_human(mh))
            det = find_humans(nms(scores)[0], offsets[0], cfg.mhmr_img_res, 96, 128)
            counts.append(int(det.h.numel()))
            dec = model.decode(enc, model.pose_query(enc, mem, True), state, 96, 128)
            pts = model.heads(dec.hooks, 96, 128, cross=False, rgb=False)["pts3d_self"]
            positive.append(float((pts[..., 2] > 0).float().mean()))
    assert 1 <= np.median(counts) <= 3 and max(counts) <= 6, counts
    assert min(positive) > 0.9, positive
    assert ckpt.meta["calibration"]["people_per_frame"]


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    rc = cli(["make-assets", "--config", "999X", "--out", str(tmp_path)])
    assert rc == 2 and "unknown config name" in capsys.readouterr().err
