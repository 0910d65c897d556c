"""DRRN: Tai, Yang and Liu, "Image Super-Resolution via Deep Recursive Residual Network", CVPR 2017.

Upstream: no official repository in PyTorch; the authors' Caffe/MATLAB release is
https://github.com/tyshiwo/DRRN_CVPR17 (no LICENSE file seen; not used here). The module names
(``blocks``, ``entry``, ``unit``, ``reconstruction``) follow no particular port; no licence
applies: SR Lab's code is an independent implementation from the paper.

Variant: B1U25, one recursive block of 25 residual units with 128 features. Every unit is
ReLU-conv-ReLU-conv (pre-activation) added to the block's first feature map, and the two
convolutions are shared by all 25 units of a block (recursive learning). A global residual adds
the bicubic-upsampled input. No batch norm: the paper's parameter count covers the convolutions
only, and the common PyTorch ports omit it. Like the paper, only luma goes through the network by
default (``y_only=True``), chroma is bicubic. Parameters with ``y_only=True``: 297,601 at every
scale (the paper's 297K counts the 297,216 weights); with ``y_only=False``: 302,211.
"""

from __future__ import annotations

import torch
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork
from src.ops.color import upscale_luma
from src.ops.imresize import imresize


class RecursiveBlock(nn.Module):
    """An entry convolution, then ``num_units`` residual units that share one pair of weights."""

    def __init__(self, in_channels: int, num_features: int, num_units: int, pre_activate: bool):
        super().__init__()
        self.num_units = num_units
        # Pre-activation everywhere except on the image itself (the first block's input).
        self.entry = nn.Sequential(
            nn.ReLU() if pre_activate else nn.Identity(),
            nn.Conv2d(in_channels, num_features, 3, padding=1),
        )
        self.unit = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(num_features, num_features, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(num_features, num_features, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = self.entry(x)
        # Multi-path local residual learning: each unit's identity branch is the block's first
        # feature map, not the previous unit's output.
        features = start
        for _ in range(self.num_units):
            features = start + self.unit(features)
        return features


class DRRN(SRNetwork):
    """Recursive blocks on the bicubic image, a reconstruction conv, and a global residual."""

    traits = NetworkTraits(scales=None, channels=(3,), tile_exact=True)

    # RGB in and out, whatever channel the convolutions see (Y by default).
    image_channels = 3

    def __init__(
        self,
        scale: int,
        num_blocks: int = 1,
        num_units: int = 25,
        num_features: int = 128,
        y_only: bool = True,
    ):
        super().__init__()
        self.scale = scale
        self.y_only = y_only
        channels = 1 if y_only else 3
        self.blocks = nn.Sequential(
            *(
                RecursiveBlock(
                    channels if index == 0 else num_features,
                    num_features,
                    num_units,
                    pre_activate=index > 0,
                )
                for index in range(num_blocks)
            )
        )
        self.reconstruction = nn.Sequential(
            nn.ReLU(), nn.Conv2d(num_features, channels, 3, padding=1)
        )

    def _upscale(self, x: torch.Tensor) -> torch.Tensor:
        upsampled = imresize(x, scale=float(self.scale))
        return upsampled + self.reconstruction(self.blocks(upsampled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.y_only:
            return upscale_luma(x, self.scale, self._upscale)
        return self._upscale(x)
