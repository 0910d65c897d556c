"""The typed schema of the user-facing config: types, ranges and choices, checked before any work.

Hydra already refuses a misspelt key at composition. What it cannot know is that
``trainer.max_steps`` must be a positive integer or ``data.on_bad_image`` one of two words: that
is this module. Each section of a composed config has a dataclass whose field annotations say
what its keys may hold (``PositiveInt``, ``Literal[...]``, ``X | None``); :func:`check_config`
runs right after composition and stops at the first bad value with one line naming the key::

    error: trainer.max_steps must be an integer >= 1, got -1

Keys a config does not have are not checked (model configs differ in their keys); keys a schema
does not list are free (a network's own settings are its constructor's business). Cross-field
rules live in :func:`check_cross_fields`, and outputs are checked writable by
:func:`check_writable_folder` and :func:`check_writable_file` before a command reads any input.
"""

from __future__ import annotations

import os
import tempfile
import types
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, ListConfig, OmegaConf

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


PositiveInt = Annotated[int, Range(low=1)]
NonNegativeInt = Annotated[int, Range(low=0)]
PositiveFloat = Annotated[float, Range(low=0, low_open=True)]
NonNegativeFloat = Annotated[float, Range(low=0)]
OpenUnitInterval = Annotated[float, Range(low=0, high=1, low_open=True, high_open=True)]
UnitInterval = Annotated[float, Range(low=0, high=1, high_open=True)]
OnBadImage = Literal["error", "skip"]
Precision = Literal[
    "auto", "32", "32-true", "64", "64-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true"
]


# --- the sections --------------------------------------------------------------------------
@dataclass
class RunSettings:
    """Top-level keys of every entry config."""

    scale: PositiveInt
    seed: NonNegativeInt


@dataclass
class InferenceSettings:
    """The shared inference path's options (top level of eval, and ``model``)."""

    tile: PositiveInt | None
    tile_overlap: NonNegativeInt
    self_ensemble: bool
    tile_memory_mb: PositiveFloat


@dataclass
class EvalSettings:
    comparisons: NonNegativeInt


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
class ModelSettings:
    value_range: PositiveFloat
    channels_last: bool
    gray: Literal["expand", "raw"]
    ema_decay: OpenUnitInterval | None
    nonfinite_loss: Literal["stop", "skip"]
    compile: bool
    pretrained: str | None


@dataclass
class OptimizerSettings:
    lr: PositiveFloat
    weight_decay: NonNegativeFloat
    betas: list[UnitInterval]
    momentum: UnitInterval


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
    tile: PositiveInt | Literal["auto"] | None
    tile_overlap: NonNegativeInt
    tile_memory_mb: PositiveFloat
    self_ensemble: bool
    overwrite: bool
    progress: bool
    output_format: Literal["png", "jpg", "jpeg", "webp", "tiff", "dcm"] | None
    device: str
    memory_mb: PositiveFloat | Literal["auto"]


@dataclass
class ExportSettings:
    format: Literal["onnx", "safetensors"]
    opset: Annotated[int, Range(low=7, high=23)]
    sample_size: Annotated[int, Range(low=8)]
    verify: bool
    overwrite: bool


@dataclass
class ScoreSettings:
    pred: str
    gt: str | None
    gray: Literal["expand", "raw"]
    channels: Literal[1, 3]
    metric_weights: str
    name: str | None


# Which schema each part of each entry config follows ("" is the top level).
SCHEMAS: dict[str, list[tuple[str, type]]] = {
    "train": [
        ("", RunSettings),
        ("trainer", TrainerSettings),
        ("model", ModelSettings),
        ("model", InferenceSettings),
        ("model.optimizer", OptimizerSettings),
        ("data", DataSettings),
        ("data.cache", CacheSchema),
        ("data.sharpen_target", SharpenSchema),
        ("callbacks.last_checkpoint", CallbackSettings),
    ],
    "eval": [
        ("", RunSettings),
        ("", InferenceSettings),
        ("", EvalSettings),
        ("trainer", TrainerSettings),
        ("model", ModelSettings),
        ("data", DataSettings),
        ("data.cache", CacheSchema),
    ],
    "predict": [("", RunSettings), ("", PredictSettings), ("model", ModelSettings)],
    "export": [("", RunSettings), ("", ExportSettings), ("model", ModelSettings)],
    "score": [("", RunSettings), ("", ScoreSettings)],
}


# --- checking -------------------------------------------------------------------------------
def describe_type(annotation: Any) -> str:
    """How a wrong value's message says what was expected."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *extras = get_args(annotation)
        bounds = " ".join(extra.text() for extra in extras if isinstance(extra, Range))
        return f"{describe_type(base)} {bounds}".strip()
    if origin is Literal:
        return "one of " + ", ".join(str(choice) for choice in get_args(annotation))
    if origin is list:
        return f"a list of {describe_type(get_args(annotation)[0])}"
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        nullable = len(options) < len(get_args(annotation))
        text = " or ".join(describe_type(option) for option in options)
        return f"{text} or null" if nullable else text
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        annotation, str(annotation)
    )


def matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` (plain YAML data) fits ``annotation``."""
    origin = get_origin(annotation)
    if annotation is type(None):
        return value is None
    if origin is Annotated:
        base, *extras = get_args(annotation)
        ranges = [extra for extra in extras if isinstance(extra, Range)]
        return matches(value, base) and all(bound.holds(value) for bound in ranges)
    if origin is Literal:
        return any(value == choice or str(value) == str(choice) for choice in get_args(annotation))
    if origin in (Union, types.UnionType):
        return any(matches(value, option) for option in get_args(annotation))
    if origin is list:
        (item,) = get_args(annotation)
        return isinstance(value, list) and all(matches(v, item) for v in value)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
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


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data, interpolations resolved where they can be (outside a Hydra
    run, ``${hydra:...}`` cannot; those keys are left as they are)."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation only a running Hydra app resolves
        plain = {}
        for key in cfg:
            try:
                node = cfg[key]
                value = (
                    OmegaConf.to_container(node, resolve=True)
                    if isinstance(node, (DictConfig, ListConfig))
                    else node
                )
            except Exception:
                continue
            plain[str(key)] = value
    return {str(k): v for k, v in plain.items()} if isinstance(plain, dict) else {}


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
    if gan and trainer.get("gradient_clip_val") is not None:
        raise ConfigValueError(
            "trainer.gradient_clip_val does not apply to GAN training (manual optimisation); use "
            "model.clip_grad_norm and model.d_clip_grad_norm"
        )
    steps, interval = trainer.get("max_steps"), trainer.get("val_check_interval")
    if isinstance(steps, int) and isinstance(interval, int) and interval > steps:
        raise ConfigValueError(
            f"trainer.val_check_interval ({interval}) is larger than trainer.max_steps "
            f"({steps}): no validation would run"
        )


def check_config(cfg: DictConfig, task: str) -> None:
    """Check the composed config of ``task`` (train, eval, predict, export) against its
    schema; raise :class:`ConfigValueError` naming the first bad key."""
    plain = resolved(cfg)
    for path, schema in SCHEMAS[task]:
        check_section(section(plain, path), schema, path)
    check_cross_fields(plain)


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
