"""Bicubic scores of a validation set, so every result can be printed beside its baseline."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from src.archs.bicubic import Bicubic
from src.metrics.paper import METRIC_NAMES, Gray, batch_peak, score_batch
from src.ops.inference import upscale


@torch.no_grad()
def bicubic_scores(
    batches: Iterable[dict[str, Any]], scale: int, gray: Gray = "expand"
) -> dict[str, float]:
    """Mean paper-convention scores of MATLAB-bicubic upscaling over ``batches`` of images,
    grayscale files scored under the same ``gray`` convention as the model (``model.gray``),
    16-bit data at its own peak as the model's scores are."""
    net = Bicubic(scale)
    totals = dict.fromkeys(METRIC_NAMES, 0.0)
    count = 0.0
    for batch in batches:
        if "lr" not in batch:
            continue  # an unreadable item the data module skipped
        for lr, hr, border, weight in scored_units(batch, scale):
            sr = upscale(net, lr, scale).clamp(0.0, 1.0)
            raw_gray = batch.get("gray") if gray == "raw" and lr.dim() == 4 else None
            peak = batch_peak(batch)
            for scores in score_batch(sr, hr, border=border, raw_gray=raw_gray, peak=peak):
                for name, value in scores.as_dict().items():
                    totals[name] += value * weight
                count += weight
    if count == 0:
        raise ValueError("no validation images to score")
    return {name: total / count for name, total in totals.items()}


def scored_units(
    batch: dict[str, Any], scale: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int, float]]:
    """(LR, HR, border, weight of each image): a batch of images as it is (border: the scale),
    or each clip's frames weighted one over the clip's length (a clip counts once, as the video
    papers average) with the clip's border (``crop_border``, none for the video protocols)."""
    lr, hr = batch["lr"], batch["hr"]
    if lr.dim() == 4:
        yield lr, hr, scale, 1.0
        return
    border = int(batch["crop_border"][0]) if "crop_border" in batch else scale
    for i in range(lr.shape[0]):
        yield lr[i], hr[i], border, 1.0 / lr.shape[1]
