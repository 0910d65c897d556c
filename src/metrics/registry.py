"""The metrics validation, ``src.eval`` and ``src.score`` compute, by name (``metrics=[...]``).

Each metric says which values it produces (its columns), whether higher is better, and whether
it needs the HR reference:

* ``psnr`` and ``ssim``: the papers' convention (:mod:`src.metrics.paper`), on Y and RGB: always
  computed (``val/psnr_y`` picks the best checkpoint), listed for the record;
* ``niqe``: no-reference naturalness of the SR image's Y (:mod:`src.metrics.niqe`), lower better;
* ``lpips`` (AlexNet) and ``lpips_vgg``: learned perceptual distance to HR on RGB
  (:mod:`src.metrics.lpips`), lower better;
* ``dists``: deep structure and texture similarity to HR on RGB (:mod:`src.metrics.dists`),
  lower better;
* ``tof`` and ``tlp``: on video sets, TecoGAN's temporal consistency of each pair of consecutive
  frames (:mod:`src.metrics.temporal`: optical flow and LPIPS changes, SR against HR), lower
  better; image sets have no pairs and no value.

The learned metrics' weight files (LPIPS's and DISTS's) are set by ``metric_weights``.

Every metric sees the SR image rounded to 8 bits and both images with ``border`` pixels cropped,
the convention of the paper scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from src.metrics.paper import METRIC_NAMES, crop_border, rgb_to_y, to_uint8_levels
from src.utils.errors import UserError

Columns = dict[str, list[float]]


@dataclass(frozen=True)
class MetricInfo:
    """What a metric produces and how to read it."""

    name: str
    columns: tuple[str, ...]
    higher_is_better: bool
    needs_reference: bool


PAPER = {
    "psnr": MetricInfo("psnr", ("psnr_y", "psnr_rgb"), True, True),
    "ssim": MetricInfo("ssim", ("ssim_y", "ssim_rgb"), True, True),
}
EXTRA = {
    "niqe": MetricInfo("niqe", ("niqe",), False, False),
    "lpips": MetricInfo("lpips", ("lpips",), False, True),
    "lpips_vgg": MetricInfo("lpips_vgg", ("lpips_vgg",), False, True),
    "dists": MetricInfo("dists", ("dists",), False, True),
}
# Temporal consistency of a clip (TecoGAN's, src/metrics/temporal.py), scored per pair of
# consecutive frames on video sets; raw values (TecoGAN's tables print tOF x 10, tLP x 100).
TEMPORAL = {
    "tof": MetricInfo("tof", ("tof",), False, True),
    "tlp": MetricInfo("tlp", ("tlp",), False, True),
}
KNOWN = {**PAPER, **EXTRA, **TEMPORAL}
# What is scored when nothing else is asked (conf/scoring.yaml says the same for the commands).
DEFAULT_METRICS = tuple(PAPER)
LOWER_IS_BETTER = {
    column for info in KNOWN.values() if not info.higher_is_better for column in info.columns
}


class ExtraMetric:
    """A metric beyond PSNR/SSIM: per-image values of (N, 3, H, W) SR and HR in [0, 1].

    Not a module: a learned metric's network stays out of checkpoints (it is fixed and fetched
    by checksum) and follows the images' device when it is used."""

    def __init__(
        self,
        info: MetricInfo,
        compute: Callable[[torch.Tensor, torch.Tensor], Columns],
        prepare: Callable[[], None] = lambda: None,
    ):
        self.info = info
        self.compute = compute
        self.prepare = prepare

    def __call__(self, sr: torch.Tensor, hr: torch.Tensor | None, border: int) -> Columns:
        if self.info.needs_reference and hr is None:
            raise UserError(f"metric {self.info.name} compares with HR images: give gt=DIR")
        sr = crop_border(to_uint8_levels(sr), border) / 255.0
        reference = crop_border(hr.double(), border) if hr is not None else sr
        return self.compute(sr, reference)


def niqe_metric() -> ExtraMetric:
    from src.metrics.niqe import niqe

    def compute(sr: torch.Tensor, hr: torch.Tensor) -> Columns:
        luma = rgb_to_y((sr * 255.0).round_())[:, 0].cpu().numpy()  # back on the exact levels
        return {"niqe": [niqe(image) for image in luma]}

    return ExtraMetric(EXTRA["niqe"], compute)


def learned_metric(name: str, network: nn.Module, prepare: Callable[[], None]) -> ExtraMetric:
    """A metric computed in fp32 by a fixed network on the images' device."""

    def compute(sr: torch.Tensor, hr: torch.Tensor) -> Columns:
        network.to(sr.device)
        return {name: network(sr.float(), hr.float()).tolist()}

    return ExtraMetric(EXTRA[name], compute, prepare)


def lpips_metric(name: str, weights: str, cache_dir: str) -> ExtraMetric:
    from src.metrics.lpips import LPIPS

    network = LPIPS("alex" if name == "lpips" else "vgg", weights, cache_dir, "metric_weights")
    return learned_metric(name, network, network.prepare)


def dists_metric(weights: str, cache_dir: str) -> ExtraMetric:
    from src.metrics.dists import DISTS

    network = DISTS(weights, cache_dir, "metric_weights")
    return learned_metric("dists", network, network.prepare)


PairScores = dict[str, dict[int, float]]


class ClipMetric:
    """A temporal metric: per-pair values of a clip's SR and HR frames (T, 3, H, W) in [0, 1],
    keyed by the later frame of each pair."""

    def __init__(
        self,
        info: MetricInfo,
        compute: Callable[[torch.Tensor, torch.Tensor], dict[int, float]],
        prepare: Callable[[], None] = lambda: None,
    ):
        self.info = info
        self.compute = compute
        self.prepare = prepare

    def __call__(self, sr: torch.Tensor, hr: torch.Tensor) -> PairScores:
        return {self.info.name: self.compute(sr, hr)}


def clip_metric(name: str, weights: str, cache_dir: str) -> ClipMetric:
    from src.metrics import temporal

    if name == "tof":
        return ClipMetric(TEMPORAL["tof"], temporal.flow_error_pairs)
    from src.metrics.lpips import LPIPS

    network = LPIPS("alex", weights, cache_dir, "metric_weights")
    return ClipMetric(
        TEMPORAL["tlp"],
        lambda sr, hr: temporal.lpips_change_pairs(sr, hr, network),
        network.prepare,
    )


def build_clip_metrics(
    names: Sequence[str], weights: str = "download", cache_dir: str = ".cache/weights"
) -> list[ClipMetric]:
    """The temporal metrics among ``names``."""
    return [clip_metric(n, weights, cache_dir) for n in dict.fromkeys(names) if n in TEMPORAL]


def build_metrics(
    names: Sequence[str], weights: str = "download", cache_dir: str = ".cache/weights"
) -> list[ExtraMetric]:
    """The extra metrics among ``names`` (unknown names are a user error listing the known)."""
    unknown = [name for name in names if name not in KNOWN]
    if unknown:
        raise UserError(f"metrics: unknown {unknown}; known: {', '.join(KNOWN)}")
    built = []
    for name in dict.fromkeys(names):
        if name == "niqe":
            built.append(niqe_metric())
        elif name in ("lpips", "lpips_vgg"):
            built.append(lpips_metric(name, weights, cache_dir))
        elif name == "dists":
            built.append(dists_metric(weights, cache_dir))
    return built


def columns_of(metrics: Sequence[ExtraMetric | ClipMetric]) -> tuple[str, ...]:
    """Every value the paper scores and ``metrics`` produce, in order."""
    return (*METRIC_NAMES, *(column for m in metrics for column in m.info.columns))
