"""VDSR: Kim, Lee and Lee, "Accurate Image Super-Resolution Using Very Deep Convolutional
Networks", CVPR 2016.

Upstream: no official repository in PyTorch (the authors released MATLAB code). The common port,
https://github.com/twtygqyy/pytorch-vdsr (commit 514b021, MIT), names its layers ``input``,
``residual_layer`` and ``output``; the single ``body`` sequence here follows no port;
no licence applies: SR Lab's code is an independent implementation from the paper.

Variant: 20 3x3 convolution layers of 64 features with ReLU between them, predicting the residual
that is added to the bicubic-upsampled input. Like the paper, only luma goes through the network
by default (``y_only=True``), chroma is bicubic. The convolutions have biases, as in the authors'
released model; ``bias=False`` builds the port's bias-free network (its ``input``,
``residual_layer.i.conv`` and ``output`` weights are ``body.0``, ``body.<2i + 2>`` and
``body.38`` here). Parameters with ``y_only=True``: 665,921 at every scale (664,704 weights plus
1,217 biases; 664,704 with ``bias=False``); with ``y_only=False``: 668,227 (667,008).
"""

from __future__ import annotations

import torch
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork
from src.ops.color import upscale_luma
from src.ops.imresize import imresize


class VDSR(SRNetwork):
    """A plain deep CNN learning the difference between the bicubic image and the HR image."""

    traits = NetworkTraits(scales=None, channels=(3,), tile_exact=True)

    # RGB in and out, whatever channel the convolutions see (Y by default).
    image_channels = 3

    def __init__(
        self,
        scale: int,
        num_layers: int = 20,
        num_features: int = 64,
        y_only: bool = True,
        bias: bool = True,
    ):
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"VDSR needs at least 2 layers, got {num_layers}")
        self.scale = scale
        self.y_only = y_only
        channels = 1 if y_only else 3

        def conv(in_channels: int, out_channels: int) -> nn.Conv2d:
            return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)

        layers: list[nn.Module] = [conv(channels, num_features)]
        for _ in range(num_layers - 2):
            layers += [nn.ReLU(inplace=True), conv(num_features, num_features)]
        layers += [nn.ReLU(inplace=True), conv(num_features, channels)]
        self.body = nn.Sequential(*layers)

    def _upscale(self, x: torch.Tensor) -> torch.Tensor:
        upsampled = imresize(x, scale=float(self.scale))
        return upsampled + self.body(upsampled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.y_only:
            return upscale_luma(x, self.scale, self._upscale)
        return self._upscale(x)
