"""The typed schema of the user-facing config: types, ranges and choices, checked before any work.

Hydra already refuses a misspelt key at composition. What it cannot know is that
``trainer.max_steps`` must be a positive integer or ``data.on_bad_image`` one of two words: that
is this module. Each section of a composed config has a dataclass whose field annotations say
what its keys may hold (``PositiveInt``, ``Literal[...]``, ``X | None``); :func:`check_config`
runs right after composition and stops at the first bad value with one line naming the key::

    error: trainer.max_steps must be an integer >= 1, got -1

Keys a config does not have are not checked (model configs differ in their keys). No key goes
unread: :func:`check_known_keys` walks the whole composed config and refuses a key that neither
a section's dataclass lists nor, for a node with a ``_target_``, the target's constructor takes
(``+self_ensembel=true`` or ``model.net.num_blockz=8`` would otherwise be ignored)::

    error: unknown key self_ensembel: src.eval reads no such setting (did you mean self_ensemble?)

Cross-field rules live in :func:`check_cross_fields`, and outputs are checked writable by
:func:`check_writable_folder` and :func:`check_writable_file` before a command reads any input.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import tempfile
import types
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from src.utils.choices import CHOICES
from src.utils.errors import UserError


class ConfigValueError(UserError, ValueError):
    """A config value of the wrong type, out of range or not one of the choices."""


@dataclass(frozen=True)
class Range:
    """Bounds of a number; ``open`` excludes the bound itself."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (
            self.high is not None and (value >= self.high if self.high_open else value > self.high)
        )

    def text(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts)


@dataclass(frozen=True)
class Pattern:
    """A string matching ``regex`` as a whole; ``form`` shows the user what it looks like."""

    regex: str
    form: str

    def holds(self, value: str) -> bool:
        return re.fullmatch(self.regex, value) is not None

    def text(self) -> str:
        return f"of the form {self.form}"


@dataclass(frozen=True)
class Odd:
    """An odd integer (a window or kernel with a centre pixel)."""

    def holds(self, value: int) -> bool:
        return value % 2 == 1

    def text(self) -> str:
        return "and odd"


# A window or kernel side with a centre pixel: odd and at least 3 (LDL's artifact map).
OddWindow = Annotated[int, Range(low=3), Odd()]


Bound = Range | Pattern | Odd
PositiveInt = Annotated[int, Range(low=1)]
NonNegativeInt = Annotated[int, Range(low=0)]
PositiveFloat = Annotated[float, Range(low=0, low_open=True)]
NonNegativeFloat = Annotated[float, Range(low=0)]
OpenUnitInterval = Annotated[float, Range(low=0, high=1, low_open=True, high_open=True)]
UnitInterval = Annotated[float, Range(low=0, high=1, high_open=True)]
Probability = Annotated[float, Range(low=0, high=1)]
OnBadImage = Literal["error", "skip"]
# Training precisions. The "-true" ones (bf16-true, 16-true, 64-true) are not offered: Lightning
# casts every validation batch to their dtype, so bf16-true would score HR images rounded to
# bf16, never the number src.eval prints.
Precision = Literal["auto", "32", "32-true", "bf16-mixed", "16-mixed"]


# --- the sections --------------------------------------------------------------------------
@dataclass
class RunSettings:
    """Top-level keys of every entry config."""

    scale: PositiveInt
    seed: NonNegativeInt


@dataclass
class InferenceSettings:
    """The shared inference path's options (``conf/inference.yaml``: the top level of train,
    eval, predict and export, and ``model``, which interpolates them)."""

    tile: PositiveInt | Literal["auto"] | None
    tile_overlap: NonNegativeInt
    self_ensemble: bool
    tile_memory_mb: PositiveFloat
    clip_length: PositiveInt | None
    clip_overlap: NonNegativeInt
    window_padding: str  # one of WINDOW_PADDINGS (src/utils/choices.py)


@dataclass
class EvalSettings:
    comparisons: NonNegativeInt
    crop_border: NonNegativeInt | None


@dataclass
class TrainerSettings:
    max_steps: PositiveInt
    val_check_interval: PositiveInt
    accumulate_grad_batches: PositiveInt
    log_every_n_steps: PositiveInt
    precision: Precision
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu"]
    devices: PositiveInt | Literal[-1, "auto"] | list[NonNegativeInt]
    gradient_clip_val: NonNegativeFloat | None
    num_nodes: PositiveInt
    deterministic: bool
    enable_progress_bar: bool


@dataclass
class PruneTrainerSettings(TrainerSettings):
    """``src.prune``'s trainer: ``max_steps=0`` prunes without fine-tuning."""

    max_steps: NonNegativeInt


@dataclass
class PruneSettings:
    """``python -m src.prune`` (src/prune.py): the fraction of ``target`` to remove."""

    ratio: OpenUnitInterval
    target: Literal["params", "flops"]
    importance: Literal["activation", "l1", "l2"]
    fuse: bool


@dataclass
class ModelSettings:
    value_range: PositiveFloat | None
    channels_last: bool
    gray: Literal["expand", "raw"]
    ema_decay: OpenUnitInterval | None
    nonfinite_loss: Literal["stop", "skip"]
    compile: bool
    pretrained: str | None
    # The GAN module's (src/models/gan_module.py): a negative weight or clip norm would turn a
    # term or a gradient around without a word.
    gan_weight: NonNegativeFloat
    gp_weight: NonNegativeFloat
    artifact_weight: NonNegativeFloat
    clip_grad_norm: PositiveFloat | None
    d_clip_grad_norm: PositiveFloat | None
    artifact_window: OddWindow
    # Parameter-name prefix -> learning-rate multiplier / steps frozen (BasicVSR's SPyNet).
    lr_multipliers: dict[str, PositiveFloat]
    freeze_steps: dict[str, NonNegativeInt]
    pretrained_parts: dict[str, str | None]
    # RealBasicVSR's cleaning loss (GANModule).
    clean_weight: NonNegativeFloat
    # The network in its fused inference form (src/archs/reparam.py).
    fused: bool
    # What src.prune removed, {removed: [[module, out|in, [channels]]]} (src/models/pruning.py).
    pruning: Section | None
    # Distillation from a frozen teacher (src/models/distillation.py; keys: TeacherSettings).
    teacher: Section | None
    # Batch augmentations (src/ops/batch_augment.py, conf/augment; keys: AugmentSchema).
    augment: Section | None


@dataclass
class OptimizerSettings:
    lr: PositiveFloat
    weight_decay: NonNegativeFloat
    betas: list[UnitInterval]
    momentum: UnitInterval
    eps: NonNegativeFloat | None  # Prodigy: null steps by atan2 instead
    # Schedule-free (conf/optimizer/adamw_schedulefree.yaml): its own linear warm-up.
    warmup_steps: NonNegativeInt
    # Prodigy: the initial distance estimate, its multiplier, its per-step growth limit.
    d0: PositiveFloat
    d_coef: PositiveFloat
    growth_rate: PositiveFloat
    safeguard_warmup: bool
    # SOAP: steps between refreshes of the preconditioner's eigenbasis.
    precondition_frequency: PositiveInt


@dataclass
class SchedulerSettings:
    """``scheduler=warmup_cosine|wsd`` (src/models/optimizers.py); torch's own schedulers check
    their arguments themselves."""

    total_steps: PositiveInt
    warmup_fraction: UnitInterval
    decay_fraction: Annotated[float, Range(low=0, high=1)]
    decay_shape: Literal["linear", "sqrt"]
    min_lr_ratio: Annotated[float, Range(low=0, high=1)]


@dataclass
class DataSettings:
    scale: PositiveInt
    on_bad_image: OnBadImage
    lr_patch_size: PositiveInt
    batch_size: PositiveInt
    num_workers: NonNegativeInt
    val_workers: NonNegativeInt
    num_patches: PositiveInt | None
    augment: bool
    bit_depth: Literal["auto", 8, 16]
    channels: Literal["auto", 1, 3]
    download: bool


@dataclass
class CacheSchema:
    memory_gb: PositiveFloat | None
    on_disk: bool
    crop: PositiveInt | None
    step: PositiveInt
    dir: str


@dataclass
class SharpenSchema:
    weight: NonNegativeFloat
    kernel_size: PositiveInt
    threshold: NonNegativeFloat


@dataclass
class CallbackSettings:
    every_n_train_steps: PositiveInt | None


@dataclass
class PredictSettings:
    input: str | None
    overwrite: bool
    progress: bool
    output_format: Literal["png", "jpg", "jpeg", "webp", "tiff", "dcm"] | None
    device: Literal["auto", "cpu", "cuda", "mps"] | Annotated[str, Pattern(r"cuda:\d+", "cuda:N")]
    memory_mb: PositiveFloat | Literal["auto"]
    video_codec: str | None  # an FFmpeg video encoder's name, checked against this FFmpeg's
    video_quality: Annotated[int, Range(low=0, high=63)] | None  # the codec's CRF
    precision: Literal["fp32", "bf16"]


@dataclass
class ExportSettings:
    format: Literal["onnx", "safetensors"]
    opset: Annotated[int, Range(low=18)]
    sample_size: Annotated[int, Range(low=8)]
    frames: PositiveInt | None
    verify: bool
    overwrite: bool
    quantize: Literal["int8"] | None
    calibration: str | None
    calibration_downscale: bool
    calibration_patches: PositiveInt
    calibration_size: Annotated[int, Range(low=8)]
    calibration_seed: NonNegativeInt
    calibration_method: Literal["minmax", "percentile"]
    quantize_keep_float: list[str]


@dataclass
class ScoreSettings:
    pred: str
    gt: str | None
    gray: Literal["expand", "raw"]
    channels: Literal[1, 3]
    metric_weights: str
    name: str | None
    crop_border: NonNegativeInt | None


# A nested section: a mapping whose own keys its schema (or its ``_target_``) vouches for.
Section = dict


@dataclass
class EfficiencySettings:
    """``python -m src.models efficiency key=value ...`` (:mod:`src.models.efficiency`)."""

    model: str
    scale: PositiveInt
    size: PositiveInt
    runs: PositiveInt
    device: Literal["cpu", "cuda", "mps"] | Annotated[str, Pattern(r"cuda:\d+", "cuda:N")]
    bf16: Literal["auto"] | bool
    # The NTIRE challenge whose score to print (src/models/challenges.py names them), and the
    # PSNR floor's set and weights.
    challenge: str | None
    val_set: str | None
    pretrained: str | None
    ckpt_path: str | None


@dataclass
class PathSettings:
    root_dir: str
    data_dir: str
    log_dir: str
    output_dir: str


@dataclass
class CommonRun:
    """Top-level keys every command reads."""

    task_name: str
    paths: Section


@dataclass
class TrainRun:
    ckpt_path: str | None
    metrics: list[str]
    metric_weights: str
    optimized_metric: str
    tags: list[str] | None
    model: Section
    data: Section
    trainer: Section
    logger: Section | None
    callbacks: Section | None


@dataclass
class EvalRun:
    ckpt_path: str | None
    onnx_path: str | None
    metrics: list[str]
    metric_weights: str
    published: str | None
    model: Section
    data: Section
    trainer: Section


@dataclass
class PredictRun:
    ckpt_path: str | None
    onnx_path: str | None
    output: str
    model: Section


@dataclass
class ExportRun:
    ckpt_path: str | None
    output: str | None
    model: Section


@dataclass
class ScoreRun:
    metrics: list[str]


@dataclass
class LossTermSchema:
    """One term of ``model.loss.terms`` (:class:`src.models.losses.CompositeLoss`)."""

    weight: NonNegativeFloat
    loss: Section


@dataclass
class TeacherSettings:
    """``model.teacher`` (:mod:`src.models.distillation`): the teacher (a checkpoint, or a
    ``conf/model`` name with weights) and the distillation terms' weights; the pairs' values are
    checked where they are read."""

    ckpt_path: str | None
    model: str | None
    pretrained: str | None
    weight: NonNegativeFloat
    criterion: Literal["l1", "l2"]
    features: list[Section]


@dataclass
class AugmentSchema:
    """``model.augment`` (:mod:`src.ops.batch_augment`): the ops (keys: AugmentOpsSchema), the
    chance each is the batch's pick (summing to 1: :func:`check_augment_choice`), the run's
    seed."""

    seed: NonNegativeInt
    ops: Section
    choice_probs: dict[str, Probability] | None


@dataclass
class AugmentOpsSchema:
    """``model.augment.ops``: the ops there are."""

    mixup: Section | None
    cutmix: Section | None
    cutblur: Section | None
    rgb_permute: Section | None


@dataclass
class MixupSchema:
    prob: Probability
    # The Beta distribution's parameter.
    alpha: PositiveFloat


@dataclass
class BoxOpSchema:
    """CutMix and CutBlur: the box side is ``alpha`` of the patch's."""

    prob: Probability
    alpha: Annotated[float, Range(low=0, high=1, low_open=True)]


@dataclass
class PermuteSchema:
    prob: Probability


@dataclass
class FeaturePairSchema:
    """One entry of ``model.teacher.features``."""

    student: str
    teacher: str
    weight: NonNegativeFloat


# Which schema each part of each entry config follows ("" is the top level; ``*`` is any key of
# a mapping whose entries are named freely, such as the loggers).
SCHEMAS: dict[str, list[tuple[str, type]]] = {
    "train": [
        ("", RunSettings),
        ("", CommonRun),
        ("", TrainRun),
        ("", InferenceSettings),
        ("paths", PathSettings),
        ("model.loss.terms.*", LossTermSchema),
        ("model.discriminator.loss.terms.*", LossTermSchema),
        ("model.teacher", TeacherSettings),
        ("model.teacher.features", FeaturePairSchema),
        ("model.augment", AugmentSchema),
        ("model.augment.ops", AugmentOpsSchema),
        ("model.augment.ops.mixup", MixupSchema),
        ("model.augment.ops.cutmix", BoxOpSchema),
        ("model.augment.ops.cutblur", BoxOpSchema),
        ("model.augment.ops.rgb_permute", PermuteSchema),
        ("trainer", TrainerSettings),
        ("model", ModelSettings),
        ("model", InferenceSettings),
        ("model.optimizer", OptimizerSettings),
        ("model.scheduler", SchedulerSettings),
        ("data", DataSettings),
        ("data.cache", CacheSchema),
        ("data.sharpen_target", SharpenSchema),
        ("callbacks.last_checkpoint", CallbackSettings),
    ],
    "eval": [
        ("", RunSettings),
        ("", CommonRun),
        ("", EvalRun),
        ("paths", PathSettings),
        ("", InferenceSettings),
        ("", EvalSettings),
        ("trainer", TrainerSettings),
        ("model", ModelSettings),
        ("data", DataSettings),
        ("data.cache", CacheSchema),
    ],
    "predict": [
        ("", RunSettings),
        ("", CommonRun),
        ("", PredictRun),
        ("", InferenceSettings),
        ("", PredictSettings),
        ("paths", PathSettings),
        ("model", ModelSettings),
    ],
    "export": [
        ("", RunSettings),
        ("", CommonRun),
        ("", ExportRun),
        ("", InferenceSettings),
        ("", ExportSettings),
        ("paths", PathSettings),
        ("model", ModelSettings),
    ],
    "score": [
        ("", RunSettings),
        ("", CommonRun),
        ("", ScoreRun),
        ("", ScoreSettings),
        ("paths", PathSettings),
    ],
}
# src.prune fine-tunes as src.train does, with its own settings and max_steps=0 allowed.
SCHEMAS["prune"] = [
    *(
        (path, PruneTrainerSettings if schema is TrainerSettings else schema)
        for path, schema in SCHEMAS["train"]
    ),
    ("", PruneSettings),
]
# The command each entry config belongs to, for messages.
COMMANDS = {task: f"src.{task}" for task in SCHEMAS}


# --- checking -------------------------------------------------------------------------------
def describe_type(annotation: Any) -> str:
    """How a wrong value's message says what was expected."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *extras = get_args(annotation)
        bounds = " ".join(extra.text() for extra in extras if isinstance(extra, Bound))
        return f"{describe_type(base)} {bounds}".strip()
    if origin is Literal:
        return "one of " + ", ".join(str(choice) for choice in get_args(annotation))
    if origin is list:
        return f"a list of {describe_type(get_args(annotation)[0])}"
    if origin is dict:
        return f"a mapping of names to {describe_type(get_args(annotation)[1])}"
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        nullable = len(options) < len(get_args(annotation))
        text = " or ".join(describe_type(option) for option in options)
        return f"{text} or null" if nullable else text
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return names.get(annotation, "a mapping" if annotation is dict else str(annotation))


def matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` (plain YAML data) fits ``annotation``."""
    origin = get_origin(annotation)
    if annotation is type(None):
        return value is None
    if origin is Annotated:
        base, *extras = get_args(annotation)
        ranges = [extra for extra in extras if isinstance(extra, Bound)]
        return matches(value, base) and all(bound.holds(value) for bound in ranges)
    if origin is Literal:
        return any(value == choice or str(value) == str(choice) for choice in get_args(annotation))
    if origin in (Union, types.UnionType):
        return any(matches(value, option) for option in get_args(annotation))
    if origin is list:
        (item,) = get_args(annotation)
        return isinstance(value, list) and all(matches(v, item) for v in value)
    if origin is dict:
        _, item = get_args(annotation)
        return isinstance(value, dict) and all(matches(v, item) for v in value.values())
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation is dict:
        return isinstance(value, dict)
    return True


def check_section(values: Any, schema: type, prefix: str) -> None:
    """Each key of ``values`` that ``schema`` lists must fit its annotation."""
    if not isinstance(values, dict):
        return
    hints = get_type_hints(schema, include_extras=True)
    for field in fields(schema):
        if field.name not in values:
            continue
        value = values[field.name]
        if not matches(value, hints[field.name]):
            key = f"{prefix}.{field.name}" if prefix else field.name
            expected = describe_type(hints[field.name])
            raise ConfigValueError(f"{key} must be {expected}, got {value!r}")


def section(plain: dict[str, Any], path: str) -> Any:
    """The part of a plain config at a dotted ``path`` ("" is the top level)."""
    node: Any = plain
    for part in path.split(".") if path else []:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def sections_at(plain: dict[str, Any], pattern: str) -> Iterator[tuple[str, Any]]:
    """``(path, node)`` for each node a dotted ``pattern`` names; ``*`` stands for every key of
    a mapping."""
    found: list[tuple[str, Any]] = [("", plain)]
    for part in pattern.split(".") if pattern else []:
        step: list[tuple[str, Any]] = []
        for path, node in found:
            if not isinstance(node, dict):
                continue
            keys = [str(k) for k in node] if part == "*" else [part] if part in node else []
            step.extend((f"{path}.{key}" if path else key, node[key]) for key in keys)
        found = step
    return iter(found)


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data, every interpolation resolved (Hydra's own ``hydra`` section,
    which Hydra checks, left out); one that cannot be resolved is an error naming its key, not
    a section left unchecked."""
    plain: dict[str, Any] = {}
    for key in cfg:
        if key == HYDRA_SECTION:
            continue
        try:
            node = cfg[key]
            value = (
                OmegaConf.to_container(node, resolve=True)
                if isinstance(node, (DictConfig, ListConfig))
                else node
            )
        except Exception as error:  # omegaconf's interpolation and missing-value errors
            raise unresolvable(error, str(key)) from None
        plain[str(key)] = value
    return plain


def unresolvable(error: Exception, key: str) -> ConfigValueError:
    """The one line for a value that cannot be resolved: a required key left unset (``???``),
    or an interpolation that fails."""
    where = str(getattr(error, "full_key", None) or key)
    text = str(error).strip()
    missing = re.search(r"Missing mandatory value: ([\w.]+)", text)
    if missing:
        needed = "" if missing.group(1) == where else f" ({where} needs it)"
        return ConfigValueError(f"{missing.group(1)} must be given{needed}")
    first = text.splitlines()[0] if text else type(error).__name__
    return ConfigValueError(f"{where} cannot be resolved: {first}")


def check_cross_fields(plain: dict[str, Any]) -> None:
    """Rules between keys."""
    cache = section(plain, "data.cache")
    scale = section(plain, "scale")
    if isinstance(cache, dict) and cache.get("crop") is not None:
        step, crop = cache.get("step"), cache.get("crop")
        if isinstance(step, int) and isinstance(crop, int) and step > crop:
            raise ConfigValueError(
                f"data.cache.step ({step}) must be at most data.cache.crop ({crop}), or some "
                f"pixels would never be cut into a sub-image"
            )
        for key in ("crop", "step") if cache.get("on_disk") and isinstance(scale, int) else ():
            value = cache.get(key)
            if isinstance(value, int) and value % scale:
                raise ConfigValueError(
                    f"data.cache.{key}={value} must be a multiple of the scale ({scale}), so "
                    f"that LR sub-images line up with HR ones"
                )
    trainer = section(plain, "trainer") or {}
    model = section(plain, "model") or {}
    gan = model.get("_target_") == "src.models.gan_module.GANModule"
    if "discriminator" in model and not gan:
        raise ConfigValueError(
            "discriminator= needs the GAN module: model._target_=src.models.gan_module.GANModule "
            "(the experiments esrgan_x4, realesrgan_x4 and realesrgan_compact_x4 set both)"
        )
    teacher = model.get("teacher")
    if gan and isinstance(teacher, dict) and (teacher.get("ckpt_path") or teacher.get("model")):
        raise ConfigValueError(
            "model.teacher: distillation is for PSNR training (SRModule); the GAN module does "
            "not distil. Distil the PSNR stage, then fine-tune it with the GAN"
        )
    if gan and trainer.get("gradient_clip_val") is not None:
        raise ConfigValueError(
            "trainer.gradient_clip_val does not apply to GAN training (manual optimisation); use "
            "model.clip_grad_norm and model.d_clip_grad_norm"
        )
    artifact = model.get("artifact_weight")
    uses_artifact = isinstance(artifact, int | float) and artifact > 0
    if gan and uses_artifact and model.get("ema_decay") is None:
        raise ConfigValueError(
            "model.artifact_weight (LDL's artifact loss) compares with the EMA generator: set "
            "model.ema_decay (LDL uses 0.999)"
        )
    check_augment_choice(model.get("augment"))
    check_warmups(model, trainer.get("max_steps"))
    steps, interval = trainer.get("max_steps"), trainer.get("val_check_interval")
    # max_steps=0 (src.prune: prune only) runs no step, so no interval is too long.
    if isinstance(steps, int) and isinstance(interval, int) and 0 < steps < interval:
        raise ConfigValueError(
            f"trainer.val_check_interval ({interval}) is larger than trainer.max_steps "
            f"({steps}): no validation would run"
        )


def check_warmups(model: dict[str, Any], max_steps: Any) -> None:
    """A warm-up shorter than the run, and a warm-up and decay that do not overlap
    (src/models/optimizers.py checks the schedules' for a module built in Python)."""
    optimizer, scheduler = model.get("optimizer"), model.get("scheduler")
    warmup = optimizer.get("warmup_steps") if isinstance(optimizer, dict) else None
    if isinstance(warmup, int) and isinstance(max_steps, int) and 0 < max_steps < warmup:
        raise ConfigValueError(
            f"model.optimizer.warmup_steps ({warmup}) is longer than the run "
            f"(trainer.max_steps={max_steps})"
        )
    if not isinstance(scheduler, dict):
        return
    warmup_fraction = scheduler.get("warmup_fraction")
    decay_fraction = scheduler.get("decay_fraction")
    if not (isinstance(warmup_fraction, int | float) and isinstance(decay_fraction, int | float)):
        return
    if warmup_fraction + decay_fraction > 1:
        raise ConfigValueError(
            f"model.scheduler.warmup_fraction ({warmup_fraction:g}) + "
            f"model.scheduler.decay_fraction ({decay_fraction:g}) must be at most 1: the "
            "warm-up and the decay would overlap"
        )


def check_augment_choice(augment: Any) -> None:
    """``model.augment.choice_probs``: chances of the ops ``model.augment.ops`` holds, summing
    to 1 (src/ops/batch_augment.py checks the same for a module built in Python)."""
    choice = augment.get("choice_probs") if isinstance(augment, dict) else None
    if not isinstance(choice, dict):
        return
    ops = augment.get("ops") if isinstance(augment.get("ops"), dict) else {}
    for name in choice:
        if name not in ops:
            raise ConfigValueError(
                f"model.augment.choice_probs.{name}: not an op of model.augment.ops "
                f"({', '.join(map(str, ops))})"
            )
    total = sum(value for value in choice.values() if isinstance(value, int | float))
    if abs(total - 1.0) > 1e-6:
        raise ConfigValueError(f"model.augment.choice_probs must sum to 1, got {total:g}")


def declared_traits(target: Any) -> Any:
    """The ``traits`` an SR Lab network class declares (:mod:`src.archs.base`), found by its
    ``_target_`` name; None for anything else. Looked up by name, so that this module does not
    import the networks."""
    if not isinstance(target, str) or not target.startswith(f"{OWN_PACKAGE}.archs."):
        return None
    try:
        cls = get_object(target)
    except (ImportError, ValueError):
        return None  # the unknown-key walk names a target that does not exist
    traits = getattr(cls, "traits", None)
    return traits if hasattr(traits, "supports_scale") else None


def check_network_declaration(plain: dict[str, Any]) -> None:
    """``scale`` and ``data.channels`` against what the chosen network declares it supports.
    Skipped when a checkpoint is loaded: it carries its own network and scale."""
    net = section(plain, "model.net")
    if not isinstance(net, dict) or plain.get("ckpt_path"):
        return
    traits = declared_traits(net.get("_target_"))
    if traits is None:
        return
    name = str(net["_target_"]).rsplit(".", 1)[-1]
    scale, upsampler = plain.get("scale"), net.get("upsampler")
    if isinstance(scale, int) and not traits.supports_scale(scale, upsampler):
        using = f" with upsampler={upsampler}" if upsampler in traits.upsampler_scales else ""
        raise ConfigValueError(
            f"scale={scale}: {name}{using} supports scales {traits.scales_text(upsampler)}"
        )
    channels = section(plain, "data.channels")
    if isinstance(channels, int) and channels not in traits.channels:
        raise ConfigValueError(
            f"data.channels={channels}: {name} takes {' or '.join(map(str, traits.channels))}"
            f"-channel images only; choose another network for this data"
        )


def check_choices(plain: dict[str, Any]) -> None:
    """Settings with a fixed set of values (:data:`src.utils.choices.CHOICES`)."""
    for choice in CHOICES:
        for path, node in sections_at(plain, choice.section):
            if not isinstance(node, dict) or node.get(choice.key) is None:
                continue
            unknown = choice.unknown(node[choice.key])
            if unknown:
                shown = unknown[0] if choice.form == "value" else unknown
                key = f"{path}.{choice.key}" if path else choice.key
                raise ConfigValueError(
                    f"{key} must be one of {', '.join(choice.values)}, got "
                    f"{shown!r}" + (" (each key)" if choice.form == "keys" else "")
                )


def check_config(cfg: DictConfig, task: str) -> None:
    """Check the composed config of ``task`` (train, eval, predict, export) against its
    schema; raise :class:`ConfigValueError` naming the first bad key."""
    plain = resolved(cfg)
    for pattern, schema in SCHEMAS[task]:
        for path, values in sections_at(plain, pattern):
            check_section(values, schema, path)
    check_cross_fields(plain)  # first: its messages say more than "unknown key"
    check_network_declaration(plain)
    check_choices(plain)
    check_known_keys(plain, task)


# --- keys nothing reads ----------------------------------------------------------------------
# Hydra's own keys of an instantiated node.
INSTANTIATION_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
# Libraries whose classes take ``**kwargs`` and read none of them (pytorch-optimizer's optimisers
# drop them): a key their named parameters lack is a misspelling, not a pass-through.
KWARGS_UNREAD = ("pytorch_optimizer.",)
# Hydra's settings, which Hydra itself checks.
HYDRA_SECTION = "hydra"
OWN_PACKAGE = "src"


def path_matches(path: str, pattern: str) -> bool:
    """Whether a concrete dotted ``path`` is one that ``pattern`` (with ``*``) names."""
    parts, wanted = path.split("."), pattern.split(".") if pattern else []
    return len(parts if path else []) == len(wanted) and all(
        w in ("*", p) for p, w in zip(parts, wanted, strict=False)
    )


def schema_keys(path: str, task: str) -> set[str] | None:
    """The keys the dataclasses of ``task`` list for the section at ``path``; None: no
    dataclass speaks for it."""
    schemas = [schema for pattern, schema in SCHEMAS[task] if path_matches(path, pattern)]
    if not schemas:
        return None
    return {field.name for schema in schemas for field in fields(schema)}


def accepted_arguments(target: Any) -> set[str] | None:
    """The keyword arguments a callable or class takes; None when it takes any.

    SR Lab's own classes hand ``**kwargs`` to their base class (GANModule to SRModule), so their
    arguments are those of the chain; another library's ``**kwargs`` may go anywhere (the wandb
    logger's go to ``wandb.init``), so such a target takes any keyword, except in the
    libraries of :data:`KWARGS_UNREAD`, which read none of them.
    """
    if not inspect.isclass(target):
        return _parameters(target)
    names: set[str] = set()
    for cls in target.__mro__:
        init = vars(cls).get("__init__")
        if cls is object or init is None:
            continue
        own = _parameters(init)
        if own is not None:
            return names | own
        if cls.__module__.startswith(KWARGS_UNREAD):
            return names | _named_parameters(init)
        if not cls.__module__.startswith(f"{OWN_PACKAGE}."):
            return None
        names |= _named_parameters(init)
    return names  # object.__init__ takes nothing more


def _named_parameters(function: Any) -> set[str]:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return set()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in parameters if p.kind in kinds}


def _parameters(function: Any) -> set[str] | None:
    """Named parameters of ``function``; None when it also takes ``**kwargs``."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None  # a builtin without a signature: let it judge its own arguments
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return _named_parameters(function)


def target_arguments(target: Any, path: str) -> tuple[set[str] | None, str]:
    """What the ``_target_`` at ``path`` takes, and its name for messages."""
    try:
        resolved_target = get_object(str(target))
    except Exception as error:
        raise ConfigValueError(f"{path}._target_={target}: cannot be imported ({error})") from None
    return accepted_arguments(resolved_target), str(target).rsplit(".", 1)[-1]


def unknown_key_error(key: str, path: str, known: set[str], reader: str) -> ConfigValueError:
    full = f"{path}.{key}" if path else key
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigValueError(f"unknown key {full}: {reader}{hint}")


def check_arguments(values: dict[str, Any], schema: type, command: str) -> None:
    """Arguments of a command that takes ``key=value`` without Hydra: every key one of
    ``schema``'s fields, every field given, every value fitting its annotation."""
    known = {field.name for field in fields(schema)}
    for key in values:
        if key not in known:
            raise unknown_key_error(key, "", known, f"{command} takes no such argument")
    hints = get_type_hints(schema, include_extras=True)
    missing = [
        name
        for name in sorted(known)
        if values.get(name) is None and not matches(None, hints[name])  # null: optional
    ]
    if missing:
        raise ConfigValueError(f"{command}: give {missing[0]}=...")
    check_section(values, schema, "")


def check_node_keys(node: dict[str, Any], path: str, task: str) -> None:
    """The keys of one mapping against its schema and, when instantiated, its target."""
    listed = schema_keys(path, task)
    if "_target_" in node:
        arguments, name = target_arguments(node["_target_"], path)
        if arguments is None:
            return  # the target takes any keyword; it checks them itself
        known = INSTANTIATION_KEYS | arguments | (listed or set())
        reader = f"{name} takes no such argument"
    elif listed is not None:
        known = listed
        where = f"the {path} section" if path else COMMANDS[task]
        reader = f"{where} reads no such setting"
    else:
        return  # a mapping handed whole to the constructor above it (its own business)
    for key in node:
        if str(key) not in known:
            raise unknown_key_error(str(key), path, known, reader)


def check_known_keys(plain: Any, task: str, path: str = "") -> None:
    """Refuse any key of the composed config that nothing reads (see the module docstring)."""
    if isinstance(plain, list):
        for item in plain:
            check_known_keys(item, task, path)
        return
    if not isinstance(plain, dict):
        return
    check_node_keys(plain, path, task)
    for key, value in plain.items():
        if path or key != HYDRA_SECTION:
            check_known_keys(value, task, f"{path}.{key}" if path else str(key))


# --- outputs --------------------------------------------------------------------------------
def check_writable_folder(folder: Path, key: str) -> None:
    """Make ``folder`` (if needed) and write a file in it, or raise naming ``key``."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{key}={folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".srlab-write-test-"):
            pass
    except OSError as error:
        raise UserError(f"{key}={folder} cannot be written: {error.strerror or error}") from error


def check_writable_file(path: Path, key: str) -> None:
    """``path`` can be created or replaced: not a folder, its folder writable."""
    if path.is_dir():
        raise UserError(f"{key}={path} is a folder; give a file name")
    check_writable_folder(path.parent, f"the folder of {key}")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{key}={path} exists and cannot be written")
