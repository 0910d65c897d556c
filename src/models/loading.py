"""Building the SRModule an entry point runs, from ``ckpt_path`` or from ``model`` (+ weights).

Shared by ``src.eval``, ``src.predict`` and ``src.export`` so that every command resolves a
checkpoint, its scale and the inference options (tiling, self-ensemble) the same way. The
checkpoint is read once; what it decides (the scale) is returned to the caller, not written into
the composed config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from src.archs.base import traits_of
from src.metrics.registry import DEFAULT_METRICS
from src.models.checkpoint import module_from_checkpoint, read_checkpoint
from src.models.onnx_runtime import OnnxGraph, OnnxNetwork
from src.models.sr_module import SRModule
from src.utils.config import interpolation_overrides
from src.utils.runtime import say, warn

INFERENCE_KEYS = (
    "tile",
    "tile_overlap",
    "self_ensemble",
    "tile_memory_mb",
    "clip_length",
    "clip_overlap",
    "window_padding",
)


def read_run_checkpoint(cfg: DictConfig) -> dict[str, Any] | None:
    """The checkpoint ``ckpt_path`` names, read and checked once; None without one."""
    return read_checkpoint(cfg.ckpt_path) if cfg.get("ckpt_path") else None


def checkpoint_scale(cfg: DictConfig, checkpoint: dict[str, Any] | None) -> int:
    """The scale to run at: a checkpoint knows its own, and the data must use it too so that LR
    sizes match the network; ``scale`` otherwise."""
    scale = ((checkpoint or {}).get("srlab") or {}).get("scale")
    if scale is None or int(scale) == int(cfg.scale):
        return int(cfg.scale)
    say(f"scale {scale} (from the checkpoint)")
    return int(scale)


def inference_options(cfg: DictConfig) -> dict[str, Any]:
    """The shared inference path's options present at the top level of ``cfg``."""
    return {key: cfg[key] for key in INFERENCE_KEYS if key in cfg}


def load_module(
    cfg: DictConfig,
    checkpoint: dict[str, Any] | None = None,
    channels: int | None = None,
    **overrides: Any,
) -> SRModule:
    """The SRModule from ``ckpt_path`` (``checkpoint``: that file as already read), else from
    ``model`` (with ``model.pretrained``); ``channels``: the data's channel count, for the
    settings of ``model`` that read ``data.channels`` (a checkpoint's network has its own).

    The top-level inference options of ``cfg`` and ``overrides`` replace the model's own. A
    network with re-parameterisable blocks runs fused (:meth:`SRModule.fuse_for_inference`).
    """
    options = {**inference_options(cfg), **overrides}
    if cfg.get("ckpt_path"):
        module = module_from_checkpoint(cfg.ckpt_path, checkpoint, **options)
    else:
        if channels is not None:
            options = {**interpolation_overrides(cfg.model, "data.channels", channels), **options}
        module = hydra.utils.instantiate(cfg.model, **options)
        if module.has_trainable_parameters and not cfg.model.get("pretrained"):
            warn(
                f"no weights given (ckpt_path=... or model.pretrained=...): "
                f"{type(module.net).__name__} is randomly initialised, so its output means nothing"
            )
    if module.fuse_for_inference():
        say(f"{type(module.net).__name__}: re-parameterisable blocks fused for inference")
    note = tiling_note(module)
    if note:
        say(note)
    return module


def onnx_scale(cfg: DictConfig, network: OnnxNetwork) -> int:
    """The scale an ONNX file runs at (its own, whatever ``scale`` says)."""
    if network.scale != int(cfg.scale):
        say(f"scale {network.scale} (from the ONNX file)")
    return network.scale


def load_onnx_module(network: OnnxNetwork, cfg: DictConfig, **overrides: Any) -> SRModule:
    """An SRModule around an ONNX file (fp32 or int8) run by onnxruntime: the file's scale,
    value_range 1 (the graph holds its own), the top-level inference options of ``cfg`` and
    ``overrides`` (``src.eval onnx_path=...``)."""
    options = {**inference_options(cfg), **overrides}
    return SRModule(OnnxGraph(network), network.scale, value_range=1.0, **options)


def tiling_note(module: SRModule) -> str | None:
    """A line for a tiled run of a network that declares its tiles inexact; None otherwise."""
    traits = traits_of(module.net)
    if module.tile is None or traits is None or traits.tile_exact:
        return None
    when = "when an image is tiled" if module.tile == "auto" else f"with tile={module.tile}"
    return (
        f"note: {type(module.net).__name__}'s tiles are not exact (image-wide statistics or "
        f"windows): {when}, its output differs slightly from the whole image's; tile=null gives "
        f"the exact one"
    )


def metric_options(cfg: DictConfig) -> dict[str, Any]:
    """What the module scores with: ``metrics``, where learned metrics' weights come from and,
    where ``crop_border`` is set, the pixels cropped from each border (else the scale)."""
    cache = str(Path(cfg.paths.root_dir) / ".cache" / "weights")
    options: dict[str, Any] = {
        "metrics": list(cfg.get("metrics") or DEFAULT_METRICS),
        "metric_weights": str(cfg.get("metric_weights") or "download"),
        "metric_cache": cache,
    }
    if cfg.get("crop_border") is not None:
        options["crop_border"] = int(cfg.crop_border)
    return options
