"""Human3R's `downstream_head`: DPT self/cross/rgb, final_transform, pose head, Multi-HMR detection and mask
heads, the human-prompt fusion MLP and the SMPL-X regression MLPs (with their mean-parameter buffers)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from human3r_edge.runtime.config import Human3RConfig
from human3r_edge.errors import Human3RError, msg

from human3r_edge.export.model.blocks import Mlp, MlpStack, ModulatedBlock
from human3r_edge.export.model.dpt import DPTHead

NUM_ROTS = 53  # global + 21 body + 15 left hand + 15 right hand + jaw
NUM_BETAS = 10
NUM_EXPRESSION = 10


class PoseHead(nn.Module):
    """Mlp D -> 4D -> 7 under `mlp` (absT + quaternion)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = Mlp(dim, dim * 4, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def regression_mlp(dim: int, out: int) -> nn.Sequential:
    """Linear -> ReLU -> Linear (keys `0`, `2`): Multi-HMR's score / offset heads."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out))


class DownstreamHead(nn.Module):
    """All heads; module and buffer order reproduces the official state-dict key order."""

    def __init__(self, cfg: Human3RConfig) -> None:
        super().__init__()
        ed, dd, bd = cfg.enc_embed_dim, cfg.dec_embed_dim, cfg.backbone_spec.embed_dim
        self.patch_mhmr = cfg.backbone_spec.patch_size
        self.register_buffer("init_body_pose", identity_body_pose())
        self.register_buffer("init_betas", torch.zeros(1, NUM_BETAS))
        self.register_buffer("init_betas_kid", torch.zeros(1, NUM_BETAS + 1))
        self.register_buffer("init_cam", torch.zeros(1, 3))
        self.register_buffer("init_expression", torch.zeros(1, NUM_EXPRESSION))
        dims = (ed, dd, dd, dd)
        feat, ld = cfg.dpt_feature_dim, tuple(cfg.dpt_layer_dims)
        self.dpt_self = DPTHead(dims, 4, feat, ld, cfg.patch_size)
        self.final_transform = nn.ModuleList([ModulatedBlock(dd, cfg.dec_num_heads) for _ in range(2)])
        self.dpt_cross = DPTHead(dims, 4, feat, ld, cfg.patch_size)
        self.dpt_rgb = DPTHead(dims, 3, feat, ld, cfg.patch_size)
        self.pose_head = PoseHead(dd)
        self.mlp_classif = regression_mlp(bd, 1)
        self.mlp_offset = regression_mlp(bd, 2)
        self.mlp_msk = MlpStack(bd, bd, self.patch_mhmr ** 2)
        self.mlp_fuse = MlpStack(ed + bd, 4 * (ed + bd), dd)
        self.deccam = MlpStack(dd, 4 * dd, 3)
        self.decpose = MlpStack(dd + bd, 4 * (dd + bd), NUM_ROTS * 6)
        self.decshape = MlpStack(dd + bd, 4 * (dd + bd), NUM_BETAS)
        self.decexpression = MlpStack(dd + bd, 4 * (dd + bd), NUM_EXPRESSION)


def identity_body_pose(mean_pose: np.ndarray | None = None) -> torch.Tensor:
    """(1, 318): identity 6D [1,0,0,1,0,0] per rotation, the first 24 replaced by `mean_pose` (144,) if given."""
    eye6 = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    pose = eye6.repeat(NUM_ROTS).reshape(1, -1)
    if mean_pose is not None:
        pose[:, :144] = torch.from_numpy(np.asarray(mean_pose, dtype=np.float64)).float()
    return pose


def smpl_mean_buffers(path: str | Path) -> dict[str, torch.Tensor]:
    """The five `init_*` buffers computed from an `smpl_mean_params.npz` (keys pose (144,), shape (10,), cam (3,))."""
    try:
        with np.load(path, allow_pickle=False) as z:
            pose, shape, cam = z["pose"], z["shape"], z["cam"]
    except (OSError, KeyError, ValueError) as exc:
        raise Human3RError(msg(f"smpl mean params {path}", "cannot read", repr(exc),
                               "an npz with arrays pose (144,), shape (10,), cam (3,)")) from exc
    if pose.shape != (144,) or shape.shape != (10,) or cam.shape != (3,):
        raise Human3RError(msg(f"smpl mean params {path}", "wrong array shapes",
                               f"pose {pose.shape}, shape {shape.shape}, cam {cam.shape}", "(144,), (10,), (3,)"))
    betas = torch.from_numpy(shape.astype(np.float32)).unsqueeze(0)  # (1, 10)
    return {
        "init_body_pose": identity_body_pose(pose),
        "init_betas": betas,
        "init_betas_kid": torch.cat([betas, torch.zeros_like(betas[:, :1])], dim=1),
        "init_cam": torch.from_numpy(cam.astype(np.float32)).unsqueeze(0),
        "init_expression": 0.0 * betas,
    }
