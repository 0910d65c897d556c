"""Given LR/HR pairs (real-world SR sets): HR images in one folder, their LR in another.

Files are matched by name: the LR of ``<name>.png`` is ``<name>x<s>.<ext>`` (the naming of the
DIV2K and benchmark LR folders) or ``<name>.<ext>``. The LR must be exactly the HR mod-cropped to
the scale and divided by it; every pair is checked when the source loads, so a bad pair stops
the run at set-up with both file names (or is skipped with a warning under
``on_bad_image=skip``), never in the middle of an epoch. No degradation is applied to these
images: :func:`~src.data.datasets.make_pairs` uses the given LR as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from src.data.checks import refuse_or_skip, size_text
from src.data.sources import DatasetNotFoundError, FolderSplit, ImageReader
from src.io.images import ImageReadError, NamedImage, list_images, read_named, read_pixels


def lr_candidates(hr_stem: str, scale: int) -> list[str]:
    """LR file stems that belong to an HR file, in order of preference."""
    return [f"{hr_stem}x{scale}", hr_stem]


@dataclass
class PairedFolderImages(FolderSplit):
    """HR images in ``hr_root`` with their LR in ``lr_root``; a seeded split as
    :class:`~src.data.sources.FolderImages` does (the split is over HR files)."""

    hr_root: str
    lr_root: str
    scale: int
    name: str = "paired"
    # The LR comes with the images: the sub-image cache, which makes its own LR, cannot be used.
    given_lr = True

    def _folder(self, root: str, what: str) -> Path:
        folder = Path(root)
        if not folder.is_dir():
            raise DatasetNotFoundError(
                f"{self.name}: {what} folder {folder.resolve()} not found (set data.hr_root and "
                f"data.lr_root to the folders of the pairs)"
            )
        return folder

    def _read_pair(self, hr_path: Path, lr_files: dict[str, Path], lr_dir: Path) -> NamedImage:
        stems = lr_candidates(hr_path.stem, self.scale)
        lr_path = next((lr_files[stem] for stem in stems if stem in lr_files), None)
        if lr_path is None:
            raise ImageReadError(
                f"{hr_path}: no LR image for it in {lr_dir} (looked for "
                f"{' or '.join(f'{stem}.*' for stem in stems)})"
            )
        hr = read_named(hr_path, self.pixel_format)
        lr = read_pixels(lr_path, self.pixel_format)
        s = self.scale
        height, width = hr.pixels.shape[0] // s, hr.pixels.shape[1] // s
        if lr.shape[:2] != (height, width):
            raise ImageReadError(
                f"{hr_path} ({size_text(hr.pixels.shape)}) and {lr_path} "
                f"({size_text(lr.shape)}) do not agree with scale x{s}: the HR mod-cropped to "
                f"{width * s}x{height * s} needs an LR of {width}x{height}"
            )
        return NamedImage(hr.name, hr.pixels, lr, gray=hr.gray, path=hr.path)

    def files(self) -> list[Path]:
        """The HR files this source loads (each with its LR from ``lr_root``)."""
        hr_dir = self._folder(self.hr_root, "HR")
        hr_files = list_images(hr_dir)
        if not hr_files:
            raise DatasetNotFoundError(f"{self.name}: no image files in {hr_dir.resolve()}")
        return self.chosen(hr_files)

    def readers(self) -> list[ImageReader]:
        """One reader per HR file, each reading its LR too and checking the pair."""
        hr_files = self.files()
        lr_dir = self._folder(self.lr_root, "LR")
        lr_files = {path.stem: path for path in list_images(lr_dir)}
        return [partial(self._read_pair, hr_path, lr_files, lr_dir) for hr_path in hr_files]

    def load(self) -> list[NamedImage]:
        hr_dir = Path(self.hr_root)
        images, problems = [], []
        for read in self.readers():
            try:
                images.append(read())
            except ImageReadError as error:
                problems.append(str(error))
        refuse_or_skip(
            problems,
            self.on_bad_image,
            f"unusable LR/HR pair(s) in {self.name}",
            "Fix or remove these files",
        )
        if not images:
            raise DatasetNotFoundError(f"{self.name}: no usable LR/HR pair in {hr_dir.resolve()}")
        return images
