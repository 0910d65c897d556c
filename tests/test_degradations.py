"""Blur kernels and the synthetic degradations: shapes, seeding, configs, and the grid script."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from src.data.datasets import PatchDataset, make_pairs
from src.data.degradation_grid import image_configs, load_degradation
from src.data.degradation_grid import main as degradation_grid
from src.data.kernels import (
    KernelSettings,
    filter_image,
    gaussian_kernel,
    generalized_gaussian_kernel,
    plateau_kernel,
    random_kernel,
    sinc_kernel,
)
from src.data.synthetic import (
    BicubicNoiseDegradation,
    BlurBicubicDegradation,
    FinalSettings,
    JpegSettings,
    NoiseSettings,
    RealESRGANDegradation,
    ResizeSettings,
    StageSettings,
)
from src.io.images import NamedImage, read_rgb
from src.ops.imresize import imresize_uint8
from tests.helpers import CONF_DIR
from tests.test_data import photo

# The image degradations; RealBasicVSR's per-clip one has its own tests (test_clip_degradation).
CONFIGS = image_configs()


def from_config(name: str):
    return load_degradation(name)


# --- kernels ---------------------------------------------------------------------------------


def test_isotropic_gaussian_is_matlab_fspecial():
    # fspecial('gaussian', 7, 1.6): exp(-(x^2 + y^2) / (2 sigma^2)) on -3..3, normalised.
    axis = np.exp(-(np.arange(-3, 4) ** 2) / (2 * 1.6**2))
    expected = np.outer(axis, axis) / np.outer(axis, axis).sum()
    assert np.allclose(gaussian_kernel(7, 1.6), expected, atol=1e-15)


def test_anisotropic_gaussian_follows_its_rotation():
    wide = gaussian_kernel(21, 4.0, 1.0, rotation=0.0)
    tall = gaussian_kernel(21, 4.0, 1.0, rotation=math.pi / 2)
    assert wide[10, 16] > wide[16, 10] and np.allclose(tall, wide.T, atol=1e-12)
    diagonal = gaussian_kernel(21, 4.0, 1.0, rotation=math.pi / 4)
    assert diagonal[13, 13] > diagonal[13, 7]


@pytest.mark.parametrize(
    "kernel",
    [
        gaussian_kernel(9, 2.0, 0.7, 0.3),
        generalized_gaussian_kernel(9, 2.0, 0.7, 0.3, beta=2.5),
        plateau_kernel(9, 2.0, 0.7, 0.3, beta=1.5),
        sinc_kernel(9, math.pi / 2),
    ],
)
def test_kernels_sum_to_one_and_are_point_symmetric(kernel: np.ndarray):
    assert kernel.shape == (9, 9) and kernel.sum() == pytest.approx(1.0)
    assert np.allclose(kernel, kernel[::-1, ::-1])


def test_sinc_at_full_cutoff_is_nearly_identity_and_lower_cutoffs_ring():
    assert sinc_kernel(21, math.pi)[10, 10] > 0.75
    assert sinc_kernel(21, math.pi / 4).min() < 0  # negative lobes: ringing


def test_even_kernel_size_is_refused():
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel(6, 1.0)


def test_random_kernels_are_seeded_and_sized():
    settings = KernelSettings()
    one = random_kernel(np.random.default_rng(3), settings)
    assert np.array_equal(one, random_kernel(np.random.default_rng(3), settings))
    sizes = {random_kernel(np.random.default_rng(i), settings).shape[0] for i in range(60)}
    assert sizes <= set(range(7, 22, 2)) and len(sizes) > 3


def test_unknown_kernel_kind_is_refused():
    with pytest.raises(ValueError, match="gausian"):
        KernelSettings(kinds={"gausian": 1.0})


def test_filtering_keeps_shape_even_for_images_smaller_than_the_kernel():
    image = np.random.default_rng(0).random((5, 4, 3)).astype(np.float32)
    assert filter_image(image, gaussian_kernel(21, 3.0)).shape == (5, 4, 3)


# --- degradations ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_gives_lr_of_the_exact_size_and_is_seeded(name: str):
    degradation = from_config(name)
    hr = photo(4, 96, 120)
    for scale in (2, 3, 4):
        hr_cropped = hr[: 96 - 96 % scale, : 120 - 120 % scale]
        one = degradation(hr_cropped, scale, np.random.default_rng(7))
        assert one.shape == (96 // scale, 120 // scale, 3) and one.dtype == np.uint8
        assert np.array_equal(one, degradation(hr_cropped, scale, np.random.default_rng(7)))
    if not degradation.deterministic:
        draws = {degradation(hr, 4, np.random.default_rng(s)).tobytes() for s in range(4)}
        assert len(draws) > 1


@pytest.mark.parametrize(
    ("name", "deterministic"),
    [("bicubic", True), ("bicubic_noise", False), ("blur_bicubic", True), ("realesrgan", False)],
)
def test_deterministic_flags(name: str, deterministic: bool):
    assert from_config(name).deterministic is deterministic


def test_noise_free_bicubic_noise_is_matlab_bicubic_and_sigma_is_in_levels():
    hr = photo(1, 96, 96)
    bicubic = imresize_uint8(hr, 0.25)
    clean = BicubicNoiseDegradation(sigma=(0.0, 0.0))(hr, 4, np.random.default_rng(0))
    assert np.array_equal(clean, bicubic)
    noisy = BicubicNoiseDegradation(sigma=(20.0, 20.0))(hr, 4, np.random.default_rng(0))
    assert np.std(noisy.astype(float) - bicubic) == pytest.approx(20.0, rel=0.15)


def test_gray_noise_is_the_same_in_every_channel():
    flat = np.full((64, 64, 3), 128, np.uint8)
    lr = BicubicNoiseDegradation(sigma=(10.0, 10.0), gray_prob=1.0)(
        flat, 2, np.random.default_rng(1)
    )
    assert np.array_equal(lr[..., 0], lr[..., 1]) and np.array_equal(lr[..., 0], lr[..., 2])
    assert lr.std() > 5


def test_blur_bicubic_is_the_rdn_bd_recipe():
    hr = photo(2, 60, 60)
    lr = BlurBicubicDegradation()(hr, 3, np.random.default_rng(0))
    padded = np.pad(hr.astype(np.float64), ((3, 3), (3, 3), (0, 0)), mode="symmetric")
    kernel = gaussian_kernel(7, 1.6)
    blurred = sum(kernel[i, j] * padded[i : i + 60, j : j + 60] for i in range(7) for j in range(7))
    expected = imresize_uint8(np.floor(blurred + 0.5).astype(np.uint8), 1 / 3)
    assert np.abs(lr.astype(int) - expected).max() <= 1  # float32 filtering vs float64 here


def test_anisotropic_blur_is_random_but_seeded():
    degradation = BlurBicubicDegradation(kernel_size=21, anisotropic_prob=1.0)
    assert not degradation.deterministic
    hr = photo(3, 64, 64)
    first = degradation(hr, 2, np.random.default_rng(0))
    assert np.array_equal(first, degradation(hr, 2, np.random.default_rng(0)))
    assert not np.array_equal(first, degradation(hr, 2, np.random.default_rng(1)))


def test_realesrgan_lr_is_exact_for_tiny_and_odd_patches():
    degradation = from_config("realesrgan")
    rng = np.random.default_rng(0)
    for index in range(40):
        height, width = int(rng.integers(4, 40)) * 4, int(rng.integers(4, 40)) * 4
        hr = photo(index, height, width)
        lr = degradation(hr, 4, np.random.default_rng(index))
        assert lr.shape == (height // 4, width // 4, 3)


def test_every_realesrgan_setting_is_written_in_its_config():
    config = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "degradation" / "realesrgan.yaml"))
    parts = {"blur": KernelSettings, "resize": ResizeSettings, "noise": NoiseSettings}
    for stage in ("first", "second"):
        assert set(config[stage]) == {f.name for f in fields(StageSettings)}
        for key, settings in parts.items():
            assert set(config[stage][key]) == {f.name for f in fields(settings)}, (stage, key)
    assert set(config["first"]["jpeg"]) == {f.name for f in fields(JpegSettings)}
    assert set(config["final"]) == {f.name for f in fields(FinalSettings)}


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ({"blurr": {}}, "blurr"),
        ({"resize": {"probs": {"sideways": 1.0}}}, "sideways"),
        ({"resize": {"modes": ["lanczos9"]}}, "lanczos9"),
        ({"noise": {"sigmaa": [1, 2]}}, "sigmaa"),
    ],
)
def test_realesrgan_refuses_unknown_settings(stage: dict, message: str):
    with pytest.raises((TypeError, ValueError), match=message):
        RealESRGANDegradation(first=stage)


def test_random_degradation_patches_never_fail_and_stay_aligned_in_size():
    pairs = make_pairs([NamedImage("x", photo(0, 80, 80))], "s", 4, from_config("realesrgan"), 0)
    data = PatchDataset(pairs, 4, 16, from_config("realesrgan"), length=30, seed=1)
    for index in range(30):
        item = data[index]
        assert item["lr"].shape == (3, 16, 16) and item["hr"].shape == (3, 64, 64)
    assert np.array_equal(data[5]["lr"].numpy(), data[5]["lr"].numpy())


def test_degradation_grid_script_writes_a_labelled_grid(tmp_path: Path):
    out = tmp_path / "grid.png"
    degradation_grid(
        ["--image", "astronaut", "--scale", "4", "--out", str(out), "--crop", "64", "--draws", "1"]
    )
    grid = read_rgb(out)
    tiles = 1 + len(CONFIGS)  # the HR tile, then one per config with one draw each
    rows = -(-tiles // 4)
    assert grid.shape[0] == rows * (64 + 22 + 4) + 4 and grid.shape[1] == 4 * (64 + 4) + 4
