"""ESPCN: Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient
Sub-Pixel Convolutional Neural Network", CVPR 2016.

Upstream: no official repository (the authors released no code); the single ``body`` sequence
follows no particular port; no licence applies: SR Lab's code is an independent
implementation from the paper.

Variant: the paper's image model, (f1, n1) = (5, 64), (f2, n2) = (3, 32), f3 = 3, tanh after the
first two layers, and a sub-pixel (pixel-shuffle) layer producing ``scale``^2 channels per output
channel. Like the paper, only luma goes through the network by default (``y_only=True``), chroma is
bicubic. Parameters with ``y_only=True``: 21,284 (x2), 22,729 (x3), 24,752 (x4); with
``y_only=False``: 37,200 at x4.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork
from src.ops.color import upscale_luma


class ESPCN(SRNetwork):
    """Three convolutions on the LR image, then one sub-pixel shuffle to the HR grid."""

    traits = NetworkTraits(scales=None, channels=(3,), tile_exact=True)

    # RGB in and out, whatever channel the convolutions see (Y by default).
    image_channels = 3

    def __init__(
        self,
        scale: int,
        num_features: Sequence[int] = (64, 32),
        kernel_sizes: Sequence[int] = (5, 3, 3),
        y_only: bool = True,
    ):
        super().__init__()
        if len(num_features) != 2 or len(kernel_sizes) != 3:
            raise ValueError("ESPCN takes two feature widths and three kernel sizes")
        self.scale = scale
        self.y_only = y_only
        channels = 1 if y_only else 3
        widths = [channels, *num_features, channels * scale**2]
        layers: list[nn.Module] = []
        for index, kernel in enumerate(kernel_sizes):
            layers.append(nn.Conv2d(widths[index], widths[index + 1], kernel, padding=kernel // 2))
            if index < len(kernel_sizes) - 1:
                layers.append(nn.Tanh())
        layers.append(nn.PixelShuffle(scale))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.y_only:
            return upscale_luma(x, self.scale, self.body)
        return self.body(x)
