"""`human3r-edge make-assets`: seeded, UNTRAINED random-weight Human3R checkpoints in the official layout, plus a
synthetic SMPL-X model and smpl_mean_params.

    human3r-edge make-assets [--config tiny] --out DIR [--seed S] [--people N] [--no-calibrate]

The weights are random, shaped like the reference goldens' harness so that the outputs are sane: the point heads'
last convs rescaled on a synthetic frame (positive depth, no exp overflow at any width), people in front of the
camera (SMPL-X translation bias), and a detection bias calibrated on synthetic frames so that about `--people`
heads pass the 0.3 threshold per frame. Nothing they predict is
meaningful: they exist to run and measure the pipeline without the licence-gated real checkpoints.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.runtime.config import Human3RConfig, get_config
from human3r_edge.errors import Human3RError, msg

UNTRAINED_NOTE = ("UNTRAINED: seeded random weights made by `human3r-edge make-assets` (seed {seed}); outputs are "
                  "not meaningful. Use the official Human3R checkpoints for real results.")
THRESHOLD_LOGIT = math.log(0.3 / 0.7)  # sigmoid(x) >= 0.3 (the eps terms of the score move it by < 1e-5)

# The goldens' harness adjustments (tiny_a/config.json `harness`), applied after the random draw.
PARAM_SCALES = {
    **{f"downstream_head.dpt_{h}.head.{i}.weight": 3.0 for h in ("self", "cross", "rgb") for i in (0, 2, 4)},
    "downstream_head.mlp_classif.0.weight": 2.0, "downstream_head.mlp_classif.2.weight": 2.0,
    "downstream_head.mlp_offset.0.weight": 4.0, "downstream_head.mlp_offset.2.weight": 4.0,
}
CHANNEL_SCALES = {  # flips x, y of the self-view DPT so the Weiszfeld focal comes out positive
    "downstream_head.dpt_self.head.4.weight": (-1.0, -1.0, 1.0, 1.0),
    "downstream_head.dpt_self.head.4.bias": (-1.0, -1.0, 1.0, 1.0),
}
PARAM_ADDS = {  # positive depth on both DPT z channels; people 1.5 units in front of the camera
    "downstream_head.dpt_self.head.4.bias": (0.0, 0.0, 2.5, 0.0),
    "downstream_head.dpt_cross.head.4.bias": (0.0, 0.0, 1.2, 0.0),
    "downstream_head.deccam.mlp.layers.2.bias": (0.0, 0.0, 1.5),
}
# Raw-output (mean, std) per channel (x, y, z, conf) that the point heads' last conv is rescaled to on a synthetic
# frame: the goldens' tiny model lands near these, wider random models would overflow exp(|xyz|) and 1+exp(conf).
HEAD_TARGETS = {
    "dpt_self": ((0.0, 0.0, 2.5, 0.5), (0.4, 0.3, 0.15, 0.3)),
    "dpt_cross": ((0.0, 0.0, 1.2, 0.5), (0.3, 0.15, 0.12, 0.3)),
}
CLASSIF_BIAS = "downstream_head.mlp_classif.2.bias"
TOKEN_STD = 0.02
UNIT_TOKENS = ("register_tokens.weight",)  # nn.Embedding: N(0, 1) like torch's default init


@dataclass(frozen=True)
class Calibration:
    """Detection bias calibration on synthetic frames."""

    bias: float  # final mlp_classif bias
    people_per_frame: tuple[int, ...]
    margin: float  # smallest |logit - threshold| over the frames' score peaks


# ------------------------------------------------------------------------------------------------ weights
def randomize_(model: Any, seed: int = 0) -> None:
    """Fill every parameter of a Human3R model with seeded random values (in place), then apply the harness
    adjustments. LayerNorm / LayerScale: 1 + N(0, 0.1) weights, N(0, 0.1) biases; linear and conv weights:
    their default-init spread plus N(0, 0.02); biases and learned tokens N(0, 0.02). Buffers are untouched."""
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(int(seed))
    norm_weights: set[int] = set()
    norm_biases: set[int] = set()
    for mod in model.modules():
        if isinstance(mod, nn.LayerNorm):
            norm_weights.add(id(mod.weight))
            norm_biases.add(id(mod.bias))
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if id(p) in norm_weights or name.endswith(".gamma"):
                p.copy_(1.0 + 0.1 * noise)
            elif id(p) in norm_biases:
                p.copy_(0.1 * noise)
            elif name in UNIT_TOKENS:
                p.copy_(noise)
            elif name.endswith(".weight") and p.ndim >= 2:
                p.copy_(noise * math.sqrt(_init_var(name, tuple(p.shape)) + TOKEN_STD ** 2))
            else:
                p.copy_(TOKEN_STD * noise)
        params = dict(model.named_parameters())
        for name, s in PARAM_SCALES.items():
            if name in params:
                params[name].mul_(s)
        for name, scales in CHANNEL_SCALES.items():
            if name in params:
                shape = (-1,) + (1,) * (params[name].ndim - 1)
                params[name].mul_(torch.tensor(scales).reshape(shape))
        for name, add in PARAM_ADDS.items():
            if name in params:
                params[name].add_(torch.tensor(add))


def _init_var(name: str, shape: tuple[int, ...]) -> float:
    """Variance of the default init: Xavier-uniform for linear layers, PyTorch's conv default for convs."""
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
    if len(shape) == 2:
        return 2.0 / (fan_in + fan_out)
    return 1.0 / (3.0 * fan_in)


def _round(x: float) -> float:
    """4 significant digits: calibrated constants do not depend on last-bit differences between runs."""
    return float(f"{x:.4g}")


def normalize_heads_(model: Any, img: np.ndarray) -> dict[str, list[float]]:
    """Rescale each point head's last conv (per channel) so that its raw output on `img` (3, H, W) float32 in
    [-1, 1] has the HEAD_TARGETS mean and std; signs are kept. Returns the applied scales. In place."""
    import torch

    from human3r_edge.export.model.blocks import make_rope

    x = torch.from_numpy(np.ascontiguousarray(img, np.float32)).reshape(1, 3, *img.shape[-2:])
    H, W = int(x.shape[-2]), int(x.shape[-1])
    head = model.downstream_head
    stats = {}
    with torch.inference_mode():
        enc = model.encode_image(x)
        state, mem = model.initial_state()
        dec = model.decode(enc, model.pose_query(enc, mem, True), state, H, W)
        e, m1, m2, fin = dec.hooks
        tok = fin[:, 1:]
        stats["dpt_self"] = head.dpt_self([e, m1, m2, tok], H, W)[0]
        pose_tok = fin[:, 0]
        rope = make_rope(model.image_positions(H, W), model.cfg.dec_head_dim)
        for blk in head.final_transform:
            tok = blk(tok, pose_tok, rope)
        stats["dpt_cross"] = head.dpt_cross([e, m1, m2, tok], H, W)[0]
    scales = {}
    with torch.no_grad():
        for name, (means, stds) in HEAD_TARGETS.items():
            raw = stats[name].double()  # (4, H, W)
            mean, std = raw.mean(dim=(1, 2)), raw.std(dim=(1, 2)).clamp_min(1e-6)
            conv = getattr(head, name).head[4]
            f = [_round(t / float(s)) for t, s in zip(stds, std)]
            for c in range(len(f)):
                conv.weight[c].mul_(f[c])
                conv.bias[c] = _round((float(conv.bias[c]) - float(mean[c])) * f[c] + means[c])
            scales[name] = f
    return scales


def set_mean_params_(model: Any, seed: int = 7) -> None:
    """Fill the SMPL-X head's init_* buffers from a synthetic smpl_mean_params (seeded, in a temp file)."""
    from human3r_edge.runtime.smplx.synthetic import write_mean_params

    from human3r_edge.export.model import load_smpl_mean_params

    with tempfile.TemporaryDirectory() as tmp:
        path = write_mean_params(Path(tmp) / "smpl_mean_params.npz", seed)
        load_smpl_mean_params(model, path)


# ------------------------------------------------------------------------------------------------ calibration
def synthetic_frames(width: int, height: int, count: int, seed: int = 0) -> np.ndarray:
    """(count, 3, H, W) float32 in [-1, 1]: a colour-ramp room with two walking figures and noise, numpy only."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((count, 3, height, width), np.float32)
    for i in range(count):
        pan = 0.05 * width * np.sin(i / 23.0)  # periodic: any number of frames stays in view
        img = np.stack([120 + 70 * np.cos((xx + pan) / (0.4 * width) + yy / (0.55 * height)),
                        110 + 60 * yy / height, 90 + 80 * np.sin((xx + pan) / (0.3 * width))])
        img[:, int(0.7 * height):] *= 0.6
        for k, (x0, color) in enumerate(((0.3, (200, 40, 40)), (0.68, (40, 60, 200)))):
            cx = (x0 + 0.12 * np.sin(i / 11.0 + 2.0 * k)) * width
            cy = 0.55 * height
            s = 0.06 * height
            head = (xx - cx) ** 2 / (0.8 * s) ** 2 + (yy - (cy - 2.2 * s)) ** 2 / s ** 2 <= 1
            body = (np.abs(xx - cx) <= 1.1 * s) & (yy >= cy - 1.2 * s) & (yy <= cy + 2.5 * s)
            for c in range(3):
                img[c][head | body] = color[c]
        img += rng.normal(0, 4, size=img.shape).astype(np.float32)
        out[i] = np.clip(img, 0, 255) / 127.5 - 1.0
    return out


def calibrate_detection_(model: Any, frames_mhmr: np.ndarray, people: int = 2) -> Calibration:
    """Shift the final mlp_classif bias so that `people` score peaks per frame (median over the frames) reach
    the 0.3 threshold, half-way between the people-th and the next peak. frames_mhmr: (F, 3, R, R) float32."""
    import torch
    import torch.nn.functional as F

    head = model.downstream_head
    g = model.cfg.mhmr_grid
    mids, peak_lists = [], []
    with torch.inference_mode():
        for f in frames_mhmr:
            dino = model.encode_human(torch.from_numpy(np.ascontiguousarray(f))[None])
            logit = head.mlp_classif(dino).reshape(1, 1, g, g)  # (1, 1, g, g) with the current bias
            peak = F.max_pool2d(logit, 3, stride=1, padding=1)
            peaks = torch.sort(logit[peak == logit].flatten(), descending=True).values.double().numpy()
            peak_lists.append(peaks)
            hi = peaks[people - 1] if len(peaks) >= people else peaks[-1] + 1.0
            lo = peaks[people] if len(peaks) > people else hi - 2.0
            mids.append(0.5 * (hi + lo))
    shift = _round(THRESHOLD_LOGIT - float(np.median(mids)))
    bias = getattr(head.mlp_classif, "2").bias
    with torch.no_grad():
        bias.add_(shift)
    counts = tuple(int(np.sum(p + shift >= THRESHOLD_LOGIT)) for p in peak_lists)
    margin = float(min(np.min(np.abs(p + shift - THRESHOLD_LOGIT)) for p in peak_lists))
    return Calibration(float(bias.detach().reshape(-1)[0]), counts, margin)


def random_model(cfg: Human3RConfig, seed: int = 0, calibrate: bool = True, people: int = 2,
                 frames: int | None = None, log: Any = None) -> tuple[Any, Calibration | None]:
    """A seeded random-weight Human3R (eval mode, CPU) with synthetic mean params; optionally calibrated."""
    from human3r_edge.runtime.preprocess import pad_image

    from human3r_edge.export.model import build_model

    model = build_model(cfg)
    randomize_(model, seed)
    set_mean_params_(model)
    width, height = (128, 96) if cfg.name == "tiny" else (512, 288)
    count = frames or (4 if cfg.backbone_spec.embed_dim <= 384 else 2)
    imgs = synthetic_frames(width, height, count, seed)
    normalize_heads_(model, imgs[0])
    if not calibrate:
        return model, None
    mhmr = pad_image(imgs, cfg.mhmr_img_res)[0]  # (F, 3, R, R)
    if log:
        log(f"calibrating the detection bias on {count} synthetic {width}x{height} frames")
    return model, calibrate_detection_(model, mhmr, people)


def save_checkpoint(model: Any, path: str | os.PathLike, seed: int, calibration: Calibration | None) -> Path:
    """torch.save the official layout {'model', 'args': {'model': <string>}, 'epoch', ...} atomically."""
    import torch

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model.state_dict(),
        "args": {"model": model.cfg.model_string()},
        "epoch": 0,
        "untrained": True,
        "note": UNTRAINED_NOTE.format(seed=seed),
        "seed": int(seed),
    }
    if calibration is not None:
        payload["calibration"] = {"detection_bias": calibration.bias,
                                  "people_per_frame": list(calibration.people_per_frame)}
    tmp = p.with_name(p.name + ".partial")
    torch.save(payload, tmp)
    os.replace(tmp, p)
    return p


def make_assets(config: str, out: str | os.PathLike, seed: int = 0, people: int = 2, calibrate: bool = True,
                log: Any = print) -> dict[str, Path]:
    """Write `<config>.pth`, SMPLX_NEUTRAL.npz and smpl_mean_params.npz into `out`; returns their paths."""
    from human3r_edge.runtime.smplx.synthetic import write_mean_params, write_synthetic_smplx

    cfg = get_config(config)
    if people < 1:
        raise Human3RError(msg("--people", "must be >= 1", people))
    d = Path(out)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Human3RError(msg(f"--out {d}", "cannot create the folder", repr(exc))) from exc
    paths: dict[str, Path] = {}
    smplx = d / "SMPLX_NEUTRAL.npz"
    if not smplx.is_file():
        log(f"synthetic SMPL-X model -> {smplx}")
        write_synthetic_smplx(smplx)
    paths["smplx"] = smplx
    paths["mean_params"] = write_mean_params(d / "smpl_mean_params.npz")
    log(f"random {cfg.name} weights (seed {seed})")
    model, cal = random_model(cfg, seed, calibrate=calibrate, people=people, log=log)
    if cal is not None:
        log(f"detection bias {cal.bias:+.4f}: people per synthetic frame {list(cal.people_per_frame)}, "
            f"logit margin {cal.margin:.3f}")
    paths["checkpoint"] = save_checkpoint(model, d / f"{cfg.name}.pth", seed, cal)
    return paths


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="tiny", help="preset: tiny, 672S, 672B, 672L, 896L (default tiny)")
    p.add_argument("--out", required=True, type=Path, help="folder for <config>.pth, SMPLX_NEUTRAL.npz, "
                                                           "smpl_mean_params.npz")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--people", type=int, default=2, help="people per synthetic frame the detection bias aims at")
    p.add_argument("--no-calibrate", action="store_true", help="keep the random detection bias (faster)")


def main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        paths = make_assets(args.config, args.out, args.seed, args.people, not args.no_calibrate,
                            log=lambda s: print(f"make-assets | {s}", file=sys.stderr, flush=True))
    except Human3RError as exc:
        print(f"human3r-edge make-assets | {exc}", file=sys.stderr)
        return 2
    size = paths["checkpoint"].stat().st_size
    print(f"make-assets | {paths['checkpoint']} ({size / 1e6:.1f} MB), {paths['smplx'].name}, "
          f"{paths['mean_params'].name} in {time.perf_counter() - t0:.1f} s. NOTE: the weights are UNTRAINED "
          "(random); outputs are not meaningful.")
    return 0
