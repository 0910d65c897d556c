"""RRDBNet: the generator of ESRGAN, Wang et al., "ESRGAN: Enhanced Super-Resolution Generative
Adversarial Networks", ECCV Workshops 2018.

Upstream: https://github.com/XPixelGroup/BasicSR (commit 8d56e3a,
basicsr/archs/rrdbnet_arch.py), Apache-2.0 (no NOTICE file upstream).
SR Lab's code is its own; parameter names follow the upstream file so its weights load.

Variant: the paper's generator, 23 residual-in-residual dense blocks (RRDB: three 5-layer dense
blocks with growth 32 on 64 features, LeakyReLU 0.2, residual scaling 0.2 inside and around each
block), no batch norm, a trunk conv with a long skip, and nearest-neighbour upsampling followed by
conv + LeakyReLU per stage. Convolutions inside the RRDBs start from a He init scaled by 0.1 (the
paper's "smaller initialization").

Scales as in BasicSR: x4 is the paper's (two x2 stages); x2 and x1 (BasicSR's extension, used
by Real-ESRGAN's x2 model) pixel-unshuffle the input by 2 and 4 first, so ``conv_first`` takes 4
and 16 times the image channels, then run the same two x2 stages; their input height and width
must be multiples of 2 and 4 (``size_multiple``; the shared inference path pads to it). SR Lab's
own, not in BasicSR: x3 (one x3 stage) and x8 (three x2 stages). Parameters: 16,723,907 (x1),
16,703,171 (x2), 16,661,059 (x3), 16,697,987 (x4), 16,734,915 (x8).

Module names follow BasicSR's RRDBNet (``conv_first``, ``body.N.rdbK.convJ``, ``conv_body``,
``conv_upK``, ``conv_hr``, ``conv_last``), so BasicSR and Real-ESRGAN files in that layout
(ESRGAN x4, RealESRGAN_x4plus, RealESRGAN_x2plus) load directly.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork
from src.archs.common import upsample_factors

# BasicSR's x2 and x1: the input is pixel-unshuffled by these factors (conv_first takes 4 and 16
# times the channels), then upsampled x4 as at x4.
UNSHUFFLE = {2: 2, 1: 4}


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


class RRDBNet(SRNetwork):
    """ESRGAN's generator; RGB in [0, 1] in and out."""

    traits = NetworkTraits(scales=(1, 2, 3, 4, 8), tile_exact=True)

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
        scales = self.traits.scales or ()
        if scale not in scales:
            raise ValueError(f"RRDBNet scales are {', '.join(map(str, scales))}; got {scale}")
        self.scale = scale
        # The channels of the images it takes (conv_first sees 4 or 16 times as many at x2, x1).
        self.image_channels = num_channels
        self.unshuffle = UNSHUFFLE.get(scale, 1)
        if self.unshuffle > 1:  # tiles starting off the unshuffle grid see other pixel groups
            self.__dict__["traits"] = replace(RRDBNet.traits, tile_exact=False)
        self.conv_first = _conv3x3(num_channels * self.unshuffle**2, num_features)
        self.body = nn.Sequential(
            *(RRDB(num_features, growth_rate, residual_scale) for _ in range(num_blocks))
        )
        self.conv_body = _conv3x3(num_features, num_features)
        self.up_factors = upsample_factors(scale * self.unshuffle)
        self.up_conv_names = [f"conv_up{index + 1}" for index in range(len(self.up_factors))]
        for name in self.up_conv_names:
            self.add_module(name, _conv3x3(num_features, num_features))
        self.conv_hr = _conv3x3(num_features, num_features)
        self.conv_last = _conv3x3(num_features, num_channels)

    @property
    def size_multiple(self) -> int:
        """The pixel-unshuffle factor: 4 at x1, 2 at x2, 1 (any size) at x3, x4 and x8."""
        return self.unshuffle

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            height, width = x.shape[-2:]
            if height % self.unshuffle or width % self.unshuffle:
                raise ValueError(
                    f"RRDBNet x{self.scale} pixel-unshuffles its input by {self.unshuffle}: "
                    f"height and width must be multiples of {self.unshuffle}, got "
                    f"{height}x{width} (pad the input, as the shared inference path does)"
                )
            x = F.pixel_unshuffle(x, self.unshuffle)
        features = self.conv_first(x)
        features = features + self.conv_body(self.body(features))
        for factor, name in zip(self.up_factors, self.up_conv_names, strict=True):
            upsampled = F.interpolate(features, scale_factor=factor, mode="nearest")
            features = _lrelu(getattr(self, name)(upsampled))
        return self.conv_last(_lrelu(self.conv_hr(features)))
