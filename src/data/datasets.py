"""Torch datasets of LR/HR pairs: random training patches and whole validation images.

Both yield ``{"lr", "hr", "name", "set", "gray", "bit_depth"}`` with float32 CHW tensors in
[0, 1], divided by the top of the data's range (255, or 65535 for 16-bit data; ``gray``: the HR
file had one channel; ``bit_depth``: 8 or 16, which sets the peak of PSNR and SSIM);
validation items also carry ``index``, their place in the whole
validation list (results are put back in that order after a multi-process evaluation).
Randomness is a function of ``(seed, index)`` only, so a given index always yields the same
patch, whatever the number of DataLoader workers or the point where a run was resumed.

Validation images are decoded once at set-up and kept (training validates many times), or, for
a single pass such as ``src.eval``, read one by one as the loader asks for them, so that
DataLoader workers decode and degrade the next images while the current one is scored. A read
that fails does not raise in the worker: the item carries the message (``error``) and the data
module applies ``on_bad_image`` in the main process, where the message reaches the user whole.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.checks import refuse_or_skip
from src.data.degradations import Degradation, check_bit_depth, on_device
from src.data.sources import ImageReader, OnBadImage
from src.data.synthetic import SEED_BOUND
from src.io.images import PEAK_OF_DEPTH, ImageReadError, NamedImage, bit_depth_of
from src.ops.imresize import modcrop
from src.utils.errors import UserError

Sample = dict[str, torch.Tensor | str]


@dataclass(frozen=True)
class ImagePair:
    """A mod-cropped HR image and, when the degradation is deterministic, its LR image."""

    name: str
    set_name: str
    hr: np.ndarray
    lr: np.ndarray | None
    gray: bool = False


class PairSizeError(UserError, ValueError):
    """A paired set's LR image is not the mod-cropped HR divided by the scale."""


def make_pair(
    image: NamedImage,
    set_name: str,
    scale: int,
    degradation: Degradation,
    seed: int,
    index: int,
    always_degrade: bool = False,
) -> ImagePair:
    """Mod-crop ``image``; use its given LR, or compute LR now (from the generator of
    ``(seed, index)``) if the degradation is fixed or ``always_degrade``."""
    hr = modcrop(image.pixels, scale)
    lr = image.lr
    if lr is not None:
        expected = (hr.shape[0] // scale, hr.shape[1] // scale)
        if lr.shape[:2] != expected:
            raise PairSizeError(
                f"{set_name}/{image.name}: LR is {lr.shape[1]}x{lr.shape[0]}, but the HR "
                f"mod-cropped to x{scale} needs {expected[1]}x{expected[0]}"
            )
    elif degradation.deterministic or always_degrade:
        check_bit_depth(degradation, bit_depth_of(hr), set_name)
        lr = degradation(hr, scale, np.random.default_rng((seed, index)))
    return ImagePair(image.name, set_name, hr, lr, image.gray)


def check_one_bit_depth(pairs: list[ImagePair]) -> None:
    """Refuse a set whose images do not all have the same bit depth (``data.bit_depth=auto``
    keeps each file's own), listing a few files of each depth."""
    by_set: dict[str, dict[int, list[str]]] = {}
    for pair in pairs:
        by_set.setdefault(pair.set_name, {}).setdefault(bit_depth_of(pair.hr), []).append(pair.name)
    for set_name, depths in by_set.items():
        if len(depths) > 1:
            listing = "; ".join(
                f"{depth}-bit: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
                for depth, names in sorted(depths.items())
            )
            raise UserError(
                f"{set_name} mixes bit depths ({listing}); set data.bit_depth=8 or 16 to "
                f"decode every file to one"
            )


def make_pairs(
    images: list[NamedImage],
    set_name: str,
    scale: int,
    degradation: Degradation,
    seed: int,
    always_degrade: bool = False,
) -> list[ImagePair]:
    """:func:`make_pair` of each image, indexed by its place in ``images``."""
    pairs = [
        make_pair(image, set_name, scale, degradation, seed, index, always_degrade)
        for index, image in enumerate(images)
    ]
    check_one_bit_depth(pairs)
    return pairs


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 or uint16 -> (C, H, W) float32 in [0, 1]."""
    chw = np.ascontiguousarray(pixels.transpose(2, 0, 1))
    if chw.dtype == np.uint16:
        return torch.from_numpy(chw.astype(np.float32)).div_(float(PEAK_OF_DEPTH[16]))
    return torch.from_numpy(chw).float().div_(255.0)


def depth_tensor(pixels: np.ndarray) -> torch.Tensor:
    """The bit depth of a pixel array as a sample field (collated into one per image)."""
    return torch.tensor(bit_depth_of(pixels))


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
        for pair in {p.set_name: p for p in pairs if p.lr is None}.values():
            check_bit_depth(degradation, bit_depth_of(pair.hr), pair.set_name)
        self.pairs = pairs
        self.scale = scale
        self.lr_patch_size = lr_patch_size
        self.degradation = degradation
        self.length = length
        self.seed = seed
        self.augment = augment

    def __len__(self) -> int:
        return self.length

    def _crop(
        self, pair: ImagePair, rng: np.random.Generator
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """The LR and HR patch; no LR when the degradation runs on the batch, on the device."""
        s, p = self.scale, self.lr_patch_size
        lr_h, lr_w = pair.hr.shape[0] // s, pair.hr.shape[1] // s
        top, left = int(rng.integers(lr_h - p + 1)), int(rng.integers(lr_w - p + 1))
        hr = pair.hr[top * s : (top + p) * s, left * s : (left + p) * s]
        if pair.lr is not None:
            return pair.lr[top : top + p, left : left + p], hr
        if on_device(self.degradation):
            return None, hr
        return self.degradation(np.ascontiguousarray(hr), s, rng), hr

    def __getitem__(self, index: int) -> Sample:
        rng = np.random.default_rng((self.seed, index))
        pair = self.pairs[int(rng.integers(len(self.pairs)))]
        lr, hr = self._crop(pair, rng)
        if self.augment:
            k = int(rng.integers(8))
            lr = None if lr is None else d4_transform(lr, k)
            hr = d4_transform(hr, k)
        sample: Sample = {
            "hr": to_tensor(hr),
            "name": pair.name,
            "set": pair.set_name,
            "gray": torch.tensor(pair.gray),
            "bit_depth": depth_tensor(hr),
            # The patch's own seed: a batch degradation draws everything about it from this.
            "seed": torch.tensor(int(rng.integers(SEED_BOUND)), dtype=torch.int64),
        }
        if lr is not None:
            sample["lr"] = to_tensor(lr)
        return sample


@dataclass(frozen=True)
class ValidationItem:
    """One validation image to read when asked for: its set, its place in the set (the seed of
    a random degradation) and the reader that decodes it."""

    set_name: str
    index: int
    read: ImageReader


class ValidationImages(Dataset[Sample]):
    """Whole validation images with their LR: decoded up front (:meth:`decoded`) or read one by
    one as they are asked for (:meth:`on_demand`)."""

    def __init__(
        self,
        pairs: list[ImagePair] | None = None,
        items: list[ValidationItem] | None = None,
        scale: int = 1,
        degradation: Degradation | None = None,
        seed: int = 0,
    ):
        self.pairs = pairs
        self.items = items
        self.scale, self.degradation, self.seed = scale, degradation, seed

    @classmethod
    def decoded(cls, pairs: list[ImagePair]) -> ValidationImages:
        missing = [p.name for p in pairs if p.lr is None]
        if missing:
            raise ValueError(f"validation pairs without LR: {', '.join(missing)}")
        return cls(pairs=pairs)

    @classmethod
    def on_demand(
        cls, items: list[ValidationItem], scale: int, degradation: Degradation, seed: int
    ) -> ValidationImages:
        return cls(items=items, scale=scale, degradation=degradation, seed=seed)

    def __len__(self) -> int:
        return len(self.pairs) if self.pairs is not None else len(self.items or [])

    def set_names(self) -> list[str]:
        """The set of every item, in order."""
        if self.pairs is not None:
            return [pair.set_name for pair in self.pairs]
        return [item.set_name for item in self.items or []]

    @classmethod
    def read_all(
        cls,
        items: list[ValidationItem],
        scale: int,
        degradation: Degradation,
        seed: int,
        on_bad_image: OnBadImage,
    ) -> ValidationImages:
        """Every item decoded and degraded now, by as many threads as torch has, each running
        torch single-threaded (on 2 cores this set-up took 25-30% less time than one image
        after another on 2 threads). Unreadable images are refused all together or skipped
        (``on_bad_image``); notes about images are warned once per set."""
        reader = cls.on_demand(items, scale, degradation, seed)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(max(1, threads), "srlab-decode") as pool:
                results = list(pool.map(reader._read, range(len(items))))
        finally:
            torch.set_num_threads(threads)
        problems = [str(r["error"]) for r in results if isinstance(r, dict)]
        refuse_or_skip(
            problems, on_bad_image, "unreadable validation image(s)", "Fix or remove these files"
        )
        pairs = [r[0] for r in results if not isinstance(r, dict)]
        check_one_bit_depth(pairs)
        noted: dict[str, list[str]] = {}
        for result in results:
            if not isinstance(result, dict) and result[1]:
                noted.setdefault(result[1], []).append(f"{result[0].set_name}/{result[0].name}")
        for note, names in noted.items():
            warnings.warn(f"{len(names)} image(s): {note}: {', '.join(names[:10])}", stacklevel=2)
        return cls.decoded(pairs)

    def _read(self, index: int) -> tuple[ImagePair, str] | Sample:
        assert self.items is not None and self.degradation is not None
        item = self.items[index]
        try:
            image = item.read()
        except ImageReadError as error:
            return {"error": str(error), "set": item.set_name, "index": torch.tensor(index)}
        pair = make_pair(
            image, item.set_name, self.scale, self.degradation, self.seed, item.index, True
        )
        return pair, image.note

    def __getitem__(self, index: int) -> Sample:
        if self.pairs is not None:
            pair, note = self.pairs[index], ""
        else:
            read = self._read(index)
            if isinstance(read, dict):
                return read
            pair, note = read
        assert pair.lr is not None
        sample: Sample = {
            "lr": to_tensor(pair.lr),
            "hr": to_tensor(pair.hr),
            "name": pair.name,
            "set": pair.set_name,
            "gray": torch.tensor(pair.gray),
            "bit_depth": depth_tensor(pair.hr),
            "index": torch.tensor(index),
        }
        if note:
            sample["note"] = note
        return sample
