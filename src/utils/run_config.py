"""What a training run is, as flat keys for every logger: wandb's run config, TensorBoard's
hparams, the CSV logger's ``hparams.yaml`` (which the leaderboard reads).

The keys are the resolved config a researcher groups and filters runs by: the model option and
every ``model.net.*`` value, scale, data set and degradation (with its settings), loss,
optimiser and learning rate, scheduler, batch and patch size, precision, seed, EMA, max steps,
the git commit of the code, and the network's trainable parameters and GFLOPs.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, TensorBoardLogger

from src.utils.complexity import count_gflops, count_parameters
from src.utils.config import interpolation_overrides

# GFLOPs are counted for one forward pass on an LR input of this side, the size the NTIRE
# efficient-SR reports use.
GFLOPS_INPUT = 256
PARAMS_KEY = "model/params"


def flatten(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"<prefix>/a/b": 1}``; lists become strings, ``_target_`` and
    other Hydra keys are dropped."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if str(key).startswith("_"):
            continue
        name = f"{prefix}/{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name))
        elif isinstance(value, (list, tuple)):
            flat[name] = str(list(value))
        else:
            flat[name] = value
    return flat


def git_commit(folder: Path) -> str | None:
    """The commit checked out in ``folder`` (``+dirty`` with uncommitted changes), or None."""

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=folder, capture_output=True, text=True, timeout=10, check=True
        )
        return result.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def group_choices() -> dict[str, str]:
    """The option chosen in each config group (``model: edsr``), where Hydra ran."""
    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {str(k): str(v) for k, v in choices.items() if v is not None and "/" not in str(k)}


def network_gflops(net_config: DictConfig | dict[str, Any]) -> float | None:
    """GFLOPs of one forward pass on a 256x256 LR input, counted on the meta device."""
    try:
        with torch.device("meta"):
            net = hydra.utils.instantiate(net_config)
        return round(count_gflops(net.eval(), GFLOPS_INPUT), 3)
    except Exception:  # a network that cannot run on the meta device: no figure
        return None


def plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def run_hparams(
    cfg: DictConfig,
    net: torch.nn.Module,
    train_set: str | None,
    val_sets: list[str],
    *,
    channels: int,
    precision: Any,
    value_range: float,
) -> dict[str, Any]:
    """The flat description of a composed training config, its network and its data sets.

    ``channels``, ``precision`` and ``value_range`` are what ``data.channels``,
    ``trainer.precision`` and ``model.value_range`` stand for in this run: the config may say
    ``auto`` or null, and keeps saying it."""
    choices = group_choices()
    model, data, trainer = cfg.model, cfg.data, cfg.trainer
    net_config = plain(
        OmegaConf.merge(
            plain(model.net), interpolation_overrides(model.net, "data.channels", channels)
        )
    )
    params: dict[str, Any] = {
        "model": choices.get("model", type(net).__name__),
        "model/network": type(net).__name__,
        PARAMS_KEY: count_parameters(net),
        "model/gflops": network_gflops(net_config),
        **flatten(net_config, "model/net"),
        "model/ema_decay": model.get("ema_decay"),
        "model/value_range": value_range,
        "scale": cfg.scale,
        "seed": cfg.seed,
        "data": choices.get("data"),
        "data/train_set": train_set,
        "data/val_sets": ",".join(val_sets),
        "data/batch_size": data.get("batch_size"),
        "data/lr_patch_size": data.get("lr_patch_size"),
        "degradation": choices.get("degradation"),
        **flatten(plain(data.get("degradation") or {}), "degradation"),
        "loss": choices.get("loss"),
        **flatten(plain(model.get("loss") or {}), "loss"),
        "optimizer": choices.get("optimizer"),
        **flatten(plain(model.get("optimizer") or {}), "optimizer"),
        "scheduler": choices.get("scheduler"),
        **flatten(plain(model.get("scheduler") or {}), "scheduler"),
        "trainer": choices.get("trainer"),
        "trainer/precision": str(precision),
        "trainer/max_steps": trainer.get("max_steps"),
        "trainer/devices": str(trainer.get("devices")),
        "git_commit": git_commit(Path(cfg.paths.root_dir)),
    }
    return params


def log_run_config(loggers: list[Logger], params: dict[str, Any], metric: str) -> None:
    """Give ``params`` to every logger (TensorBoard also needs the metric its hparams table
    shows: ``metric``, filled by the values logged under that name later)."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics={metric: float("nan")})
        else:
            logger.log_hyperparams(params)
