"""SAFMN: Sun, Pan, Dong, Tang, "Spatially-Adaptive Feature Modulation for Efficient Image
Super-Resolution", ICCV 2023.

Upstream: https://github.com/sunny2109/SAFMN (commit 68c2182, basicsr/archs/safmn_arch.py),
Apache-2.0 (BasicSR's licence, LICENSE/LICENSE; no NOTICE file upstream).
SR Lab's code is its own; parameter names follow the upstream file so its weights load.

A 3x3 convolution lifts the image to ``dim`` features; ``n_blocks`` attention blocks with a long
skip follow; a 3x3 convolution to ``3 * scale**2`` channels and a pixel shuffle reconstruct.
Each block is, with identity skips and channel LayerNorm before each half:

* SAFM, spatially-adaptive feature modulation: the features split into four groups; the first
  goes through a depthwise 3x3 convolution at full size, group i > 0 through adaptive max pooling
  to 1/2**i of the size, a depthwise 3x3 convolution and nearest upsampling back; a 1x1
  convolution aggregates them and, after GELU, modulates the block input;
* CCM, the convolutional channel mixer: a 3x3 convolution expanding by ``ffn_scale``, GELU, a
  1x1 convolution back.

Default sizes (``dim=36, n_blocks=8, ffn_scale=2``) are the paper's SAFMN; module names are the
official ones. 227,820 parameters at x2, 232,695 at x3, 239,520 at x4 (the paper: 228K, 233K,
240K).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork

LEVELS = 4


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of (N, C, H, W) features, as the official ``LayerNorm`` in
    its ``channels_first`` form (eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        variance = (x - mean).pow(2).mean(1, keepdim=True)
        normalised = (x - mean) / torch.sqrt(variance + self.eps)
        return self.weight[:, None, None] * normalised + self.bias[:, None, None]


class SAFM(nn.Module):
    def __init__(self, dim: int, levels: int = LEVELS):
        super().__init__()
        group = dim // levels
        self.levels = levels
        self.mfr = nn.ModuleList(
            nn.Conv2d(group, group, 3, padding=1, groups=group) for _ in range(levels)
        )
        self.aggr = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        parts = []
        chunks = x.chunk(self.levels, dim=1)
        for level, (chunk, conv) in enumerate(zip(chunks, self.mfr, strict=True)):
            if level == 0:
                parts.append(conv(chunk))
                continue
            # At least one pixel: the official network fails on inputs under 2**(levels-1).
            size = (max(1, height // 2**level), max(1, width // 2**level))
            pooled = conv(F.adaptive_max_pool2d(chunk, size))
            parts.append(F.interpolate(pooled, size=(height, width), mode="nearest"))
        return self.act(self.aggr(torch.cat(parts, dim=1))) * x


class CCM(nn.Module):
    def __init__(self, dim: int, growth: float):
        super().__init__()
        hidden = int(dim * growth)
        self.ccm = nn.Sequential(
            nn.Conv2d(dim, hidden, 3, padding=1), nn.GELU(), nn.Conv2d(hidden, dim, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ccm(x)


class AttBlock(nn.Module):
    def __init__(self, dim: int, ffn_scale: float):
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.norm2 = ChannelLayerNorm(dim)
        self.safm = SAFM(dim)
        self.ccm = CCM(dim, ffn_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.safm(self.norm1(x)) + x
        return self.ccm(self.norm2(x)) + x


class ModulationTrunk(SRNetwork):
    """SAFMN's layout, which SMFANet keeps: a 3x3 convolution to ``dim`` features, ``blocks``
    with one long skip, a 3x3 convolution to ``3 * scale**2`` channels and a pixel shuffle."""

    def __init__(self, scale: int, dim: int, blocks: list[nn.Module], num_channels: int = 3):
        super().__init__()
        self.scale = scale
        self.to_feat = nn.Conv2d(num_channels, dim, 3, padding=1)
        self.feats = nn.Sequential(*blocks)
        self.to_img = nn.Sequential(
            nn.Conv2d(dim, num_channels * scale**2, 3, padding=1), nn.PixelShuffle(scale)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.to_feat(x)
        return self.to_img(self.feats(features) + features)


class SAFMN(ModulationTrunk):
    """SAFMN on RGB in [0, 1] (the official network has no mean shift or scaling)."""

    traits = NetworkTraits(scales=None)

    def __init__(
        self,
        scale: int,
        dim: int = 36,
        n_blocks: int = 8,
        ffn_scale: float = 2.0,
        num_channels: int = 3,
    ):
        blocks: list[nn.Module] = [AttBlock(dim, ffn_scale) for _ in range(n_blocks)]
        super().__init__(scale, dim, blocks, num_channels)
