"""The separable SSIM equals torchmetrics' 2-D one (cropped to the valid region) within 1e-6.

torchmetrics' full 11x11 convolution is what SR Lab scored with before; it stays here as the
reference. Every benchmark image of ``../shared`` is checked at x2, x3 and x4 with bicubic SR
(Set5 at all three and Set14 at x3 in the default suite, the rest in the slow one), and random
images of odd sizes on both filter back-ends.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from src.data.images import read_rgb
from src.metrics import ssim as ssim_module
from src.metrics.paper import crop_border, luma, score_batch, to_uint8_levels
from src.metrics.ssim import HALF_WINDOW, ssim
from src.ops.imresize import imresize, modcrop

TOLERANCE = 1e-6


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


def benchmark_files(root: Path, set_name: str) -> list[Path]:
    return sorted((root / "benchmarks" / set_name / "HR").glob("*.png"))


@pytest.mark.shared
@pytest.mark.parametrize(("set_name", "scales"), [("Set5", (2, 3, 4)), ("Set14", (3,))])
def test_every_image_of_set5_and_set14_scores_as_before(shared_data: Path, set_name, scales):
    for path in benchmark_files(shared_data, set_name):
        for scale in scales:
            assert_scores_match_reference(*bicubic_pair(path, scale), border=scale)


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize(("set_name", "scales"), [("Set14", (2, 4)), ("B100", (2, 3, 4))])
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
    monkeypatch.setattr(ssim_module, "_ssim_cpu", ssim_module._ssim_conv)
    assert torch.allclose(ssim(preds, target).double(), expected, atol=tolerance, rtol=0)


def test_an_image_smaller_than_the_window_has_no_ssim():
    tiny = torch.zeros(1, 1, 10, 40, dtype=torch.float64)
    assert torch.isnan(ssim(tiny, tiny)).all()
