"""PSNR and SSIM scored the way SR papers score them, on top of torchmetrics.

The convention (see ``../shared/data/README.md`` and every table since SRCNN):

* the SR output is rounded to uint8 before scoring;
* ``border`` pixels (the scale factor) are cropped from every side of both images;
* scores are on the luma channel Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 (BT.601
  studio swing, R, G, B in 0..1), computed in float64 with no rounding, and on RGB;
* PSNR uses a peak of 255;
* SSIM uses an 11x11 Gaussian window (sigma 1.5, K1 = 0.01, K2 = 0.03) with *valid* filtering,
  i.e. no padded border enters the mean.

PSNR is torchmetrics'. SSIM (:mod:`src.metrics.ssim`) is torchmetrics' formula with the
separable window applied as two 1-D passes (OpenCV's ``sepFilter2D`` on a CPU), in float64 on Y
and on RGB; its values equal torchmetrics' valid-region SSIM to float rounding on every
benchmark image (``tests/test_ssim_separable.py``). ``make bench-eval`` times the scorer.

Grayscale HR images (Set14's ``bridge``) are expanded to three equal channels and scored on that
Y: the convention of the IMDN, PAN, RCAN and SwinIR evaluations (``gray="expand"``). The bicubic,
SRCNN and VDSR rows that tables copy from older papers scored such images on the raw gray values
instead (``gray="raw"``): 20 log10(255/219) = 1.32 dB lower on that image, 0.094 dB on Set14.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio

from src.metrics.ssim import ssim
from src.ops.color import Y_WEIGHTS

PEAK = 255.0
Gray = Literal["expand", "raw"]


@dataclass(frozen=True)
class ImageScores:
    """Scores of one SR image against its HR reference."""

    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    ssim_rgb: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


METRIC_NAMES: tuple[str, ...] = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")


def to_uint8_levels(image: torch.Tensor) -> torch.Tensor:
    """Map [0, 1] floats to float64 values on the 0..255 integer grid (what saving a PNG does)."""
    return image.to(torch.float64, copy=True).mul_(255.0).round_().clamp_(0.0, 255.0)


def rgb_to_y(levels: torch.Tensor) -> torch.Tensor:
    """BT.601 studio-swing luma of (N, 3, H, W) RGB given on the 0..255 scale, in float64."""
    r, g, b = levels.to(torch.float64).unbind(dim=-3)
    # 16 + (w0 r + w1 g + w2 b) / 255 in that order, in place after the first product.
    y = r * Y_WEIGHTS[0]
    term = g * Y_WEIGHTS[1]
    y += term
    y += torch.mul(b, Y_WEIGHTS[2], out=term)
    return y.div_(255.0).add_(16.0).unsqueeze(-3)


def crop_border(image: torch.Tensor, border: int) -> torch.Tensor:
    """Drop ``border`` pixels from each side of the last two dimensions."""
    if border <= 0:
        return image
    return image[..., border:-border, border:-border]


def psnr(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (peak 255) of (N, C, H, W) tensors on the 0..255 scale."""
    value = peak_signal_noise_ratio(preds, target, data_range=PEAK, dim=(1, 2, 3), reduction="none")
    return torch.as_tensor(value).reshape(-1)


def gray_levels(levels: torch.Tensor) -> torch.Tensor:
    """Luma without studio swing: the gray value itself when R = G = B (weights sum to 1)."""
    r, g, b = levels.to(torch.float64).unbind(dim=-3)
    total = sum(Y_WEIGHTS)
    return ((Y_WEIGHTS[0] * r + Y_WEIGHTS[1] * g + Y_WEIGHTS[2] * b) / total).unsqueeze(-3)


def luma(levels: torch.Tensor, raw_gray: torch.Tensor | None) -> torch.Tensor:
    """Y of (N, 3, H, W) levels; images flagged in ``raw_gray`` get their gray value instead."""
    y = rgb_to_y(levels)
    if raw_gray is None or not bool(raw_gray.any()):
        return y
    mask = raw_gray.to(device=levels.device, dtype=torch.bool).view(-1, 1, 1, 1)
    return torch.where(mask, gray_levels(levels), y)


def psnr_y(
    sr: torch.Tensor, hr: torch.Tensor, border: int, raw_gray: torch.Tensor | None = None
) -> torch.Tensor:
    """PSNR_Y alone of (N, 3, H, W) images in [0, 1], under the same convention as
    :func:`score_batch` (for captions, where SSIM would cost ten times more)."""
    sr_levels = crop_border(to_uint8_levels(sr), border)
    hr_levels = crop_border(to_uint8_levels(hr), border)
    return psnr(luma(sr_levels, raw_gray), luma(hr_levels, raw_gray))


def score_batch(
    sr: torch.Tensor, hr: torch.Tensor, border: int, raw_gray: torch.Tensor | None = None
) -> list[ImageScores]:
    """Score (N, 3, H, W) SR against HR, both floats in [0, 1], under the papers' convention.

    ``raw_gray`` (N booleans) marks grayscale-file images to score on the gray value itself
    (the ``gray="raw"`` convention); by default every image is scored on BT.601 Y.
    """
    if sr.shape != hr.shape:
        raise ValueError(f"SR shape {tuple(sr.shape)} differs from HR shape {tuple(hr.shape)}")
    # Cropped first and in the standard layout (a network's output may be channels-last): every
    # later pass then walks contiguous planes.
    sr_levels = to_uint8_levels(crop_border(sr, border).contiguous())
    hr_levels = to_uint8_levels(crop_border(hr, border).contiguous())
    sr_y, hr_y = luma(sr_levels, raw_gray), luma(hr_levels, raw_gray)
    columns = (
        psnr(sr_y, hr_y),
        ssim(sr_y, hr_y),
        psnr(sr_levels, hr_levels),
        ssim(sr_levels, hr_levels),
    )
    return [ImageScores(*(float(c[i]) for c in columns)) for i in range(sr.shape[0])]
