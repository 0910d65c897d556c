"""On-disk cache of training sub-images, memory-mapped: a large training set is decoded once.

2K training sets (DIV2K, Flickr2K) are slow to decode and too big to keep decoded in memory.
As the SR toolboxes do for DIV2K, each HR image (mod-cropped to the scale) is cut once into
``crop`` px squares every ``step`` px, the last row and column flush with the border (an image
side no longer than ``crop`` stays whole), and the pixels are written as raw uint8 to one file
that later runs map into memory with :class:`numpy.memmap`: nothing is decoded again, pages are
read on first touch and shared by every DataLoader worker through the OS page cache.

With a deterministic degradation (bicubic) the LR sub-images are cut from the LR of the whole
image, so every patch equals one cut from the uncached pair. Random degradations are applied to
each patch as it is drawn, as without the cache. Patches are drawn uniformly over sub-images, so
a large image is drawn more often than a small one (in proportion to its area, roughly).

With ``crop`` None the images are stored whole, not cut: nothing is duplicated on disk and the
patches are exactly those of the in-memory set (same images in the same order), only mapped
instead of decoded.

A cache folder ``<dir>/<set>_x<scale>_c<crop>_s<step>_<lr>_<digest>`` (``whole`` in place of
``c<crop>_s<step>`` when not cut) holds ``hr.u8``, ``lr.u8`` (when the LR is stored) and
``index.json``. The digest covers the source folders and the cache's *key*: everything that
shapes its pixels -- the scale, crop and step, the decoding of the files and, when the LR is
stored, every setting of the degradation (:func:`~src.data.degradations.describe`) -- so a run
with another blur sigma gets its own cache instead of the old LR. The index holds the format
version, the key, the source files' paths, sizes and modification times (a change rebuilds the
cache), the files left out as unreadable, and each sub-image's source, position, size and byte
offsets. It is built under a temporary name and
renamed when complete, so an interrupted build leaves nothing a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from src.data.cache import CacheSettings
from src.data.degradations import Degradation, describe
from src.data.sources import DatasetNotFoundError, OnBadImage, read_each, warn_skipped
from src.io.images import DECODED_PIXELS, RGB8, NamedImage, PixelFormat
from src.ops.imresize import modcrop
from src.utils.errors import UserError
from src.utils.files import publish, remove_stale_beside, temporary_beside

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
PROGRESS_EVERY = 50


def cut_positions(length: int, crop: int | None, step: int) -> list[int]:
    """Start offsets of the sub-images along one side of ``length`` px (``crop`` None: one,
    the whole side)."""
    if crop is None or length <= crop:
        return [0]
    starts = list(range(0, length - crop + 1, step))
    if starts[-1] != length - crop:
        starts.append(length - crop)
    return starts


def cache_digest(files: list[Path], key: dict[str, Any]) -> str:
    """8 hex digits that differ between the folders ``files`` come from and between keys."""
    folders = sorted({str(path.resolve().parent) for path in files})
    text = json.dumps({"folders": folders, "key": key}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def fingerprint(files: list[Path]) -> list[list[Any]]:
    """Path, size and modification time of each file: what decides whether a cache is stale."""
    rows = []
    for path in files:
        stat = path.stat()
        rows.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    return rows


@dataclass(frozen=True)
class SubImage:
    """Where one sub-image sits: in its source image and in the cache files."""

    source: int
    top: int
    left: int
    height: int
    width: int
    hr_offset: int
    lr_offset: int


class SubImageWriter:
    """Appends sub-images of whole HR (and LR) images to the raw files of a cache being built."""

    def __init__(
        self,
        hr_file: BinaryIO,
        lr_file: BinaryIO | None,
        scale: int,
        crop: int | None,
        step: int,
    ):
        self.hr_file, self.lr_file = hr_file, lr_file
        self.scale, self.crop, self.step = scale, crop, step
        self.hr_bytes = self.lr_bytes = 0
        self.sub_images: list[SubImage] = []

    def _append(self, file: BinaryIO, pixels: np.ndarray) -> None:
        file.write(np.ascontiguousarray(pixels).tobytes())

    def add(self, source: int, hr: np.ndarray, lr: np.ndarray | None) -> None:
        s = self.scale
        height, width = hr.shape[:2]
        for top in cut_positions(height, self.crop, self.step):
            for left in cut_positions(width, self.crop, self.step):
                h, w = min(self.crop or height, height), min(self.crop or width, width)
                self.sub_images.append(
                    SubImage(source, top, left, h, w, self.hr_bytes, self.lr_bytes)
                )
                self._append(self.hr_file, hr[top : top + h, left : left + w])
                self.hr_bytes += h * w * 3
                if lr is not None and self.lr_file is not None:
                    lr_tile = lr[top // s : (top + h) // s, left // s : (left + w) // s]
                    self._append(self.lr_file, lr_tile)
                    self.lr_bytes += lr_tile.size


class SubImageCache:
    """The sub-image cache of one training set at one scale: built once, then memory-mapped."""

    def __init__(
        self,
        settings: CacheSettings,
        set_name: str,
        files: list[Path],
        scale: int,
        degradation: Degradation,
        bit_depth: int | None = 8,
    ):
        """``bit_depth``: the data's (``data.bit_depth``): 8 rounds 16-bit files to 8 bits, as
        asked; None (auto) refuses a 16-bit file, whose 16 bits this 8-bit cache cannot hold
        while validation decodes them."""
        self.settings = settings
        self.bit_depth = bit_depth
        self.set_name = set_name
        self.files = files
        self.scale = scale
        self.degradation = degradation
        self.stores_lr = degradation.deterministic
        lr_kind = type(degradation).__name__.removesuffix("Degradation").lower()
        cut = f"c{settings.crop}_s{settings.step}" if settings.crop is not None else "whole"
        label = f"{set_name}_x{scale}_{cut}"
        label += f"_{lr_kind}" if self.stores_lr else "_hr"
        self.key = {
            "scale": scale,
            "crop": settings.crop,
            "step": settings.step if settings.crop is not None else None,
            "decode": DECODED_PIXELS,
            "bit_depth": bit_depth or "auto",
            "degradation": describe(degradation) if self.stores_lr else None,
        }
        # Two sets of the same name in different folders, or one set degraded two ways, must
        # not share (and keep rebuilding) one cache: the digest tells them apart.
        label += f"_{cache_digest(files, self.key)}"
        self.folder = Path(settings.dir) / label.replace("/", "_").replace("+", "_")

    def _skipped(self) -> list[str]:
        return list((self._read_index() or {}).get("skipped") or [])

    def _read_index(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.folder / "index.json").read_text())
        except (OSError, ValueError):
            return None

    def is_current(self) -> bool:
        """True when the cache exists, is complete and was cut from exactly these files."""
        index = self._read_index()
        return (
            index is not None
            and index.get("version") == FORMAT_VERSION
            and index.get("key") == json.loads(json.dumps(self.key))
            and index.get("sources") == fingerprint(self.files)
        )

    def ensure_built(self, on_bad_image: OnBadImage) -> None:
        """Build the cache unless a current one is there (one built by skipping unreadable
        files is rebuilt under ``on_bad_image=error``, which then names them)."""
        if self.is_current() and not (on_bad_image == "error" and self._skipped()):
            return
        if self.folder.exists():
            log.info("%s: the source images changed; rebuilding the sub-image cache", self.set_name)
        self._build(on_bad_image)

    def _cut_all(
        self, on_bad_image: OnBadImage, writer: SubImageWriter
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Decode, degrade and cut every file; return the sources kept and the files skipped."""
        sources: list[dict[str, Any]] = []
        skipped: list[str] = []
        started = time.perf_counter()
        decoded = RGB8 if self.bit_depth == 8 else PixelFormat(bit_depth=None, channels=3)
        for image in read_each(self.files, on_bad_image, skipped, decoded):
            self._refuse_high_depth(image)
            hr = modcrop(image.pixels, self.scale)
            lr = None
            if self.stores_lr:  # deterministic: the generator is never drawn from
                lr = self.degradation(hr, self.scale, np.random.default_rng(0))
            writer.add(len(sources), hr, lr)
            sources.append({"name": image.name, "path": image.path, "gray": image.gray})
            if len(sources) % PROGRESS_EVERY == 0:
                self._log_progress(len(sources) + len(skipped), writer, started)
        self._log_progress(len(sources) + len(skipped), writer, started)
        return sources, skipped

    def _refuse_high_depth(self, image: NamedImage) -> None:
        if image.pixels.dtype != np.uint8:
            raise UserError(
                f"{image.path or image.name} is a 16-bit image, and the on-disk cache "
                f"(data.cache.on_disk=true) stores 8 bits: use cache=memory to train on its 16 "
                f"bits, or data.bit_depth=8 to train on 8-bit copies"
            )

    def _log_progress(self, done: int, writer: SubImageWriter, started: float) -> None:
        log.info(
            "%s: cached %d/%d images (%d pieces) in %.0f s",
            self.set_name,
            done,
            len(self.files),
            len(writer.sub_images),
            time.perf_counter() - started,
        )

    def _build(self, on_bad_image: OnBadImage) -> None:
        # Builds killed earlier left their temporaries; the process id in the name tells.
        remove_stale_beside(self.folder, folder=True)
        try:
            self._write(temporary_beside(self.folder, folder=True), on_bad_image)
        except OSError as error:  # a folder that cannot be made or written, a full disk
            raise UserError(
                f"could not write the {self.set_name} data cache under {self.settings.dir}: "
                f"{error.strerror or error}; set data.cache.dir to a writable folder with room, "
                f"or use cache=memory"
            ) from error

    def _write(self, temporary: Path, on_bad_image: OnBadImage) -> None:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        try:
            with open(temporary / "hr.u8", "wb") as hr_file:
                lr_file = open(temporary / "lr.u8", "wb") if self.stores_lr else None  # noqa: SIM115
                try:
                    writer = SubImageWriter(
                        hr_file, lr_file, self.scale, self.settings.crop, self.settings.step
                    )
                    sources, skipped = self._cut_all(on_bad_image, writer)
                finally:
                    if lr_file is not None:
                        lr_file.close()
            index = {
                "version": FORMAT_VERSION,
                "key": self.key,
                "scale": self.scale,
                "crop": self.settings.crop,
                "step": self.settings.step,
                "sources": fingerprint(self.files),
                "images": sources,
                "skipped": skipped,
                "sub_images": [list(vars(sub).values()) for sub in writer.sub_images],
            }
            (temporary / "index.json").write_text(json.dumps(index))
            self._publish(temporary)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)

    def _publish(self, temporary: Path) -> None:
        """Move a complete build into place; a concurrent builder's current cache is kept."""
        if self.folder.exists():
            if self.is_current():
                return
            shutil.rmtree(self.folder)
        try:
            publish(temporary, self.folder)
        except OSError:
            if not self.is_current():
                raise
        log.info("cache written to %s", self.folder)

    def load(self) -> list[NamedImage]:
        """Every sub-image as a :class:`NamedImage` whose pixels (and LR) map the cache files."""
        index = self._read_index()
        if index is None:
            raise DatasetNotFoundError(f"no sub-image cache at {self.folder}: build it first")
        warn_skipped(index["skipped"])
        if not index["sub_images"]:
            raise DatasetNotFoundError(f"{self.set_name}: no readable image to cut sub-images from")
        hr = np.memmap(self.folder / "hr.u8", dtype=np.uint8, mode="r")
        lr = np.memmap(self.folder / "lr.u8", dtype=np.uint8, mode="r") if self.stores_lr else None
        sources = index["images"]
        images = []
        for row in index["sub_images"]:
            sub = SubImage(*row)
            source = sources[sub.source]
            hr_pixels = hr[sub.hr_offset : sub.hr_offset + sub.height * sub.width * 3]
            lr_pixels = None
            if lr is not None:
                lr_h, lr_w = sub.height // self.scale, sub.width // self.scale
                lr_pixels = lr[sub.lr_offset : sub.lr_offset + lr_h * lr_w * 3]
                lr_pixels = lr_pixels.reshape(lr_h, lr_w, 3)
            whole = self.settings.crop is None
            images.append(
                NamedImage(
                    source["name"] if whole else f"{source['name']}@{sub.left},{sub.top}",
                    hr_pixels.reshape(sub.height, sub.width, 3),
                    lr_pixels,
                    gray=source["gray"],
                    path=source["path"]
                    if whole
                    else f"{source['path']} (sub-image at x={sub.left}, y={sub.top})",
                )
            )
        return images
