"""SSIM with the Gaussian window applied as two 1-D passes, fast on a CPU, and the squared
error PSNR needs, from the same passes.

The formula is torchmetrics' (and MATLAB's ``ssim``): an 11x11 Gaussian window, sigma 1.5,
K1 = 0.01, K2 = 0.03, and only the *valid* region (where the window lies inside the image)
averaged. The window is separable, so two 1-D passes of 11 taps give the values of
torchmetrics' 121-tap 2-D convolution; and since SSIM uses the two variances only through their
sum, x^2 + y^2 is filtered once: four filtered planes instead of five. The results differ from
torchmetrics' by float rounding (about 1e-14 on the benchmark images).

* On a CPU the passes are OpenCV's ``sepFilter2D`` (vectorised, float64 in float64). Each plane
  is cut into pieces of :data:`STRIPE_ROWS` rows (plus the window's 10 rows of overlap) that a
  thread pool works through (OpenCV and NumPy release the GIL), each thread reusing its own
  scratch buffers: fresh megabyte arrays cost a third more time in page faults. The planes of
  several image pairs (Y and RGB) go through one pool pass, and each piece also sums the
  squared error of its rows while they are in cache.
* On other devices two ``conv2d`` calls per moment, on whole planes.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, TypeVar

import cv2
import numpy as np
import torch
from torch.nn import functional as F

SIGMA = 1.5
# The window size torchmetrics derives from sigma: int(3.5 * 1.5 + 0.5) * 2 + 1 = 11.
HALF_WINDOW = 5
K1, K2 = 0.01, 0.03
STRIPE_ROWS = 128

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def gaussian_taps(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The 11 normalised taps of the 1-D Gaussian whose outer product is the SSIM window:
    exp(-x^2 / (2 sigma^2)) for x = -5..5, divided by their sum."""
    x = torch.arange(-HALF_WINDOW, HALF_WINDOW + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (x / SIGMA) ** 2)
    return (taps / taps.sum()).to(dtype)


def ssim_map_(mu_x: Array, mu_y: Array, sq: Array, xy: Array, out: Array, peak: float) -> Array:
    """SSIM per pixel from the window means of x, y, x^2 + y^2 and x*y, computed in place: the
    inputs are overwritten and the map is returned in ``out`` (same shape).

    torchmetrics clamps each variance at zero before adding them; here their sum is used as it
    comes. The two differ only where rounding makes a variance of a flat window negative, by
    about 1e-12 on a term that C2 = 58.5 dominates there."""
    c1, c2 = (K1 * peak) ** 2, (K2 * peak) ** 2
    out[...] = mu_x
    out *= mu_y  # mu_x mu_y
    mu_x *= mu_x
    mu_y *= mu_y
    mu_x += mu_y  # mu_x^2 + mu_y^2
    sq -= mu_x
    sq += c2  # sigma_x^2 + sigma_y^2 + C2
    mu_x += c1
    mu_x *= sq  # the denominator
    # The numerator (2 mu_x mu_y + C1)(2 sigma_xy + C2) as 4 (mu_x mu_y + C1/2)(sigma_xy + C2/2):
    # the same bits (scaling by a power of two is exact), one pass fewer.
    xy -= out
    xy += c2 / 2
    out += c1 / 2
    out *= xy
    out /= mu_x
    out *= 4.0
    return out


class _Scratch(threading.local):
    """Per-thread buffers for one piece of rows: 4 window means, 2 products and the map.

    Reused from piece to piece: fresh megabyte arrays cost a third more time in page faults."""

    key: tuple[int, int, str] = (0, 0, "")
    buffers: np.ndarray = np.empty((7, 0, 0))

    def get(self, rows: int, width: int, dtype: np.dtype) -> np.ndarray:
        key = (rows, width, dtype.str)
        if self.key != key:
            self.buffers = np.empty((7, rows, width), dtype=dtype)
            self.key = key
        return self.buffers


_SCRATCH = _Scratch()


@functools.cache
def _taps(dtype: np.dtype) -> np.ndarray:
    return gaussian_taps(torch.float64).numpy().astype(dtype)


_POOL: ThreadPoolExecutor | None = None


def _thread_pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max(1, torch.get_num_threads()), "srlab-ssim")
    return _POOL


def _sums_over_rows(
    x: np.ndarray, y: np.ndarray, first: int, last: int, peak: float
) -> tuple[float, float]:
    """One piece of an (H, W) plane pair: the SSIM map summed over valid rows ``first``..``last``
    and the squared error summed over the image rows that piece owns (its first ``last -
    first`` rows; the final piece also the window's last 10)."""
    r = HALF_WINDOW
    final = last + 2 * r == x.shape[0]
    x, y = x[first : last + 2 * r], y[first : last + 2 * r]
    rows, width = x.shape
    buffers = _SCRATCH.get(STRIPE_ROWS + 2 * r, width, x.dtype)[:, :rows]
    means, (product, other, out) = buffers[:4], buffers[4:]
    taps = _taps(x.dtype)
    depth = cv2.CV_64F if x.dtype == np.float64 else cv2.CV_32F

    def window_mean(plane: np.ndarray, index: int) -> np.ndarray:
        cv2.sepFilter2D(
            plane, depth, taps, taps, dst=means[index], borderType=cv2.BORDER_REFLECT_101
        )
        return means[index][r:-r, r:-r]

    owned = rows if final else last - first
    np.subtract(x, y, out=product)
    # einsum, not np.vdot: OpenBLAS would start its own threads beside the pool's.
    squared_error = float(np.einsum("ij,ij->", product[:owned], product[:owned]))
    mu_x, mu_y = window_mean(x, 0), window_mean(y, 1)
    np.multiply(x, x, out=product)
    np.multiply(y, y, out=other)
    product += other
    squares = window_mean(product, 2)
    np.multiply(x, y, out=product)
    cross = window_mean(product, 3)
    ssim_values = ssim_map_(mu_x, mu_y, squares, cross, out[r:-r, r:-r], peak=peak)
    return float(ssim_values.sum(dtype=np.float64)), squared_error


Pair = tuple[torch.Tensor, torch.Tensor]


def _planes(image: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) as an (N * C, H, W) array, without a copy when already contiguous."""
    return image.contiguous().numpy().reshape(-1, *image.shape[-2:])


class ChannelSums(NamedTuple):
    """Per-image, per-channel (N, C) float64 tensors of one image pair: the SSIM (mean over
    valid pixels) and the squared error summed over every pixel (PSNR's numerator)."""

    ssim: torch.Tensor
    squared_error: torch.Tensor


def _sums_cpu(pairs: Sequence[Pair], peak: float) -> list[ChannelSums]:
    """Every pair's planes cut into row pieces, all of them on one thread pool."""
    planes = [(_planes(preds), _planes(target)) for preds, target in pairs]
    jobs = [
        (pair, plane, first, min(first + STRIPE_ROWS, x.shape[1] - 2 * HALF_WINDOW))
        for pair, (x, _) in enumerate(planes)
        for plane in range(x.shape[0])
        for first in range(0, x.shape[1] - 2 * HALF_WINDOW, STRIPE_ROWS)
    ]

    def run(job: tuple[int, int, int, int]) -> tuple[float, float]:
        pair, plane, first, last = job
        x, y = planes[pair]
        return _sums_over_rows(x[plane], y[plane], first, last, peak)

    totals = [np.zeros((2, x.shape[0])) for x, _ in planes]
    for (pair, plane, _, _), values in zip(jobs, _thread_pool().map(run, jobs), strict=True):
        totals[pair][:, plane] += values
    results = []
    for (preds, _), (ssim_sums, squared_error) in zip(pairs, totals, strict=True):
        height, width = preds.shape[-2:]
        valid = (height - 2 * HALF_WINDOW) * (width - 2 * HALF_WINDOW)
        per_channel = [
            torch.from_numpy(v).reshape(preds.shape[:2]) for v in (ssim_sums / valid, squared_error)
        ]
        results.append(ChannelSums(*per_channel))
    return results


def _sums_conv(preds: torch.Tensor, target: torch.Tensor, peak: float) -> ChannelSums:
    taps = gaussian_taps(preds.dtype).to(preds.device)
    n, channels, height, width = preds.shape

    def window_mean(plane: torch.Tensor) -> torch.Tensor:
        flat = plane.reshape(n * channels, 1, height, width)
        flat = F.conv2d(F.conv2d(flat, taps.view(1, 1, -1, 1)), taps.view(1, 1, 1, -1))
        return flat.reshape(n, channels, *flat.shape[-2:])

    squared_error = squared_error_per_channel(preds, target)
    squares = preds * preds + target * target
    mu_x, mu_y, sq, xy = (window_mean(p) for p in (preds, target, squares, preds * target))
    ssim_values = ssim_map_(mu_x, mu_y, sq, xy, torch.empty_like(mu_x), peak=peak)
    return ChannelSums(ssim_values.flatten(2).mean(dim=2).double().cpu(), squared_error)


def _opencv_applies(pairs: Sequence[Pair]) -> bool:
    """Whether the pairs are scored by OpenCV's filters (all on the CPU) or by ``conv2d``."""
    return bool(pairs) and all(preds.device.type == "cpu" for preds, _ in pairs)


def channel_sums(pairs: Sequence[Pair], peak: float = 255.0) -> list[ChannelSums]:
    """SSIM and squared error of each (preds, target) pair of (N, C, H, W) tensors on the
    0..``peak`` scale, computed in their dtype, per image and channel; SSIM is NaN for an image
    smaller than the window. On a CPU every pair's planes share one pass of the thread pool
    (scoring Y and RGB together keeps both cores busy), and each piece of rows yields both
    sums while it is in cache."""
    for preds, target in pairs:
        if preds.shape != target.shape:
            raise ValueError(f"SSIM of shapes {tuple(preds.shape)} and {tuple(target.shape)}")
    small = {i for i, (preds, _) in enumerate(pairs) if min(preds.shape[-2:]) <= 2 * HALF_WINDOW}
    large = [pair for i, pair in enumerate(pairs) if i not in small]
    if _opencv_applies(large):
        scored = iter(_sums_cpu(large, peak))
    else:
        scored = iter([_sums_conv(preds, target, peak) for preds, target in large])
    return [
        _too_small(preds, target) if i in small else next(scored)
        for i, (preds, target) in enumerate(pairs)
    ]


def _too_small(preds: torch.Tensor, target: torch.Tensor) -> ChannelSums:
    """No SSIM (the window does not fit), the squared error all the same."""
    nan = torch.full(preds.shape[:2], math.nan, dtype=torch.float64)
    return ChannelSums(nan, squared_error_per_channel(preds, target))


def squared_error_per_channel(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The squared error of (N, C, H, W) tensors summed over each image's channel, in float64,
    as an (N, C) tensor on the CPU (the CPU path sums it piece by piece instead)."""
    difference = preds.to(torch.float64) - target.to(torch.float64)
    return difference.square_().flatten(2).sum(dim=2).cpu()


def ssim(preds: torch.Tensor, target: torch.Tensor, peak: float = 255.0) -> torch.Tensor:
    """Per-image SSIM of (N, C, H, W) tensors given on the 0..``peak`` scale, computed in their
    dtype, the mean over channels and valid pixels; NaN for an image smaller than the window."""
    (sums,) = channel_sums([(preds, target)], peak)
    return sums.ssim.mean(dim=1).to(preds.dtype)
