"""Colour conversions of the SR papers: BT.601 YCbCr (studio swing) as MATLAB's ``rgb2ycbcr``.

Metrics use the Y row (:data:`Y_WEIGHTS`); the early networks (SRCNN, FSRCNN, ESPCN, VDSR, DRRN)
run on Y only and upscale chroma with bicubic (:func:`upscale_luma`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from src.ops.imresize import imresize

# BT.601 studio swing as MATLAB's rgb2ycbcr applies it to RGB in [0, 1] (the SR papers' Y).
RGB_TO_YCBCR = (
    (65.481, 128.553, 24.966),
    (-37.797, -74.203, 112.0),
    (112.0, -93.786, -18.214),
)
_YCBCR_OFFSET = (16.0, 128.0, 128.0)


def _ycbcr_constants(like: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    matrix = torch.tensor(RGB_TO_YCBCR, dtype=torch.float64) / 255.0
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


# Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 for R, G, B on the 0..255 scale.
Y_WEIGHTS = RGB_TO_YCBCR[0]
