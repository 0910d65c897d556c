"""Bicubic scores of a validation set, so every result can be printed beside its baseline."""

from __future__ import annotations

from collections.abc import Iterable
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
    count = 0
    for batch in batches:
        sr = upscale(net, batch["lr"], scale).clamp(0.0, 1.0)
        raw_gray = batch.get("gray") if gray == "raw" else None
        peak = batch_peak(batch)
        for scores in score_batch(sr, batch["hr"], border=scale, raw_gray=raw_gray, peak=peak):
            for name, value in scores.as_dict().items():
                totals[name] += value
            count += 1
    if count == 0:
        raise ValueError("no validation images to score")
    return {name: total / count for name, total in totals.items()}
