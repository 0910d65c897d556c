"""RLFN: Kong, Li, Chen, Luo, Liu and Jiang, "Residual Local Feature Network for Efficient
Super-Resolution", CVPR Workshops (NTIRE 2022 efficient SR challenge), 2022.

Upstream: https://github.com/bytedance/RLFN (commit bccfde9, model/rlfn.py, model/rlfn_s.py and
model/block.py), Apache-2.0, "Copyright 2022 ByteDance" (no NOTICE file upstream).
SR Lab's code is its own; module names follow the upstream files so its weights load.

RFDN made lighter: each residual local feature block (RLFB) is three 3x3 convolutions with
LeakyReLU (slope 0.05) and one residual connection around them, then a 1x1 convolution and a
slimmed enhanced spatial attention (ESA with 16 channels and only one convolution at low
resolution: no ``conv_max``/``conv3_``). Six blocks, a 3x3 convolution with a long residual
from the shallow features, and a pixel-shuffle upsampler.

``rlfn`` has 52 features (527K parameters at x2, 544K at x4), ``rlfn_s`` 48 (455K at x2, 470K at
x4); ``rlfn_prune``, the NTIRE 2022 challenge entry (upstream's ``RLFN_Prune``, the NTIRE 2024
efficient SR baseline), four blocks of 46 features with 48 inside each block's three 3x3
convolutions (``mid_features``): 317,218 at x4. The released files were trained on 0..255
pixel values (``value_range: 255`` in their configs); module names are the official ones, so
they load strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork
from src.archs.common import same_conv
from src.archs.rfdn import strided_max_pool

LEAKY_SLOPE = 0.05
ESA_CHANNELS = 16
NUM_BLOCKS = 6


class SlimESA(nn.Module):
    """RLFN's enhanced spatial attention: ``x * sigmoid(mask)``, one convolution at low
    resolution."""

    def __init__(self, channels: int, inner: int = ESA_CHANNELS):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, inner, 1)
        self.conv_f = nn.Conv2d(inner, inner, 1)
        self.conv2 = nn.Conv2d(inner, inner, 3, stride=2)
        self.conv3 = same_conv(inner, inner, 3)
        self.conv4 = nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.conv1(x)
        low = self.conv3(strided_max_pool(self.conv2, reduced))
        low = F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(low + self.conv_f(reduced)))


class RLFB(nn.Module):
    """Residual local feature block; the inner convolutions are ``mid_channels`` wide (the
    block's width unless given)."""

    def __init__(self, channels: int, mid_channels: int | None = None):
        super().__init__()
        mid = mid_channels or channels
        self.c1_r = same_conv(channels, mid, 3)
        self.c2_r = same_conv(mid, mid, 3)
        self.c3_r = same_conv(mid, channels, 3)
        self.c5 = nn.Conv2d(channels, channels, 1)
        self.esa = SlimESA(channels)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.c1_r(x))
        out = self.act(self.c2_r(out))
        out = self.act(self.c3_r(out)) + x
        return self.esa(self.c5(out))


class RLFN(SRNetwork):
    """RLFN; computes what the official network computes (0..255 for the released weights)."""

    traits = NetworkTraits(scales=None, value_range=255.0)

    def __init__(
        self,
        scale: int,
        num_features: int = 52,
        num_channels: int = 3,
        mid_features: int | None = None,
        num_blocks: int = NUM_BLOCKS,
    ):
        super().__init__()
        self.scale = scale
        self.num_blocks = num_blocks
        self.conv_1 = same_conv(num_channels, num_features, 3)
        for index in range(1, num_blocks + 1):
            self.add_module(f"block_{index}", RLFB(num_features, mid_features))
        self.conv_2 = same_conv(num_features, num_features, 3)
        self.upsampler = nn.Sequential(
            same_conv(num_features, num_channels * scale**2, 3), nn.PixelShuffle(scale)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.conv_1(x)
        out = shallow
        for index in range(1, self.num_blocks + 1):
            out = getattr(self, f"block_{index}")(out)
        return self.upsampler(self.conv_2(out) + shallow)
