"""Where HR images come from: bundled sample photos, or a folder (optionally downloaded first).

A source is a small description that Hydra instantiates from YAML; nothing is read until
:meth:`load` runs in the data module's ``setup``. Each image is decoded once.

Validation sources also offer :meth:`readers`: one picklable callable per image that decodes
just that image, so that evaluation can decode the next images in DataLoader workers while the
current one is scored (``data.val_workers``), instead of decoding every set up front.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from src.data.benchmark_download import ensure_benchmark
from src.data.errors import DatasetNotFoundError
from src.io.images import (
    RGB8,
    ImageReadError,
    NamedImage,
    PixelFormat,
    is_single_channel,
    list_images,
    read_named,
    to_rgb_uint8,
)

if TYPE_CHECKING:
    from src.io.download import RemoteArchive

log = logging.getLogger(__name__)

Split = Literal["all", "train", "val"]
OnBadImage = Literal["error", "skip"]


# Decodes one image when called (or raises ImageReadError naming its file); picklable.
ImageReader = Callable[[], NamedImage]


class ImageSource(Protocol):
    """Anything that yields decoded HR images under a set name."""

    name: str

    def load(self) -> list[NamedImage]: ...


def source_readers(source: ImageSource) -> list[ImageReader] | None:
    """One reader per image of ``source``, or None for a source that can only load whole."""
    readers = getattr(source, "readers", None)
    return None if readers is None else readers()


def skimage_photo(image_name: str) -> NamedImage:
    """One of the photographs bundled with scikit-image, by its ``skimage.data`` name."""
    import skimage.data

    loader = getattr(skimage.data, image_name, None)
    if loader is None:
        raise DatasetNotFoundError(f"scikit-image has no sample image named {image_name!r}")
    pixels = loader()
    if isinstance(pixels, tuple):  # stereo pairs come as (left, right, disparity)
        pixels = pixels[0]
    rgb = to_rgb_uint8(pixels, f"skimage:{image_name}")
    return NamedImage(image_name, rgb, gray=is_single_channel(pixels))


@dataclass
class SkimageImages:
    """Photographs bundled inside scikit-image: offline, no download, same on every machine."""

    names: list[str]
    name: str = "sample"

    def readers(self) -> list[ImageReader]:
        return [partial(skimage_photo, image_name) for image_name in self.names]

    def load(self) -> list[NamedImage]:
        return [read() for read in self.readers()]


def split_files(files: list[Path], split: Split, val_count: int, seed: int) -> list[Path]:
    """Deterministic train/val split: a seeded permutation, the first ``val_count`` for val."""
    if split == "all":
        return files
    if not 0 < val_count < len(files):
        folder = files[0].parent if files else "the folder"
        raise DatasetNotFoundError(
            f"{folder}: a {split} split with val_count={val_count} needs val_count between 1 "
            f"and {len(files) - 1} for its {len(files)} images (the data config's val_count)"
        )
    order = np.random.default_rng(seed).permutation(len(files))
    chosen = order[:val_count] if split == "val" else order[val_count:]
    return [files[i] for i in sorted(chosen)]


def read_each(
    files: list[Path],
    on_bad_image: OnBadImage,
    skipped: list[str],
    pixel_format: PixelFormat = RGB8,
) -> Iterator[NamedImage]:
    """Decode ``files`` one by one; a bad one raises, or (``skip``) is left out with its
    problem appended to ``skipped``."""
    for path in files:
        try:
            image = read_named(path, pixel_format)
        except ImageReadError as error:
            if on_bad_image == "error":
                raise
            skipped.append(str(error))
            continue
        yield image


def warn_skipped(skipped: list[str]) -> None:
    """One warning listing the unreadable images that were left out, if any."""
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unreadable image(s):\n  " + "\n  ".join(skipped),
            stacklevel=3,
        )


def decode_all(
    files: list[Path], on_bad_image: OnBadImage, pixel_format: PixelFormat = RGB8
) -> list[NamedImage]:
    """Decode ``files``; bad ones raise, or are skipped with one warning listing them."""
    skipped: list[str] = []
    images = list(read_each(files, on_bad_image, skipped, pixel_format))
    warn_skipped(skipped)
    return images


def archive_to_fetch(
    download: RemoteArchive | Mapping[str, Any], name: str, root: Path, key: str
) -> RemoteArchive:
    """The archive to fetch for a missing folder, refusing one without a sha256 to verify it.

    ``download`` is a :class:`~src.io.download.RemoteArchive`, or its fields as a mapping
    (``url``, ``sha256``, ``size``, ``filename``, ``subdir``): the form dataset configs use, so
    that a config whose checksum is not known yet still builds. ``key`` is where ``download``
    sits in the config, quoted in the message.
    """
    from src.io.download import RemoteArchive

    if isinstance(download, RemoteArchive):
        return download
    fields = dict(download)
    if not fields.get("sha256"):
        raise DatasetNotFoundError(
            f"{name} images not found at {root.resolve()}, and the configured archive "
            f"{fields.get('url')} has no sha256, so it is not downloaded (an archive that cannot "
            f"be verified is never used): set {key}.sha256=<hex> to verify the archive, or put "
            f"the images in {root.resolve()} yourself"
        )
    return RemoteArchive(**fields)


@dataclass(kw_only=True)
class FolderSplit:
    """What folder sources share: which of the folder's files they use (all, or one side of a
    seeded train/val split), what to do with unreadable images, and the pixel format images
    are decoded to (set by the data module from ``data.bit_depth`` and ``data.channels``)."""

    split: Split = "all"
    val_count: int = 0
    split_seed: int = 0
    on_bad_image: OnBadImage = "error"
    pixel_format: PixelFormat = field(default_factory=PixelFormat)

    def chosen(self, files: list[Path]) -> list[Path]:
        """This source's side of the split of ``files``."""
        return split_files(files, self.split, self.val_count, self.split_seed)


@dataclass
class FolderImages(FolderSplit):
    """Every image in ``root`` (not recursive), or a seeded train/val split of them.

    If ``root`` is missing and ``download`` describes an archive (see :func:`archive_to_fetch`),
    it is fetched, verified and extracted first; otherwise loading stops with a sentence that
    says where the images belong. ``download_key`` is where ``download`` sits in the config,
    for messages. ``benchmark`` names the standard test set whose HR folder ``root`` is
    (``data=urban100``): its missing files are downloaded from the pinned manifest and its
    copies checked (:func:`~src.data.benchmark_download.ensure_benchmark`).
    ``allow_download`` (``data.download``) false downloads nothing.
    """

    root: str
    name: str = ""
    download: RemoteArchive | Mapping[str, Any] | None = None
    cache_dir: str | None = None
    download_key: str = "data.train_set.download"
    benchmark: str | None = None
    allow_download: bool = True
    _checked: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.name = self.name or Path(self.root).name

    def ensure_present(self) -> Path:
        """Return the folder, downloading it (or its missing files) first where configured."""
        root = Path(self.root)
        if self.benchmark is not None and not self._checked:
            ensure_benchmark(
                self.benchmark, root, allow_download=self.allow_download, check_copies=True
            )
            self._checked = True
        if root.is_dir():
            return root
        if self.download is None or not self.allow_download:
            raise DatasetNotFoundError(
                f"{self.name} images not found: expected a folder of HR images at "
                f"{root.resolve()} (set paths.data_dir, or the data config's root, to where "
                f"they are{'; data.download=true fetches them' if self.download else ''})"
            )
        from src.io.download import fetch

        archive = archive_to_fetch(self.download, self.name, root, self.download_key)
        cache = Path(self.cache_dir) if self.cache_dir else root.parent / ".downloads"
        log.info("%s is missing; downloading it to %s", self.name, root)
        fetch(archive, cache, root)
        return root

    def files(self) -> list[Path]:
        """The image files this source loads (after downloading them, if needed)."""
        root = self.ensure_present()
        files = list_images(root)
        if not files:
            raise DatasetNotFoundError(f"{self.name}: no image files in {root.resolve()}")
        return self.chosen(files)

    def readers(self) -> list[ImageReader]:
        return [partial(read_named, path, self.pixel_format) for path in self.files()]

    def load(self) -> list[NamedImage]:
        images = decode_all(self.files(), self.on_bad_image, self.pixel_format)
        if not images:
            raise DatasetNotFoundError(
                f"{self.name}: no readable image in {Path(self.root).resolve()}"
            )
        return images


@dataclass
class ConcatImages:
    """Several sources loaded as one training set (DF2K = DIV2K + Flickr2K)."""

    sources: Sequence[ImageSource]
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or "+".join(source.name for source in self.sources)

    def files(self) -> list[Path] | None:
        """Every source's files, or None when one of them is not read from files."""
        listed = [source_files(source) for source in self.sources]
        if any(files is None for files in listed):
            return None
        return [path for files in listed for path in files or []]

    def load(self) -> list[NamedImage]:
        return [image for source in self.sources for image in source.load()]


def set_pixel_format(source: ImageSource, pixel_format: PixelFormat) -> bool:
    """Give ``source`` (each part of a :class:`ConcatImages`) the data set's pixel format;
    False when some part decodes only to 8-bit RGB (bundled photos, benchmark sets)."""
    every_part = True
    for part in getattr(source, "sources", [source]):
        if hasattr(part, "pixel_format"):
            part.pixel_format = pixel_format
        else:
            every_part = False
    return every_part


def fetch_missing(source: ImageSource) -> None:
    """Download the images of ``source`` (or of each part of a :class:`ConcatImages`) that are
    missing and can be downloaded (an archive, a standard test set), or raise naming what is
    missing; a source without files is left alone."""
    for part in getattr(source, "sources", [source]):
        ensure_present = getattr(part, "ensure_present", None)
        if ensure_present is not None:
            ensure_present()


def source_files(source: ImageSource) -> list[Path] | None:
    """The files a source reads its images from, or None for one that has no files (bundled
    sample photos)."""
    files = getattr(source, "files", None)
    return None if files is None else files()
