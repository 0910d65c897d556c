"""The LightningDataModule of video data: clip sources in, training clips and whole validation
clips out, with the interface of :class:`~src.data.datamodule.SRDataModule` (``val_set_names``,
``train_set``, ``pixel_format``, ``ensure_available``, ``val_data``), so ``src.train`` and
``src.eval`` take ``data=vid4`` as they take ``data=benchmark``.

Batches (the shared contract of issue 25):

* training: ``{"lr": (N, T, C, p, p), "hr": (N, T, C, sp, sp)}`` float32 in [0, 1] with ``T =
  num_frames``, plus ``name``, ``set``, ``start``, ``reversed`` and ``seed`` per clip;
* validation, batch size 1: ``{"lr": (1, T, C, h, w), "hr": (1, T, C, H, W), "set": [set],
  "name": [clip], "frames": [(frame,), ...] (default_collate's list of 1-tuples), "index":
  tensor([i]), "gray", "bit_depth"}``.

On the training device (``on_after_batch_transfer``), under ``data.sharpen_target`` the training
target is unsharp-masked (the plain HR kept as ``hr_plain``), and under a per-clip degradation
(``degradation=realbasicvsr``, :mod:`src.data.clip_degradation`) each clip's LR is remade from its
HR by draws from its ``seed``.

Training is iteration-based as for images: ``num_patches`` clips, or ``max_steps x batch_size``,
each a pure function of its index (:class:`~src.data.clips.TrainingClips`), resumed where a
checkpoint stopped (:class:`~src.data.samplers.ResumableIndexSampler`). A training set whose
decoded frames fit under ``data.cache.memory_gb`` is decoded once at set-up; a larger one is read
from disk per sample. Validation clips are read when first asked for and kept when they fit
(``val_workers`` 0), or read by that many DataLoader workers (one pass, as ``src.eval`` makes).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from src.data.cache import GIB, CacheSettings, cache_settings, readable_size
from src.data.clip_degradation import degrades_clips
from src.data.clips import (
    ClipEntry,
    ClipError,
    ClipRef,
    ClipSource,
    ClipStore,
    DiskClip,
    MemoryClip,
    TrainingClips,
    ValidationClips,
    check_lr_source,
    refuse_or_warn,
)
from src.data.datamodule import sharpening
from src.data.degradations import BicubicDegradation
from src.data.samplers import consumed_samples, training_loader, validation_loader
from src.data.sources import OnBadImage
from src.io.images import PixelFormat
from src.ops.degrade import unsharp_mask
from src.utils.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_NUM_CLIPS = 4_000


def clip_bytes(entries: Sequence[ClipEntry], scale: int) -> int:
    """Bytes the clips decode to (uint8 RGB HR and its LR), from each clip's first frame."""
    total = 0
    for entry in entries:
        height, width = entry.frame_size()
        total += len(entry.frame_names) * height * width * 3
    return int(total * (1 + 1 / scale**2))


def clip_pixel_format(bit_depth: int | str, channels: int | str) -> PixelFormat:
    """Clips are decoded to 8-bit RGB; other settings are refused naming the key."""
    if str(bit_depth) not in ("8", "auto"):
        raise UserError(f"data.bit_depth={bit_depth}: clip data is decoded to 8 bits only")
    if str(channels) not in ("3", "auto"):
        raise UserError(f"data.channels={channels}: clip data is decoded to RGB only")
    return PixelFormat(8, 3)


def training_degradation(degradation: Any) -> Any:
    """The per-clip degradation of training batches, or None for the default bicubic (each
    set's ``lr_source``); other degradations are refused naming the group."""
    if degradation is None or isinstance(degradation, BicubicDegradation):
        return None
    if degrades_clips(degradation):
        return degradation
    raise UserError(
        f"degradation={type(degradation).__name__}: clip data makes its LR per set (lr_source "
        f"bi, bd or files), or per clip with degradation=realbasicvsr; leave "
        f"degradation=bicubic or choose realbasicvsr"
    )


def sharpen_clips(clips: torch.Tensor, settings: Mapping[str, Any]) -> torch.Tensor:
    """(N, T, C, H, W) clips unsharp-masked frame by frame."""
    return unsharp_mask(clips.flatten(0, 1), **settings).unflatten(0, clips.shape[:2])


class ClipDataModule(pl.LightningDataModule):
    """Training clips from ``train_set``; whole clips for validation from each of ``val_sets``."""

    def __init__(
        self,
        scale: int,
        val_sets: Sequence[ClipSource],
        train_set: ClipSource | None = None,
        num_frames: int = 15,
        lr_patch_size: int = 64,
        batch_size: int = 4,
        num_workers: int = 0,
        num_patches: int | None = None,
        seed: int = 0,
        augment: bool = True,
        reverse_prob: float = 0.5,
        mirror: bool = False,
        pin_memory: bool = False,
        root: str | None = None,
        lr_source: str | None = None,
        lr_root: str | None = None,
        on_bad_image: OnBadImage = "error",
        cache: CacheSettings | Mapping[str, Any] | None = None,
        val_workers: int = 0,
        bit_depth: int | str = 8,
        channels: int | str = 3,
        download: bool = True,
        degradation: Any = None,
        sharpen_target: Mapping[str, Any] | None = None,
    ):
        """``root``, ``lr_source``, ``lr_root`` and ``download`` are short command-line keys
        that the configs interpolate into their sources; the module only records them.
        ``num_frames``: frames of a training sample; ``reverse_prob``: the probability that a
        sample's frames are reversed; ``mirror``: a sample is its frames followed by the same
        frames backwards (2 ``num_frames``; mmagic's MirrorSequence). ``cache``: ``data.cache``
        (its ``memory_gb`` decides whether a set is kept decoded). ``degradation`` is the
        ``degradation`` group's: clips take their LR from each set's ``lr_source`` under the
        default bicubic; a per-clip
        degradation (``degradation=realbasicvsr``) remakes the LR of each training batch on the
        device (:meth:`on_after_batch_transfer`), validation clips keep their ``lr_source``.
        ``sharpen_target``: as :class:`~src.data.datamodule.SRDataModule`'s, the training
        target unsharp-masked on the device, the plain HR kept as ``hr_plain``."""
        super().__init__()
        self.degradation = training_degradation(degradation)
        self.sharpen_target = sharpening(sharpen_target)
        if getattr(self.degradation, "from_sharpened", False) and self.sharpen_target is None:
            raise UserError(
                "data.degradation.from_sharpened degrades the sharpened HR: set "
                "data.sharpen_target (RealBasicVSR: {weight: 0.5, kernel_size: 51, threshold: 10})"
            )
        if num_frames < 1:
            raise UserError(f"data.num_frames must be at least 1, got {num_frames}")
        if not 0.0 <= reverse_prob <= 1.0:
            raise UserError(f"data.reverse_prob must be between 0 and 1, got {reverse_prob}")
        self.root, self.lr_source, self.lr_root, self.download = root, lr_source, lr_root, download
        self.scale = scale
        self.train_set = train_set
        self.val_sets = list(val_sets)
        self.num_frames = num_frames
        self.lr_patch_size = lr_patch_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.num_patches = num_patches
        self.seed = seed
        self.augment = augment
        self.reverse_prob = reverse_prob
        self.mirror = mirror
        self.pin_memory = pin_memory
        self.on_bad_image = on_bad_image
        self.cache = cache_settings(cache)
        self.val_workers = val_workers
        self.pixel_format = clip_pixel_format(bit_depth, channels)
        for source in self._sources():
            check_lr_source(str(getattr(source, "lr_source", "bi")), scale, f"{source.name}")
        self.train_data: TrainingClips | None = None
        self.val_data: ValidationClips | None = None

    def _sources(self) -> list[ClipSource]:
        return [*self.val_sets, *([self.train_set] if self.train_set is not None else [])]

    @property
    def val_set_names(self) -> list[str]:
        return [source.name for source in self.val_sets]

    def ensure_available(self) -> None:
        """Download missing sets (where configured and allowed) and list every clip, or raise
        naming what is missing or unusable; repeated, it finds all in place."""
        for source in self._sources():
            source.clips_found()

    def prepare_data(self) -> None:
        self.ensure_available()

    def setup(self, stage: str | None = None) -> None:
        if self.val_data is None:
            self.val_data = self._build_val_data()
        if stage in (None, "fit") and self.train_data is None and self.train_set is not None:
            self.train_data = self._build_train_data()

    def _fits_in_memory(self, entries: Sequence[ClipEntry], what: str) -> bool:
        """Whether ``entries`` decoded stay under ``data.cache.memory_gb`` (said in the log)."""
        needed = clip_bytes(entries, self.scale)
        cap = self.cache.memory_gb
        fits = cap is None or needed <= cap * GIB
        log.info(
            "%s: %d clips, %s decoded: %s",
            what,
            len(entries),
            readable_size(needed),
            "kept in memory" if fits else f"read from disk (over data.cache.memory_gb={cap})",
        )
        return fits

    def _build_val_data(self) -> ValidationClips:
        entries = [entry for source in self.val_sets for entry in source.clips_found()]
        keep = self.val_workers == 0 and self._fits_in_memory(entries, "validation clips")
        return ValidationClips(entries, self.scale, keep)

    def _usable(self, entries: Sequence[ClipEntry], set_name: str) -> list[ClipEntry]:
        """The clips long and large enough for training samples; others refused or skipped."""
        hr_patch = self.lr_patch_size * self.scale
        usable, problems = [], []
        for entry in entries:
            height, width = entry.frame_size()
            where = f"{set_name}/{entry.name}"
            if len(entry.frame_names) < self.num_frames:
                problems.append(
                    f"{where}: {len(entry.frame_names)} frames, fewer than "
                    f"data.num_frames={self.num_frames}"
                )
            elif min(height - height % self.scale, width - width % self.scale) < hr_patch:
                problems.append(
                    f"{where}: frames of {width}x{height} px are smaller than the HR patch of "
                    f"{hr_patch} px (data.lr_patch_size={self.lr_patch_size} x scale {self.scale})"
                )
            else:
                usable.append(entry)
        refuse_or_warn(problems, self.on_bad_image, f"clip(s) of {set_name} unusable for training")
        if not usable:
            raise UserError(
                f"{set_name}: no clip has data.num_frames={self.num_frames} frames of at least "
                f"{hr_patch} px; lower data.num_frames or data.lr_patch_size"
            )
        return usable

    def _stores(self, entries: Sequence[ClipEntry], set_name: str) -> list[ClipStore]:
        """In-memory clips when they fit under the cap, else clips read from disk per sample."""
        if self._fits_in_memory(entries, f"training set {set_name}"):
            return [MemoryClip(entry.read(self.scale)) for entry in entries]
        on_disk = [entry for entry in entries if isinstance(entry, ClipRef)]
        if len(on_disk) < len(entries):
            raise UserError(
                f"{set_name}: its clips (synthetic, or video files) are read whole into memory "
                f"and do not fit under data.cache.memory_gb={self.cache.memory_gb}; raise it, "
                f"use fewer clips, or extract video files into frame folders"
            )
        stores: list[ClipStore] = []
        for ref in on_disk:
            height, width = ref.frame_size()
            stores.append(DiskClip(ref, self.scale, (height // self.scale, width // self.scale)))
        return stores

    def _planned_samples(self) -> int:
        if self.num_patches is not None:
            return self.num_patches
        trainer = self.trainer
        if trainer is not None and trainer.max_steps and trainer.max_steps > 0:
            per_step = self.batch_size * trainer.accumulate_grad_batches * trainer.world_size
            return trainer.max_steps * per_step
        return DEFAULT_NUM_CLIPS

    def _build_train_data(self) -> TrainingClips:
        assert self.train_set is not None
        name = self.train_set.name
        entries = self._usable(self.train_set.clips_found(), name)
        stores = self._stores(entries, name)
        log.info("training set %s: %d clips", name, len(stores))
        return TrainingClips(
            stores,
            num_frames=self.num_frames,
            lr_patch_size=self.lr_patch_size,
            length=self._planned_samples(),
            seed=self.seed,
            augment=self.augment,
            reverse_prob=self.reverse_prob,
            mirror=self.mirror,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_data is None:
            raise RuntimeError("this data config has no train_set: it can validate but not train")
        start = consumed_samples(self.trainer, self.batch_size)
        if start:
            log.info("resuming the training clips at index %d", start)
        return training_loader(
            self.train_data, self.batch_size, start, self.num_workers, self.pin_memory
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_data is not None, "call setup() first"
        return validation_loader(self.val_data, self.trainer, self.val_workers)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Training batches on the device: the target sharpened under ``sharpen_target``, and
        the LR remade from the HR (or the sharpened HR, ``from_sharpened``) by a per-clip
        degradation, each clip by its own ``seed``. Validation batches pass through."""
        if not isinstance(batch, dict) or "seed" not in batch:
            return batch
        plain = batch["hr"]
        with torch.no_grad():
            if self.sharpen_target is not None:
                batch["hr_plain"] = plain
                batch["hr"] = sharpen_clips(plain, self.sharpen_target)
            if self.degradation is not None:
                sharpened = getattr(self.degradation, "from_sharpened", False)
                source = batch["hr"] if sharpened else plain
                seeds = batch["seed"].tolist()
                batch["lr"] = self.degradation.degrade_clips(source, seeds, self.scale)
        return batch

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A validation clip that could not be read raises here (``on_bad_image=error``) or is
        left unscored with a warning (``skip``)."""
        if isinstance(batch, dict) and "error" in batch:
            message = batch["error"][0]
            if self.on_bad_image == "error":
                raise ClipError(message)
            warnings.warn(f"skipped unreadable clip: {message}", stacklevel=2)
            return {"set": batch["set"], "index": batch["index"]}
        return batch
