"""EDSR: Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution",
CVPR Workshops 2017.

Upstream: https://github.com/sanghyun-son/EDSR-PyTorch (commit 3dd71ae, src/model/edsr.py), MIT,
Copyright (c) 2018 Sanghyun Son.
SR Lab's code is its own; it keeps the upstream head/body/tail structure, but the key names are
not the same (``head`` is one convolution here, a one-element sequence there).

Residual blocks without batch norm (conv-ReLU-conv, scaled by ``res_scale``), a long skip over
the body, and a pixel-shuffle tail. Defaults are the reference implementation's baseline
(16 blocks, 64 features: 1.37M parameters at x2, 1.52M at x4); the paper's large model is
32 blocks, 256 features, ``res_scale=0.1`` (40.7M at x2, 43.1M at x4).
"""

from __future__ import annotations

import torch
from torch import nn

from src.archs.base import PIXEL_SHUFFLE_SCALES, NetworkTraits, SRNetwork
from src.archs.common import MeanShift, PixelShuffleUpsampler


class ResidualBlock(nn.Module):
    """conv-ReLU-conv with a scaled identity skip."""

    def __init__(self, num_features: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(num_features, num_features, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_features, num_features, 3, padding=1),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class EDSR(SRNetwork):
    """EDSR; input and output RGB in [0, 1] (the DIV2K mean is removed and added back)."""

    traits = NetworkTraits(scales=PIXEL_SHUFFLE_SCALES, tile_exact=True)

    def __init__(
        self,
        scale: int,
        num_blocks: int = 16,
        num_features: int = 64,
        res_scale: float = 1.0,
        num_channels: int = 3,
    ):
        super().__init__()
        self.scale = scale
        self.sub_mean = MeanShift(sign=-1, channels=num_channels)
        self.add_mean = MeanShift(sign=+1, channels=num_channels)
        self.head = nn.Conv2d(num_channels, num_features, 3, padding=1)
        self.body = nn.Sequential(
            *(ResidualBlock(num_features, res_scale) for _ in range(num_blocks)),
            nn.Conv2d(num_features, num_features, 3, padding=1),
        )
        self.tail = nn.Sequential(
            PixelShuffleUpsampler(scale, num_features),
            nn.Conv2d(num_features, num_channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(self.sub_mean(x))
        features = features + self.body(features)
        return self.add_mean(self.tail(features))
