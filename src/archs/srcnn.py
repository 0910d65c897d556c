"""SRCNN: Dong et al., "Image Super-Resolution Using Deep Convolutional Networks", TPAMI 2016
(first published as "Learning a Deep Convolutional Network for Image Super-Resolution", ECCV 2014).

Variant: 9-5-5 with 64 and 32 filters, ReLU after the first two layers, on the bicubic-upsampled
image. As in the paper, only the luma channel (BT.601 YCbCr) goes through the network and the
chroma channels are bicubic (``y_only=True``: 57,281 parameters at every scale, the paper's 57,184
weights plus 97 biases); ``y_only=False`` runs the same layers on RGB (69,251 parameters).

This module also holds the luma-only plumbing that the other early networks (FSRCNN, ESPCN, VDSR,
DRRN) share: RGB <-> YCbCr and :func:`upscale_luma`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from src.ops.imresize import imresize

# BT.601 studio swing as MATLAB's rgb2ycbcr applies it to RGB in [0, 1] (the SR papers' Y).
_RGB_TO_YCBCR = (
    (65.481, 128.553, 24.966),
    (-37.797, -74.203, 112.0),
    (112.0, -93.786, -18.214),
)
_YCBCR_OFFSET = (16.0, 128.0, 128.0)


def _ycbcr_constants(like: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    matrix = torch.tensor(_RGB_TO_YCBCR, dtype=torch.float64) / 255.0
    if inverse:
        matrix = torch.linalg.inv(matrix)
    offset = torch.tensor(_YCBCR_OFFSET, dtype=torch.float64).view(3, 1, 1) / 255.0
    return matrix.to(like.device, like.dtype), offset.to(like.device, like.dtype)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] to YCbCr in [0, 1] units (Y in [16/255, 235/255])."""
    matrix, offset = _ycbcr_constants(rgb, inverse=False)
    return torch.einsum("ij,...jhw->...ihw", matrix, rgb) + offset


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr`."""
    matrix, offset = _ycbcr_constants(ycbcr, inverse=True)
    return torch.einsum("ij,...jhw->...ihw", matrix, ycbcr - offset)


def upscale_luma(
    rgb: torch.Tensor, scale: int, luma_net: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Super-resolve RGB the Y-channel way: ``luma_net`` maps LR luma (N, 1, h, w) to SR luma
    (N, 1, h*scale, w*scale); chroma is upscaled with bicubic."""
    ycbcr = rgb_to_ycbcr(rgb)
    luma = luma_net(ycbcr[:, :1])
    chroma = imresize(ycbcr[:, 1:], scale=float(scale))
    return ycbcr_to_rgb(torch.cat([luma, chroma], dim=1))


class SRCNN(nn.Module):
    """Patch extraction, non-linear mapping and reconstruction convs on the bicubic image."""

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
