"""Wall time of a validation pass, set by set, for the speed lines ``src.eval`` prints.

A set's time is the wall time from the end of the batch before its first image to the end of
its last one: data loading (decode and LR, in workers or not), upscaling, scoring and comparison
images, as a user waits for them. Under DDP each rank times its own share of each set.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import pytorch_lightning as pl


class SetTimer(pl.Callback):
    """``seconds[set]``, ``images[set]`` and HR ``megapixels[set]`` of the last validation
    pass (this rank's share)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.images: dict[str, int] = defaultdict(int)
        self.megapixels: dict[str, float] = defaultdict(float)
        self._last = 0.0

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds.clear()
        self.images.clear()
        self.megapixels.clear()
        self._last = time.perf_counter()

    def summary(self) -> dict[str, dict[str, float]]:
        """Per set: images, megapixels, seconds and milliseconds per megapixel."""
        return {
            name: {
                "images": self.images[name],
                "megapixels": round(self.megapixels[name], 4),
                "seconds": round(seconds, 3),
                "ms_per_megapixel": round(seconds / max(self.megapixels[name], 1e-9) * 1e3, 1),
            }
            for name, seconds in self.seconds.items()
        }

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        now = time.perf_counter()
        sets = list(batch["set"])
        hr = batch.get("hr")
        # A clip (N, T, C, H, W) counts its frames.
        frames = hr.shape[1] if hr is not None and hr.dim() == 5 else 1
        pixels = frames * hr.shape[-2] * hr.shape[-1] / 1e6 if hr is not None else 0.0
        for set_name in sets:
            self.seconds[set_name] += (now - self._last) / len(sets)
            self.images[set_name] += frames
            self.megapixels[set_name] += pixels
        self._last = now
