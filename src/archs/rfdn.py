"""RFDN: Liu, Tang and Wu, "Residual Feature Distillation Network for Lightweight Image
Super-Resolution", ECCV Workshops (AIM 2020 challenge), 2020.

Upstream: https://github.com/njulj/RFDN (commit 7cf4e25, RFDN.py and block.py), MIT,
Copyright (c) 2021 njulj.
SR Lab's code is its own; module names follow the upstream files so its weights load.

IMDN's layout with residual feature distillation blocks (RFDB): at each of three steps a 1x1
convolution distils half the channels while a 3x3 convolution with a shallow residual
connection refines all of them; a last 3x3 convolution, a 1x1 fusion of the four distilled
slices and enhanced spatial attention (ESA: a strided, max-pooled, low-resolution attention map
upsampled bilinearly) finish the block. Block outputs are fused, refined, added to the shallow
features and upsampled by one pixel shuffle.

Defaults are those of the released AIM 2020 model (50 features, 4 blocks, LeakyReLU slope 0.05):
433K parameters at x4. The paper's benchmark models use 48 features with 6 blocks (RFDN) or 52
(RFDN-L). The released weights were trained on 0..255 pixel values: this module computes exactly
what the official network computes, so feed it 0..255 for those weights (SR Lab's wrapper scales
by its configured ``value_range``). Module names follow the official release.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import NetworkTraits
from src.archs.common import DistillationTrunk, same_conv

LEAKY_SLOPE = 0.05
ESA_POOL_KERNEL = 7
ESA_POOL_STRIDE = 3
ESA_STRIDED_KERNEL = 3


conv = same_conv


def pad_to_at_least(x: torch.Tensor, size: int, value: float | None = None) -> torch.Tensor:
    """Pad the right and bottom of a feature map up to ``size`` pixels.

    With ``value`` the new pixels hold it; without, they replicate the edge.
    """
    # sym_max, not max: under ONNX export with dynamic sizes the padding stays a function of the
    # input size instead of being fixed at the size of the sample the graph was traced with.
    pad_h = torch.sym_max(0, size - x.shape[-2])
    pad_w = torch.sym_max(0, size - x.shape[-1])
    if type(pad_h) is int and type(pad_w) is int and pad_h == pad_w == 0:
        return x  # eager and nothing to pad (traced sizes are symbolic and skip this test)
    if value is None:
        return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return F.pad(x, (0, pad_w, 0, pad_h), value=value)


def strided_max_pool(strided_conv: nn.Module, reduced: torch.Tensor) -> torch.Tensor:
    """ESA's way down: the unpadded stride-2 3x3 convolution, then 7x7 max pooling with stride 3.

    The official networks fail on inputs under 15 px (no room for one strided 3x3 convolution and
    one 7x7 pooling window). Padding lets any size through and changes nothing above it: edge
    replication for the unpadded convolution, -inf so the pooling takes the max of what exists.
    """
    strided = strided_conv(pad_to_at_least(reduced, ESA_STRIDED_KERNEL))
    strided = pad_to_at_least(strided, ESA_POOL_KERNEL, float("-inf"))
    return F.max_pool2d(strided, kernel_size=ESA_POOL_KERNEL, stride=ESA_POOL_STRIDE)


class ESA(nn.Module):
    """Enhanced spatial attention: ``x * sigmoid(mask)``, the mask computed at low resolution."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        inner = channels // reduction
        self.conv1 = nn.Conv2d(channels, inner, 1)
        self.conv_f = nn.Conv2d(inner, inner, 1)
        self.conv_max = conv(inner, inner, 3)
        self.conv2 = nn.Conv2d(inner, inner, ESA_STRIDED_KERNEL, stride=2)
        self.conv3 = conv(inner, inner, 3)
        self.conv3_ = conv(inner, inner, 3)
        self.conv4 = nn.Conv2d(inner, channels, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.conv1(x)
        low = self.relu(self.conv_max(strided_max_pool(self.conv2, reduced)))
        low = self.conv3_(self.relu(self.conv3(low)))
        low = F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)
        mask = self.conv4(low + self.conv_f(reduced))
        return x * torch.sigmoid(mask)


class RFDB(nn.Module):
    """Residual feature distillation block."""

    def __init__(self, channels: int):
        super().__init__()
        distilled = channels // 2
        self.c1_d = conv(channels, distilled, 1)
        self.c1_r = conv(channels, channels, 3)
        self.c2_d = conv(channels, distilled, 1)
        self.c2_r = conv(channels, channels, 3)
        self.c3_d = conv(channels, distilled, 1)
        self.c3_r = conv(channels, channels, 3)
        self.c4 = conv(channels, distilled, 3)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        self.c5 = conv(distilled * 4, channels, 1)
        self.esa = ESA(channels)

    def _step(
        self, distil: nn.Module, refine: nn.Module, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One distillation step: (distilled slice, refined features with shallow residual)."""
        return self.act(distil(x)), self.act(refine(x) + x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept1, refined = self._step(self.c1_d, self.c1_r, x)
        kept2, refined = self._step(self.c2_d, self.c2_r, refined)
        kept3, refined = self._step(self.c3_d, self.c3_r, refined)
        kept4 = self.act(self.c4(refined))
        return self.esa(self.c5(torch.cat((kept1, kept2, kept3, kept4), dim=1)))


class RFDN(DistillationTrunk):
    """RFDN; computes what the official network computes (0..255 for the released weights)."""

    traits = NetworkTraits(scales=None, value_range=255.0)

    def __init__(
        self,
        scale: int,
        num_features: int = 50,
        num_blocks: int = 4,
        num_channels: int = 3,
    ):
        blocks: list[nn.Module] = [RFDB(num_features) for _ in range(num_blocks)]
        super().__init__(scale, blocks, "B", num_features, num_channels, LEAKY_SLOPE)
