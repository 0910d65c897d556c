"""PAN: Zhao et al., "Efficient Image Super-Resolution Using Pixel Attention", ECCV Workshops
(AIM 2020 challenge), 2020.

Upstream: https://github.com/zhaohengyuan1/PAN (commit 4d045d1, codes/models/archs/PAN_arch.py):
no licence file in the repository (all rights reserved by default); SR Lab's code is an
independent implementation matching its parameter names.

Pixel attention (PA) multiplies features by a sigmoid map with one weight per pixel and channel,
computed by a 1x1 convolution. The trunk stacks self-calibrated blocks with pixel attention
(SCPA): two 1x1-reduced branches, one a plain 3x3 convolution, the other a 3x3 convolution gated
by pixel attention (PAConv), joined by a 1x1 convolution and an identity skip. Reconstruction
upsamples with nearest-neighbour interpolation followed by convolution, pixel attention and
another convolution (U-PA), once for x2/x3 and twice (x2 each) for x4; a bilinear upscaling of
the input is added as a global skip.

Defaults are the paper's: 40 trunk features, 24 upsampling features, 16 SCPA blocks, LeakyReLU
slope 0.2: 261K parameters at x2 and x3, 272K at x4. Input and output RGB in [0, 1]; no mean
shift. Module names follow the official release so its checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork

LEAKY_SLOPE = 0.2


class PixelAttention(nn.Module):
    """PA: ``x * sigmoid(conv1x1(x))``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


class PAConv(nn.Module):
    """A 3x3 convolution gated by pixel attention, then another 3x3 convolution."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        padding = kernel_size // 2
        self.k2 = nn.Conv2d(channels, channels, 1)
        self.k3 = nn.Conv2d(channels, channels, kernel_size, padding=padding, bias=False)
        self.k4 = nn.Conv2d(channels, channels, kernel_size, padding=padding, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k4(self.k3(x) * torch.sigmoid(self.k2(x)))


class SCPA(nn.Module):
    """Self-calibrated convolution block with pixel attention (bias-free except PA's 1x1)."""

    def __init__(self, channels: int, reduction: int = 2):
        super().__init__()
        branch = channels // reduction
        self.conv1_a = nn.Conv2d(channels, branch, 1, bias=False)
        self.conv1_b = nn.Conv2d(channels, branch, 1, bias=False)
        self.k1 = nn.Sequential(nn.Conv2d(branch, branch, 3, padding=1, bias=False))
        self.PAConv = PAConv(branch)
        self.conv3 = nn.Conv2d(branch * reduction, channels, 1, bias=False)
        self.lrelu = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = self.lrelu(self.k1(self.lrelu(self.conv1_a(x))))
        attended = self.lrelu(self.PAConv(self.lrelu(self.conv1_b(x))))
        return x + self.conv3(torch.cat((plain, attended), dim=1))


def upsampling_steps(scale: int) -> list[int]:
    """Nearest-neighbour factors of the U-PA stages: one stage for x2/x3, two x2 stages for x4."""
    if scale in (2, 3):
        return [scale]
    if scale == 4:
        return [2, 2]
    raise ValueError(f"PAN supports scales 2, 3 and 4, got {scale}")


class PAN(SRNetwork):
    """PAN; input and output RGB in [0, 1]."""

    traits = NetworkTraits(scales=(2, 3, 4), tile_exact=True)

    def __init__(
        self,
        scale: int,
        num_features: int = 40,
        upsampling_features: int = 24,
        num_blocks: int = 16,
        num_channels: int = 3,
    ):
        super().__init__()
        self.scale = scale
        self.steps = upsampling_steps(scale)
        self.conv_first = nn.Conv2d(num_channels, num_features, 3, padding=1)
        self.SCPA_trunk = nn.Sequential(*(SCPA(num_features) for _ in range(num_blocks)))
        self.trunk_conv = nn.Conv2d(num_features, num_features, 3, padding=1)
        in_features = num_features
        # Stage i is upconv{i} -> att{i} -> HRconv{i}, the official names.
        for index in range(1, len(self.steps) + 1):
            self.add_module(
                f"upconv{index}", nn.Conv2d(in_features, upsampling_features, 3, padding=1)
            )
            self.add_module(f"att{index}", PixelAttention(upsampling_features))
            self.add_module(
                f"HRconv{index}",
                nn.Conv2d(upsampling_features, upsampling_features, 3, padding=1),
            )
            in_features = upsampling_features
        self.conv_last = nn.Conv2d(upsampling_features, num_channels, 3, padding=1)
        self.lrelu = nn.LeakyReLU(LEAKY_SLOPE)

    def _upsample(self, features: torch.Tensor) -> torch.Tensor:
        for index, factor in enumerate(self.steps, start=1):
            features = F.interpolate(features, scale_factor=factor, mode="nearest")
            features = getattr(self, f"upconv{index}")(features)
            features = self.lrelu(getattr(self, f"att{index}")(features))
            features = self.lrelu(getattr(self, f"HRconv{index}")(features))
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.conv_first(x)
        features = shallow + self.trunk_conv(self.SCPA_trunk(shallow))
        residual = self.conv_last(self._upsample(features))
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return residual + base
