"""The LightningDataModule: HR sources in, LR/HR training patches and validation images out.

Images are decoded once in ``setup`` and kept in memory as uint8, up to ``data.cache.memory_gb``;
deterministic degradations (bicubic) are computed once per image there too. With
``val_workers`` > 0 (``src.eval`` sets 1) validation images are instead read one by one by that
many DataLoader workers while earlier ones are scored; unreadable ones are handled here, in the
main process, by ``on_bad_image``. With
A batch degradation (``degradation=realesrgan_batch``) is applied to each training batch after
it reaches the training device, in ``on_after_batch_transfer``; there too the target is
unsharp-masked under ``sharpen_target``. With
``data.cache.on_disk`` the training set is instead written once to disk, whole or cut (in
``prepare_data``, on one process per node) and memory-mapped (:mod:`src.data.cache`,
:mod:`src.data.subimages`). Training is iteration-based: the training set
holds exactly ``max_steps x batch_size`` patches (or ``num_patches``), each a pure function of its
index, so one "epoch" is the whole run and no patch repeats.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from src.data.cache import CacheSettings, cache_settings, check_memory_cap
from src.data.checks import fit_patches
from src.data.datasets import PatchDataset, ValidationImages, ValidationItem, make_pairs
from src.data.degradations import BicubicDegradation, Degradation
from src.data.samplers import consumed_samples, training_loader, validation_loader
from src.data.sources import (
    ImageSource,
    OnBadImage,
    fetch_missing,
    set_pixel_format,
    source_files,
    source_readers,
)
from src.data.subimages import SubImageCache
from src.io.images import ImageReadError, NamedImage, PixelFormat
from src.ops.degrade import unsharp_mask
from src.utils.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_NUM_PATCHES = 16_000


def sharpening(settings: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``data.sharpen_target`` as the sharpening takes it: null, or some of weight, kernel_size
    and threshold (the schema refuses other keys and bad values)."""
    if settings is None:
        return None
    values = dict(settings)
    if "kernel_size" in values:
        values["kernel_size"] = int(values["kernel_size"])
    return values


class SRDataModule(pl.LightningDataModule):
    """Training patches from ``train_set``; whole-image validation on each of ``val_sets``."""

    def __init__(
        self,
        scale: int,
        val_sets: Sequence[ImageSource],
        train_set: ImageSource | None = None,
        degradation: Degradation | None = None,
        lr_patch_size: int = 48,
        batch_size: int = 16,
        num_workers: int = 0,
        num_patches: int | None = None,
        seed: int = 0,
        augment: bool = True,
        pin_memory: bool = False,
        root: str | None = None,
        sets: list[str] | None = None,
        lr_source: str | None = None,
        on_bad_image: OnBadImage = "error",
        hr_root: str | None = None,
        lr_root: str | None = None,
        cache: CacheSettings | Mapping[str, Any] | None = None,
        val_workers: int = 0,
        sharpen_target: Mapping[str, Any] | None = None,
        bit_depth: int | str = "auto",
        channels: int | str = 3,
        download: bool = True,
    ):
        """``root``, ``sets``, ``lr_source``, ``hr_root`` and ``lr_root`` are short command-line
        keys (``data.root``, ``data.sets``, ...) that configs interpolate into their sources; the
        module only records them. ``on_bad_image`` (also passed to the sources) says what to do
        with training images too small for a patch: ``error`` or ``skip`` with a warning.
        ``cache`` is ``data.cache`` (:class:`~src.data.cache.CacheSettings`). ``val_workers``:
        0 decodes the validation images once at set-up and keeps them (training validates
        many times); more reads them on demand in that many loader workers (one pass).
        ``sharpen_target`` (``weight``, ``kernel_size``, ``threshold``; null: off) trains against
        Real-ESRGAN's unsharp-masked HR, kept beside the plain one as ``hr_plain``.
        ``bit_depth`` (auto, 8, 16) and ``channels`` (1, 3; auto is resolved from the files
        before the module is built) are the :class:`~src.io.images.PixelFormat` every source
        read from files decodes to. ``download`` (``data.download``), like ``root``, is only
        recorded: the configs pass it to their sources."""
        super().__init__()
        self.root = root
        self.sets = sets
        self.lr_source = lr_source
        self.on_bad_image = on_bad_image
        self.hr_root = hr_root
        self.lr_root = lr_root
        self.download = download
        self.scale = scale
        self.train_set = train_set
        self.val_sets = list(val_sets)
        self.degradation = degradation or BicubicDegradation()
        self.lr_patch_size = lr_patch_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.num_patches = num_patches
        self.seed = seed
        self.augment = augment
        self.pin_memory = pin_memory
        self.cache = cache_settings(cache)
        self.val_workers = val_workers
        self.sharpen_target = sharpening(sharpen_target)
        self.pixel_format = PixelFormat.from_config(bit_depth, channels)
        self._give_sources_the_format()
        self.train_data: PatchDataset | None = None
        self.val_data: ValidationImages | None = None

    def _give_sources_the_format(self) -> None:
        """Every source decodes to the data's pixel format; one that only decodes 8-bit RGB
        (bundled photos, benchmark sets) is refused for 16-bit or single-channel data."""
        sources = [*self.val_sets, *([self.train_set] if self.train_set else [])]
        keeps_8bit_rgb = self.pixel_format.channels == 3 and self.pixel_format.bit_depth != 16
        for source in sources:
            if not set_pixel_format(source, self.pixel_format) and not keeps_8bit_rgb:
                raise UserError(
                    f"data.bit_depth={self.pixel_format.bit_depth or 'auto'} "
                    f"data.channels={self.pixel_format.channels}: {source.name} is decoded to "
                    f"8-bit RGB only; use a folder of images (data=folder, data=paired)"
                )
        if self.cache.on_disk and not keeps_8bit_rgb:
            raise UserError(
                "data.cache.on_disk=true stores 8-bit RGB; 16-bit or single-channel data is "
                "kept in memory (cache=memory)"
            )

    @property
    def val_set_names(self) -> list[str]:
        return [source.name for source in self.val_sets]

    def setup(self, stage: str | None = None) -> None:
        if self.val_data is None:
            self.val_data = self._build_val_data()
        if stage in (None, "fit") and self.train_data is None and self.train_set is not None:
            self.train_data = self._build_train_data()

    def _build_val_data(self) -> ValidationImages:
        readers = [source_readers(source) for source in self.val_sets]
        if all(r is not None for r in readers):
            items = [
                ValidationItem(source.name, index, read)
                for source, source_reads in zip(self.val_sets, readers, strict=True)
                for index, read in enumerate(source_reads or [])
            ]
            for name, count in Counter(item.set_name for item in items).items():
                log.info("validation set %s: %d images", name, count)
            if self.val_workers > 0:
                log.info("validation images read by %d worker(s)", self.val_workers)
                return ValidationImages.on_demand(items, self.scale, self.degradation, self.seed)
            return ValidationImages.read_all(
                items, self.scale, self.degradation, self.seed, self.on_bad_image
            )
        pairs = []
        for source in self.val_sets:
            set_pairs = make_pairs(
                source.load(),
                source.name,
                self.scale,
                self.degradation,
                self.seed,
                always_degrade=True,
            )
            log.info("validation set %s: %d images", source.name, len(set_pairs))
            pairs.extend(set_pairs)
        return ValidationImages.decoded(pairs)

    def _planned_patches(self) -> int:
        if self.num_patches is not None:
            return self.num_patches
        trainer = self.trainer
        if trainer is not None and trainer.max_steps and trainer.max_steps > 0:
            # Under DDP each rank takes every world_size-th patch of the one index space.
            per_step = self.batch_size * trainer.accumulate_grad_batches * trainer.world_size
            return trainer.max_steps * per_step
        return DEFAULT_NUM_PATCHES

    def _subimage_cache(self) -> SubImageCache:
        """The training set's on-disk cache."""
        assert self.train_set is not None
        source = self.train_set
        files = None if getattr(source, "given_lr", False) else source_files(source)
        if files is None:
            raise UserError(
                f"data.cache.on_disk=true needs a training set of HR image files; "
                f"{source.name} ({type(source).__name__}) is not one: set "
                f"data.cache.on_disk=false (cache=memory)"
            )
        return SubImageCache(
            self.cache,
            source.name,
            files,
            self.scale,
            self.degradation,
            self.pixel_format.bit_depth,
        )

    def ensure_available(self) -> None:
        """Download missing sets (where configured and ``data.download`` allows) and check
        that every set's files are there, or raise naming what is missing. ``src.train`` calls
        this before any logger or run file exists, Lightning again through ``prepare_data``
        (``src.eval``'s only call); repeated, it finds all in place."""
        for source in [*self.val_sets, *([self.train_set] if self.train_set else [])]:
            fetch_missing(source)
            source_files(source)

    def prepare_data(self) -> None:
        """Download missing sets and build the on-disk cache, once: Lightning calls this on one
        process per node, before any process sets up."""
        self.ensure_available()
        if self.train_set is not None and self.cache.on_disk:
            self._subimage_cache().ensure_built(self.on_bad_image)

    def _load_train_images(self) -> list[NamedImage]:
        """The training images: mapped sub-images, or decoded whole within the memory cap."""
        assert self.train_set is not None
        if self.cache.on_disk:
            cache = self._subimage_cache()
            cache.ensure_built(self.on_bad_image)  # a no-op after prepare_data
            return cache.load()
        listed = source_files(self.train_set)
        if listed is not None:
            check_memory_cap(self.train_set.name, listed, self.scale, self.cache.memory_gb)
        return self.train_set.load()

    def _build_train_data(self) -> PatchDataset:
        assert self.train_set is not None
        name = self.train_set.name
        images = fit_patches(
            self._load_train_images(), name, self.scale, self.lr_patch_size, self.on_bad_image
        )
        pairs = make_pairs(images, name, self.scale, self.degradation, self.seed)
        log.info("training set %s: %d images", self.train_set.name, len(pairs))
        return PatchDataset(
            pairs,
            scale=self.scale,
            lr_patch_size=self.lr_patch_size,
            degradation=self.degradation,
            length=self._planned_patches(),
            seed=self.seed,
            augment=self.augment,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_data is None:
            raise RuntimeError("this data config has no train_set: it can validate but not train")
        start = consumed_samples(self.trainer, self.batch_size)
        if start:
            log.info("resuming the training patches at index %d", start)
        return training_loader(
            self.train_data, self.batch_size, start, self.num_workers, self.pin_memory
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_data is not None, "call setup() first"
        workers = self.val_workers if self.val_data.items is not None else 0
        return validation_loader(self.val_data, self.trainer, workers)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Training batches on the device: LR made here by a batch degradation, and the target
        sharpened under ``sharpen_target``. Validation batches pass through."""
        if not isinstance(batch, dict) or "seed" not in batch:
            return batch
        if "lr" not in batch:
            degrade_batch = self.degradation.degrade_batch  # type: ignore[attr-defined]
            with torch.no_grad():
                batch["lr"] = degrade_batch(batch["hr"], batch["seed"].tolist(), self.scale)
        if self.sharpen_target is not None:
            batch["hr_plain"] = batch["hr"]
            with torch.no_grad():
                batch["hr"] = unsharp_mask(batch["hr"], **self.sharpen_target)
        return batch

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Validation images read on demand: a failed read raises here (``on_bad_image=error``)
        or its item is dropped with a warning (``skip``); notes about an image are warned."""
        if not isinstance(batch, dict):
            return batch
        if "error" in batch:
            message = batch["error"][0]
            if self.on_bad_image == "error":
                raise ImageReadError(message)
            warnings.warn(f"skipped unreadable image: {message}", stacklevel=2)
            return {"set": batch["set"], "index": batch["index"]}  # no image: not scored
        for name, note in zip(batch.get("name", []), batch.get("note", []), strict=False):
            warnings.warn(f"{batch['set'][0]}/{name}: {note}", stacklevel=2)
        return batch
