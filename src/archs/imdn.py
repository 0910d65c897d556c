"""IMDN: Hui et al., "Lightweight Image Super-Resolution with Information Multi-distillation
Network", ACM Multimedia (MM) 2019.

Upstream: https://github.com/Zheng222/IMDN (commit 8f158e6, model/architecture.py and
model/block.py): no licence file in the repository (all rights reserved by default);
SR Lab's code is an independent implementation matching its parameter names.

A stack of information multi-distillation blocks (IMDB). Each block refines its features with
four 3x3 convolutions; after each of the first three a quarter of the channels is split off
("distilled") and kept, the rest goes on. The four distilled slices are concatenated, reweighted
by contrast-aware channel attention (per-channel standard deviation plus mean, then a squeeze and
excitation bottleneck) and fused by a 1x1 convolution with a residual skip. The outputs of all
blocks are fused, refined, added to the shallow features and upsampled by one pixel shuffle.

Defaults are the paper's: 6 blocks, 64 features, distillation rate 1/4, LeakyReLU slope 0.05:
694K parameters at x2, 703K at x3, 715K at x4. Input and output RGB in [0, 1]; no mean shift.
Module names follow the official release (``fea_conv``, ``IMDB1``..``IMDB6``, ``c``, ``LR_conv``,
``upsampler``) so its checkpoints load unchanged once their ``module.`` prefix is stripped.
"""

from __future__ import annotations

import torch
from torch import nn

from src.archs.base import NetworkTraits
from src.archs.common import DistillationTrunk, same_conv

LEAKY_SLOPE = 0.05


conv = same_conv


def channel_contrast(x: torch.Tensor) -> torch.Tensor:
    """Per-channel standard deviation plus mean over space: (N, C, H, W) -> (N, C, 1, 1)."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
    return std + mean


class ContrastChannelAttention(nn.Module):
    """Contrast-aware channel attention (CCA): scale channels by sigmoid(MLP(std + mean))."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(channel_contrast(x))


class IMDB(nn.Module):
    """Information multi-distillation block."""

    def __init__(self, channels: int, distillation_rate: float = 0.25):
        super().__init__()
        self.distilled = int(channels * distillation_rate)
        self.remaining = channels - self.distilled
        self.c1 = conv(channels, channels, 3)
        self.c2 = conv(self.remaining, channels, 3)
        self.c3 = conv(self.remaining, channels, 3)
        self.c4 = conv(self.remaining, self.distilled, 3)
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        self.c5 = conv(self.distilled * 4, channels, 1)
        self.cca = ContrastChannelAttention(self.distilled * 4)

    def _distill(self, layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.act(layer(x))
        kept, rest = torch.split(out, [self.distilled, self.remaining], dim=1)
        return kept, rest

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept1, rest = self._distill(self.c1, x)
        kept2, rest = self._distill(self.c2, rest)
        kept3, rest = self._distill(self.c3, rest)
        kept4 = self.c4(rest)
        distilled = torch.cat((kept1, kept2, kept3, kept4), dim=1)
        return self.c5(self.cca(distilled)) + x


class IMDN(DistillationTrunk):
    """IMDN; input and output RGB in [0, 1]."""

    traits = NetworkTraits(scales=None)

    def __init__(
        self,
        scale: int,
        num_features: int = 64,
        num_blocks: int = 6,
        distillation_rate: float = 0.25,
        num_channels: int = 3,
    ):
        blocks: list[nn.Module] = [IMDB(num_features, distillation_rate) for _ in range(num_blocks)]
        super().__init__(scale, blocks, "IMDB", num_features, num_channels, LEAKY_SLOPE)
