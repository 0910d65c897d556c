"""Torch datasets of LR/HR pairs: random training patches and whole validation images.

Both yield ``{"lr", "hr", "name", "set", "gray"}`` with float32 CHW tensors in [0, 1] (``gray``:
the HR file had one channel). Randomness is a
function of ``(seed, index)`` only, so a given index always yields the same patch, whatever the
number of DataLoader workers or the point where a run was resumed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.degradations import Degradation
from src.data.images import NamedImage
from src.ops.imresize import modcrop

Sample = dict[str, torch.Tensor | str]


@dataclass(frozen=True)
class ImagePair:
    """A mod-cropped HR image and, when the degradation is deterministic, its LR image."""

    name: str
    set_name: str
    hr: np.ndarray
    lr: np.ndarray | None
    gray: bool = False


def make_pairs(
    images: list[NamedImage],
    set_name: str,
    scale: int,
    degradation: Degradation,
    seed: int,
    always_degrade: bool = False,
) -> list[ImagePair]:
    """Mod-crop each image; use its given LR, or compute LR now if the degradation is fixed or
    ``always_degrade``."""
    pairs = []
    for index, image in enumerate(images):
        hr = modcrop(image.pixels, scale)
        lr = image.lr
        if lr is not None:
            expected = (hr.shape[0] // scale, hr.shape[1] // scale)
            if lr.shape[:2] != expected:
                raise ValueError(
                    f"{set_name}/{image.name}: LR is {lr.shape[1]}x{lr.shape[0]}, but the HR "
                    f"mod-cropped to x{scale} needs {expected[1]}x{expected[0]}"
                )
        elif degradation.deterministic or always_degrade:
            lr = degradation(hr, scale, np.random.default_rng((seed, index)))
        pairs.append(ImagePair(image.name, set_name, hr, lr, image.gray))
    return pairs


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float().div_(255.0)


def d4_transform(image: np.ndarray, index: int) -> np.ndarray:
    """One of the 8 flips/rotations of the square, applied to an (H, W, C) array."""
    if index >= 4:
        image = image[:, ::-1]
    return np.rot90(image, k=index % 4, axes=(0, 1))


class PatchDataset(Dataset[Sample]):
    """``length`` random training patches: crop, degrade if needed, flip/rotate LR and HR alike."""

    def __init__(
        self,
        pairs: list[ImagePair],
        scale: int,
        lr_patch_size: int,
        degradation: Degradation,
        length: int,
        seed: int,
        augment: bool = True,
    ):
        hr_patch = lr_patch_size * scale
        small = [p.name for p in pairs if min(p.hr.shape[:2]) < hr_patch]
        if small:
            raise ValueError(
                f"image(s) smaller than the HR patch of {hr_patch} px "
                f"(lr_patch_size={lr_patch_size} x scale {scale}): {', '.join(small)}"
            )
        self.pairs = pairs
        self.scale = scale
        self.lr_patch_size = lr_patch_size
        self.degradation = degradation
        self.length = length
        self.seed = seed
        self.augment = augment

    def __len__(self) -> int:
        return self.length

    def _crop(self, pair: ImagePair, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        s, p = self.scale, self.lr_patch_size
        lr_h, lr_w = pair.hr.shape[0] // s, pair.hr.shape[1] // s
        top, left = int(rng.integers(lr_h - p + 1)), int(rng.integers(lr_w - p + 1))
        hr = pair.hr[top * s : (top + p) * s, left * s : (left + p) * s]
        if pair.lr is not None:
            return pair.lr[top : top + p, left : left + p], hr
        return self.degradation(np.ascontiguousarray(hr), s, rng), hr

    def __getitem__(self, index: int) -> Sample:
        rng = np.random.default_rng((self.seed, index))
        pair = self.pairs[int(rng.integers(len(self.pairs)))]
        lr, hr = self._crop(pair, rng)
        if self.augment:
            k = int(rng.integers(8))
            lr, hr = d4_transform(lr, k), d4_transform(hr, k)
        return {
            "lr": to_tensor(lr),
            "hr": to_tensor(hr),
            "name": pair.name,
            "set": pair.set_name,
            "gray": torch.tensor(pair.gray),
        }


class FullImageDataset(Dataset[Sample]):
    """Whole validation images with their precomputed LR."""

    def __init__(self, pairs: list[ImagePair]):
        missing = [p.name for p in pairs if p.lr is None]
        if missing:
            raise ValueError(f"validation pairs without LR: {', '.join(missing)}")
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Sample:
        pair = self.pairs[index]
        assert pair.lr is not None
        return {
            "lr": to_tensor(pair.lr),
            "hr": to_tensor(pair.hr),
            "name": pair.name,
            "set": pair.set_name,
            "gray": torch.tensor(pair.gray),
        }
