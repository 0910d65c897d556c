"""The separable SSIM equals torchmetrics' 2-D one (cropped to the valid region) within 1e-6;
PSNR is the float64 formula, within 2e-6 dB of torchmetrics' float32-logarithm one.

torchmetrics' full 11x11 convolution is what SR Lab scored with before; it stays here as the
reference. Every benchmark image of ``../shared`` is checked at x2, x3 and x4 with bicubic SR
(Set5 at all three and Set14 at x3 in the default suite, the rest in the slow one), and random
images of odd sizes on both filter back-ends.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from src.io.images import read_rgb
from src.metrics import ssim as ssim_module
from src.metrics.paper import crop_border, luma, score_batch, to_uint8_levels
from src.metrics.ssim import HALF_WINDOW, ssim
from src.ops.imresize import imresize, modcrop

TOLERANCE = 1e-6
PSNR_CHANGE = 2e-6


def reference_ssim(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """torchmetrics' SSIM map (reflection padded, 2-D window) with the padded margin dropped."""
    _, full = structural_similarity_index_measure(
        preds,
        target,
        gaussian_kernel=True,
        sigma=1.5,
        data_range=255.0,
        k1=0.01,
        k2=0.03,
        reduction="none",
        return_full_image=True,
    )
    return crop_border(torch.as_tensor(full), HALF_WINDOW).flatten(1).mean(dim=1)


def bicubic_pair(path: Path, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(SR, HR) in [0, 1]: the HR mod-cropped, SR its MATLAB bicubic down- and up-scale."""
    hr = modcrop(read_rgb(path), scale)
    hr_tensor = torch.from_numpy(hr.transpose(2, 0, 1).copy()).float().div(255)[None]
    lr = imresize(hr_tensor, scale=1 / scale).clamp(0, 1)
    return imresize(lr, scale=float(scale)).clamp(0, 1), hr_tensor


def assert_scores_match_reference(sr: torch.Tensor, hr: torch.Tensor, border: int) -> None:
    sr_levels = crop_border(to_uint8_levels(sr), border)
    hr_levels = crop_border(to_uint8_levels(hr), border)
    sr_y, hr_y = luma(sr_levels, None), luma(hr_levels, None)
    scores = score_batch(sr, hr, border=border)[0]
    assert scores.ssim_y == pytest.approx(float(reference_ssim(sr_y, hr_y)), abs=TOLERANCE)
    expected_rgb = float(reference_ssim(sr_levels, hr_levels))
    assert scores.ssim_rgb == pytest.approx(expected_rgb, abs=TOLERANCE)
    # PSNR: the float64 formula, and within 2e-6 dB of torchmetrics' (what SR Lab reported
    # before; it takes its logarithms in float32).
    for ours, x, y in ((scores.psnr_y, sr_y, hr_y), (scores.psnr_rgb, sr_levels, hr_levels)):
        mse = float((x - y).square().mean())
        assert ours == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-10)
        before = peak_signal_noise_ratio(x, y, data_range=255.0)
        assert ours == pytest.approx(float(before), abs=PSNR_CHANGE)


def benchmark_files(root: Path, set_name: str) -> list[Path]:
    return sorted((root / "benchmarks" / set_name / "HR").glob("*.png"))


@pytest.mark.shared
@pytest.mark.parametrize(("set_name", "scales"), [("Set5", (2, 3, 4))])
def test_every_image_of_set5_scores_as_before(shared_data: Path, set_name, scales):
    for path in benchmark_files(shared_data, set_name):
        for scale in scales:
            assert_scores_match_reference(*bicubic_pair(path, scale), border=scale)


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize(("set_name", "scales"), [("Set14", (2, 3, 4)), ("B100", (2, 3, 4))])
def test_every_set14_and_b100_image_scores_as_before(shared_data: Path, set_name, scales):
    for path in benchmark_files(shared_data, set_name):
        for scale in scales:
            assert_scores_match_reference(*bicubic_pair(path, scale), border=scale)


@pytest.mark.parametrize("size", [(11 + 2 * 2, 11 + 2 * 2), (37, 101), (64, 63)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_random_odd_sizes_match_on_both_filter_backends(size: tuple[int, int], dtype, monkeypatch):
    rng = np.random.default_rng(sum(size))
    x = rng.integers(0, 256, (2, 3, *size)).astype(np.float64)
    y = np.clip(x + rng.normal(0, 25, x.shape), 0, 255).round()
    preds, target = torch.from_numpy(x).to(dtype), torch.from_numpy(y).to(dtype)
    expected = reference_ssim(preds.double(), target.double())
    tolerance = TOLERANCE if dtype == torch.float64 else 1e-5
    assert torch.allclose(ssim(preds, target).double(), expected, atol=tolerance, rtol=0)
    # The conv2d back-end (used on GPUs), forced on the CPU.
    monkeypatch.setattr(ssim_module, "_opencv_applies", lambda pairs: False)
    assert torch.allclose(ssim(preds, target).double(), expected, atol=tolerance, rtol=0)


def test_an_image_smaller_than_the_window_has_no_ssim():
    tiny = torch.zeros(1, 1, 10, 40, dtype=torch.float64)
    assert torch.isnan(ssim(tiny, tiny)).all()


@pytest.mark.parametrize("opencv", [True, False])
def test_pairs_scored_together_equal_each_scored_alone(opencv: bool, monkeypatch):
    # score_batch scores Y and RGB in one pass of the pool; the squared error comes with it.
    if not opencv:
        monkeypatch.setattr(ssim_module, "_opencv_applies", lambda pairs: False)
    rng = np.random.default_rng(5)
    shapes = [(2, 1, 150, 41), (2, 3, 150, 41), (1, 3, 8, 30)]
    pairs = []
    for shape in shapes:
        x = rng.integers(0, 256, shape).astype(np.float64)
        y = np.clip(x + rng.normal(0, 12, shape), 0, 255).round()
        pairs.append((torch.from_numpy(x), torch.from_numpy(y)))
    together = ssim_module.channel_sums(pairs)
    for (x, y), sums in zip(pairs, together, strict=True):
        (alone,) = ssim_module.channel_sums([(x, y)])
        assert torch.equal(sums.ssim.isnan(), alone.ssim.isnan())
        assert torch.allclose(sums.ssim, alone.ssim, atol=0, rtol=0, equal_nan=True)
        expected = (x - y).square().flatten(2).sum(dim=2)
        assert torch.allclose(sums.squared_error, expected, atol=1e-9, rtol=0)
    assert together[2].ssim.isnan().all()  # 8 rows: smaller than the window
