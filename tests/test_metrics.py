"""PSNR/SSIM under the papers' convention, checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from src.metrics.paper import crop_border, rgb_to_y, score_batch, to_uint8_levels
from src.metrics.ssim import ssim


def gray(level: float, size: int = 16) -> torch.Tensor:
    """A (1, 3, size, size) image of one grey level given on the 0..255 scale."""
    return torch.full((1, 3, size, size), level / 255.0, dtype=torch.float64)


# PSNR is 10 log10(255^2 / MSE) in float64 (MATLAB's psnr, BasicSR's calculate_psnr);
# torchmetrics' own, which takes log(255) and log(10) in float32, is up to 1.4e-6 dB off.
PSNR_TOL = 1e-10


def test_psnr_of_constant_images_matches_hand_computation():
    # RGB: every channel differs by 10 levels -> MSE 100 -> 10 log10(255^2 / 100) = 28.1308 dB.
    # Y: 16 + 219.0 * 10 / 255 vs 16 -> difference 8.5882..., PSNR = 29.4527 dB.
    scores = score_batch(gray(10), gray(0), border=2)[0]
    assert scores.psnr_rgb == pytest.approx(10 * math.log10(255**2 / 100), abs=PSNR_TOL)
    assert scores.psnr_rgb == pytest.approx(28.1308, abs=1e-4)
    dy = (65.481 + 128.553 + 24.966) * 10 / 255
    assert scores.psnr_y == pytest.approx(10 * math.log10(255**2 / dy**2), abs=PSNR_TOL)
    assert scores.psnr_y == pytest.approx(29.4527, abs=1e-4)


def test_psnr_is_the_float64_formula_on_images_of_any_height():
    # Heights around the SSIM row pieces (each piece also sums the squared error of its rows).
    rng = np.random.default_rng(3)
    for height in (9, 11, 138, 139, 140, 300):
        hr = rng.integers(0, 256, (2, 3, height, 37)).astype(np.float64)
        sr = np.clip(hr + rng.normal(0, 9, hr.shape), 0, 255).round()
        scores = score_batch(torch.from_numpy(sr / 255), torch.from_numpy(hr / 255), border=0)
        for index, image in enumerate(scores):
            mse = np.mean((sr[index] - hr[index]) ** 2)
            assert image.psnr_rgb == pytest.approx(10 * math.log10(255**2 / mse), abs=PSNR_TOL)


def test_ssim_of_constant_images_matches_formula():
    # No variance: SSIM = (2 a b + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * 255)^2.
    c1 = (0.01 * 255) ** 2
    a, b = 16.0, 16 + 219.0 * 10 / 255
    scores = score_batch(gray(10), gray(0), border=0)[0]
    assert scores.ssim_y == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-9)
    assert score_batch(gray(7), gray(7), border=0)[0].ssim_rgb == pytest.approx(1.0)


def test_ssim_uses_valid_filtering_like_matlab():
    # skimage with Gaussian weights crops the (win - 1) / 2 margin: MATLAB's valid filtering.
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (24, 30)).astype(np.float64)
    y = np.clip(x + rng.normal(0, 20, x.shape), 0, 255).round()
    expected = structural_similarity(
        x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    ours = ssim(torch.from_numpy(x)[None, None], torch.from_numpy(y)[None, None])
    assert float(ours) == pytest.approx(expected, abs=1e-10)


def test_y_channel_is_bt601_studio_swing():
    rgb = torch.tensor([255.0, 255.0, 255.0]).view(1, 3, 1, 1)
    assert float(rgb_to_y(rgb)) == pytest.approx(235.0, abs=1e-9)
    assert float(rgb_to_y(torch.zeros(1, 3, 1, 1))) == pytest.approx(16.0)
    red = torch.tensor([255.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert float(rgb_to_y(red)) == pytest.approx(16 + 65.481)


def test_sr_is_rounded_to_uint8_before_scoring():
    hr = gray(100)
    almost = gray(100.4)  # rounds to 100: a perfect score
    assert math.isinf(score_batch(almost, hr, border=0)[0].psnr_rgb)
    assert to_uint8_levels(torch.tensor([1.2, -0.1, 0.5])).tolist() == [255.0, 0.0, 128.0]


def test_border_is_cropped():
    hr = gray(0, size=12)
    sr = hr.clone()
    sr[..., :3, :] = 1.0  # only the top 3 rows differ
    assert math.isinf(score_batch(sr, hr, border=3)[0].psnr_rgb)
    assert not math.isinf(score_batch(sr, hr, border=2)[0].psnr_rgb)
    assert crop_border(torch.zeros(1, 1, 10, 8), 2).shape == (1, 1, 6, 4)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="differs"):
        score_batch(gray(0, 8), gray(0, 10), border=2)


def test_bicubic_baseline_follows_the_models_gray_convention():
    from src.metrics.baseline import bicubic_scores

    torch.manual_seed(0)
    gray_hr = torch.rand(1, 1, 24, 24).repeat(1, 3, 1, 1)
    batch = {"lr": gray_hr[..., ::2, ::2].contiguous(), "hr": gray_hr, "gray": torch.tensor([True])}
    expand = bicubic_scores([batch], 2)
    raw = bicubic_scores([batch], 2, gray="raw")
    # Raw gray levels span 0-255 where Y spans 16-235: the same error costs 20 log10(255/219) dB.
    assert expand["psnr_y"] - raw["psnr_y"] == pytest.approx(20 * math.log10(255 / 219), abs=0.05)
