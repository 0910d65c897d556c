"""RDN: Zhang et al., "Residual Dense Network for Image Super-Resolution", CVPR 2018.

Upstream: https://github.com/sanghyun-son/EDSR-PyTorch (src/model/rdn.py; no commit pinned, the
repository's LICENSE was read at commit 126a55c), MIT, Copyright (c) 2018 Sanghyun Son.
SR Lab's code is its own; module names follow the upstream file so its weights load.

Variant: the paper's model, D = 16 residual dense blocks of C = 8 densely connected 3x3 conv+ReLU
layers with growth rate G = 64 on G0 = 64 features; local feature fusion (1x1 conv) and local
residual per block; global feature fusion (1x1 then 3x3 conv over all block outputs) and global
residual from the first shallow feature map; pixel-shuffle upsampler (x2 stages for powers of two,
one x3 stage for 3). The paper describes no mean shift and the EDSR-PyTorch implementation has
none, so this has none either. Parameters: 22,123,395 (x2), 22,308,035 (x3), 22,271,107 (x4),
22,418,819 (x8).

Module names follow the EDSR-PyTorch implementation (``SFENet1``, ``RDBs``, ``LFF``, ``GFF``,
``UPNet``), so its checkpoints map key for key (they expect pixel values in 0..255).
"""

from __future__ import annotations

import torch
from torch import nn

from src.archs.base import PIXEL_SHUFFLE_SCALES, NetworkTraits, SRNetwork
from src.archs.common import upsample_factors


def _conv(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


class DenseLayer(nn.Module):
    """conv+ReLU whose ``growth_rate`` new channels are appended to its input."""

    def __init__(self, in_channels: int, growth_rate: int):
        super().__init__()
        self.conv = nn.Sequential(_conv(in_channels, growth_rate), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(x)], dim=1)


class ResidualDenseBlock(nn.Module):
    """``num_layers`` dense layers, 1x1 local feature fusion back to ``num_features``, identity."""

    def __init__(self, num_features: int, growth_rate: int, num_layers: int):
        super().__init__()
        self.convs = nn.Sequential(
            *(DenseLayer(num_features + i * growth_rate, growth_rate) for i in range(num_layers))
        )
        self.LFF = _conv(num_features + num_layers * growth_rate, num_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.LFF(self.convs(x))


def _upsampler(
    scale: int, num_features: int, growth_rate: int, out_channels: int = 3
) -> nn.Sequential:
    """conv + pixel shuffle per stage (the authors' code works on G channels after the first
    stage), then the output conv."""
    layers: list[nn.Module] = []
    channels = num_features
    for factor in upsample_factors(scale):
        layers += [_conv(channels, growth_rate * factor**2), nn.PixelShuffle(factor)]
        channels = growth_rate
    layers.append(_conv(channels, out_channels))
    return nn.Sequential(*layers)


class RDN(SRNetwork):
    """Residual dense network; RGB in [0, 1] in and out."""

    traits = NetworkTraits(scales=PIXEL_SHUFFLE_SCALES, tile_exact=True)

    def __init__(
        self,
        scale: int,
        num_blocks: int = 16,
        num_layers: int = 8,
        growth_rate: int = 64,
        num_features: int = 64,
        num_channels: int = 3,
    ):
        super().__init__()
        self.scale = scale
        self.SFENet1 = _conv(num_channels, num_features)
        self.SFENet2 = _conv(num_features, num_features)
        self.RDBs = nn.ModuleList(
            ResidualDenseBlock(num_features, growth_rate, num_layers) for _ in range(num_blocks)
        )
        self.GFF = nn.Sequential(
            _conv(num_blocks * num_features, num_features, 1), _conv(num_features, num_features)
        )
        self.UPNet = _upsampler(scale, num_features, growth_rate, num_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.SFENet1(x)
        features = self.SFENet2(shallow)
        block_outputs = []
        for block in self.RDBs:
            features = block(features)
            block_outputs.append(features)
        features = self.GFF(torch.cat(block_outputs, dim=1)) + shallow
        return self.UPNet(features)
