"""SSIM with the Gaussian window applied as two 1-D passes, fast on a CPU.

The formula is torchmetrics' (and MATLAB's ``ssim``): an 11x11 Gaussian window, sigma 1.5,
K1 = 0.01, K2 = 0.03, and only the *valid* region (where the window lies inside the image)
averaged. The window is separable, so two 1-D passes of 11 taps give the values of
torchmetrics' 121-tap 2-D convolution; and since SSIM uses the two variances only through their
sum, x^2 + y^2 is filtered once: four filtered planes instead of five. The results differ from
torchmetrics' by float rounding (about 1e-14 on the benchmark images).

* On a CPU the passes are OpenCV's ``sepFilter2D`` (vectorised, float64 in float64). Each plane
  is cut into pieces of :data:`STRIPE_ROWS` rows (plus the window's 10 rows of overlap) that a
  thread pool works through (OpenCV and NumPy release the GIL), each thread reusing its own
  scratch buffers: fresh megabyte arrays cost a third more time in page faults.
* On other devices two ``conv2d`` calls per moment, on whole planes.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

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
    xy -= out
    xy *= 2.0
    xy += c2  # 2 sigma_xy + C2
    out *= 2.0
    out += c1
    out *= xy  # the numerator
    out /= mu_x
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
_POOL: ThreadPoolExecutor | None = None


def _thread_pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max(1, torch.get_num_threads()), "srlab-ssim")
    return _POOL


def _sum_over_rows(x: np.ndarray, y: np.ndarray, first: int, last: int, peak: float) -> float:
    """The SSIM map of one (H, W) plane pair summed over valid rows ``first``..``last``."""
    r = HALF_WINDOW
    x, y = x[first : last + 2 * r], y[first : last + 2 * r]
    rows, width = x.shape
    buffers = _SCRATCH.get(STRIPE_ROWS + 2 * r, width, x.dtype)[:, :rows]
    means, (product, other, out) = buffers[:4], buffers[4:]
    taps = gaussian_taps(torch.float64).numpy().astype(x.dtype)
    depth = cv2.CV_64F if x.dtype == np.float64 else cv2.CV_32F

    def window_mean(plane: np.ndarray, index: int) -> np.ndarray:
        cv2.sepFilter2D(
            plane, depth, taps, taps, dst=means[index], borderType=cv2.BORDER_REFLECT_101
        )
        return means[index][r:-r, r:-r]

    mu_x, mu_y = window_mean(x, 0), window_mean(y, 1)
    np.multiply(x, x, out=product)
    np.multiply(y, y, out=other)
    product += other
    squares = window_mean(product, 2)
    np.multiply(x, y, out=product)
    cross = window_mean(product, 3)
    ssim_values = ssim_map_(mu_x, mu_y, squares, cross, out[r:-r, r:-r], peak=peak)
    return float(ssim_values.sum(dtype=np.float64))


def _ssim_cpu(preds: torch.Tensor, target: torch.Tensor, peak: float) -> torch.Tensor:
    n, channels, height, width = preds.shape
    valid_rows = height - 2 * HALF_WINDOW
    x_planes = preds.contiguous().numpy().reshape(n * channels, height, width)
    y_planes = target.contiguous().numpy().reshape(n * channels, height, width)
    jobs = [
        (plane, first, min(first + STRIPE_ROWS, valid_rows))
        for plane in range(n * channels)
        for first in range(0, valid_rows, STRIPE_ROWS)
    ]
    sums = _thread_pool().map(
        lambda job: _sum_over_rows(x_planes[job[0]], y_planes[job[0]], job[1], job[2], peak),
        jobs,
    )
    totals = np.zeros(n * channels)
    for (plane, _, _), value in zip(jobs, sums, strict=True):
        totals[plane] += value
    per_plane = totals / (valid_rows * (width - 2 * HALF_WINDOW))
    return torch.from_numpy(per_plane).reshape(n, channels).mean(dim=1).to(preds.dtype)


def _ssim_conv(preds: torch.Tensor, target: torch.Tensor, peak: float) -> torch.Tensor:
    taps = gaussian_taps(preds.dtype).to(preds.device)
    n, channels, height, width = preds.shape

    def window_mean(plane: torch.Tensor) -> torch.Tensor:
        flat = plane.reshape(n * channels, 1, height, width)
        flat = F.conv2d(F.conv2d(flat, taps.view(1, 1, -1, 1)), taps.view(1, 1, 1, -1))
        return flat.reshape(n, channels, *flat.shape[-2:])

    squares = preds * preds + target * target
    mu_x, mu_y, sq, xy = (window_mean(p) for p in (preds, target, squares, preds * target))
    ssim_values = ssim_map_(mu_x, mu_y, sq, xy, torch.empty_like(mu_x), peak=peak)
    return ssim_values.flatten(1).mean(dim=1).cpu()


def ssim(preds: torch.Tensor, target: torch.Tensor, peak: float = 255.0) -> torch.Tensor:
    """Per-image SSIM of (N, C, H, W) tensors given on the 0..``peak`` scale, computed in their
    dtype, the mean over channels and valid pixels; NaN for an image smaller than the window."""
    if preds.shape != target.shape:
        raise ValueError(f"SSIM of shapes {tuple(preds.shape)} and {tuple(target.shape)}")
    if min(preds.shape[-2:]) <= 2 * HALF_WINDOW:
        return torch.full((preds.shape[0],), math.nan, dtype=preds.dtype)
    if preds.device.type == "cpu":
        return _ssim_cpu(preds, target, peak)
    return _ssim_conv(preds, target, peak)
