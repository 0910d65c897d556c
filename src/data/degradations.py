"""How an LR image is made from an HR one.

A degradation maps an (H, W, 3) uint8 HR array (already mod-cropped to the scale) to its
(H/s, W/s, 3) uint8 LR array. It receives a NumPy generator so that every random choice is
seeded: the same index of a dataset always gives the same pair, whatever the worker count.

``deterministic`` degradations (plain bicubic) are applied once per image at set-up, and patches
are cut from the stored pair; random ones are applied to each HR patch as it is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import albumentations as A
import numpy as np

from src.ops.imresize import imresize_uint8


class Degradation(Protocol):
    """HR uint8 array -> LR uint8 array at ``1 / scale``."""

    deterministic: bool

    def __call__(self, hr: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray: ...


class BicubicDegradation:
    """MATLAB ``imresize(hr, 1/scale, 'bicubic')``: the degradation of the benchmark tables."""

    deterministic = True

    def __call__(self, hr: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
        return imresize_uint8(hr, 1.0 / scale)


class AlbumentationsDegradation:
    """albumentations transforms on HR (``before``), the MATLAB downscale, then on LR (``after``).

    The transforms come from YAML (``_target_: albumentations.GaussianBlur`` and so on), so a
    realistic pipeline (blur, noise, JPEG) is a config change, not a code change.
    """

    deterministic = False

    def __init__(self, before: Sequence[Any] = (), after: Sequence[Any] = ()):
        self.before = A.Compose(list(before)) if before else None
        self.after = A.Compose(list(after)) if after else None

    @staticmethod
    def _apply(pipeline: A.Compose | None, image: np.ndarray, seed: int) -> np.ndarray:
        if pipeline is None:
            return image
        pipeline.set_random_seed(seed)
        return np.ascontiguousarray(pipeline(image=image)["image"])

    def __call__(self, hr: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
        seed_before, seed_after = (int(s) for s in rng.integers(0, 2**31 - 1, size=2))
        blurred = self._apply(self.before, hr, seed_before)
        lr = imresize_uint8(blurred, 1.0 / scale)
        return self._apply(self.after, lr, seed_after)
