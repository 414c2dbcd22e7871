"""DPT dense head (CroCo `DPTOutputAdapter_fix` layout): 4 token hooks -> multi-scale maps -> full-res output."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x)))) with 3x3 convs (keys conv1, conv2)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(F.relu(x))))
        return out + x


class FusionBlock(nn.Module):
    """RefineNet fusion: (x [+ rcu1(skip)]) -> rcu2 -> bilinear x2 (align_corners) -> 1x1 out_conv."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Scratch(nn.Module):
    """layerN_rn 3x3 projections (also registered as `layer_rn.{0-3}`, same modules) and 4 refinenets."""

    def __init__(self, layer_dims: tuple[int, ...], features: int) -> None:
        super().__init__()
        self.layer1_rn = nn.Conv2d(layer_dims[0], features, 3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(layer_dims[1], features, 3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(layer_dims[2], features, 3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(layer_dims[3], features, 3, padding=1, bias=False)
        # the reference registers the same four convs a second time: state dicts carry both names
        self.layer_rn = nn.ModuleList([self.layer1_rn, self.layer2_rn, self.layer3_rn, self.layer4_rn])
        self.refinenet1 = FusionBlock(features)
        self.refinenet2 = FusionBlock(features)
        self.refinenet3 = FusionBlock(features)
        self.refinenet4 = FusionBlock(features)


class Upsample2x(nn.Module):
    """Bilinear x2, align_corners=True (parameter-free slot `head.1`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class DPTHead(nn.Module):
    """Dense prediction from 4 token sets of a (H/16, W/16) grid to a (B, C, H, W) map.

    hooks: [encoder tokens (dim_tokens[0]), decoder mid layers, final image tokens], each (B, N, dim_tokens[i]).
    """

    def __init__(self, dim_tokens: tuple[int, int, int, int], out_channels: int, features: int = 256,
                 layer_dims: tuple[int, ...] = (96, 192, 384, 768), patch: int = 16) -> None:
        super().__init__()
        self.patch = patch
        last = features // 2
        self.scratch = Scratch(layer_dims, features)
        self.head = nn.Sequential(
            nn.Conv2d(features, features // 2, 3, padding=1),
            Upsample2x(),
            nn.Conv2d(features // 2, last, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(last, out_channels, 1),
        )
        d = dim_tokens
        ld = layer_dims
        self.act_postprocess = nn.ModuleList([
            nn.Sequential(nn.Conv2d(d[0], ld[0], 1), nn.ConvTranspose2d(ld[0], ld[0], 4, stride=4)),
            nn.Sequential(nn.Conv2d(d[1], ld[1], 1), nn.ConvTranspose2d(ld[1], ld[1], 2, stride=2)),
            nn.Sequential(nn.Conv2d(d[2], ld[2], 1)),
            nn.Sequential(nn.Conv2d(d[3], ld[3], 1), nn.Conv2d(ld[3], ld[3], 3, stride=2, padding=1)),
        ])

    def forward(self, hooks: list[torch.Tensor], height: int, width: int) -> torch.Tensor:
        """hooks: 4 x (B, N, C_i) with N = (height/16)*(width/16) -> (B, out_channels, height, width)."""
        nh, nw = height // self.patch, width // self.patch
        maps = []
        for i, tok in enumerate(hooks):
            grid = tok.reshape(tok.shape[0], nh, nw, tok.shape[-1]).permute(0, 3, 1, 2)  # (B, C_i, nh, nw)
            maps.append(self.scratch.layer_rn[i](self.act_postprocess[i](grid)))
        s = self.scratch
        path4 = s.refinenet4(maps[3])[:, :, :maps[2].shape[2], :maps[2].shape[3]]
        path3 = s.refinenet3(path4, maps[2])
        path2 = s.refinenet2(path3, maps[1])
        path1 = s.refinenet1(path2, maps[0])
        return self.head(path1)
