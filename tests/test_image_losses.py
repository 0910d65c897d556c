"""The structure, frequency, colour and DISTS losses of ``conf/loss`` (src/models/image_losses.py,
``DISTSLoss`` in src/models/losses.py).

Each value is compared with the formula written out again here, in numpy or plain float64 torch,
on small tensors; then the conf entries compose, describe themselves for checkpoints, train two
steps and load back, and bad settings stop with one ``error:`` line.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from src.models.image_losses import (
    WANG_BETAS,
    ChromaLoss,
    FFTLoss,
    FocalFrequencyLoss,
    GradientVarianceLoss,
    LumaLoss,
    MSSSIMLoss,
    msssim_min_side,
)
from src.models.losses import CompositeLoss, DISTSLoss, prepare_weights, torch_loss_arguments
from src.models.targets import config_aliases
from src.utils.construction import construction_config
from src.utils.errors import UserError
from tests.helpers import TINY, compose_config, one_error_line, run_in_process
from tests.test_ddp import last_logged
from tests.test_dists import authors_layout, published_folder

LOSS_ENTRIES = {
    "msssim_l1": "msssim",
    "focal_frequency": "focal_frequency",
    "fft": "fft",
    "chroma": "chroma",
    "luma": "luma",
    "dists": "dists",
    "gradient_variance": "gradient_variance",
}
DISTS_RANDOM = "model.loss.terms.dists.loss.weights=random"


def image_pair(
    *shape: int, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """An HR image and a noisy SR of it, in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    hr = torch.rand(*shape, generator=generator, dtype=torch.float64)
    sr = (hr + 0.1 * torch.randn(*shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
    return sr.to(dtype), hr.to(dtype)


# Each loss at settings that suit 16-px test images, built inside the test that takes it.
EVERY_LOSS: dict[str, Callable[[], nn.Module]] = {
    "msssim": lambda: MSSSIMLoss(scales=2),
    "focal_frequency": FocalFrequencyLoss,
    "fft": FFTLoss,
    "luma": LumaLoss,
    "chroma": lambda: ChromaLoss(pool=2),
    "gradient_variance": lambda: GradientVarianceLoss(patch_size=4),
    "dists": lambda: DISTSLoss(weights="random"),
}


# --- MS-SSIM ------------------------------------------------------------------------------------
def gaussian_window() -> torch.Tensor:
    taps = torch.arange(11, dtype=torch.float64) - 5
    kernel = torch.exp(-(taps**2) / (2 * 1.5**2))
    kernel = kernel / kernel.sum()
    return kernel[:, None] * kernel[None, :]


def reference_msssim(x: torch.Tensor, y: torch.Tensor, betas: tuple[float, ...]) -> torch.Tensor:
    """Wang et al.'s MS-SSIM in float64, with torchmetrics' conventions: reflected borders, the
    contrast-structure terms averaged inside the 5-px border, the last scale's SSIM over the whole
    map, each scale's mean clipped at 0 ("relu"), 2 x 2 average pooling between scales."""
    c1, c2 = 0.01**2, 0.03**2
    channels = x.shape[1]
    window = gaussian_window().expand(channels, 1, 11, 11)
    factors = []
    for index, beta in enumerate(betas):

        def blur(image: torch.Tensor) -> torch.Tensor:
            padded = F.pad(image, (5, 5, 5, 5), mode="reflect")
            return F.conv2d(padded, window, groups=channels)

        mu_x, mu_y = blur(x), blur(y)
        var_x = (blur(x * x) - mu_x**2).clamp(min=0)
        var_y = (blur(y * y) - mu_y**2).clamp(min=0)
        covariance = blur(x * y) - mu_x * mu_y
        contrast = (2 * covariance + c2) / (var_x + var_y + c2)
        if index == len(betas) - 1:
            luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
            value = (luminance * contrast).mean(dim=(1, 2, 3))
        else:
            value = contrast[..., 5:-5, 5:-5].mean(dim=(1, 2, 3))
        factors.append(value.clamp(min=0) ** beta)
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return torch.stack(factors).prod(dim=0).mean()


@pytest.mark.parametrize("scales", [1, 2, 3])
def test_msssim_loss_is_one_minus_an_independent_msssim(scales: int):
    side = msssim_min_side(scales)
    sr, hr = image_pair(2, 3, side, side + 3, dtype=torch.float64)
    kept = WANG_BETAS[:scales]
    expected = 1 - reference_msssim(sr, hr, tuple(b / sum(kept) for b in kept))
    assert float(MSSSIMLoss(scales)(sr, hr)) == pytest.approx(float(expected), abs=2e-6)


def test_msssim_min_sides_are_what_torchmetrics_accepts():
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    for scales in range(1, 6):
        side = msssim_min_side(scales)
        betas = WANG_BETAS[:scales]
        ok = torch.rand(1, 1, side, side)
        multiscale_structural_similarity_index_measure(ok, ok, data_range=1.0, betas=betas)
        short = torch.rand(1, 1, side - 1, side)
        with pytest.raises((ValueError, RuntimeError)):  # its check, or the reflection padding
            multiscale_structural_similarity_index_measure(
                short, short, data_range=1.0, betas=betas
            )
    assert [msssim_min_side(n) for n in range(1, 6)] == [11, 12, 44, 99, 176]


def test_msssim_patches_too_small_name_the_key_and_the_sizes():
    sr, hr = image_pair(1, 3, 96, 96)
    with pytest.raises(UserError) as error:
        MSSSIMLoss(5, key="model.loss.terms.msssim.loss.scales")(sr, hr)
    assert str(error.value) == (
        "model.loss.terms.msssim.loss.scales=5 needs HR patches of at least 176 px a side, got "
        "96x96: set model.loss.terms.msssim.loss.scales=3 or raise data.lr_patch_size"
    )


# --- frequency losses ---------------------------------------------------------------------------
def reference_focal_frequency(
    x: np.ndarray,
    y: np.ndarray,
    alpha: float,
    factor: int,
    ave_spectrum: bool,
    log_matrix: bool,
    batch_matrix: bool,
) -> float:
    """Jiang et al.'s loss in numpy, tile by tile as the authors cut them."""
    _, _, h, w = x.shape
    th, tw = h // factor, w // factor

    def spectrum(image: np.ndarray) -> np.ndarray:
        tiles = [
            image[:, :, i * th : (i + 1) * th, j * tw : (j + 1) * tw]
            for i, j in itertools.product(range(factor), range(factor))
        ]
        freq = np.fft.fft2(np.stack(tiles, axis=1), norm="ortho")
        return freq.mean(axis=0, keepdims=True) if ave_spectrum else freq

    squared = np.abs(spectrum(x) - spectrum(y)) ** 2
    weights = np.sqrt(squared) ** alpha
    if log_matrix:
        weights = np.log(weights + 1.0)
    with np.errstate(invalid="ignore"):
        if batch_matrix:
            weights = weights / weights.max()
        else:
            weights = weights / weights.max(axis=(-2, -1), keepdims=True)
    weights = np.clip(np.nan_to_num(weights, nan=0.0), 0.0, 1.0)
    return float(np.mean(weights * squared))


@pytest.mark.parametrize(
    ("alpha", "factor", "ave_spectrum", "log_matrix", "batch_matrix"),
    [
        (1.0, 1, False, False, False),
        (2.0, 2, False, True, False),
        (0.5, 2, True, False, True),
    ],
)
def test_focal_frequency_loss_matches_the_formula(
    alpha: float, factor: int, ave_spectrum: bool, log_matrix: bool, batch_matrix: bool
):
    sr, hr = image_pair(3, 2, 8, 12)
    loss = FocalFrequencyLoss(alpha, factor, ave_spectrum, log_matrix, batch_matrix)
    expected = reference_focal_frequency(
        sr.double().numpy(),
        hr.double().numpy(),
        alpha,
        factor,
        ave_spectrum,
        log_matrix,
        batch_matrix,
    )
    assert float(loss(sr, hr)) == pytest.approx(expected, rel=1e-5)


def test_focal_frequency_tiles_must_divide_the_image():
    sr, hr = image_pair(1, 3, 9, 8)
    with pytest.raises(UserError, match="patch_factor=2 must divide the image sides, got 9x8"):
        FocalFrequencyLoss(patch_factor=2)(sr, hr)


@pytest.mark.parametrize("norm", ["backward", "ortho", "forward"])
def test_fft_loss_is_the_l1_of_real_and_imaginary_parts(norm: str):
    sr, hr = image_pair(2, 3, 6, 9)
    difference = np.fft.rfft2(sr.double().numpy(), norm=norm) - np.fft.rfft2(
        hr.double().numpy(), norm=norm
    )
    expected = np.mean(np.concatenate([np.abs(difference.real), np.abs(difference.imag)]))
    assert float(FFTLoss(norm)(sr, hr)) == pytest.approx(float(expected), rel=1e-5)  # type: ignore[arg-type]


# --- colour -------------------------------------------------------------------------------------
def bt601(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MATLAB's rgb2ycbcr on [0, 1] RGB (N, 3, H, W), in [0, 1] units."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    y = (16 + 65.481 * r + 128.553 * g + 24.966 * b) / 255
    cb = (128 - 37.797 * r - 74.203 * g + 112.0 * b) / 255
    cr = (128 + 112.0 * r - 93.786 * g - 18.214 * b) / 255
    return y, cb, cr


def pooled(plane: np.ndarray, size: int) -> np.ndarray:
    n, h, w = plane.shape
    return (
        plane[:, : h // size * size, : w // size * size]
        .reshape(n, h // size, size, w // size, size)
        .mean(axis=(2, 4))
    )


def test_luma_loss_compares_bt601_y():
    sr, hr = image_pair(2, 3, 5, 7)
    y_sr, y_hr = bt601(sr.double().numpy())[0], bt601(hr.double().numpy())[0]
    assert float(LumaLoss()(sr, hr)) == pytest.approx(np.abs(y_sr - y_hr).mean(), rel=1e-5)
    assert float(LumaLoss("l2")(sr, hr)) == pytest.approx(((y_sr - y_hr) ** 2).mean(), rel=1e-5)


@pytest.mark.parametrize("pool", [1, 2])
def test_chroma_loss_compares_pooled_bt601_cb_and_cr(pool: int):
    sr, hr = image_pair(2, 3, 6, 9)
    one, other = bt601(sr.double().numpy()), bt601(hr.double().numpy())
    differences = [pooled(one[k], pool) - pooled(other[k], pool) for k in (1, 2)]
    expected = np.mean(np.abs(np.stack(differences)))
    assert float(ChromaLoss(pool=pool)(sr, hr)) == pytest.approx(float(expected), rel=1e-5)


def test_colour_losses_refuse_single_channel_images():
    sr, hr = image_pair(1, 1, 8, 8)
    for loss in (LumaLoss(), ChromaLoss()):
        with pytest.raises(UserError, match="needs RGB images, got 1 channel"):
            loss(sr, hr)


# --- gradient variance --------------------------------------------------------------------------
def reference_gradient_variance(x: np.ndarray, y: np.ndarray, patch: int) -> float:
    """Abrahamyan et al.'s loss with explicit loops: gray, Sobel with zero padding,
    non-overlapping patches, unbiased variances, the MSE for x plus the MSE for y."""
    sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
    sobel_y = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)

    def variances(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        gray = 0.2989 * image[:, 0] + 0.5870 * image[:, 1] + 0.1140 * image[:, 2]
        n, h, w = gray.shape
        padded = np.pad(gray, ((0, 0), (1, 1), (1, 1)))
        gradient = np.zeros_like(gray)
        for a, b in itertools.product(range(3), range(3)):
            gradient += kernel[a, b] * padded[:, a : a + h, b : b + w]
        out = []
        for i, j in itertools.product(range(h // patch), range(w // patch)):
            block = gradient[:, i * patch : (i + 1) * patch, j * patch : (j + 1) * patch]
            out.append(block.reshape(n, -1).var(axis=1, ddof=1))
        return np.stack(out, axis=1)

    return sum(float(np.mean((variances(x, k) - variances(y, k)) ** 2)) for k in (sobel_x, sobel_y))


def test_gradient_variance_loss_matches_the_formula():
    sr, hr = image_pair(2, 3, 11, 13)  # a remainder at the right and bottom is left out
    expected = reference_gradient_variance(sr.double().numpy(), hr.double().numpy(), 4)
    assert float(GradientVarianceLoss(4)(sr, hr)) == pytest.approx(expected, rel=1e-4)


# --- DISTS as a loss ----------------------------------------------------------------------------
def test_dists_loss_is_the_metrics_batch_mean_frozen_and_out_of_the_state_dict(tmp_path: Path):
    folder = published_folder(tmp_path, authors_layout())
    loss = DISTSLoss(weights=str(folder))
    composite = CompositeLoss({"dists": {"loss": loss, "weight": 0.25}})
    prepare_weights(composite)  # what the module does once per node before training
    learned = torch.load(folder / "dists_weights.pt", weights_only=True)
    assert torch.equal(loss.dists.alpha, learned["alpha"])
    assert composite.state_dict() == {}  # checkpoints carry none of its weights
    sr, hr = image_pair(2, 3, 32, 32)
    assert float(loss(sr, hr)) == pytest.approx(float(loss.dists(sr, hr).mean()), abs=1e-7)
    assert all(not p.requires_grad for p in loss.dists.parameters())


def test_dists_loss_gradient_is_the_derivative_of_its_value():
    loss = DISTSLoss(weights="random")
    sr, hr = image_pair(1, 3, 16, 16)
    sr.requires_grad_(True)
    loss(sr, hr).backward()
    assert sr.grad is not None
    direction = sr.grad / sr.grad.norm()
    step = 1e-2
    with torch.no_grad():
        ahead, behind = loss(sr + step * direction, hr), loss(sr - step * direction, hr)
    slope = float((ahead - behind) / (2 * step))
    assert slope == pytest.approx(float(sr.grad.norm()), rel=0.02)


# --- shared properties --------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(EVERY_LOSS))
def test_each_loss_is_zero_for_identical_images_and_positive_otherwise(name: str):
    loss = EVERY_LOSS[name]()
    sr, hr = image_pair(2, 3, 16, 16)
    assert float(loss(hr, hr)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(sr, hr)) > 1e-4


@pytest.mark.parametrize("name", sorted(EVERY_LOSS))
def test_each_loss_sends_gradients_to_sr_only_even_under_bf16_autocast(name: str):
    loss = EVERY_LOSS[name]()
    sr, hr = image_pair(2, 3, 16, 16)
    sr.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(sr, hr)
    value.backward()
    assert sr.grad is not None and torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())
    if name != "dists":  # computed in float32 with autocast off (DISTS's VGG runs as VGG does)
        assert float(value) == pytest.approx(float(loss(sr, hr)), rel=1e-6)


@pytest.mark.parametrize("name", sorted(EVERY_LOSS))
def test_each_loss_takes_clips_as_their_frames(name: str):
    loss = EVERY_LOSS[name]()
    sr, hr = image_pair(2, 2, 3, 16, 16)
    frames = loss(sr.flatten(0, 1), hr.flatten(0, 1))
    assert float(loss(sr, hr)) == pytest.approx(float(frames), rel=1e-5, abs=1e-7)


# --- conf entries -------------------------------------------------------------------------------
def built_loss(entry: str, tmp_path: Path, *overrides: str) -> nn.Module:
    extra = [DISTS_RANDOM] if entry == "dists" else []
    cfg = compose_config("train", [f"loss={entry}", *extra, *overrides], tmp_path)
    return hydra.utils.instantiate(cfg.model.loss)


@pytest.mark.parametrize("entry", sorted(LOSS_ENTRIES))
def test_each_conf_entry_is_a_pixel_term_plus_its_loss_and_rebuilds_from_its_config(
    entry: str, tmp_path: Path
):
    torch.manual_seed(0)  # DISTS's random test weights: the same draws for both
    loss = built_loss(entry, tmp_path)
    assert isinstance(loss, CompositeLoss)
    assert list(loss.terms) == ["pixel", LOSS_ENTRIES[entry]]
    described = construction_config(loss, config_aliases(), torch_loss_arguments)
    torch.manual_seed(0)
    rebuilt = hydra.utils.instantiate(described)
    assert construction_config(rebuilt, config_aliases(), torch_loss_arguments) == described
    sr, hr = image_pair(2, 3, 48, 48)
    assert float(rebuilt(sr, hr)) == pytest.approx(float(loss(sr, hr)), rel=1e-6)
    assert set(loss.last) == {"pixel", LOSS_ENTRIES[entry]}


def test_msssim_l1_is_zhaos_mix(tmp_path: Path):
    sr, hr = image_pair(2, 3, 48, 48)
    loss = built_loss("msssim_l1", tmp_path)
    expected = 0.84 * MSSSIMLoss(3)(sr, hr) + 0.16 * F.l1_loss(sr, hr)
    assert float(loss(sr, hr)) == pytest.approx(float(expected), rel=1e-6)


def test_terms_added_on_the_command_line_compose_and_are_each_kept(tmp_path: Path):
    chroma = (
        "+model.loss.terms.chroma={weight:0.5,loss:{_target_:src.models.image_losses.ChromaLoss}}"
    )
    loss = built_loss("fft", tmp_path, chroma, "model.loss.terms.fft.loss.norm=ortho")
    sr, hr = image_pair(2, 3, 16, 16)
    total = loss(sr, hr)
    assert set(loss.last) == {"pixel", "fft", "chroma"}
    expected = F.l1_loss(sr, hr) + 0.1 * FFTLoss("ortho")(sr, hr) + 0.5 * ChromaLoss()(sr, hr)
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    for name, value in loss.last.items():
        assert float(value) == pytest.approx(float(loss.terms[name](sr, hr)), rel=1e-6)


# --- training and bad settings ------------------------------------------------------------------
def test_two_steps_log_each_term_and_the_checkpoint_rebuilds_the_loss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from src.models.checkpoint import module_from_checkpoint

    target = "_target_:src.models.image_losses.FFTLoss"
    fft = f"+model.loss.terms.fft={{weight:0.1,loss:{{{target},norm:ortho}}}}"
    overrides = [
        *TINY,
        "loss=gradient_variance",
        fft,
        "trainer.max_steps=2",
        "trainer.log_every_n_steps=1",
    ]
    outcome = run_in_process("train", overrides, tmp_path, capsys)
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    run_dir = tmp_path / "run"
    for term in ("pixel", "gradient_variance", "fft"):
        assert last_logged(run_dir, f"train/loss_{term}") > 0
    module = module_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    loss = module.loss
    assert isinstance(loss, CompositeLoss)
    assert loss.weights == {"pixel": 1.0, "gradient_variance": 0.01, "fft": 0.1}
    assert isinstance(loss.terms["pixel"], nn.MSELoss)
    assert isinstance(loss.terms["gradient_variance"], GradientVarianceLoss)
    assert loss.terms["gradient_variance"].patch_size == 8
    assert isinstance(loss.terms["fft"], FFTLoss) and loss.terms["fft"].norm == "ortho"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["loss=fft", "model.loss.terms.fft.loss.norm=sideways"],
            "model.loss.terms.fft.loss (FFTLoss): FFTLoss: norm must be one of backward, ortho, "
            "forward, got 'sideways'",
        ),
        (
            ["loss=msssim_l1", "model.loss.terms.msssim.loss.scales=6"],
            "scales must be an integer >= 1 and <= 5, got 6",
        ),
        (
            ["loss=msssim_l1"],  # TINY's 16-px LR patches at x2: 32 px
            "model.loss.terms.msssim.loss.scales=3 needs HR patches of at least 44 px a side, got "
            "32x32: set model.loss.terms.msssim.loss.scales=2 or raise data.lr_patch_size",
        ),
        (
            ["loss=focal_frequency", "model.loss.terms.focal_frequency.loss.alpha=0"],
            "alpha must be a number > 0, got 0",
        ),
        (
            ["loss=gradient_variance", "model.loss.terms.gradient_variance.loss.patch_size=1"],
            "patch_size must be an integer >= 2, got 1",
        ),
        (["loss=chroma", "model.loss.terms.chroma.loss.pool=0"], "pool must be an integer >= 1"),
        (["loss=luma", "model.loss.terms.luma.loss.criterion=l3"], "criterion"),
        (["loss=luma", "model.loss.terms.luma.weight=-1"], "model.loss.terms.luma.weight"),
        (
            ["loss=dists", "model.loss.terms.dists.loss.weights=/nowhere/dists"],
            "model.loss.terms.dists.loss.weights=/nowhere/dists: no such file",
        ),
    ],
)
def test_bad_loss_settings_are_one_error_line(
    overrides: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    outcome = run_in_process("train", [*TINY, "trainer.max_steps=1", *overrides], tmp_path, capsys)
    assert message in one_error_line(outcome)  # type: ignore[arg-type]
