"""The batch Real-ESRGAN path: torch operations against their OpenCV counterparts, the same
random choices as the per-patch path, reproducibility, and the data module's hook."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
import skimage.data
import torch

import src.data.batch_degradation as batch_module
import src.data.synthetic as synthetic
from src.data.batch_degradation import BatchRealESRGANDegradation
from src.data.kernels import filter_image, gaussian_kernel, sinc_kernel
from src.ops import degrade
from src.ops.jpeg import LUMA_TABLE, jpeg_round_trip, quality_scaled
from tests.helpers import compose_config


def photo_patch(size: int = 96, top: int = 100, left: int = 150) -> np.ndarray:
    return skimage.data.astronaut()[top : top + size, left : left + size].astype(np.float32) / 255


def as_batch(*images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).copy())


def as_images(batch: torch.Tensor) -> np.ndarray:
    return batch.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("quality", [30, 60, 95])
def test_torch_jpeg_is_within_a_level_of_opencv_on_average(quality: int):
    images = [photo_patch(120, 0, 0), photo_patch(120, 200, 250)]
    ours = as_images(jpeg_round_trip(as_batch(*images), torch.tensor([quality, quality])))
    theirs = np.stack([synthetic.jpeg(image, quality) for image in images])
    assert np.abs(ours - theirs).mean() * 255 < 1.0
    assert np.allclose(ours * 255, np.round(ours * 255), atol=1e-4)  # decoded 8-bit levels


def test_jpeg_tables_scale_as_libjpeg():
    base = torch.tensor(LUMA_TABLE)
    tables = quality_scaled(LUMA_TABLE, torch.tensor([50, 100, 10]))
    assert torch.equal(tables[0], base)
    assert torch.equal(tables[1], torch.ones_like(base))
    assert torch.equal(tables[2], (base * 500 + 50).div(100, rounding_mode="floor").clamp(1, 255))


def test_per_image_kernels_filter_as_opencv_does():
    images = [photo_patch(40, 0, 0), photo_patch(40, 50, 60), photo_patch(40, 300, 300)]
    kernels = [gaussian_kernel(7, 1.2), None, sinc_kernel(13, 1.5)]
    stacked = degrade.stack_kernels(kernels, torch.device("cpu"), torch.float32)
    ours = as_images(degrade.filter_each(as_batch(*images), stacked))
    for index, (image, kernel) in enumerate(zip(images, kernels, strict=True)):
        expected = image if kernel is None else filter_image(image, kernel)
        np.testing.assert_allclose(ours[index], expected, atol=2e-6)


@pytest.mark.parametrize(
    ("mode", "size"), [("bilinear", (37, 29)), ("bicubic", (61, 70)), ("area", (24, 24))]
)
def test_resizes_match_opencv(mode: str, size: tuple[int, int]):
    image = photo_patch(48)
    ours = as_images(degrade.resize(as_batch(image), *size, mode))[0]
    np.testing.assert_allclose(ours, synthetic.resize(image, *size, mode), atol=1e-5)


def test_unsharp_mask_matches_real_esrgans_formula_in_opencv():
    image = photo_patch(120)
    blurred = cv2.GaussianBlur(image, (51, 51), 0)
    detail = image - blurred
    soft = cv2.GaussianBlur((np.abs(detail) * 255 > 10).astype(np.float32), (51, 51), 0)
    expected = soft * np.clip(image + 0.5 * detail, 0, 1) + (1 - soft) * image
    ours = as_images(degrade.unsharp_mask(as_batch(image)))[0]
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def recorded_draws(monkeypatch: pytest.MonkeyPatch, module: Any, log: list) -> None:
    """Record every draw function's result, in call order, as ``module`` calls them (not the
    draws one makes inside another)."""
    depth = [0]
    for name in ("draw_blur", "draw_resize", "draw_noise", "draw_jpeg", "draw_final"):
        original = getattr(synthetic, name)

        def wrapped(rng, settings, _original=original, _name=name):
            depth[0] += 1
            try:
                result = _original(rng, settings)
            finally:
                depth[0] -= 1
            if depth[0] == 0:
                log.append((_name, rng, result))
            return result

        monkeypatch.setattr(module, name, wrapped)


def same_draw(one: Any, other: Any) -> bool:
    if isinstance(one, np.ndarray) or isinstance(other, np.ndarray):
        return isinstance(other, np.ndarray) and np.array_equal(one, other)
    if hasattr(one, "__dataclass_fields__"):
        return all(same_draw(getattr(one, f), getattr(other, f)) for f in one.__dataclass_fields__)
    if isinstance(one, tuple):
        return len(one) == len(other) and all(map(same_draw, one, other))
    return one == other


def draws_on_both_paths(monkeypatch: pytest.MonkeyPatch, seed: int) -> tuple[list, list, bool]:
    """The draws of a patch on the per-patch path and on the batch path (a one-patch batch),
    and whether both generators end in the same state."""
    degradation = BatchRealESRGANDegradation()
    hr = (photo_patch(64) * 255).round().astype(np.uint8)
    per_patch: list = []
    recorded_draws(monkeypatch, synthetic, per_patch)
    rng = np.random.default_rng(seed)
    degradation(hr, 4, rng)
    monkeypatch.undo()
    per_batch: list = []
    recorded_draws(monkeypatch, batch_module, per_batch)
    generators: list[np.random.Generator] = []
    real = batch_module.patch_generators

    def keep(seeds: list[int]) -> list[np.random.Generator]:
        generators.extend(real(seeds))
        return generators

    monkeypatch.setattr(batch_module, "patch_generators", keep)
    degradation.degrade_batch(as_batch(hr.astype(np.float32) / 255), [seed], 4)
    monkeypatch.undo()
    mine = [(name, result) for name, g, result in per_batch if g is generators[0]]
    theirs = [(name, result) for name, _, result in per_patch]
    return mine, theirs, generators[0].bit_generator.state == rng.bit_generator.state


@pytest.mark.parametrize("seed", range(6))
def test_a_patch_draws_the_same_choices_on_both_paths(monkeypatch: pytest.MonkeyPatch, seed):
    """Every parameter the per-patch path draws for a seed (kernels, resize, noise, JPEG, the
    last step) the batch path draws too, in the same order from the same generator, which ends
    in the same state; only the batch's shared resize factors come from elsewhere."""
    mine, theirs, same_state = draws_on_both_paths(monkeypatch, seed)
    assert [name for name, _ in mine] == [name for name, _ in theirs]
    for (name, one), (_, other) in zip(mine, theirs, strict=True):
        if name == "draw_resize":
            one, other = one[1], other[1]  # the mode; the factor is the batch's
        assert same_draw(one, other), name
    assert same_state


def test_without_random_resizes_noise_and_jpeg_both_paths_give_the_same_lr():
    """With the randomness that differs by design switched off (the shared resize factor,
    noise values, the JPEG codec), the two paths are the same pipeline."""
    quiet = {
        "resize": {"probs": {"keep": 1.0}, "modes": ["bilinear"]},
        "noise": {"prob": 0.0},
        "jpeg": {"prob": 0.0},
    }
    degradation = BatchRealESRGANDegradation(
        first=quiet, second={**quiet, "jpeg": None}, final={"jpeg": {"prob": 0.0}}
    )
    patches = [photo_patch(64, top, top) for top in (0, 120, 240, 360)]
    hr = [(p * 255).round().astype(np.uint8) for p in patches]
    seeds = [11, 12, 13, 14]
    batch = as_images(degradation.degrade_batch(as_batch(*patches), seeds, 2))
    for index, seed in enumerate(seeds):
        single = degradation(hr[index], 2, np.random.default_rng(seed)).astype(np.float32) / 255
        assert np.abs(batch[index] - single).max() * 255 <= 1.0 + 1e-4


def test_batch_degradation_reproduces_under_a_seed_and_varies_with_it():
    degradation = BatchRealESRGANDegradation()
    hr = as_batch(*(photo_patch(64, top, 2 * top) for top in (0, 60, 120, 180)))
    one = degradation.degrade_batch(hr, [1, 2, 3, 4], 4)
    again = degradation.degrade_batch(hr, [1, 2, 3, 4], 4)
    other = degradation.degrade_batch(hr, [5, 6, 7, 8], 4)
    assert one.shape == (4, 3, 16, 16)
    assert torch.equal(one, again)
    assert not torch.equal(one, other)
    assert torch.equal(torch.round(one * 255) / 255, one)  # on 8-bit levels, as CPU LR is


def test_the_data_module_degrades_and_sharpens_training_batches_after_transfer(tmp_path):
    import hydra

    cfg = compose_config(
        "train",
        [
            "data=sample",
            "degradation=realesrgan_batch",
            "scale=4",
            "data.lr_patch_size=16",
            "data.batch_size=3",
            "data.sharpen_target={weight: 0.5, kernel_size: 11, threshold: 10}",
        ],
        tmp_path,
    )
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert "lr" not in batch and batch["hr"].shape == (3, 3, 64, 64)
    ready = datamodule.on_after_batch_transfer(dict(batch), 0)
    assert ready["lr"].shape == (3, 3, 16, 16)
    assert torch.equal(ready["hr_plain"], batch["hr"])
    assert not torch.equal(ready["hr"], batch["hr"])
    validation = next(iter(datamodule.val_dataloader()))
    assert "lr" in validation and datamodule.on_after_batch_transfer(validation, 0) is validation
