"""The BD (blur-downsampling) degradation of video super-resolution, as MATLAB makes it.

BD is the degradation of Vid4/Vimeo-90K "BD" results since DUF (Jo, Oh, Kang and Kim, "Deep
Video Super-Resolution Network Using Dynamic Upsampling Filters Without Explicit Motion
Compensation", CVPR 2018) and of BasicVSR's BD-trained weights (Chan, Wang, Yu, Dong and Loy,
"BasicVSR: The Search for Essential Components in Video Super-Resolution and Beyond", CVPR
2021). The recipe is KAIR's MATLAB script ``scripts/matlab_scripts/generate_LR_Vimeo90K_BD.m``
(https://github.com/cszn/KAIR, commit 2de1b58; MIT), the same as TTVSR's ``BD_degradation.m``::

    img = im2double(imread(...));  img = modcrop(img, 4);
    kernel = fspecial('gaussian', ceil(sigma * 3) * 2 + 2, sigma);     % 12 x 12 for sigma 1.6
    img = imfilter(img, kernel, 'replicate');
    img = img(scale/2 : scale : end - scale/2, scale/2 : scale : end - scale/2, :);
    imwrite(img, ...)                                                    % double -> uint8

and :func:`bd_downsample` reproduces it step by step in float64:

- ``fspecial('gaussian', n, sigma)`` samples ``exp(-(x^2 + y^2) / (2 sigma^2))`` at
  ``x, y = -(n-1)/2 .. (n-1)/2``: for an even ``n`` the grid is half-integer (-5.5 .. 5.5 for
  12), so the kernel's centre lies between its 6th and 7th samples; values below
  ``eps * max`` are set to 0 (none for BD's kernels), and the kernel is divided by its sum.
- ``imfilter`` correlates (the kernel is not flipped) with the kernel's origin at MATLAB index
  ``floor((n + 1) / 2)``, 0-based ``(n - 1) // 2`` = 5 for 12: output pixel ``i`` reads input
  pixels ``i - 5 .. i + 6``, so its Gaussian is centred at ``i + 0.5``. ``'replicate'`` repeats
  the edge pixels outside the image.
- Rows and columns ``scale/2, scale/2 + scale, ...`` (1-based; 0-based 1, 5, 9, ... for x4) are
  kept, so each LR pixel's blur is centred at ``4m + 1.5``: the centre of HR block ``m``, as for
  MATLAB's bicubic x1/4. (BasicSR's ``duf_downsample``, a 13x13 kernel with reflection and
  another offset, puts each LR pixel 1.5 px elsewhere; BasicVSR's BD weights then lose about
  7.8 dB on Vid4: ``shared/data/README.md``.)
- ``imwrite`` of a double image stores ``255 * x`` rounded to the nearest integer, halves up,
  clipped to 0..255 (as ``src.ops.imresize`` rounds).

The sum is computed in two 1-D passes (the kernel is the outer product of two normalised 1-D
Gaussians whenever fspecial cut no value to 0: true for sigma 1.6 and checked each time) and
only at the kept rows and columns; a 2-D kernel with cut values is applied as it is. Float64
results differ from MATLAB's own summation order in the last bits only, which changes a rounded
pixel only for a value within about 1e-13 of a half.
"""

from __future__ import annotations

import math

import numpy as np

from src.ops.imresize import modcrop

__all__ = ["bd_downsample", "bd_kernel_size", "matlab_gaussian_kernel"]


def bd_kernel_size(sigma: float) -> int:
    """The BD kernel's side, ``ceil(3 sigma) * 2 + 2`` (12 for sigma 1.6)."""
    return math.ceil(sigma * 3) * 2 + 2


def _gaussian_samples(size: int, sigma: float) -> np.ndarray:
    """``exp(-t^2 / (2 sigma^2))`` at ``t = -(size-1)/2 .. (size-1)/2`` (fspecial's grid)."""
    t = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    return np.exp(-(t * t) / (2.0 * sigma * sigma))


def matlab_gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', size, sigma)``: a float64 (size, size) kernel summing to 1."""
    if size < 1 or sigma <= 0:
        raise ValueError(f"a Gaussian kernel needs size >= 1 and sigma > 0, got {size}, {sigma}")
    t = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    kernel = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2.0 * sigma * sigma))
    kernel[kernel < np.finfo(np.float64).eps * kernel.max()] = 0.0
    return kernel / kernel.sum()


def bd_downsample(frame: np.ndarray, scale: int = 4, sigma: float = 1.6) -> np.ndarray:
    """The BD low-resolution frame of a uint8 HxW or HxWxC ``frame``: MATLAB's Gaussian blur
    (``fspecial('gaussian', ceil(3 sigma)*2+2, sigma)``, ``imfilter`` with ``'replicate'``)
    of the frame mod-cropped to ``scale``, rows and columns ``scale/2 - 1, ... `` (0-based)
    kept, rounded to uint8. Returns ``(H // scale, W // scale[, C])`` uint8."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        got = getattr(frame, "dtype", type(frame).__name__)
        raise TypeError(f"bd_downsample expects a uint8 numpy frame, got {got}")
    if frame.ndim not in (2, 3):
        raise ValueError(f"bd_downsample expects an HW or HWC frame, got shape {frame.shape}")
    if int(scale) != scale or scale < 2 or scale % 2:
        # MATLAB's recipe indexes from scale/2: an odd scale has no such row.
        raise ValueError(f"bd_downsample needs an even integer scale >= 2, got {scale!r}")
    scale = int(scale)
    if frame.shape[0] < scale or frame.shape[1] < scale:
        raise ValueError(f"frame {frame.shape} is smaller than one {scale}x{scale} block")

    image = modcrop(frame, scale).astype(np.float64) / 255.0  # im2double
    size = bd_kernel_size(sigma)
    kernel = matlab_gaussian_kernel(size, sigma)
    before = (size - 1) // 2  # imfilter's origin: MATLAB index floor((size + 1) / 2)
    after = size - 1 - before
    pad = [(before, after), (before, after)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image, pad, mode="edge")
    first = scale // 2 - 1  # MATLAB index scale/2
    out_h, out_w = image.shape[0] // scale, image.shape[1] // scale

    if np.all(kernel > 0):
        # Separable: the 2-D kernel is the outer product of the normalised 1-D samples.
        taps = _gaussian_samples(size, sigma)
        taps /= taps.sum()
        rows = sum(
            taps[u] * padded[first + u : first + u + scale * out_h : scale] for u in range(size)
        )
        blurred = sum(
            taps[v] * rows[:, first + v : first + v + scale * out_w : scale] for v in range(size)
        )
    else:
        blurred = sum(
            kernel[u, v]
            * padded[
                first + u : first + u + scale * out_h : scale,
                first + v : first + v + scale * out_w : scale,
            ]
            for u in range(size)
            for v in range(size)
        )
    return _round_to_uint8(255.0 * np.asarray(blurred))


def _round_to_uint8(values: np.ndarray) -> np.ndarray:
    """MATLAB's double -> uint8: clip to 0..255, round halves up (the fraction is compared
    exactly; ``floor(x + 0.5)`` would round some values just below a half up)."""
    values = np.clip(values, 0.0, 255.0)
    whole = np.floor(values)
    return (whole + (values - whole >= 0.5)).astype(np.uint8)
