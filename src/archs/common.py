"""Building blocks several architectures share: mean shift and the pixel-shuffle upsampler."""

from __future__ import annotations

import torch
from torch import nn

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Module):
    """Subtract (``sign=-1``) or add back (``sign=+1``) a fixed RGB mean; holds no weights."""

    mean: torch.Tensor

    def __init__(self, rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN, sign: int = -1):
        super().__init__()
        self.sign = sign
        self.register_buffer("mean", torch.tensor(rgb_mean).view(1, 3, 1, 1), persistent=False)

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
