"""Faithful PyTorch re-implementation of Human3R (CUT3R + Multi-HMR branch + SMPL-X heads)."""
from __future__ import annotations

from pathlib import Path

import torch

from human3r_edge.runtime.config import Human3RConfig
from human3r_edge.errors import ConfigError, msg

from human3r_edge.export.model.heads import smpl_mean_buffers
from human3r_edge.export.model.human3r import DecoderOut, Human3R


def build_model(cfg: Human3RConfig, device: str | torch.device = "cpu") -> Human3R:
    """An uninitialised (zero-filled) Human3R for `cfg` on `device`, in eval mode; load weights afterwards.

    Works on device="meta" (no memory) for key/shape inspection of the full-size presets.
    """
    if cfg.dec_depth < 2:
        raise ConfigError(msg(f"config {cfg.name!r}", "dec_depth must be >= 2 for the DPT hooks", cfg.dec_depth))
    with torch.device(device):
        model = Human3R(cfg)
    return model.eval()


def load_smpl_mean_params(model: Human3R, path: str | Path) -> None:
    """Fill the downstream head's init_* buffers from an `smpl_mean_params.npz` (in place)."""
    head = model.downstream_head
    for name, value in smpl_mean_buffers(path).items():
        getattr(head, name).copy_(value.to(getattr(head, name).device))


__all__ = ["DecoderOut", "Human3R", "build_model", "load_smpl_mean_params"]
