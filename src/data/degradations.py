"""How an LR image is made from an HR one.

A degradation maps an (H, W, 3) uint8 HR array (already mod-cropped to the scale) to its
(H/s, W/s, 3) uint8 LR array. It receives a NumPy generator so that every random choice is
seeded: the same index of a dataset always gives the same pair, whatever the worker count.

``deterministic`` degradations (plain bicubic) are applied once per image at set-up, and patches
are cut from the stored pair; random ones are applied to each HR patch as it is drawn, or, for
those :func:`on_device`, to each training batch once it is on the training device.
:func:`describe` turns any degradation into a canonical, JSON-able description of every setting,
which keys the on-disk caches of degraded images.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import albumentations as A
import numpy as np

from src.ops.imresize import imresize_array, imresize_uint8
from src.utils.errors import UserError


class Degradation(Protocol):
    """HR uint8 array -> LR uint8 array at ``1 / scale``."""

    deterministic: bool

    def __call__(self, hr: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray: ...


def on_device(degradation: Any) -> bool:
    """True for a degradation applied to whole training batches on the device after transfer
    (its ``degrade_batch``), as :class:`~src.data.batch_degradation.BatchRealESRGANDegradation`."""
    return bool(getattr(degradation, "on_device", False))


def describe(value: Any) -> Any:
    """A JSON-able description of ``value`` and everything it holds: equal settings give equal
    descriptions, any changed setting (a blur sigma, a transform's probability) a different
    one. Objects are described by their class and attributes, arrays by a digest."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(key): describe(item) for key, item in sorted(value.items(), key=str)}
    if isinstance(value, (list, tuple)):
        return [describe(item) for item in value]
    if isinstance(value, np.ndarray):
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
        return {"array": f"{value.dtype}{list(value.shape)}:{digest}"}
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if isinstance(value, (A.BaseCompose, A.BasicTransform)):
        return {"type": kind, "settings": describe(value.to_dict())}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            "type": kind,
            **describe({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}),
        }
    if hasattr(value, "__dict__"):
        return {"type": kind, **describe(vars(value))}
    return {"type": kind, "repr": repr(value)}


def check_bit_depth(degradation: Any, bit_depth: int, set_name: str) -> None:
    """Refuse a degradation that cannot make LR of ``bit_depth`` images without rounding them to
    8 bits (the albumentations and Real-ESRGAN pipelines work on uint8)."""
    if bit_depth not in getattr(degradation, "bit_depths", (8,)):
        raise UserError(
            f"{set_name}: {type(degradation).__name__} makes LR of 8-bit images only, and this "
            f"set is {bit_depth}-bit; use degradation=bicubic (MATLAB-exact at 16 bits) or "
            f"data.bit_depth=8"
        )


class BicubicDegradation:
    """MATLAB ``imresize(hr, 1/scale, 'bicubic')``: the degradation of the benchmark tables.
    16-bit HR gives 16-bit LR, rounded to 16-bit levels between the passes as MATLAB does."""

    deterministic = True
    bit_depths = (8, 16)

    def __call__(self, hr: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
        return imresize_array(hr, 1.0 / scale)


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
