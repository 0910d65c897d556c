"""FSRCNN: Dong, Loy and Tang, "Accelerating the Super-Resolution Convolutional Neural Network",
ECCV 2016.

Upstream: no official repository in PyTorch (the authors' MATLAB/Caffe code is on their
project page, not used here); the module names (``feature_extraction``, ``shrinking``,
``mapping``, ``expanding``, ``deconvolution``) follow no particular port;
no licence applies: SR Lab's code is an independent implementation from the paper.

Variant: FSRCNN(d=56, s=12, m=4) working on the LR image: 5x5 feature extraction, 1x1 shrinking,
m 3x3 mapping layers, 1x1 expanding, each followed by a per-channel PReLU, and a 9x9
deconvolution with stride ``scale`` as the upsampler. Like the paper, only luma goes through the
network by default (``y_only=True``), chroma is bicubic. Parameters with ``y_only=True``: 12,809 at
every scale (the paper's 12,464 counts the convolution weights only; add 173 biases and 172 PReLU
slopes); with ``y_only=False``: 24,683.
"""

from __future__ import annotations

import torch
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork
from src.ops.color import upscale_luma


def _conv_prelu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.PReLU(out_channels),
    )


class FSRCNN(SRNetwork):
    """Hourglass-shaped CNN on the LR image with a learned deconvolution upsampler."""

    traits = NetworkTraits(scales=None, channels=(3,), tile_exact=True)

    # RGB in and out, whatever channel the convolutions see (Y by default).
    image_channels = 3

    def __init__(
        self,
        scale: int,
        num_features: int = 56,
        shrunk_features: int = 12,
        num_mapping_layers: int = 4,
        y_only: bool = True,
    ):
        super().__init__()
        self.scale = scale
        self.y_only = y_only
        channels = 1 if y_only else 3
        self.feature_extraction = _conv_prelu(channels, num_features, 5)
        self.shrinking = _conv_prelu(num_features, shrunk_features, 1)
        self.mapping = nn.Sequential(
            *(_conv_prelu(shrunk_features, shrunk_features, 3) for _ in range(num_mapping_layers))
        )
        self.expanding = _conv_prelu(shrunk_features, num_features, 1)
        # padding 4 and output_padding scale-1 make the output exactly scale x the input.
        self.deconvolution = nn.ConvTranspose2d(
            num_features, channels, 9, stride=scale, padding=4, output_padding=scale - 1
        )
        # The paper draws the deconvolution's initial weights from N(0, 0.001).
        nn.init.normal_(self.deconvolution.weight, std=0.001)
        if self.deconvolution.bias is not None:
            nn.init.zeros_(self.deconvolution.bias)

    def _upscale(self, x: torch.Tensor) -> torch.Tensor:
        features = self.expanding(self.mapping(self.shrinking(self.feature_extraction(x))))
        return self.deconvolution(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.y_only:
            return upscale_luma(x, self.scale, self._upscale)
        return self._upscale(x)
