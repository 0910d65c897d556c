"""Degradation operations on (N, C, H, W) batches in torch, on whatever device holds them: the
building blocks of the batch Real-ESRGAN pipeline (:mod:`src.data.batch_degradation`) and the
unsharp-masked training target. Each mirrors the per-patch NumPy/OpenCV operation of
:mod:`src.data.synthetic` and :mod:`src.data.kernels`:

* :func:`filter_each`: every image with its own kernel, in one grouped convolution, borders
  mirrored with the edge sample repeated (OpenCV's ``BORDER_REFLECT``);
* :func:`resize`: ``area`` (box averaging when shrinking; bilinear when enlarging, as OpenCV's
  ``INTER_AREA`` does), ``bilinear`` and ``bicubic`` (a = -0.75, OpenCV's and torch's), half-pixel
  centres, no antialiasing;
* :func:`gaussian_noise` and :func:`poisson_noise`: each image's noise from its own
  ``torch.Generator``, so a batch reproduces image by image;
* :func:`unsharp_mask`: Real-ESRGAN's sharpened target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def mirrored_indices(length: int, pad: int, edge: bool, device: torch.device) -> torch.Tensor:
    """Indices of ``length`` samples extended by ``pad`` on both sides, mirrored with the edge
    sample repeated (``dcba|abcd``, ``edge``) or not (``dcb|abcd``), folded again as often as
    needed, so a pad longer than the image works."""
    period = 2 * length if edge else max(2 * length - 2, 1)
    positions = torch.arange(-pad, length + pad, device=device) % period
    return torch.where(positions >= length, period - 1 - positions + (not edge), positions)


def mirror_pad(images: torch.Tensor, pad: int, edge: bool = True) -> torch.Tensor:
    if pad == 0:
        return images
    rows = mirrored_indices(images.shape[-2], pad, edge, images.device)
    cols = mirrored_indices(images.shape[-1], pad, edge, images.device)
    return images.index_select(-2, rows).index_select(-1, cols)


def stack_kernels(
    kernels: Sequence[np.ndarray | None], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """(N, k, k) kernels, each centred in the largest size with zeros around it; None is the
    identity (a 1 in the centre), for images this step leaves alone."""
    size = max((k.shape[0] for k in kernels if k is not None), default=1)
    stacked = np.zeros((len(kernels), size, size), dtype=np.float64)
    for index, kernel in enumerate(kernels):
        if kernel is None:
            stacked[index, size // 2, size // 2] = 1.0
        else:
            offset = (size - kernel.shape[0]) // 2
            stacked[index, offset : offset + kernel.shape[0], offset : offset + kernel.shape[0]] = (
                kernel
            )
    return torch.from_numpy(stacked).to(device=device, dtype=dtype)


def filter_each(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Correlate image i of (N, C, H, W) with kernel i of (N, k, k), borders mirrored."""
    n, c, h, w = images.shape
    size = kernels.shape[-1]
    padded = mirror_pad(images, size // 2).reshape(1, n * c, h + size - 1, w + size - 1)
    weight = kernels.to(images.dtype).repeat_interleave(c, dim=0)[:, None]
    return F.conv2d(padded, weight, groups=n * c).reshape(n, c, h, w)


def resize(images: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    """(N, C, H, W) to ``height x width`` with ``mode`` (area, bilinear, bicubic)."""
    height, width = max(1, height), max(1, width)
    if (height, width) == tuple(images.shape[-2:]):
        return images
    if mode == "area":
        if height <= images.shape[-2] and width <= images.shape[-1]:
            return F.interpolate(images, size=(height, width), mode="area")
        mode = "bilinear"
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"unknown resize mode {mode!r}; choose area, bilinear or bicubic")
    return F.interpolate(images, size=(height, width), mode=mode, align_corners=False)


def generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def gaussian_noise(image: torch.Tensor, sigma: float, gray: bool, seed: int) -> torch.Tensor:
    """Noise for one (C, H, W) image: N(0, sigma^2), one plane for every channel if ``gray``."""
    shape = (1, *image.shape[1:]) if gray else tuple(image.shape)
    noise = torch.randn(shape, generator=generator(seed, image.device), device=image.device)
    return (noise * sigma).to(image.dtype).expand_as(image)


def poisson_noise(image: torch.Tensor, scale: float, gray: bool, seed: int) -> torch.Tensor:
    """Shot noise for one (C, H, W) [0, 1] image, as :func:`src.data.synthetic.poisson_noise`:
    photon counts per level from the number of distinct 8-bit values, rounded up to a power of
    two, then scaled by ``scale``."""
    source = image
    if gray:
        weights = image.new_tensor(GRAY_WEIGHTS)[:, None, None]
        source = (image * weights).sum(dim=0, keepdim=True)
    levels = torch.round(source * 255.0).clamp_(0, 255) / 255.0
    count = 2.0 ** math.ceil(math.log2(max(int(torch.unique(levels).numel()), 2)))
    shots = torch.poisson(levels * count, generator=generator(seed, image.device))
    return ((shots / count - levels) * scale).expand_as(image)


def gaussian_window(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """OpenCV's Gaussian of odd ``size`` with its default sigma for that size."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    window = torch.exp(-(offsets**2) / (2 * sigma**2))
    return (window / window.sum()).to(device=device, dtype=dtype)


def gaussian_blur(images: torch.Tensor, size: int) -> torch.Tensor:
    """Separable Gaussian blur of odd ``size``, borders reflected without repeating the edge
    (OpenCV's default, ``BORDER_REFLECT_101``)."""
    c = images.shape[1]
    window = gaussian_window(size, images.device, images.dtype)
    padded = mirror_pad(images, size // 2, edge=False)
    rows = F.conv2d(padded, window.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(rows, window.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def unsharp_mask(
    images: torch.Tensor, weight: float = 0.5, kernel_size: int = 51, threshold: float = 10
) -> torch.Tensor:
    """Real-ESRGAN's sharpened target: the image plus ``weight`` times its detail (image minus
    a Gaussian blur of ``kernel_size``, made odd; Real-ESRGAN's ``radius=50`` is 51), applied
    where the detail exceeds ``threshold`` levels of 0..255, faded in by the same blur of that
    mask."""
    size = kernel_size | 1
    detail = images - gaussian_blur(images, size)
    mask = (detail.abs() * 255 > threshold).to(images.dtype)
    soft_mask = gaussian_blur(mask, size)
    sharp = (images + weight * detail).clamp(0.0, 1.0)
    return soft_mask * sharp + (1 - soft_mask) * images
