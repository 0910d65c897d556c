"""Blur kernels for synthetic degradations, and filtering an image with one.

Kernels are square, odd-sized float64 arrays that sum to 1. The Gaussian family is written with a
covariance ``C = R diag(sigma_x^2, sigma_y^2) R^T`` (``R`` a rotation) and the quadratic form
``d(p) = p^T C^-1 p`` over pixel offsets ``p`` from the centre:

* Gaussian: ``exp(-d / 2)`` (isotropic when ``sigma_x == sigma_y``; MATLAB's
  ``fspecial('gaussian', size, sigma)`` is that case);
* generalised Gaussian: ``exp(-d^beta / 2)`` (flatter top for ``beta > 1``, heavier tails below);
* plateau: ``1 / (1 + d^beta)``;
* sinc: the ideal circular low-pass filter with cutoff ``omega`` (radians per pixel),
  ``omega J1(omega r) / (2 pi r)``: the ringing and overshoot artefacts of sharpened or
  band-limited images.

:func:`random_kernel` draws one of them, as the Real-ESRGAN pipeline does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.special import j1

from src.utils import choices

BORDERS = dict(zip(choices.BORDERS, (cv2.BORDER_REFLECT, cv2.BORDER_REPLICATE), strict=True))
KERNEL_KINDS = choices.KERNEL_KINDS


def _offsets(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")
    half = size // 2
    axis = np.arange(-half, half + 1, dtype=np.float64)
    return np.meshgrid(axis, axis, indexing="xy")


def _normalised(kernel: np.ndarray) -> np.ndarray:
    return kernel / kernel.sum()


def quadratic_form(size: int, sigma_x: float, sigma_y: float, rotation: float) -> np.ndarray:
    """``p^T C^-1 p`` at each pixel offset of a ``size x size`` grid (``rotation`` in radians)."""
    x, y = _offsets(size)
    cos, sin = math.cos(rotation), math.sin(rotation)
    # Offsets in the kernel's own axes, where the covariance is diagonal.
    u = cos * x + sin * y
    v = -sin * x + cos * y
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, rotation: float = 0.0
) -> np.ndarray:
    """A (possibly anisotropic, rotated) Gaussian kernel."""
    d = quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, rotation)
    return _normalised(np.exp(-0.5 * d))


def generalized_gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float, rotation: float, beta: float
) -> np.ndarray:
    """``exp(-d^beta / 2)``: a Gaussian with shape parameter ``beta`` (1 is the Gaussian)."""
    return _normalised(np.exp(-0.5 * quadratic_form(size, sigma_x, sigma_y, rotation) ** beta))


def plateau_kernel(
    size: int, sigma_x: float, sigma_y: float, rotation: float, beta: float
) -> np.ndarray:
    """``1 / (1 + d^beta)``: flat centre, slowly decaying tails."""
    return _normalised(1.0 / (1.0 + quadratic_form(size, sigma_x, sigma_y, rotation) ** beta))


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """Ideal circular low-pass filter of ``cutoff`` radians per pixel (pi: no filtering)."""
    x, y = _offsets(size)
    radius = np.hypot(x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = cutoff * j1(cutoff * radius) / (2 * np.pi * radius)
    kernel[size // 2, size // 2] = cutoff**2 / (4 * np.pi)  # the limit at r = 0
    return _normalised(kernel)


def filter_image(image: np.ndarray, kernel: np.ndarray, border: str = "reflect") -> np.ndarray:
    """Filter an (H, W, C) float32 image with ``kernel``; the border mode is ``reflect`` or
    ``replicate``. Every kernel here is point-symmetric, so correlation equals convolution."""
    filtered = cv2.filter2D(image, -1, kernel, borderType=BORDERS[border])
    return filtered.reshape(image.shape)  # cv2 drops a single channel axis


def uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """A draw from ``[low, high]``; ``low == high`` gives that value (a fixed setting)."""
    return float(rng.uniform(bounds[0], bounds[1]))


def odd_size(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    """An odd kernel size drawn uniformly from the odd numbers in ``[low, high]``."""
    sizes = range(bounds[0] | 1, bounds[1] + 1, 2)
    if not sizes:
        raise ValueError(f"no odd kernel size in {list(bounds)}")
    return int(sizes[int(rng.integers(len(sizes)))])


def shape_beta(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """A shape parameter drawn as Real-ESRGAN does: half the time from ``[low, 1]``, half the
    time from ``[1, high]`` (1, the plain kernel, clipped into the bounds)."""
    low, high = bounds
    one = min(max(1.0, low), high)
    return uniform(rng, (low, one) if rng.uniform() < 0.5 else (one, high))


@dataclass(frozen=True)
class KernelSettings:
    """How :func:`random_kernel` draws a blur kernel; every field has a YAML key of its name.

    ``kinds`` maps the kinds in :data:`KERNEL_KINDS` to probabilities (normalised); ``sigma`` is
    the range of each axis' sigma in pixels; ``rotation_deg`` the range of the rotation of
    anisotropic kernels; ``beta_gaussian``/``beta_plateau`` the shape ranges; with probability
    ``sinc_prob`` a sinc filter is drawn instead, its cutoff (in units of pi) from
    ``sinc_cutoff``, or ``sinc_cutoff_small`` for kernels under 13 px, where low cutoffs would be
    cut off by the kernel's edge.
    """

    kernel_size: tuple[int, int] = (7, 21)
    kinds: Mapping[str, float] = field(
        default_factory=lambda: {
            "iso": 0.45,
            "aniso": 0.25,
            "generalized_iso": 0.12,
            "generalized_aniso": 0.03,
            "plateau_iso": 0.12,
            "plateau_aniso": 0.03,
        }
    )
    sigma: tuple[float, float] = (0.2, 3.0)
    rotation_deg: tuple[float, float] = (-180.0, 180.0)
    beta_gaussian: tuple[float, float] = (0.5, 4.0)
    beta_plateau: tuple[float, float] = (1.0, 2.0)
    sinc_prob: float = 0.1
    sinc_cutoff: tuple[float, float] = (0.2, 1.0)
    sinc_cutoff_small: tuple[float, float] = (1 / 3, 1.0)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(KERNEL_KINDS))
        if unknown:
            raise ValueError(f"unknown kernel kind(s) {unknown}; choose from {list(KERNEL_KINDS)}")
        if sum(self.kinds.values()) <= 0:
            raise ValueError("kernel kind probabilities must not all be zero")


def random_kernel(rng: np.random.Generator, settings: KernelSettings) -> np.ndarray:
    """One blur kernel drawn as ``settings`` says."""
    size = odd_size(rng, settings.kernel_size)
    if rng.uniform() < settings.sinc_prob:
        bounds = settings.sinc_cutoff if size >= 13 else settings.sinc_cutoff_small
        return sinc_kernel(size, math.pi * uniform(rng, bounds))
    names = list(settings.kinds)
    weights = np.array([settings.kinds[name] for name in names], dtype=np.float64)
    kind = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    sigma_x = uniform(rng, settings.sigma)
    if kind == "iso" or kind.endswith("_iso"):
        sigma_y, rotation = sigma_x, 0.0
    else:
        sigma_y = uniform(rng, settings.sigma)
        rotation = math.radians(uniform(rng, settings.rotation_deg))
    if kind.startswith("generalized"):
        beta = shape_beta(rng, settings.beta_gaussian)
        return generalized_gaussian_kernel(size, sigma_x, sigma_y, rotation, beta)
    if kind.startswith("plateau"):
        beta = shape_beta(rng, settings.beta_plateau)
        return plateau_kernel(size, sigma_x, sigma_y, rotation, beta)
    return gaussian_kernel(size, sigma_x, sigma_y, rotation)
