"""NIQE, the no-reference "naturalness" score (Mittal et al., IEEE SPL 2013), as MATLAB's ``niqe``
computes it: lower is more natural.

The image (luma on the 0..255 scale, rounded to integers as MATLAB's uint8 image is) is cropped
to whole 96x96 blocks. At two scales (the image, then MATLAB's bicubic x0.5 with antialiasing of
it) the mean-subtracted contrast-normalised coefficients are computed with the 7x7 Gaussian
window and replicated borders; each block gives 18 features per scale: the generalised Gaussian
shape and spread of its coefficients, and for the products of neighbours in four directions the
asymmetric generalised Gaussian shape, mean and left and right spreads. The 36-feature blocks are
fitted with a multivariate Gaussian, and NIQE is the distance between it and the pristine model
(``reference/niqe_pris_params.npz``, MATLAB's parameters):
sqrt((mu_p - mu_d) ((S_p + S_d) / 2)^+ (mu_p - mu_d)^T).

Set14's ``baboon`` on Y with no border crop scores 5.729570 against MATLAB's 5.729573 (tested).
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import torch

from src.ops.imresize import imresize

PARAMETERS = Path(__file__).with_name("reference") / "niqe_pris_params.npz"
BLOCK = 96
# The shape parameters MATLAB searches for the generalised Gaussian fit: 0.2, 0.201, ..., 10.
SHAPES = np.arange(0.2, 10.001, 0.001)
SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


@cache
def pristine_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean 36, covariance 36x36, Gaussian window 7x7) of the pristine model."""
    with np.load(PARAMETERS) as data:
        return data["mu_pris_param"][0], data["cov_pris_param"], data["gaussian_window"]


@cache
def shape_ratios() -> np.ndarray:
    """Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)) for each candidate shape a."""
    gamma = np.vectorize(math.gamma)
    return gamma(2 / SHAPES) ** 2 / (gamma(1 / SHAPES) * gamma(3 / SHAPES))


def aggd_fit(values: np.ndarray) -> tuple[float, float, float]:
    """Shape and left/right scales of an asymmetric generalised Gaussian fitted to ``values``
    by moment matching (NaN where one side is empty)."""
    negative, positive = values[values < 0], values[values > 0]
    if negative.size == 0 or positive.size == 0:
        return math.nan, math.nan, math.nan
    left, right = math.sqrt(np.mean(negative**2)), math.sqrt(np.mean(positive**2))
    ratio = left / right
    r_hat = np.mean(np.abs(values)) ** 2 / np.mean(values**2)
    r_norm = r_hat * (ratio**3 + 1) * (ratio + 1) / (ratio**2 + 1) ** 2
    alpha = float(SHAPES[np.argmin((shape_ratios() - r_norm) ** 2)])
    spread = math.sqrt(math.gamma(1 / alpha) / math.gamma(3 / alpha))
    return alpha, left * spread, right * spread


def block_features(mscn: np.ndarray) -> list[float]:
    """The 18 features of one block of normalised coefficients."""
    alpha, left, right = aggd_fit(mscn.ravel())
    features = [alpha, (left + right) / 2]
    for shift in SHIFTS:
        pair = (mscn * np.roll(mscn, shift, axis=(0, 1))).ravel()
        alpha, left, right = aggd_fit(pair)
        mean = (right - left) * math.gamma(2 / alpha) / math.gamma(1 / alpha)
        features += [alpha, mean, left, right]
    return features


def normalised_coefficients(image: np.ndarray, window: np.ndarray, single: bool) -> np.ndarray:
    """(image - mu) / (sigma + 1), local statistics by the window with replicated borders.

    ``single`` stores the filtered moments in float32 and takes sigma and the quotient there,
    as the reference implementations do at the first scale (see :func:`niqe`)."""
    mu = cv2.filter2D(image, cv2.CV_64F, window, borderType=cv2.BORDER_REPLICATE)
    squares = cv2.filter2D(image * image, cv2.CV_64F, window, borderType=cv2.BORDER_REPLICATE)
    if single:
        image, mu, squares = (a.astype(np.float32) for a in (image, mu, squares))
    sigma = np.sqrt(np.abs(squares - mu * mu))
    return ((image - mu) / (sigma + 1)).astype(np.float64)


def niqe(luma: np.ndarray) -> float:
    """NIQE of an (H, W) luma image on the 0..255 scale (rounded to integers first, as MATLAB
    scores uint8 images); at least one 96x96 block is needed."""
    image: np.ndarray = np.round(np.asarray(luma, dtype=np.float64))
    rows, cols = image.shape[0] // BLOCK, image.shape[1] // BLOCK
    if rows == 0 or cols == 0:
        raise ValueError(f"NIQE needs an image of at least {BLOCK}x{BLOCK}, got {image.shape}")
    image = image[: rows * BLOCK, : cols * BLOCK]
    mu_pristine, cov_pristine, window = pristine_model()
    per_scale = []
    for scale in (1, 2):
        # The first scale's moments in float32: MATLAB's published score for baboon (5.72957)
        # and BasicSR's (5.72958, float32 image, float64 after its resize) come out so; in
        # float64 throughout baboon scores 5.72996. The grid search over shapes turns rounding
        # at 1e-7 into a change in the fourth decimal, so the precision is part of the metric.
        mscn = normalised_coefficients(image, window, single=scale == 1)
        size = BLOCK // scale
        per_scale.append(
            [
                block_features(mscn[r * size : (r + 1) * size, c * size : (c + 1) * size])
                for c in range(cols)
                for r in range(rows)
            ]
        )
        if scale == 1:  # MATLAB's imresize of the double image, antialiased
            halved = imresize(torch.from_numpy(image / 255.0), scale=0.5)
            image = halved.numpy() * 255.0
    features = np.concatenate([np.asarray(f) for f in per_scale], axis=1)
    mu_distorted = np.nanmean(features, axis=0)
    complete = features[~np.isnan(features).any(axis=1)]
    # One block has no spread: its covariance is zero, as MATLAB's cov of one observation is.
    cov_distorted = np.cov(complete, rowvar=False) if len(complete) > 1 else np.zeros((36, 36))
    difference = mu_pristine - mu_distorted
    inverse = np.linalg.pinv((cov_pristine + cov_distorted) / 2)
    return float(np.sqrt(difference @ inverse @ difference))
