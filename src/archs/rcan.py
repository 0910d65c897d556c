"""RCAN: Zhang et al., "Image Super-Resolution Using Very Deep Residual Channel Attention Networks",
ECCV 2018.

Upstream: https://github.com/yulunzhang/RCAN (commit f722e5d, RCAN_TrainCode/code/model/rcan.py):
no licence file in the repository (all rights reserved by default); SR Lab's code is an
independent implementation matching its parameter names.

Variant: the paper's model, 10 residual groups of 20 residual channel attention blocks (RCAB),
64 features, channel attention reduction 16, residual-in-residual skips (a short skip per group and
a long skip over the body), DIV2K mean shift, pixel-shuffle upsampler (x2 stages for powers of two,
one x3 stage for 3). Parameters: 15,444,643 (x2), 15,629,283 (x3), 15,592,355 (x4),
15,740,067 (x8).

Module names follow the authors' code (``head``, ``body``, ``tail``, ``conv_du``), so their
checkpoints map key for key, less the ``sub_mean``/``add_mean`` weights (here fixed buffers) and
given that those checkpoints expect pixel values in 0..255.
"""

from __future__ import annotations

import torch
from torch import nn

from src.archs.base import PIXEL_SHUFFLE_SCALES, NetworkTraits, SRNetwork
from src.archs.common import MeanShift, PixelShuffleUpsampler


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global average pooling, a bottleneck MLP, a sigmoid gate."""

    def __init__(self, num_features: int, reduction: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(num_features, num_features // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_features // reduction, num_features, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nn.Module):
    """conv-ReLU-conv, rescaled channel-wise by attention, plus the identity."""

    def __init__(self, num_features: int, reduction: int):
        super().__init__()
        self.body = nn.Sequential(
            _conv3x3(num_features, num_features),
            nn.ReLU(inplace=True),
            _conv3x3(num_features, num_features),
            ChannelAttention(num_features, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualGroup(nn.Module):
    """``num_blocks`` RCABs and a closing conv, with a short skip connection."""

    def __init__(self, num_features: int, num_blocks: int, reduction: int):
        super().__init__()
        self.body = nn.Sequential(
            *(RCAB(num_features, reduction) for _ in range(num_blocks)),
            _conv3x3(num_features, num_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class RCAN(SRNetwork):
    """Residual-in-residual network of channel-attention blocks; RGB in [0, 1] in and out."""

    traits = NetworkTraits(scales=PIXEL_SHUFFLE_SCALES)

    def __init__(
        self,
        scale: int,
        num_groups: int = 10,
        num_blocks: int = 20,
        num_features: int = 64,
        reduction: int = 16,
        num_channels: int = 3,
    ):
        super().__init__()
        self.scale = scale
        self.sub_mean = MeanShift(sign=-1, channels=num_channels)
        self.add_mean = MeanShift(sign=+1, channels=num_channels)
        self.head = nn.Sequential(_conv3x3(num_channels, num_features))
        self.body = nn.Sequential(
            *(ResidualGroup(num_features, num_blocks, reduction) for _ in range(num_groups)),
            _conv3x3(num_features, num_features),
        )
        self.tail = nn.Sequential(
            PixelShuffleUpsampler(scale, num_features), _conv3x3(num_features, num_channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(self.sub_mean(x))
        features = features + self.body(features)
        return self.add_mean(self.tail(features))
