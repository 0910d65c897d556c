"""RRDBNet: the generator of ESRGAN, Wang et al., "ESRGAN: Enhanced Super-Resolution Generative
Adversarial Networks", ECCV Workshops 2018.

Upstream: https://github.com/XPixelGroup/BasicSR (commit 8d56e3a,
basicsr/archs/rrdbnet_arch.py), Apache-2.0 (no NOTICE file upstream).
SR Lab's code is its own; parameter names follow the upstream file so its weights load.

Variant: the paper's generator, 23 residual-in-residual dense blocks (RRDB: three 5-layer dense
blocks with growth 32 on 64 features, LeakyReLU 0.2, residual scaling 0.2 inside and around each
block), no batch norm, a trunk conv with a long skip, and nearest-neighbour upsampling followed by
conv + LeakyReLU per stage (x2 stages for powers of two; one x3 stage for x3, which the paper does
not have). Convolutions inside the RRDBs start from a He init scaled by 0.1 (the paper's "smaller
initialization"). Parameters: 16,661,059 (x2), 16,661,059 (x3), 16,697,987 (x4), 16,734,915 (x8).

Module names follow BasicSR's RRDBNet (``conv_first``, ``body.N.rdbK.convJ``, ``conv_body``,
``conv_upK``, ``conv_hr``, ``conv_last``), so ESRGAN x4 checkpoints in that layout load directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.common import upsample_factors


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, negative_slope=0.2)


class ResidualDenseBlock(nn.Module):
    """Five densely connected convs; the last one's output, scaled, is added to the input."""

    def __init__(self, num_features: int, growth_rate: int, residual_scale: float):
        super().__init__()
        self.residual_scale = residual_scale
        self.conv1 = _conv3x3(num_features, growth_rate)
        self.conv2 = _conv3x3(num_features + growth_rate, growth_rate)
        self.conv3 = _conv3x3(num_features + 2 * growth_rate, growth_rate)
        self.conv4 = _conv3x3(num_features + 3 * growth_rate, growth_rate)
        self.conv5 = _conv3x3(num_features + 4 * growth_rate, num_features)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            nn.init.kaiming_normal_(conv.weight)
            with torch.no_grad():
                conv.weight.mul_(0.1)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            features.append(_lrelu(conv(torch.cat(features, dim=1))))
        return x + self.residual_scale * self.conv5(torch.cat(features, dim=1))


class RRDB(nn.Module):
    """Three residual dense blocks in series, with a scaled skip around them."""

    def __init__(self, num_features: int, growth_rate: int, residual_scale: float):
        super().__init__()
        self.residual_scale = residual_scale
        self.rdb1 = ResidualDenseBlock(num_features, growth_rate, residual_scale)
        self.rdb2 = ResidualDenseBlock(num_features, growth_rate, residual_scale)
        self.rdb3 = ResidualDenseBlock(num_features, growth_rate, residual_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual_scale * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """ESRGAN's generator; RGB in [0, 1] in and out."""

    def __init__(
        self,
        scale: int,
        num_features: int = 64,
        num_blocks: int = 23,
        growth_rate: int = 32,
        residual_scale: float = 0.2,
        num_channels: int = 3,
    ):
        super().__init__()
        self.scale = scale
        self.conv_first = _conv3x3(num_channels, num_features)
        self.body = nn.Sequential(
            *(RRDB(num_features, growth_rate, residual_scale) for _ in range(num_blocks))
        )
        self.conv_body = _conv3x3(num_features, num_features)
        self.up_factors = upsample_factors(scale)
        self.up_conv_names = [f"conv_up{index + 1}" for index in range(len(self.up_factors))]
        for name in self.up_conv_names:
            self.add_module(name, _conv3x3(num_features, num_features))
        self.conv_hr = _conv3x3(num_features, num_features)
        self.conv_last = _conv3x3(num_features, num_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv_first(x)
        features = features + self.conv_body(self.body(features))
        for factor, name in zip(self.up_factors, self.up_conv_names, strict=True):
            upsampled = F.interpolate(features, scale_factor=factor, mode="nearest")
            features = _lrelu(getattr(self, name)(upsampled))
        return self.conv_last(_lrelu(self.conv_hr(features)))
