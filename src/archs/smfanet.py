"""SMFANet: Zheng, Sun, Dong and Pan, "SMFANet: A Lightweight Self-Modulation Feature Aggregation
Network for Efficient Image Super-Resolution", ECCV 2024.

Upstream: https://github.com/Zheng-MJ/SMFANet (commit a05e0bb, basicsr/archs/SMFANet_arch.py),
Apache-2.0 (LICENSE.txt; no NOTICE file upstream).
SR Lab's code is its own; parameter names follow the upstream file so its weights load.

A 3x3 convolution lifts the image to ``dim`` features; a chain of feature modulation blocks
(FMB) with one long skip follows; a 3x3 convolution to ``3 * scale**2`` channels and one pixel
shuffle reconstruct. Each FMB applies, both with an identity skip and each to an L2-normalised
(over channels) copy of its input:

* SMFA, self-modulation feature aggregation: a 1x1 convolution splits the features in two. One
  half feeds the efficient approximation of self-attention (EASA): adaptive max pooling to 1/8
  of the size, a depthwise 3x3 convolution, plus the per-channel spatial variance (each scaled
  by a learnt per-channel ``alpha`` / ``belt``), a 1x1 convolution and GELU give a modulation
  map, upsampled (nearest) to multiply that half. The other half goes through local detail
  estimation (LDE: depthwise 3x3 and 1x1 convolutions expanding x2, GELU, 1x1 back). The sum is
  mixed by a 1x1 convolution.
* PCFN, a partial-convolution feed-forward network: 1x1 expansion by ``ffn_scale`` and GELU,
  a full 3x3 convolution (and GELU) on the first quarter of the hidden channels only, 1x1 back.

Sizes are the authors' configs: SMFANet ``dim=36, n_blocks=8`` has 185,628 parameters at x2,
190,503 at x3 and 197,328 at x4 (paper: 197K at x4); SMFANet+ ``dim=48, n_blocks=12`` has
480,300 at x2, 486,795 at x3 and 495,888 at x4 (paper: 496K at x4). The released weights work
on RGB in [0, 1] with no mean shift. Module names follow the official release, so its
checkpoints load key for key.

Input sizes: the official network needs no padding for odd sizes (adaptive pooling takes any
size), but fails below 8 pixels (a zero-sized pooling target) and on a single pixel (unbiased
variance of one value). Here the pooling target is at least 1 pixel and the variance drops
Bessel's correction for a single pixel; at every size the official network accepts, the output
is the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import NetworkTraits
from src.archs.safmn import ModulationTrunk

# EASA pools to 1/DOWN_SCALE of the feature size.
DOWN_SCALE = 8
LDE_GROWTH = 2.0
PARTIAL_RATE = 0.25


def pointwise(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 1x1 convolution with bias."""
    return nn.Conv2d(in_channels, out_channels, 1)


def depthwise(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A "same"-padded 3x3 convolution with one group per input channel."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, groups=in_channels)


def pooled_size(height: int, width: int) -> tuple[int, int]:
    """EASA's pooling target: 1/8 of the size, rounded down, at least one pixel."""
    return max(1, height // DOWN_SCALE), max(1, width // DOWN_SCALE)


def spatial_variance(x: torch.Tensor) -> torch.Tensor:
    """Per-channel variance over space, (N, C, H, W) -> (N, C, 1, 1); unbiased as officially."""
    correction = 1 if x.shape[-2] * x.shape[-1] > 1 else 0
    return torch.var(x, dim=(-2, -1), keepdim=True, correction=correction)


class LocalDetailEstimation(nn.Module):
    """LDE: depthwise 3x3 expansion and 1x1 mixing, GELU, 1x1 projection back."""

    def __init__(self, dim: int, growth: float = LDE_GROWTH):
        super().__init__()
        hidden = int(dim * growth)
        self.conv_0 = nn.Sequential(depthwise(dim, hidden), pointwise(hidden, hidden))
        self.act = nn.GELU()
        self.conv_1 = pointwise(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_1(self.act(self.conv_0(x)))


class SMFA(nn.Module):
    """Self-modulation feature aggregation: EASA (non-local) plus LDE (local) branches."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear_0 = pointwise(dim, dim * 2)
        self.linear_1 = pointwise(dim, dim)
        self.linear_2 = pointwise(dim, dim)
        self.lde = LocalDetailEstimation(dim)
        self.dw_conv = depthwise(dim, dim)
        self.gelu = nn.GELU()
        self.alpha = nn.Parameter(torch.ones(1, dim, 1, 1))
        # "belt" (sic) is the official name of the variance weight.
        self.belt = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def _modulation(self, x: torch.Tensor) -> torch.Tensor:
        """EASA's map at full size, from pooled structure and per-channel variance."""
        size = x.shape[-2:]
        pooled = self.dw_conv(F.adaptive_max_pool2d(x, pooled_size(*size)))
        mixed = pooled * self.alpha + spatial_variance(x) * self.belt
        return F.interpolate(self.gelu(self.linear_1(mixed)), size=size, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local, nonlocal_ = self.linear_0(x).chunk(2, dim=1)
        return self.linear_2(nonlocal_ * self._modulation(nonlocal_) + self.lde(local))


class PCFN(nn.Module):
    """Partial-convolution feed-forward network: the 3x3 conv sees a quarter of the channels."""

    def __init__(self, dim: int, growth: float = 2.0, partial_rate: float = PARTIAL_RATE):
        super().__init__()
        hidden = int(dim * growth)
        self.partial = int(hidden * partial_rate)
        self.rest = hidden - self.partial
        self.conv_0 = pointwise(dim, hidden)
        self.conv_1 = nn.Conv2d(self.partial, self.partial, 3, padding=1)
        self.act = nn.GELU()
        self.conv_2 = pointwise(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.act(self.conv_0(x))
        partial, rest = torch.split(hidden, [self.partial, self.rest], dim=1)
        partial = self.act(self.conv_1(partial))
        return self.conv_2(torch.cat((partial, rest), dim=1))


class FMB(nn.Module):
    """Feature modulation block: SMFA then PCFN, each on normalised input with a skip."""

    def __init__(self, dim: int, ffn_scale: float = 2.0):
        super().__init__()
        self.smfa = SMFA(dim)
        self.pcfn = PCFN(dim, ffn_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.smfa(F.normalize(x, dim=1)) + x
        return self.pcfn(F.normalize(x, dim=1)) + x


class SMFANet(ModulationTrunk):
    """SMFANet (``dim=36, n_blocks=8``) or SMFANet+ (``dim=48, n_blocks=12``); RGB in [0, 1]."""

    traits = NetworkTraits(scales=None)

    def __init__(
        self,
        scale: int,
        dim: int = 36,
        n_blocks: int = 8,
        ffn_scale: float = 2.0,
        num_channels: int = 3,
    ):
        blocks: list[nn.Module] = [FMB(dim, ffn_scale) for _ in range(n_blocks)]
        super().__init__(scale, dim, blocks, num_channels)
