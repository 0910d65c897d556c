"""SRVGGNetCompact: the compact network of Real-ESRGAN (Wang et al., ICCVW 2021), released as
``realesr-general-x4v3`` (32 convolutions) and ``realesr-animevideov3`` (16).

Upstream: https://github.com/XPixelGroup/BasicSR (commit 8d56e3a, basicsr/archs/srvgg_arch.py),
Apache-2.0; the same network and its weights are released by
https://github.com/xinntao/Real-ESRGAN (commit a4abfb2, realesrgan/archs/srvgg_arch.py),
BSD-3-Clause, Copyright (c) 2021, Xintao Wang.
SR Lab's code is its own; parameter names follow the upstream file so its weights load.

All convolutions work at LR resolution: a 3x3 convolution and activation, ``num_conv`` more of
the same, a last 3x3 convolution to ``out_channels x scale^2`` channels and a pixel shuffle; the
nearest-neighbour upscaled input is added to the result, so the network learns a residual.
The module list is named ``body`` with the official indices (convolution, activation,
convolution, ..., last convolution), so the authors' ``params`` files load strictly.

Parameters at x4: 1,213,296 (num_conv 32) and 621,424 (num_conv 16), counting the PReLU slopes.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from src.archs.base import NetworkTraits, SRNetwork

Activation = Literal["relu", "prelu", "leakyrelu"]


def activation(kind: Activation, features: int) -> nn.Module:
    """The activation after each convolution; PReLU has one slope per feature."""
    if kind == "prelu":
        return nn.PReLU(num_parameters=features)
    if kind == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.1, inplace=True)
    if kind == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"act_type must be relu, prelu or leakyrelu, got {kind!r}")


class SRVGGNetCompact(SRNetwork):
    """A plain stack of LR-resolution convolutions, a pixel shuffle and a nearest-upscale skip."""

    traits = NetworkTraits(scales=None, tile_exact=True)

    def __init__(
        self,
        scale: int = 4,
        num_feat: int = 64,
        num_conv: int = 16,
        act_type: Activation = "prelu",
        in_channels: int = 3,
        out_channels: int = 3,
    ):
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, num_feat, 3, padding=1),
            activation(act_type, num_feat),
        ]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, padding=1), activation(act_type, num_feat)]
        layers.append(nn.Conv2d(num_feat, out_channels * scale * scale, 3, padding=1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x
        for layer in self.body:
            features = layer(features)
        skip = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return self.upsampler(features) + skip
