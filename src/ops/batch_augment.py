"""Batch augmentations of SR training pairs (``model.augment``, ``conf/augment``): mixup, CutMix,
CutBlur, RGB permutation, and MoA, the per-batch random choice among them (Yoo et al.,
"Rethinking Data Augmentation for Image Super-resolution", CVPR 2020; clovaai/cutblur).

Every batch: one op is picked (``choice_probs``; equal chances when unset), applied with its
``prob``, and its random parameters drawn. The draw (:func:`draw`) and its application
(:func:`apply`) are separate: the same draw applies to the LR/HR pair and to a second target of
the same batch (the plain HR beside a sharpened one). Applying is pure tensor work on LR
``(N, C, h, w)`` and HR ``(N, C, H, W)``, or clips ``(N, T, C, h, w)`` with one box, one channel
order and one partner clip for all frames of a clip.

* mixup (Zhang et al., ICLR 2018): LR with LR and HR with HR of partner samples, by one weight
  ``w ~ Beta(alpha, alpha)``: ``w * x + (1 - w) * x[partner]``.
* CutMix (Yun et al., ICCV 2019), as the CutBlur paper adapts it to SR: a box of side ``alpha``
  (+ N(0, 0.01)) of the image, at the same place in LR and HR, filled from the partner sample.
* CutBlur (the paper's): a box of HR pasted into the LR (inside), or the LR's box into HR
  (outside), each with chance 1/2; the target stays HR.
* RGB permutation: one random order of the channels for LR and HR.

The paper's networks take LR upscaled to HR size (nearest, then a pixel-unshuffle head), so LR
and HR share a grid. SR Lab's networks take LR at its own size, so for scale > 1 CutBlur pastes
in HR space with the LR nearest-upscaled and brings the result back by area averaging (mean of
each scale x scale block). That pair is an exact round trip: LR pixels stay untouched, and HR
pixels arrive averaged over their block; the box lies on the scale grid. (neosr upscales bilinear
or bicubic and downscales bicubic, which also blurs the LR outside the box; traiNNer-redux pastes
a bicubic downscale of the HR box, which for bicubic-made LR is nearly the LR itself.) At scale 1
this is the paper's CutBlur exactly.

Randomness comes from a NumPy generator seeded with ``(seed, global step, rank)``
(:func:`generator`): a resumed run draws what an uninterrupted one drew at the same step, with no
state to checkpoint. (NumPy rather than ``torch.Generator``: torch has no seeded Beta sampler.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from src.utils.errors import UserError

KEY = "model.augment"
OPS = ("mixup", "cutmix", "cutblur", "rgb_permute")
# The paper's MoA settings: mixup's Beta(1.2, 1.2); CutMix's and CutBlur's box side, 0.7 of the
# image's.
DEFAULT_ALPHAS: dict[str, float | None] = {
    "mixup": 1.2,
    "cutmix": 0.7,
    "cutblur": 0.7,
    "rgb_permute": None,
}
# The paper's box side: alpha plus Gaussian noise of this standard deviation, as a fraction.
BOX_JITTER = 0.01
# How far choice_probs may sum from 1 (rounding in hand-written decimals).
SUM_TOLERANCE = 1e-6


# --- settings --------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpSettings:
    """One op of the pool: the chance it is applied when picked, and its ``alpha``."""

    name: str
    prob: float
    alpha: float | None


@dataclass(frozen=True)
class AugmentSettings:
    """``model.augment``: the ops, the chance each is the one picked, the run's seed."""

    ops: tuple[OpSettings, ...]
    choice_probs: tuple[float, ...]
    seed: int


def parse_settings(config: Mapping[str, Any]) -> AugmentSettings:
    """``model.augment`` as plain data, checked; a bad value is a UserError naming its key.
    ``seed`` is the run's (``${seed}`` in ``conf/augment``); 0 when a Python caller omits it."""
    if not isinstance(config, Mapping):
        raise UserError(f"{KEY} must be a mapping with ops, got {config!r}")
    unknown = sorted(set(config) - {"ops", "choice_probs", "seed"})
    if unknown:
        raise UserError(f"{KEY}.{unknown[0]}: no such setting (ops, choice_probs, seed)")
    ops_config = config.get("ops")
    if not isinstance(ops_config, Mapping) or not ops_config:
        raise UserError(f"{KEY}.ops must name at least one op of {', '.join(OPS)}")
    ops = tuple(op_settings(str(name), values) for name, values in ops_config.items())
    seed = config.get("seed")
    seed = 0 if seed is None else seed
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"{KEY}.seed must be an integer >= 0, got {seed!r}")
    names = [op.name for op in ops]
    return AugmentSettings(ops, choice_probs(config.get("choice_probs"), names), seed)


def op_settings(name: str, values: Any) -> OpSettings:
    key = f"{KEY}.ops.{name}"
    if name not in OPS:
        raise UserError(f"{KEY}.ops: unknown op {name!r}; the ops are {', '.join(OPS)}")
    values = dict(values or {})
    allowed = {"prob"} | ({"alpha"} if DEFAULT_ALPHAS[name] is not None else set())
    extra = sorted(set(values) - allowed)
    if extra:
        raise UserError(f"{key}.{extra[0]}: no such setting ({', '.join(sorted(allowed))})")
    prob = number(values.get("prob", 1.0), f"{key}.prob")
    if not 0.0 <= prob <= 1.0:
        raise UserError(f"{key}.prob must be in [0, 1], got {prob}")
    alpha = values.get("alpha", DEFAULT_ALPHAS[name])
    if alpha is not None:
        alpha = number(alpha, f"{key}.alpha")
        check_alpha(name, alpha, f"{key}.alpha")
    return OpSettings(name, prob, alpha)


def number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{key} must be a number, got {value!r}")
    return float(value)


def check_alpha(name: str, alpha: float, key: str) -> None:
    """mixup's alpha is a Beta parameter (> 0); the box ops' is a side fraction in (0, 1]."""
    if name == "mixup" and not alpha > 0:
        raise UserError(f"{key} (the Beta distribution's parameter) must be > 0, got {alpha}")
    if name != "mixup" and not 0 < alpha <= 1:
        raise UserError(
            f"{key} (the box side, a fraction of the image's) must be in (0, 1], got {alpha}"
        )


def choice_probs(given: Any, names: list[str]) -> tuple[float, ...]:
    """Each op's chance of being the batch's pick, in the order of ``names``; equal when
    ``given`` is None. Ops ``given`` leaves out are never picked."""
    if given is None:
        return tuple(1.0 / len(names) for _ in names)
    if not isinstance(given, Mapping):
        raise UserError(f"{KEY}.choice_probs must map op names to probabilities, got {given!r}")
    for name, value in given.items():
        if name not in names:
            raise UserError(
                f"{KEY}.choice_probs.{name}: not an op of {KEY}.ops ({', '.join(names)})"
            )
        if not 0.0 <= number(value, f"{KEY}.choice_probs.{name}") <= 1.0:
            raise UserError(f"{KEY}.choice_probs.{name} must be in [0, 1], got {value}")
    probs = tuple(float(given.get(name, 0.0)) for name in names)
    if abs(sum(probs) - 1.0) > SUM_TOLERANCE:
        raise UserError(f"{KEY}.choice_probs must sum to 1, got {sum(probs):g}")
    return probs


# --- draws -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Box:
    """A rectangle on the LR grid."""

    top: int
    left: int
    height: int
    width: int

    def region(self, factor: int = 1) -> tuple[slice, slice]:
        """Row and column slices of the box on a grid ``factor`` times finer (HR)."""
        rows = slice(self.top * factor, (self.top + self.height) * factor)
        columns = slice(self.left * factor, (self.left + self.width) * factor)
        return rows, columns


@dataclass(frozen=True)
class Mixup:
    weight: float
    partners: tuple[int, ...]


@dataclass(frozen=True)
class CutMix:
    box: Box
    partners: tuple[int, ...]


@dataclass(frozen=True)
class CutBlur:
    box: Box
    inside: bool


@dataclass(frozen=True)
class RGBPermute:
    channels: tuple[int, ...]


Draw = Mixup | CutMix | CutBlur | RGBPermute


@dataclass(frozen=True)
class BatchShape:
    """What a draw needs to know of the batch: its size, the LR size, the channels."""

    samples: int
    lr_size: tuple[int, int]
    channels: int

    @classmethod
    def of(cls, lr: torch.Tensor) -> BatchShape:
        return cls(lr.shape[0], (lr.shape[-2], lr.shape[-1]), lr.shape[-3])


def generator(seed: int, step: int, rank: int) -> np.random.Generator:
    """The draws of one training step on one rank: a function of those three numbers only."""
    return np.random.default_rng([seed, step, rank])


def draw(settings: AugmentSettings, rng: np.random.Generator, shape: BatchShape) -> Draw | None:
    """The batch's augmentation: the op picked by ``choice_probs``, None when its ``prob``
    says not this time."""
    op = settings.ops[int(rng.choice(len(settings.ops), p=settings.choice_probs))]
    if rng.random() >= op.prob:
        return None
    return DRAWERS[op.name](op, rng, shape)


def draw_box(rng: np.random.Generator, alpha: float, size: tuple[int, int]) -> Box:
    """The paper's box: sides ``alpha`` + N(0, 0.01) of the image's, placed uniformly inside."""
    side = float(np.clip(rng.normal(alpha, BOX_JITTER), 0.0, 1.0))
    height, width = int(size[0] * side), int(size[1] * side)
    top = int(rng.integers(0, size[0] - height + 1))
    left = int(rng.integers(0, size[1] - width + 1))
    return Box(top, left, height, width)


def partners(rng: np.random.Generator, samples: int) -> tuple[int, ...]:
    return tuple(int(i) for i in rng.permutation(samples))


def draw_mixup(op: OpSettings, rng: np.random.Generator, shape: BatchShape) -> Mixup:
    assert op.alpha is not None
    return Mixup(float(rng.beta(op.alpha, op.alpha)), partners(rng, shape.samples))


def draw_cutmix(op: OpSettings, rng: np.random.Generator, shape: BatchShape) -> CutMix:
    assert op.alpha is not None
    return CutMix(draw_box(rng, op.alpha, shape.lr_size), partners(rng, shape.samples))


def draw_cutblur(op: OpSettings, rng: np.random.Generator, shape: BatchShape) -> CutBlur:
    assert op.alpha is not None
    return CutBlur(draw_box(rng, op.alpha, shape.lr_size), bool(rng.random() < 0.5))


def draw_rgb_permute(op: OpSettings, rng: np.random.Generator, shape: BatchShape) -> RGBPermute:
    return RGBPermute(tuple(int(c) for c in rng.permutation(shape.channels)))


DRAWERS: dict[str, Callable[[OpSettings, np.random.Generator, BatchShape], Draw]] = {
    "mixup": draw_mixup,
    "cutmix": draw_cutmix,
    "cutblur": draw_cutblur,
    "rgb_permute": draw_rgb_permute,
}


# --- applying a draw -------------------------------------------------------------------------
def scale_between(lr: torch.Tensor, hr: torch.Tensor) -> int:
    """The integer factor from LR to HR; a ValueError when the sizes do not fit one."""
    factor = hr.shape[-1] // max(lr.shape[-1], 1)
    if factor < 1 or hr.shape[-2:] != (lr.shape[-2] * factor, lr.shape[-1] * factor):
        raise ValueError(
            f"batch augmentation needs HR an integer multiple of LR in size, got LR "
            f"{tuple(lr.shape)} and HR {tuple(hr.shape)}"
        )
    return factor


def area_downscale(images: torch.Tensor, factor: int) -> torch.Tensor:
    """The mean of each ``factor`` x ``factor`` block, for images or clips."""
    if factor == 1:
        return images
    frames = images.reshape(-1, *images.shape[-3:])
    shrunk = F.avg_pool2d(frames, factor)
    return shrunk.reshape(*images.shape[:-2], *shrunk.shape[-2:])


def mixup(
    lr: torch.Tensor, hr: torch.Tensor, weight: float, order: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.tensor(order, device=lr.device)
    return weight * lr + (1 - weight) * lr[index], weight * hr + (1 - weight) * hr[index]


def cutmix(
    lr: torch.Tensor, hr: torch.Tensor, box: Box, order: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    factor = scale_between(lr, hr)
    index = torch.tensor(order, device=lr.device)
    mixed = []
    for images, grid in ((lr, 1), (hr, factor)):
        rows, columns = box.region(grid)
        out = images.clone()
        out[..., rows, columns] = images[index][..., rows, columns]
        mixed.append(out)
    return mixed[0], mixed[1]


def cutblur(
    lr: torch.Tensor, hr: torch.Tensor, box: Box, inside: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The LR input with HR in ``box`` (``inside``) or everywhere but ``box``; HR unchanged.
    HR pixels reach the LR grid as block means (see the module docstring)."""
    factor = scale_between(lr, hr)
    rows, columns = box.region()
    hr_rows, hr_columns = box.region(factor)
    if inside:
        out = lr.clone()
        out[..., rows, columns] = area_downscale(hr[..., hr_rows, hr_columns], factor)
    else:
        out = area_downscale(hr, factor).clone()
        out[..., rows, columns] = lr[..., rows, columns]
    return out, hr


def rgb_permute(
    lr: torch.Tensor, hr: torch.Tensor, channels: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.tensor(channels, device=lr.device)
    return lr.index_select(-3, index), hr.index_select(-3, index)


def apply(
    augmentation: Draw | None, lr: torch.Tensor, hr: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``lr`` and ``hr`` under one drawn augmentation (None: as they are)."""
    if isinstance(augmentation, Mixup):
        return mixup(lr, hr, augmentation.weight, augmentation.partners)
    if isinstance(augmentation, CutMix):
        return cutmix(lr, hr, augmentation.box, augmentation.partners)
    if isinstance(augmentation, CutBlur):
        return cutblur(lr, hr, augmentation.box, augmentation.inside)
    if isinstance(augmentation, RGBPermute):
        return rgb_permute(lr, hr, augmentation.channels)
    return lr, hr


def augment_batch(
    settings: AugmentSettings, batch: dict[str, Any], step: int, rank: int
) -> dict[str, Any]:
    """A training batch under the draw of ``(settings.seed, step, rank)``: ``lr`` and ``hr``,
    and ``hr_plain`` (the unsharpened HR beside a sharpened ``hr``) by the same draw. CutBlur's
    HR pixels come from the plain HR: sharpening is for the loss's target only."""
    lr = batch["lr"]
    augmentation = draw(settings, generator(settings.seed, step, rank), BatchShape.of(lr))
    if augmentation is None:
        return batch
    plain = batch.get("hr_plain", batch["hr"])
    new_lr, new_plain = apply(augmentation, lr, plain)
    out = {**batch, "lr": new_lr, "hr": new_plain}
    if "hr_plain" in batch:
        out["hr_plain"] = new_plain
        out["hr"] = apply(augmentation, lr, batch["hr"])[1]
    return out
