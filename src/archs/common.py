"""Building blocks several architectures share: mean shift and the pixel-shuffle upsampler."""

from __future__ import annotations

import torch
from torch import nn

from src.archs.base import SRNetwork

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Module):
    """Subtract (``sign=-1``) or add back (``sign=+1``) a fixed RGB mean; holds no weights.
    A single-channel network (``channels=1``) shifts by the mean of the three."""

    mean: torch.Tensor

    def __init__(
        self,
        rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
        sign: int = -1,
        channels: int = 3,
    ):
        super().__init__()
        self.sign = sign
        mean = torch.tensor(rgb_mean)
        if channels == 1:
            mean = mean.mean().reshape(1)
        self.register_buffer("mean", mean.view(1, channels, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sign * self.mean.to(x.dtype)


def upsample_factors(scale: int) -> list[int]:
    """Pixel-shuffle stages for a scale: x2 stages for powers of two, one x3 stage for 3."""
    if scale == 3:
        return [3]
    if scale >= 2 and scale & (scale - 1) == 0:
        return [2] * (scale.bit_length() - 1)
    raise ValueError(f"scale must be 2, 3, 4 or 8 for a pixel-shuffle upsampler, got {scale}")


class PixelShuffleUpsampler(nn.Sequential):
    """conv(F -> F r^2) + PixelShuffle(r) per stage, as in ESPCN/EDSR."""

    def __init__(self, scale: int, num_features: int):
        layers: list[nn.Module] = []
        for factor in upsample_factors(scale):
            layers.append(nn.Conv2d(num_features, num_features * factor**2, 3, padding=1))
            layers.append(nn.PixelShuffle(factor))
        super().__init__(*layers)


def same_conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    """A "same"-padded convolution with bias."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


class DistillationTrunk(SRNetwork):
    """The trunk IMDN and its successor RFDN share: a 3x3 conv, a chain of blocks whose outputs
    are concatenated and fused (1x1 conv + LeakyReLU), a 3x3 conv, a long skip from the first
    conv, and a conv + pixel-shuffle tail.

    Blocks are registered as ``<block_prefix>1``, ``<block_prefix>2``, ... and the layers keep
    the official names (``fea_conv``, ``c``, ``LR_conv``, ``upsampler``) so the authors'
    checkpoints load key for key.
    """

    def __init__(
        self,
        scale: int,
        blocks: list[nn.Module],
        block_prefix: str,
        num_features: int,
        num_channels: int = 3,
        leaky_slope: float = 0.05,
    ):
        super().__init__()
        self.scale = scale
        self.block_names = [f"{block_prefix}{index}" for index in range(1, len(blocks) + 1)]
        self.fea_conv = same_conv(num_channels, num_features, 3)
        for name, block in zip(self.block_names, blocks, strict=True):
            self.add_module(name, block)
        self.c = nn.Sequential(
            same_conv(num_features * len(blocks), num_features, 1),
            nn.LeakyReLU(leaky_slope, inplace=True),
        )
        self.LR_conv = same_conv(num_features, num_features, 3)
        self.upsampler = nn.Sequential(
            same_conv(num_features, num_channels * scale**2, 3),
            nn.PixelShuffle(scale),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.fea_conv(x)
        outputs = []
        features = shallow
        for name in self.block_names:
            features = getattr(self, name)(features)
            outputs.append(features)
        fused = self.c(torch.cat(outputs, dim=1))
        return self.upsampler(self.LR_conv(fused) + shallow)
