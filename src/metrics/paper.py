"""PSNR and SSIM scored the way SR papers score them, on top of torchmetrics.

The convention (see ``../shared/data/README.md`` and every table since SRCNN):

* the SR output is rounded to uint8 before scoring;
* ``border`` pixels (the scale factor) are cropped from every side of both images;
* scores are on the luma channel Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 (BT.601
  studio swing, R, G, B in 0..1), computed in float64 with no rounding, and on RGB;
* PSNR uses a peak of 255;
* SSIM uses an 11x11 Gaussian window (sigma 1.5, K1 = 0.01, K2 = 0.03) with *valid* filtering,
  i.e. no padded border enters the mean.

PSNR is 10 log10(peak^2 / MSE) in float64 (MATLAB's ``psnr``, BasicSR's ``calculate_psnr``;
torchmetrics' takes its logarithms in float32 and is up to 1.4e-6 dB off). SSIM
(:mod:`src.metrics.ssim`) is torchmetrics' formula with the separable window applied as two 1-D
passes (OpenCV's ``sepFilter2D`` on a CPU), in float64 on Y and on RGB; its values equal
torchmetrics' valid-region SSIM to float rounding on every benchmark image
(``tests/test_ssim_separable.py``). On a CPU both scores of Y and RGB come from one pass of
:func:`src.metrics.ssim.channel_sums`. ``make bench-eval`` times the scorer.

16-bit and single-channel data (``data.bit_depth=16``, ``data.channels=1``) keep the same
formulas at their own precision: values on the 0..65535 grid, PSNR with a peak of 65535, SSIM's
constants K1 and K2 times that peak, Y with its offset scaled alike (16 x 257); a single-channel
image is scored on its value (the Y and RGB columns then hold the same number).

Grayscale HR images (Set14's ``bridge``) are expanded to three equal channels and scored on that
Y: the convention of the IMDN, PAN, RCAN and SwinIR evaluations (``gray="expand"``). The bicubic,
SRCNN and VDSR rows that tables copy from older papers scored such images on the raw gray values
instead (``gray="raw"``): 20 log10(255/219) = 1.32 dB lower on that image, 0.094 dB on Set14.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from src.metrics.ssim import channel_sums, squared_error_per_channel
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


def peak_of(bit_depth: int) -> float:
    """The top of the 0..peak integer grid of a bit depth (255, 65535)."""
    return float(2**bit_depth - 1)


def batch_peak(batch: Mapping[str, Any]) -> float:
    """The scoring peak of a validation batch: from its ``bit_depth`` field (8 when absent)."""
    depths = batch.get("bit_depth")
    if depths is None:
        return PEAK
    values = {int(depth) for depth in torch.as_tensor(depths).reshape(-1).tolist()}
    if len(values) != 1:
        raise ValueError(f"a batch mixes bit depths {sorted(values)}")
    return peak_of(values.pop())


def convention(bit_depth: int, channels: int) -> str:
    """How an image of ``bit_depth`` bits and ``channels`` channels is scored, in words (for
    reports)."""
    on = "the single-channel value" if channels == 1 else "Y (BT.601) and RGB"
    return f"{bit_depth}-bit, on {on}, peak {peak_of(bit_depth):.0f}"


def to_levels(image: torch.Tensor, peak: float = PEAK) -> torch.Tensor:
    """Map [0, 1] floats to float64 values on the 0..peak integer grid (what saving a PNG of
    that depth does)."""
    return image.to(torch.float64, copy=True).mul_(peak).round_().clamp_(0.0, peak)


def to_uint8_levels(image: torch.Tensor) -> torch.Tensor:
    """Map [0, 1] floats to float64 values on the 0..255 integer grid (what saving a PNG does)."""
    return to_levels(image, PEAK)


def rgb_to_y(levels: torch.Tensor, peak: float = PEAK) -> torch.Tensor:
    """BT.601 studio-swing luma of (N, 3, H, W) RGB given on the 0..peak scale, in float64."""
    r, g, b = levels.to(torch.float64).unbind(dim=-3)
    # 16 + (w0 r + w1 g + w2 b) / 255 in that order, in place after the first product; the
    # offset is 16 levels of 255, i.e. 16 x peak / 255 (exactly 16.0 at 8 bits).
    y = r * Y_WEIGHTS[0]
    term = g * Y_WEIGHTS[1]
    y += term
    y += torch.mul(b, Y_WEIGHTS[2], out=term)
    return y.div_(255.0).add_(16.0 * peak / PEAK).unsqueeze(-3)


def crop_border(image: torch.Tensor, border: int) -> torch.Tensor:
    """Drop ``border`` pixels from each side of the last two dimensions."""
    if border <= 0:
        return image
    return image[..., border:-border, border:-border]


def psnr_from_squared_error(
    squared_error: torch.Tensor, pixels: int, peak: float = PEAK
) -> torch.Tensor:
    """PSNR, 10 log10(peak^2 / MSE), in float64 from the squared error summed over ``pixels``
    values (per image)."""
    mse = squared_error.to(torch.float64) / pixels
    return 10.0 * torch.log10(peak**2 / mse)


def psnr(preds: torch.Tensor, target: torch.Tensor, peak: float = PEAK) -> torch.Tensor:
    """Per-image PSNR of (N, C, H, W) tensors on the 0..peak scale, in float64 throughout.

    torchmetrics' PSNR (what SR Lab reported at 8 bits before) takes the logarithms of the peak
    and of 10 in float32: up to 1.4e-6 dB off this on the benchmark images, 2e-6 at 65535."""
    squared_error = squared_error_per_channel(preds, target).sum(dim=1)
    return psnr_from_squared_error(squared_error, preds[0].numel(), peak)


def gray_levels(levels: torch.Tensor) -> torch.Tensor:
    """Luma without studio swing: the gray value itself when R = G = B (weights sum to 1)."""
    r, g, b = levels.to(torch.float64).unbind(dim=-3)
    total = sum(Y_WEIGHTS)
    return ((Y_WEIGHTS[0] * r + Y_WEIGHTS[1] * g + Y_WEIGHTS[2] * b) / total).unsqueeze(-3)


def luma(levels: torch.Tensor, raw_gray: torch.Tensor | None, peak: float = PEAK) -> torch.Tensor:
    """Y of (N, 3, H, W) levels; images flagged in ``raw_gray`` get their gray value instead,
    and single-channel (N, 1, H, W) images are their own value."""
    if levels.shape[-3] == 1:
        return levels
    y = rgb_to_y(levels, peak)
    if raw_gray is None or not bool(raw_gray.any()):
        return y
    mask = raw_gray.to(device=levels.device, dtype=torch.bool).view(-1, 1, 1, 1)
    return torch.where(mask, gray_levels(levels), y)


def psnr_y(
    sr: torch.Tensor,
    hr: torch.Tensor,
    border: int,
    raw_gray: torch.Tensor | None = None,
    peak: float = PEAK,
) -> torch.Tensor:
    """PSNR_Y alone of (N, C, H, W) images in [0, 1], under the same convention as
    :func:`score_batch` (for captions, where SSIM would cost ten times more)."""
    sr_levels = crop_border(to_levels(sr, peak), border)
    hr_levels = crop_border(to_levels(hr, peak), border)
    return psnr(luma(sr_levels, raw_gray, peak), luma(hr_levels, raw_gray, peak), peak)


def score_batch(
    sr: torch.Tensor,
    hr: torch.Tensor,
    border: int,
    raw_gray: torch.Tensor | None = None,
    peak: float = PEAK,
) -> list[ImageScores]:
    """Score (N, C, H, W) SR against HR, both floats in [0, 1], under the papers' convention.

    ``raw_gray`` (N booleans) marks grayscale-file images to score on the gray value itself
    (the ``gray="raw"`` convention); by default every RGB image is scored on BT.601 Y, and a
    single-channel one (C = 1) on its value. ``peak`` is the top of the data's integer grid:
    255, or 65535 for 16-bit data (:func:`peak_of`).
    """
    if sr.shape != hr.shape:
        raise ValueError(f"SR shape {tuple(sr.shape)} differs from HR shape {tuple(hr.shape)}")
    # Cropped first and in the standard layout (a network's output may be channels-last): every
    # later pass then walks contiguous planes.
    sr_levels = to_levels(crop_border(sr, border).contiguous(), peak)
    hr_levels = to_levels(crop_border(hr, border).contiguous(), peak)
    sr_y, hr_y = luma(sr_levels, raw_gray, peak), luma(hr_levels, raw_gray, peak)
    # One channel: its value is its "Y" and its "RGB", scored once.
    pairs = [(sr_y, hr_y)] if sr.shape[-3] == 1 else [(sr_y, hr_y), (sr_levels, hr_levels)]
    on_y, *others = [
        (
            psnr_from_squared_error(sums.squared_error.sum(dim=1), image[0].numel(), peak),
            sums.ssim.mean(dim=1),
        )
        for (image, _), sums in zip(pairs, channel_sums(pairs, peak), strict=True)
    ]
    on_rgb = others[0] if others else on_y
    columns = (*on_y, *on_rgb)
    return [ImageScores(*(float(c[i]) for c in columns)) for i in range(sr.shape[0])]
