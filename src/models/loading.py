"""Building the SRModule an entry point runs, from ``ckpt_path`` or from ``model`` (+ weights).

Shared by ``src.eval``, ``src.predict`` and ``src.export`` so that every command resolves a
checkpoint, its scale and the inference options (tiling, self-ensemble) the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, open_dict

from src.metrics.registry import DEFAULT_METRICS
from src.models.checkpoint import module_from_checkpoint, read_checkpoint
from src.models.sr_module import SRModule
from src.utils.config import to_plain
from src.utils.runtime import say, warn

INFERENCE_KEYS = ("tile", "tile_overlap", "self_ensemble", "tile_memory_mb")


def adopt_checkpoint_scale(cfg: DictConfig) -> None:
    """A checkpoint knows its scale: use it for the data too, so LR sizes match the network."""
    if not cfg.get("ckpt_path"):
        return
    meta = read_checkpoint(cfg.ckpt_path).get("srlab") or {}
    scale = meta.get("scale")
    if scale is not None and int(scale) != int(cfg.scale):
        say(f"scale {scale} (from the checkpoint)")
        with open_dict(cfg):
            cfg.scale = int(scale)


def inference_options(cfg: DictConfig) -> dict[str, Any]:
    """The shared inference path's options present at the top level of ``cfg``."""
    return {key: cfg[key] for key in INFERENCE_KEYS if key in cfg}


def load_module(cfg: DictConfig, **overrides: Any) -> SRModule:
    """The SRModule from ``ckpt_path``, else from ``model`` (with ``model.pretrained``).

    The top-level inference options of ``cfg`` and ``overrides`` replace the model's own.
    """
    options = {**inference_options(cfg), **overrides}
    if cfg.get("ckpt_path"):
        return module_from_checkpoint(cfg.ckpt_path, **options)
    module: SRModule = hydra.utils.instantiate(cfg.model, **options)
    module.model_config = to_plain(cfg.model)
    if module.has_trainable_parameters and not cfg.model.get("pretrained"):
        warn(
            f"no weights given (ckpt_path=... or model.pretrained=...): "
            f"{type(module.net).__name__} is randomly initialised, so its output means nothing"
        )
    return module


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
