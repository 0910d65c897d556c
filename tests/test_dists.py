"""DISTS: its L2 pooling, its weight files in the authors' layout and its registry wiring.

Agreement with the authors' DISTS-pytorch 0.1 forward (same VGG16, their alpha/beta) was
checked outside the suite, which holds neither torchvision nor their files: 1.2e-7 at most.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from src.archs.vgg_features import VGGFeatures
from src.io.weights import PUBLISHED
from src.metrics.dists import CHANNELS, DISTS, STAGES, L2Pool
from src.metrics.registry import LOWER_IS_BETTER, build_metrics, columns_of
from src.metrics.report import markdown_table, summarize
from src.utils.errors import UserError


def levels(*shape: int) -> torch.Tensor:
    """Random images on 8-bit levels, as scores see SR."""
    return torch.rand(*shape).mul(255).round().div(255)


def published_folder(folder: Path, learned: dict[str, torch.Tensor]) -> Path:
    """A folder as ``metric_weights=DIR`` expects it: random VGG16 features under torchvision's
    file name and ``learned`` under DISTS's, in the authors' layout."""
    vgg = VGGFeatures(STAGES, "vgg16")
    torch.save(vgg.state_dict(), folder / PUBLISHED["vgg16"].name)
    torch.save(learned, folder / PUBLISHED["dists"].name)
    return folder


def authors_layout() -> dict[str, torch.Tensor]:
    shape = (1, sum(CHANNELS), 1, 1)
    return {"alpha": torch.rand(shape) * 0.02, "beta": torch.rand(shape) * 0.02}


def test_l2_pooling_uses_the_official_hanning_window():
    taps = np.hanning(5)[1:-1]
    official = taps[:, None] * taps[None, :]
    official /= official.sum()
    window = L2Pool(4).window
    assert window.shape == (4, 1, 3, 3)
    for channel in window:
        np.testing.assert_allclose(channel[0].numpy(), official, atol=1e-7)
    flat = L2Pool(2)(torch.full((1, 2, 77, 64), 0.5))
    assert flat.shape == (1, 2, 39, 32)  # 3x3, stride 2, one pixel of padding
    assert torch.allclose(flat[..., 1:-1, 1:-1], torch.tensor(0.5))


def test_dists_loads_a_folder_and_is_zero_symmetric_and_bounded(tmp_path: Path):
    torch.manual_seed(0)
    learned = authors_layout()
    network = DISTS(str(published_folder(tmp_path, learned)))
    network.prepare()
    assert torch.equal(network.alpha, learned["alpha"]) and torch.equal(
        network.beta, learned["beta"]
    )
    x, y = levels(2, 3, 32, 32), levels(2, 3, 32, 32)
    noisy = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    same, forward, backward, near = network(
        torch.cat([x, x, y, x]), torch.cat([x, y, x, noisy])
    ).split(2)
    assert same.abs().max() < 1e-6
    assert torch.allclose(forward, backward, atol=1e-6)
    assert bool(((forward >= 0) & (forward <= 1)).all())
    assert bool((near < forward).all())


def test_alpha_and_beta_in_another_layout_are_refused():
    with pytest.raises(UserError, match=r"metric_weights: the DISTS file needs beta of shape"):
        DISTS("random").load_alpha_beta({"alpha": torch.ones(1, 1475, 1, 1)})


def test_dists_is_a_lower_is_better_column_of_the_registry(tmp_path: Path, capsys):
    (metric,) = build_metrics(["psnr", "dists"], weights="random")
    x = levels(2, 3, 36, 36)
    values = metric(x, x, border=2)["dists"]
    assert len(values) == 2 and max(abs(v) for v in values) < 1e-6
    assert "metric_weights=random" in capsys.readouterr().err
    assert "dists" in LOWER_IS_BETTER and columns_of([metric])[-1] == "dists"
    records = [{"set": "A", "name": "x", "psnr_y": 30.0, "dists": 0.2}]
    assert "| DISTS ↓ |" in markdown_table(summarize(records))
    with pytest.raises(UserError, match="compares with HR images"):
        metric(x, None, border=0)
    (missing,) = build_metrics(["dists"], weights=str(tmp_path))
    with pytest.raises(UserError, match=r"metric_weights=.*no such file"):
        missing.prepare()
