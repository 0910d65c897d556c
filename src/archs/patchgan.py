"""The PatchGAN discriminator of pix2pix (Isola et al., CVPR 2017), ``NLayerDiscriminator``: a
stack of 4x4 convolutions whose output logits each judge one overlapping patch of the input
(70x70 px with the default three layers), with pix2pix's layout (one ``model`` sequence).
2.8M parameters with 64 features and 3 layers.

Upstream: https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix (models/networks.py,
``NLayerDiscriminator``; no commit pinned), BSD-2-Clause, Copyright (c) 2017, Jun-Yan Zhu and
Taesung Park. SR Lab's code is its own; its ``model`` indices follow the upstream class.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from src.utils.construction import RecordsArguments


def norm_layer(kind: Literal["batch", "instance", "none"], channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be batch, instance or none, got {kind!r}")


class PatchGANDiscriminator(RecordsArguments, nn.Module):
    """A map of realness logits, one per receptive-field patch."""

    def __init__(
        self,
        in_channels: int = 3,
        num_feat: int = 64,
        num_layers: int = 3,
        norm: Literal["batch", "instance", "none"] = "batch",
    ):
        super().__init__()
        bias = norm == "instance"  # a batch norm after the convolution makes its bias redundant
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, num_feat, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        width = num_feat
        for index in range(1, num_layers + 1):
            previous, width = width, num_feat * min(2**index, 8)
            stride = 2 if index < num_layers else 1
            layers += [
                nn.Conv2d(previous, width, 4, stride, 1, bias=bias),
                norm_layer(norm, width),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
