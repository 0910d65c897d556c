"""SMFANet and SMFANet+: shapes on odd and tiny inputs, parameter counts against the paper and the
released files, strict loading of the authors' x2 weights, and Set5 x2 through SR Lab's scoring."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.archs.smfanet import SMFANet
from src.models.pretrained import import_weights, read_state_dict
from tests.arch_checks import (
    assert_near_published,
    assert_same_weights,
    assert_scaled_finite_output,
    parameter_count,
)
from tests.test_benchmarks import run_eval

# conf/model name -> the network's sizes there.
VARIANTS: dict[str, dict[str, int]] = {
    "smfanet": {"dim": 36, "n_blocks": 8},
    "smfanet_plus": {"dim": 48, "n_blocks": 12},
}

# The authors' x2 files (../shared/weights/Zheng-MJ_SMFANet): file-name stem per config.
WEIGHTS_DIR = "Zheng-MJ_SMFANet"
FILE_STEMS = {"smfanet": "SMFANet", "smfanet_plus": "SMFANet_plus"}
TRAINING_SETS = ("DF2K", "DIV2K")
RELEASED_X2 = [
    (model, f"{stem}_{data}_100w_x2SR.pth")
    for model, stem in FILE_STEMS.items()
    for data in TRAINING_SETS
]

# x4 parameter counts of the paper's complexity figure (Zheng-MJ/SMFANet, plt/main_complexity.py:
# 197K and 496K).
PAPER_X4_PARAMETERS = {"smfanet": 197_000, "smfanet_plus": 496_000}

# Set5 x2 PSNR_Y / SSIM_Y of the DF2K files, measured through src.eval. The paper's own Set5 x2
# figures are in the README's table images only and have not been transcribed here.
SET5_X2_DF2K = {"smfanet": (38.0776, 0.9607), "smfanet_plus": (38.1852, 0.9611)}
PSNR_TOLERANCE_DB = 0.02
SSIM_TOLERANCE = 0.0005


def build(model: str, scale: int) -> SMFANet:
    return SMFANet(scale, **VARIANTS[model])


@pytest.mark.parametrize("model", list(VARIANTS))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_odd_sized_input_gives_scaled_finite_output(model: str, scale: int) -> None:
    torch.manual_seed(0)
    net = build(model, scale)
    assert_scaled_finite_output(net, torch.rand(1, 3, 37, 53), scale)


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (7, 40)])
def test_inputs_under_the_pooling_factor_work(size: tuple[int, int]) -> None:
    """The official network fails below 8 px (and NaNs on one pixel); this one does not."""
    net = build("smfanet", 2)
    assert_scaled_finite_output(net, torch.rand(2, 3, *size), 2)


def test_one_training_step_reaches_every_parameter() -> None:
    net = SMFANet(2, dim=12, n_blocks=2)
    loss = net(torch.rand(2, 3, 16, 20)).abs().mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("model", list(VARIANTS))
def test_x4_parameter_count_matches_paper(model: str) -> None:
    assert_near_published(parameter_count(build(model, 4)), PAPER_X4_PARAMETERS[model], 0.005)


@pytest.mark.shared
@pytest.mark.parametrize(("model", "filename"), RELEASED_X2, ids=[f for _, f in RELEASED_X2])
def test_released_x2_file_loads_strictly(model: str, filename: str, shared_weights: Path) -> None:
    path = shared_weights / WEIGHTS_DIR / filename
    state = read_state_dict(path)
    net = build(model, 2)
    assert set(state) == set(net.state_dict())
    assert parameter_count(net) == sum(tensor.numel() for tensor in state.values())
    import_weights(net, path)
    assert_same_weights(net, state)


@pytest.mark.shared
@pytest.mark.parametrize("model", list(SET5_X2_DF2K))
def test_df2k_x2_weights_reproduce_set5(
    model: str, shared_data: Path, shared_weights: Path, tmp_path: Path
) -> None:
    filename = f"{FILE_STEMS[model]}_DF2K_100w_x2SR.pth"
    overrides = [
        f"model={model}",
        "scale=2",
        "data.sets=[Set5]",
        f"model.pretrained={shared_weights / WEIGHTS_DIR / filename}",
    ]
    (set5,) = run_eval(tmp_path, shared_data, overrides).values()
    psnr, ssim = SET5_X2_DF2K[model]
    assert abs(set5.psnr_y - psnr) <= PSNR_TOLERANCE_DB, f"{set5.psnr_y:.4f} dB, expected {psnr}"
    assert abs(set5.ssim_y - ssim) <= SSIM_TOLERANCE
