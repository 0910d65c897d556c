"""The standard SR test sets (Set5, Set14, B100, Urban100, Manga109) as image sources.

Layout, as in ``../shared/data/benchmarks``::

    <root>/<Set>/HR/<name>.png
    <root>/<Set>/LR_bicubic/X<s>/<name>x<s>.png      (only read with lr_source=files)

By default LR comes from the MATLAB-exact resize of the mod-cropped HR; ``lr_source=files`` reads
the set's own LR files instead. Each HR image's decoded pixels can be checked against the shipped
manifest (``benchmark_pixels.tsv``): a copy that decodes differently scores differently, and a
warning says which files differ. A standard set missing from disk is downloaded file by file
from the pinned manifest by :meth:`BenchmarkSet.ensure_present` (:mod:`src.data.benchmark_download`)
unless ``data.download=false``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np

from src.data.benchmark_download import ensure_benchmark
from src.data.pixels import pixel_digest, pixel_manifest, warn_differing
from src.data.sources import DatasetNotFoundError, ImageReader, ImageSource, OnBadImage
from src.io.images import (
    ImageReadError,
    NamedImage,
    decode,
    is_single_channel,
    list_images,
    read_rgb,
    to_rgb_uint8,
)

PIXELS_DIFFER = (
    "decodes to different pixels than the reference copy, so its scores may differ from "
    "published ones"
)
LrSource = Literal["matlab", "files"]


@dataclass
class BenchmarkSet:
    """One test set's HR images (and, with ``lr_source=files``, its LR files)."""

    name: str
    root: str
    scale: int
    lr_source: LrSource = "matlab"
    lr_folder: str = "LR_bicubic"
    verify_pixels: bool = True
    on_bad_image: OnBadImage = "error"
    # data.download: fetch the missing files of a standard set from the pinned manifest.
    allow_download: bool = True

    @property
    def hr_dir(self) -> Path:
        return Path(self.root) / self.name / "HR"

    def ensure_present(self) -> Path:
        """The HR folder, its missing files downloaded first for a set the manifest pins; a set
        still missing raises naming where it belongs."""
        ensure_benchmark(self.name, self.hr_dir, allow_download=self.allow_download)
        self._files()
        return self.hr_dir

    def lr_path(self, stem: str) -> Path:
        folder = Path(self.root) / self.name / self.lr_folder / f"X{self.scale}"
        return folder / f"{stem}x{self.scale}.png"

    def _files(self) -> list[Path]:
        if not self.hr_dir.is_dir():
            raise DatasetNotFoundError(
                f"benchmark set {self.name} not found: expected its HR images at "
                f"{self.hr_dir.resolve()} (set paths.data_dir to the folder holding benchmarks/; "
                f"Set5, Set14, B100, Urban100 and Manga109 download themselves unless "
                f"data.download=false)"
            )
        files = list_images(self.hr_dir)
        if not files:
            raise DatasetNotFoundError(f"{self.name}: no image files in {self.hr_dir.resolve()}")
        return files

    def _read_lr(self, stem: str) -> np.ndarray:
        path = self.lr_path(stem)
        if not path.is_file():
            raise DatasetNotFoundError(
                f"{self.name}: lr_source=files but {path.resolve()} is missing "
                f"(use data.lr_source=matlab to make LR from HR)"
            )
        return read_rgb(path)

    def read(self, path: Path) -> NamedImage:
        """One HR image (and its LR file with ``lr_source=files``); ``note`` says when its
        pixels differ from the reference copy's."""
        raw = decode(path)
        expected = pixel_manifest().get((self.name, path.name))
        differs = self.verify_pixels and expected is not None and pixel_digest(raw) != expected
        lr = self._read_lr(path.stem) if self.lr_source == "files" else None
        rgb = to_rgb_uint8(raw, str(path))
        note = PIXELS_DIFFER if differs else ""
        return NamedImage(
            path.stem, rgb, lr, gray=is_single_channel(raw), path=str(path), note=note
        )

    def readers(self) -> list[ImageReader]:
        return [partial(self.read, path) for path in self._files()]

    def load(self) -> list[NamedImage]:
        images, skipped = [], []
        for read in self.readers():
            try:
                images.append(read())
            except ImageReadError as error:
                if self.on_bad_image == "error":
                    raise
                skipped.append(str(error))
        warn_differing(self.name, [Path(image.path).name for image in images if image.note])
        if skipped:
            warnings.warn(f"{self.name}: skipped unreadable {'; '.join(skipped)}", stacklevel=2)
        return images


def benchmark_sets(
    root: str,
    sets: list[str],
    scale: int,
    lr_source: LrSource = "matlab",
    lr_folder: str = "LR_bicubic",
    verify_pixels: bool = True,
    on_bad_image: OnBadImage = "error",
    others: Mapping[str, ImageSource] | None = None,
    allow_download: bool = True,
) -> list[ImageSource]:
    """One :class:`BenchmarkSet` per name in ``sets`` (``data.sets=[Set5,Set14]``).

    A name found in ``others`` picks that source instead: how a training config offers its own
    validation images (``data.sets=[Set5,DIV2K_valid]``) beside the benchmark sets.
    ``allow_download`` (``data.download``) lets a missing standard set download itself.
    """
    others = others or {}
    return [
        others[name]
        if name in others
        else BenchmarkSet(
            name, root, scale, lr_source, lr_folder, verify_pixels, on_bad_image, allow_download
        )
        for name in sets
    ]
