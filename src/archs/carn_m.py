"""CARN-M: Ahn, Kang and Sohn, "Fast, Accurate, and Lightweight Super-Resolution with Cascading
Residual Network", ECCV 2018 (the paper's mobile variant).

Upstream: https://github.com/nmhkahn/CARN-pytorch (commit 40d3514, carn/model/carn_m.py and
carn/model/ops.py), MIT, Copyright (c) 2018 Namhyuk Ahn.
SR Lab's code is its own; module names follow the upstream files so its weights load.

Cascading: after every step, the step's output is concatenated to the input and to all earlier
outputs, and a 1x1 convolution fuses the concatenation into the next step's input. CARN-M
cascades at two levels: globally over cascading blocks, and inside each block over three
applications of one shared efficient residual block (grouped 3x3 - ReLU - grouped 3x3 - ReLU -
1x1, identity skip, ReLU). One network serves x2, x3 and x4 with a pixel-shuffle head per scale
(grouped convolutions, ReLU); ``forward`` uses the head for ``scale``.

Defaults are the paper's: 64 features, 3 blocks, 4 groups. The released multi-scale weights hold
415K parameters including all three heads and the 24 mean-shift values (the paper quotes 412K).
Input and output RGB in [0, 1]. The DIV2K mean is removed and added back by fixed 1x1
convolutions (``sub_mean.shifter``/``add_mean.shifter``), which the official checkpoint stores,
so they are kept as frozen parameters here to load it unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Module):
    """Add ``sign * mean`` per channel as a frozen identity 1x1 convolution (official layout)."""

    def __init__(self, sign: int, rgb_mean: Sequence[float] = DIV2K_RGB_MEAN):
        super().__init__()
        channels = len(rgb_mean)
        self.shifter = nn.Conv2d(channels, channels, 1)
        self.shifter.weight = nn.Parameter(
            torch.eye(channels).view(channels, channels, 1, 1), requires_grad=False
        )
        self.shifter.bias = nn.Parameter(sign * torch.tensor(rgb_mean), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shifter(x)


class ConvReLU(nn.Module):
    """Convolution followed by ReLU; used as CARN's 1x1 fusion after each concatenation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class EfficientResidualBlock(nn.Module):
    """Grouped 3x3 - ReLU - grouped 3x3 - ReLU - 1x1, plus identity, then ReLU."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=groups),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, groups=groups),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + x)


def cascade(x: torch.Tensor, steps: Sequence[tuple[nn.Module, nn.Module]]) -> torch.Tensor:
    """Run (body, fuse) steps, each fuse seeing the input and every body output so far."""
    gathered = x
    out = x
    for body, fuse in steps:
        gathered = torch.cat((gathered, body(out)), dim=1)
        out = fuse(gathered)
    return out


def fusions(module: nn.Module, channels: int, count: int) -> None:
    """Register the 1x1 fusions ``c1``..``c{count}``; fusion i sees (i + 1) * channels inputs."""
    for index in range(1, count + 1):
        module.add_module(f"c{index}", ConvReLU((index + 1) * channels, channels))


class CascadingBlock(nn.Module):
    """A local cascade over ``num_units`` applications of one shared residual block."""

    def __init__(self, channels: int, groups: int, num_units: int = 3):
        super().__init__()
        self.num_units = num_units
        self.b1 = EfficientResidualBlock(channels, groups)
        fusions(self, channels, num_units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = [(self.b1, getattr(self, f"c{i}")) for i in range(1, self.num_units + 1)]
        return cascade(x, steps)


class UpsampleHead(nn.Module):
    """(grouped conv to ``r^2`` times the channels, ReLU, PixelShuffle(r)) per stage."""

    def __init__(self, channels: int, scale: int, groups: int):
        super().__init__()
        if scale < 2 or (scale != 3 and scale & (scale - 1)):
            raise ValueError(f"CARN-M heads support scales 2, 3, 4 and 8, got {scale}")
        factors = [3] if scale == 3 else [2] * (scale.bit_length() - 1)
        layers: list[nn.Module] = []
        for factor in factors:
            layers += [
                nn.Conv2d(channels, channels * factor**2, 3, padding=1, groups=groups),
                nn.ReLU(inplace=True),
                nn.PixelShuffle(factor),
            ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MultiScaleUpsampler(nn.Module):
    """One head per scale, registered as ``up{scale}``."""

    def __init__(self, channels: int, scales: Sequence[int], groups: int):
        super().__init__()
        for scale in scales:
            self.add_module(f"up{scale}", UpsampleHead(channels, scale, groups))

    def forward(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        return getattr(self, f"up{scale}")(x)


class CARNM(SRNetwork):
    """CARN-M; input and output RGB in [0, 1]. Holds every head in ``scales``, uses ``scale``."""

    traits = NetworkTraits(scales=(2, 3, 4), channels=(3,), tile_exact=True)

    def __init__(
        self,
        scale: int,
        num_features: int = 64,
        num_blocks: int = 3,
        groups: int = 4,
        scales: Sequence[int] = (2, 3, 4),
        num_channels: int = 3,
    ):
        super().__init__()
        if scale not in scales:
            raise ValueError(f"scale {scale} has no upsampling head; heads: {tuple(scales)}")
        self.scale = scale
        self.num_blocks = num_blocks
        self.sub_mean = MeanShift(sign=-1)
        self.add_mean = MeanShift(sign=+1)
        self.entry = nn.Conv2d(num_channels, num_features, 3, padding=1)
        for index in range(1, num_blocks + 1):
            self.add_module(f"b{index}", CascadingBlock(num_features, groups))
        fusions(self, num_features, num_blocks)
        self.upsample = MultiScaleUpsampler(num_features, scales, groups)
        self.exit = nn.Conv2d(num_features, num_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = [
            (getattr(self, f"b{i}"), getattr(self, f"c{i}")) for i in range(1, self.num_blocks + 1)
        ]
        features = cascade(self.entry(self.sub_mean(x)), steps)
        return self.add_mean(self.exit(self.upsample(features, self.scale)))
