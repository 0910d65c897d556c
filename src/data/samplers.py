"""Samplers: an unpadded distributed one for evaluation, and an index range for training.

Evaluation: the sampler gives every image to exactly one rank.

Lightning's default ``DistributedSampler`` pads the dataset with repeated images so every rank
gets the same count: averaged metrics over Set5 then count some images twice. Here rank ``r`` of
``n`` takes indices ``r, r + n, r + 2n, ...`` and nothing is repeated; the metric states are then
summed across ranks by torchmetrics, so the scores equal a single-process run's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler


class UnpaddedDistributedSampler(DistributedSampler):
    """Strided, unshuffled, unpadded: each index on exactly one rank (counts may differ by one)."""

    def __init__(self, dataset: Sized, num_replicas: int, rank: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)  # type: ignore[arg-type]
        self.indices = list(range(rank, len(dataset), num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ResumableIndexSampler(Sampler[int]):
    """Indices ``0 .. length - 1`` in order; after a resume the first pass starts at ``start``.

    Training patches are pure functions of their index, so a run resumed at step ``k`` starts
    its first pass at index ``k x batch`` and sees exactly the patches an uninterrupted run
    would have seen. ``len()`` stays the whole epoch: Lightning counts the batches a resumed
    epoch had already consumed itself and ends the epoch when the total reaches this length.
    """

    def __init__(self, length: int, start: int = 0):
        self.length = length
        self._start = start % length if length else 0

    def __iter__(self) -> Iterator[int]:
        start, self._start = self._start, 0
        return iter(range(start, self.length))

    def __len__(self) -> int:
        return self.length


def consumed_samples(trainer: pl.Trainer | None, batch_size: int) -> int:
    """Training samples the optimiser steps already taken have used (non-zero after a resume)."""
    if trainer is None:
        return 0
    per_step = batch_size * trainer.accumulate_grad_batches * trainer.world_size
    return trainer.global_step * per_step


def training_loader(
    dataset: Dataset[Any], batch_size: int, start: int, num_workers: int, pin_memory: bool
) -> DataLoader:
    """The training DataLoader from sample ``start`` on. Samples are already random functions
    of their index; a resumed run starts where the checkpoint stopped (under DDP Lightning
    splits this range across the ranks)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ResumableIndexSampler(len(dataset), start),  # type: ignore[arg-type]
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=num_workers > 0,
    )


def validation_loader(
    dataset: Dataset[Any], trainer: pl.Trainer | None, num_workers: int
) -> DataLoader:
    """One item per batch, each on exactly one rank under DDP (Lightning keeps a
    DistributedSampler it is given instead of its padding one)."""
    sampler = None
    if trainer is not None and trainer.world_size > 1:
        sampler = UnpaddedDistributedSampler(
            dataset,  # type: ignore[arg-type]
            trainer.world_size,
            trainer.global_rank,
        )
    return DataLoader(dataset, batch_size=1, num_workers=num_workers, sampler=sampler)
