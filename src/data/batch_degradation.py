"""Real-ESRGAN's second-order degradation applied to whole batches on the training device, as
its authors train: the loader only crops HR patches, and after the batch reaches the GPU the
data module's ``on_after_batch_transfer`` turns it into LR in torch (:mod:`src.ops.degrade`,
:mod:`src.ops.jpeg`).

Same settings, same random choices: the parameters of every step (kernel, noise kind and
strength, JPEG quality, order and mode of the last step) are drawn by the functions the
per-patch path uses (:mod:`src.data.synthetic`), from a NumPy generator seeded by the patch's
own seed, which the dataset derives from ``(data.seed, patch index)``. Noise values come from a
``torch.Generator`` seeded from the same generator. So a patch degrades the same way whatever
batch it lands in, on CPU as on GPU (noise values differ between the two devices' generators).

One choice is per batch, as in Real-ESRGAN: the resize factor of each of the two rounds, which
sets the size of every image in the batch (its mode is still each patch's own). It is drawn
from a generator seeded by all the batch's seeds. Per patch, the factor follows the
per-patch path's distribution; within a batch, patches share it.

The per-patch ``__call__`` stays: validation images are degraded by it once each at set-up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from src.data.synthetic import (
    SEED_BOUND,
    FinalDraw,
    NoiseDraw,
    RealESRGANDegradation,
    StageSettings,
    draw_blur,
    draw_final,
    draw_jpeg,
    draw_noise,
    draw_resize,
    resized_shape,
)
from src.ops import degrade
from src.ops.jpeg import jpeg_round_trip


def patch_generators(seeds: Sequence[int]) -> list[np.random.Generator]:
    return [np.random.default_rng(int(seed)) for seed in seeds]


class BatchRealESRGANDegradation(RealESRGANDegradation):
    """:class:`~src.data.synthetic.RealESRGANDegradation` with a batch path on the device."""

    on_device = True

    def __init__(
        self,
        first: Mapping[str, Any] | None = None,
        second: Mapping[str, Any] | None = None,
        final: Mapping[str, Any] | None = None,
    ):
        super().__init__(first, second, final)

    def degrade_batch(self, hr: torch.Tensor, seeds: Sequence[int], scale: int) -> torch.Tensor:
        """(N, 3, H, W) HR in [0, 1] -> (N, 3, H // scale, W // scale) LR on 8-bit levels."""
        if hr.shape[0] != len(seeds):
            raise ValueError(f"{hr.shape[0]} images but {len(seeds)} seeds")
        rngs = patch_generators(seeds)
        batch_rng = np.random.default_rng([int(seed) for seed in seeds])
        lr_size = (hr.shape[-2] // scale, hr.shape[-1] // scale)
        image = hr.float()
        for stage in (self.first, self.second):
            image = self._batch_round(image, stage, lr_size, rngs, batch_rng)
        image = self._batch_final(image, lr_size, rngs)
        return torch.round(image.clamp(0.0, 1.0) * 255.0) / 255.0

    def _batch_round(
        self,
        image: torch.Tensor,
        stage: StageSettings,
        lr_size: tuple[int, int],
        rngs: list[np.random.Generator],
        batch_rng: np.random.Generator,
    ) -> torch.Tensor:
        kernels = [draw_blur(rng, stage) for rng in rngs]
        if any(k is not None for k in kernels):
            image = degrade.filter_each(
                image, degrade.stack_kernels(kernels, image.device, image.dtype)
            )
        scale, _ = draw_resize(batch_rng, stage.resize)
        shape = (image.shape[-2], image.shape[-1])
        size = resized_shape(stage.resize, scale, shape, lr_size)
        modes = [draw_resize(rng, stage.resize)[1] for rng in rngs]
        image = resize_by_mode(image, size, modes)
        image = add_noise(image, [draw_noise(rng, stage.noise) for rng in rngs], rngs)
        return compress(image, [draw_jpeg(rng, stage.jpeg) for rng in rngs])

    def _batch_final(
        self, image: torch.Tensor, lr_size: tuple[int, int], rngs: list[np.random.Generator]
    ) -> torch.Tensor:
        draws: list[FinalDraw] = [draw_final(rng, self.final) for rng in rngs]
        image = compress(image, [d.quality if d.first else None for d in draws])
        image = resize_by_mode(image, lr_size, [d.mode for d in draws])
        if any(d.sinc is not None for d in draws):
            kernels = degrade.stack_kernels([d.sinc for d in draws], image.device, image.dtype)
            image = degrade.filter_each(image, kernels)
        return compress(image, [None if d.first else d.quality for d in draws])


def resize_by_mode(image: torch.Tensor, size: tuple[int, int], modes: list[str]) -> torch.Tensor:
    """Resize each image with its own mode: one call per mode present."""
    if tuple(image.shape[-2:]) == size:
        return image
    out = image.new_empty((*image.shape[:2], *size))
    for mode in sorted(set(modes)):
        chosen = torch.tensor([i for i, m in enumerate(modes) if m == mode], device=image.device)
        out[chosen] = degrade.resize(image[chosen], size[0], size[1], mode)
    return out


def add_noise(
    image: torch.Tensor, draws: list[NoiseDraw | None], rngs: list[np.random.Generator]
) -> torch.Tensor:
    """Each image plus its drawn noise, clipped to [0, 1]; images drawn without noise as they are
    (clipped, as the per-patch path clips only after noise)."""
    noisy = []
    for one, draw, rng in zip(image, draws, rngs, strict=True):
        if draw is None:
            noisy.append(one)
            continue
        seed = int(rng.integers(SEED_BOUND))
        make = degrade.gaussian_noise if draw.gaussian else degrade.poisson_noise
        noisy.append((one + make(one, draw.strength, draw.gray, seed)).clamp(0.0, 1.0))
    return torch.stack(noisy)


def compress(image: torch.Tensor, qualities: list[int | None]) -> torch.Tensor:
    """A JPEG round trip of the images that have a quality, each at its own."""
    chosen = [i for i, q in enumerate(qualities) if q is not None]
    if not chosen:
        return image
    index = torch.tensor(chosen, device=image.device)
    quality = torch.tensor([qualities[i] for i in chosen], device=image.device)
    out = image.clone()
    out[index] = jpeg_round_trip(image[index].clamp(0.0, 1.0), quality)
    return out
