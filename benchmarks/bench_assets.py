"""The benchmark's inputs, cached per configuration: seeded random weights calibrated to detect `--people`
people, the synthetic SMPL-X files, and the lean ONNX export (each built in a child process)."""
from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.benchmarks.bench_settings import BenchSettings
from human3r_edge.benchmarks.frames import synthetic_frames
from human3r_edge.errors import BackendUnavailable, Human3RError, msg

ASSET_VERSION = 2  # bump when the frames, the weight init or the calibration change (invalidates the cache)

@dataclass(frozen=True)
class Assets:
    """Cached inputs of one benchmark configuration."""

    directory: Path
    checkpoint: Path  # seeded, calibrated weights (safetensors with the config in its metadata)
    smplx_model: Path  # synthetic SMPL-X (official layout)
    mean_params: Path  # synthetic smpl_mean_params.npz
    info: dict  # calibration record


def asset_dir(s: BenchSettings) -> Path:
    return s.cache / f"v{ASSET_VERSION}_{s.config}_{s.width}x{s.height}_seed{s.seed}_p{s.people}"


def load_assets(s: BenchSettings) -> Assets | None:
    d = asset_dir(s)
    info_path = d / "assets.json"
    if not info_path.is_file() or not (d / "checkpoint.safetensors").is_file():
        return None
    return Assets(d, d / "checkpoint.safetensors", d / "SMPLX_NEUTRAL.npz", d / "smpl_mean_params.npz",
                  json.loads(info_path.read_text()))


def calibrate_detection(model: Any, img: np.ndarray, img_mhmr: np.ndarray, people: int) -> dict:
    """Shift the last `mlp_classif` bias so exactly `people` NMS peaks of frame 0 reach the 0.3 threshold.

    img (3, H, W), img_mhmr (3, R, R) float32: frame 0 preprocessed. The shift puts the threshold halfway
    between the people-th and (people+1)-th strongest peak logits (NMS peaks do not move under a shift).
    """
    import torch
    import torch.nn.functional as F

    head = model.downstream_head
    g = model.cfg.mhmr_grid
    with torch.inference_mode():
        dino = model.encode_human(torch.from_numpy(img_mhmr)[None])  # (1, g*g, bd)
        logits = head.mlp_classif(dino).reshape(1, 1, g, g)  # raw, before the sigmoid
        peaks = logits == F.max_pool2d(logits, 3, stride=1, padding=1)
        vals = torch.sort(logits[peaks].flatten(), descending=True).values
    if vals.numel() < people:
        raise Human3RError(msg("calibration", "fewer NMS peaks than --people", int(vals.numel()), f">= {people}"))
    from human3r_edge.runtime.detect import DETECTION_THRESHOLD

    p = (DETECTION_THRESHOLD - 1e-6) / (1 - 2e-6)
    target = float(np.log(p / (1 - p)))  # logit of the threshold of sigmoid * (1 - 2e-6) + 1e-6
    upper = float(vals[people - 1])
    lower = float(vals[people]) if vals.numel() > people else upper - 2.0
    shift = target - 0.5 * (upper + lower)
    bias = head.mlp_classif[-1].bias
    with torch.no_grad():
        bias += shift
    return {"bias_shift": shift, "peak_logits_top": [float(v) for v in vals[:6]], "people_frame0": people,
            "img_shape": list(img.shape)}


def prepare_assets(s: BenchSettings) -> Assets:
    """Build the cached seeded checkpoint for `s` (in this process; `ensure_assets` runs it in a child)."""
    import torch

    from human3r_edge.export.assets import random_model
    from human3r_edge.export.checkpoint import save_safetensors
    from human3r_edge.runtime import preprocess as pp
    from human3r_edge.runtime.config import get_config
    from human3r_edge.runtime.smplx.synthetic import write_mean_params, write_synthetic_smplx

    cfg = get_config(s.config)
    d = asset_dir(s)
    d.mkdir(parents=True, exist_ok=True)
    smplx_path = write_synthetic_smplx(d / "SMPLX_NEUTRAL.npz")
    mean_path = write_mean_params(d / "smpl_mean_params.npz")
    torch.set_num_threads(s.threads)
    model, _ = random_model(cfg, s.seed, calibrate=False)  # make-assets' seeded init, calibrated below
    w0, h0 = s.source_size
    frame0 = synthetic_frames(w0, h0, 1, s.seed)[0]
    img = pp.preprocess_rgb(frame0, max(s.width, s.height))
    if img.shape[1:] != (s.height, s.width):
        raise Human3RError(msg("synthetic frames", "do not preprocess to the resolution", img.shape[1:],
                               (s.height, s.width)))
    img_mhmr, _ = pp.pad_image(img, cfg.mhmr_img_res)
    info = calibrate_detection(model, img, img_mhmr, s.people)
    tmp = d / "checkpoint.safetensors.tmp"
    save_safetensors(tmp, model.state_dict(), cfg)
    os.replace(tmp, d / "checkpoint.safetensors")
    info.update(config=s.config, seed=s.seed, init="export.assets.random_model (make-assets' seeded init; "
                "UNTRAINED random weights)", created=_dt.datetime.now().isoformat(timespec="seconds"))
    (d / "assets.json").write_text(json.dumps(info, indent=1))
    return Assets(d, d / "checkpoint.safetensors", smplx_path, mean_path, info)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "human3r_edge", *args]


def ensure_assets(s: BenchSettings) -> Assets:
    """The cached assets for `s`, built in a child process if missing (keeps this process's RSS clean)."""
    found = load_assets(s)
    if found is not None:
        return found
    cmd = _cli("bench", "--prepare-only", "--config", s.config, "--resolution", f"{s.width}x{s.height}",
               "--people", str(s.people), "--seed", str(s.seed), "--cache", str(s.cache), "--threads",
               str(s.threads), "--backends", "torch")
    print(f"bench | preparing seeded weights: {' '.join(cmd[2:])}", file=sys.stderr)
    res = subprocess.run(cmd)
    found = load_assets(s)
    if res.returncode != 0 or found is None:
        raise Human3RError(msg("bench assets", "preparation failed", f"exit {res.returncode}", hint=" ".join(cmd)))
    return found


def export_dir(s: BenchSettings, assets: Assets) -> Path:
    return assets.directory / f"lean_k{s.max_people}"


def ensure_export(s: BenchSettings, assets: Assets) -> Path:
    """The lean ONNX export of the cached checkpoint (`human3r-edge export --lean`, in a child process)."""
    if s.engines is not None:
        return s.engines
    out = export_dir(s, assets)
    stamp = out / "bench_source.json"
    want = {"checkpoint": str(assets.checkpoint), "bias_shift": assets.info.get("bias_shift"),
            "max_people": s.max_people}
    if (out / "export.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == want:
        return out
    try:
        import human3r_edge.export.onnx_export  # noqa: F401  (only to tell a missing exporter apart)
    except ImportError as exc:
        raise BackendUnavailable(msg("bench", "the ONNX exporter is not available", repr(exc),
                                     hint="pass --engines DIR (a lean export of the same weights)")) from exc
    cmd = _cli("export", "--checkpoint", str(assets.checkpoint), "--resolution", f"{s.width}x{s.height}",
               "--out", str(out), "--lean", "--max-people", str(s.max_people), "--no-trt-check")
    print(f"bench | exporting: {' '.join(cmd[2:])}", file=sys.stderr)
    res = subprocess.run(cmd)
    if res.returncode != 0 or not (out / "export.json").is_file():
        raise Human3RError(msg("bench export", "failed", f"exit {res.returncode}", hint=" ".join(cmd)))
    stamp.write_text(json.dumps(want))
    return out
