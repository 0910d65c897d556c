"""LDL's artifact loss (Liang et al., CVPR 2022): the map against the authors' formulation (the
variance of each unfolded, reflect-padded window), the loss in a GAN run, and its key checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from src.models.losses import ArtifactLoss, artifact_map, local_variance
from src.utils.schema import ConfigValueError, check_config
from tests.helpers import compose_config, run_module
from tests.test_gan import logged_keys, recipe_args


def unfolded_variance(image: torch.Tensor, window: int) -> torch.Tensor:
    """The unbiased variance of every reflect-padded window, window by window (the slow way)."""
    pad = window // 2
    padded = F.pad(image, (pad, pad, pad, pad), mode="reflect")
    windows = padded.unfold(2, window, 1).unfold(3, window, 1)
    return windows.var(dim=(-1, -2), unbiased=True)


@pytest.mark.parametrize("window", [3, 7])
def test_local_variance_equals_the_variance_of_each_window(window: int):
    image = torch.rand(2, 1, 23, 17, dtype=torch.float64) * 3
    expected = unfolded_variance(image, window)
    assert torch.allclose(local_variance(image, window), expected, atol=1e-12, rtol=0)


def test_the_map_weights_noisy_residuals_and_spares_what_the_ema_gets_wrong_too():
    generator = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 20, 20, generator=generator, dtype=torch.float64)
    sr = hr + 0.05 * torch.randn(hr.shape, generator=generator, dtype=torch.float64)
    sr_ema = hr + 0.05 * torch.randn(hr.shape, generator=generator, dtype=torch.float64)
    residual = (hr - sr).abs().sum(dim=1, keepdim=True)
    residual_ema = (hr - sr_ema).abs().sum(dim=1, keepdim=True)
    patch = residual.flatten(1).var(dim=1, unbiased=True).pow(0.2).view(-1, 1, 1, 1)
    expected = patch * unfolded_variance(residual, 7)
    expected[residual < residual_ema] = 0
    found = artifact_map(sr, hr, sr_ema)
    assert torch.allclose(found, expected, atol=1e-12, rtol=0)
    assert (found[residual < residual_ema] == 0).all() and (found > 0).any()


def test_the_loss_is_finite_pulls_sr_towards_hr_and_ignores_the_ema_gradient():
    generator = torch.Generator().manual_seed(1)
    hr = torch.rand(1, 3, 16, 16, generator=generator)
    sr = (hr + 0.1 * torch.randn(hr.shape, generator=generator)).requires_grad_()
    sr_ema = (hr + 0.02 * torch.randn(hr.shape, generator=generator)).requires_grad_()
    loss = ArtifactLoss()(sr, hr, sr_ema)
    loss.backward()
    assert loss > 0 and sr.grad is not None and torch.isfinite(sr.grad).all()
    assert sr_ema.grad is None
    with torch.no_grad():
        closer = hr + 0.5 * (sr - hr)
    assert ArtifactLoss()(closer, hr, sr_ema) < loss


def test_an_even_window_is_refused():
    with pytest.raises(ValueError, match="odd"):
        ArtifactLoss(6)


def test_an_esrgan_run_with_the_artifact_loss_logs_it(tmp_path: Path):
    run_dir = tmp_path / "run"
    args = [*recipe_args("esrgan_x4", run_dir, steps=2), "model.artifact_weight=1.0"]
    result = run_module("src.train", args, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {"train/g_artifact", "train/g_adversarial", "train/loss"} <= logged_keys(run_dir)


def test_the_artifact_loss_without_ema_is_one_error_line(tmp_path: Path):
    args = [
        *recipe_args("esrgan_x4", tmp_path / "run", steps=1),
        "model.artifact_weight=1.0",
        "model.ema_decay=null",
    ]
    cfg = compose_config("train", args, tmp_path)
    with pytest.raises(ConfigValueError, match=r"model\.artifact_weight .*model\.ema_decay"):
        check_config(cfg, "train")
    result = run_module("src.train", args, timeout=200)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr[-2000:]
    assert "model.ema_decay" in errors[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.artifact_weight=-1", "model.artifact_weight must be a number >= 0, got -1"),
        ("model.artifact_weight=much", "model.artifact_weight must be a number >= 0, got 'much'"),
        ("++model.artifact_window=6", "model.artifact_window must be an integer >= 3 and odd"),
        ("++model.artifact_window=1", "model.artifact_window must be an integer >= 3 and odd"),
    ],
)
def test_bad_artifact_settings_name_their_key(tmp_path: Path, override: str, message: str):
    args = [*recipe_args("esrgan_x4", tmp_path / "run", steps=1), override]
    with pytest.raises(ConfigValueError) as error:
        check_config(compose_config("train", args, tmp_path), "train")
    assert message in str(error.value)
