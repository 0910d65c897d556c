"""SRCNN: Dong et al., "Image Super-Resolution Using Deep Convolutional Networks", TPAMI 2016
(first published as "Learning a Deep Convolutional Network for Image Super-Resolution", ECCV 2014).

Upstream: no official repository in PyTorch (the authors' MATLAB/Caffe code is on their
project page, not used here); the single ``body`` sequence follows no particular port;
no licence applies: SR Lab's code is an independent implementation from the paper.

Variant: 9-5-5 with 64 and 32 filters, ReLU after the first two layers, on the bicubic-upsampled
image. As in the paper, only the luma channel (BT.601 YCbCr) goes through the network and the
chroma channels are bicubic (``y_only=True``: 57,281 parameters at every scale, the paper's 57,184
weights plus 97 biases); ``y_only=False`` runs the same layers on RGB (69,251 parameters).

The luma-only plumbing it shares with FSRCNN, ESPCN, VDSR and DRRN lives in
:mod:`src.ops.color`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork
from src.ops.color import upscale_luma
from src.ops.imresize import imresize


class SRCNN(SRNetwork):
    """Patch extraction, non-linear mapping and reconstruction convs on the bicubic image."""

    traits = NetworkTraits(scales=None, channels=(3,), tile_exact=True)

    # RGB in and out, whatever channel the convolutions see (Y by default).
    image_channels = 3

    def __init__(
        self,
        scale: int,
        num_features: Sequence[int] = (64, 32),
        kernel_sizes: Sequence[int] = (9, 5, 5),
        y_only: bool = True,
    ):
        super().__init__()
        if len(num_features) != 2 or len(kernel_sizes) != 3:
            raise ValueError("SRCNN takes two feature widths and three kernel sizes")
        self.scale = scale
        self.y_only = y_only
        channels = 1 if y_only else 3
        widths = [channels, *num_features, channels]
        layers: list[nn.Module] = []
        for index, kernel in enumerate(kernel_sizes):
            # "Same" padding: the paper trains without padding on 33x33 crops and scores the
            # smaller valid output; padding keeps the output at the input size.
            layers.append(nn.Conv2d(widths[index], widths[index + 1], kernel, padding=kernel // 2))
            if index < len(kernel_sizes) - 1:
                layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)

    def _upscale(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(imresize(x, scale=float(self.scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.y_only:
            return upscale_luma(x, self.scale, self._upscale)
        return self._upscale(x)
