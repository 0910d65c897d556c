"""The U-Net discriminator with spectral normalisation of Real-ESRGAN (Wang et al., ICCVW 2021),
with its parameter names (``conv0`` ... ``conv9``; spectral norm's ``weight_orig``, ``weight_u``,
``weight_v``), so its released ``net_d`` files load.

Upstream: https://github.com/XPixelGroup/BasicSR (commit 8d56e3a,
basicsr/archs/discriminator_arch.py, ``UNetDiscriminatorSN``), Apache-2.0; the same class and
its weights are released by https://github.com/xinntao/Real-ESRGAN (commit a4abfb2,
realesrgan/archs/discriminator_arch.py), BSD-3-Clause, Copyright (c) 2021, Xintao Wang.
SR Lab's code is its own; parameter names follow the upstream file so its weights load.

An encoder of three 4x4 stride-2 convolutions (64 -> 128 -> 256 -> 512 channels), a decoder of
three bilinear x2 upsamplings each followed by a 3x3 convolution and a skip from the encoder,
two more 3x3 convolutions and a 1-channel output: a realness logit per pixel, which judges local
texture rather than whole images. Any input side divisible by 8 works. 4.4M parameters.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from src.utils.construction import RecordsArguments


class UNetDiscriminatorSN(RecordsArguments, nn.Module):
    """A realness logit map the size of the input."""

    def __init__(self, in_channels: int = 3, num_feat: int = 64, skip_connection: bool = True):
        super().__init__()
        self.skip_connection = skip_connection
        f = num_feat
        self.conv0 = nn.Conv2d(in_channels, f, 3, 1, 1)
        self.conv1 = spectral_norm(nn.Conv2d(f, f * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(f * 2, f * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(f * 4, f * 8, 4, 2, 1, bias=False))
        self.conv4 = spectral_norm(nn.Conv2d(f * 8, f * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(f * 4, f * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(f * 2, f, 3, 1, 1, bias=False))
        self.conv7 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    @staticmethod
    def _act(x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, negative_slope=0.2, inplace=True)

    def _up(self, x: torch.Tensor, conv: nn.Module, skip: torch.Tensor) -> torch.Tensor:
        x = self._act(conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)))
        return x + skip if self.skip_connection else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"the U-Net discriminator needs sides divisible by 8, got {x.shape}")
        x0 = self._act(self.conv0(x))
        x1 = self._act(self.conv1(x0))
        x2 = self._act(self.conv2(x1))
        x3 = self._act(self.conv3(x2))
        x4 = self._up(x3, self.conv4, x2)
        x5 = self._up(x4, self.conv5, x1)
        x6 = self._up(x5, self.conv6, x0)
        out = self._act(self.conv7(x6))
        out = self._act(self.conv8(out))
        return self.conv9(out)
