"""Building loggers and callbacks from config, and printing for people, on rank 0 only."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, open_dict
from pytorch_lightning.callbacks import LearningRateMonitor, ProgressBar
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger("srlab")

WANDB_TARGET = "pytorch_lightning.loggers.WandbLogger"


@rank_zero_only
def say(message: str) -> None:
    """One line for the person at the terminal (rank 0 only)."""
    print(message, flush=True)


@rank_zero_only
def warn(message: str) -> None:
    """``warning: <message>`` on standard error (rank 0 only): the run goes on."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def wandb_has_credentials() -> bool:
    """True when wandb could log online: an API key in the environment or ``wandb login``."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def prepare_wandb(config: DictConfig) -> None:
    """Switch a wandb logger config to offline mode when there are no credentials, and say so."""
    if config.get("offline") or os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return
    if not wandb_has_credentials():
        with open_dict(config):
            config.offline = True
        say(
            f"wandb: no WANDB_API_KEY, logging offline under {config.save_dir}/wandb "
            "(upload later with `wandb sync`)"
        )


def build_loggers(config: DictConfig | None) -> list[Logger]:
    """Instantiate every logger in the ``logger`` group."""
    loggers: list[Logger] = []
    for _, logger_config in (config or {}).items():
        if logger_config.get("_target_") == WANDB_TARGET:
            prepare_wandb(logger_config)
        loggers.append(hydra.utils.instantiate(logger_config))
    return loggers


def close_loggers() -> None:
    """Finish the wandb run, if any, so it is flushed before the next run of a sweep starts."""
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def build_callbacks(
    config: DictConfig | None, progress_bar: bool = True, logging: bool = True
) -> list[pl.Callback]:
    """Instantiate the ``callbacks`` group; progress bars only when ``progress_bar`` is on, and
    the learning-rate monitor, which only feeds loggers (Lightning refuses it without one), only
    when ``logging`` is."""
    callbacks = [hydra.utils.instantiate(c) for _, c in (config or {}).items()]
    if not progress_bar:
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if not logging:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return callbacks


def build_trainer(config: DictConfig, **kwargs: Any) -> pl.Trainer:
    """The Lightning Trainer of ``config``; settings Lightning refuses (``trainer.devices=0``,
    an accelerator this machine lacks) become one line naming the ``trainer`` group."""
    from hydra.errors import InstantiationException
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    from src.utils.cli import root_cause
    from src.utils.errors import UserError

    try:
        trainer: pl.Trainer = hydra.utils.instantiate(config, **kwargs)
    except InstantiationException as error:
        cause = root_cause(error)
        user_fixable = (MisconfigurationException, ImportError, ValueError, TypeError, RuntimeError)
        if isinstance(cause, user_fixable):
            raise UserError(f"trainer: {cause}") from error
        raise
    return trainer


def format_metrics(metrics: dict[str, Any], keys: list[str]) -> str:
    """``psnr_y 32.2096 | ssim_y 0.8948``-style summary of the given keys that are present."""
    parts = []
    for key in keys:
        if key in metrics:
            parts.append(f"{key.split('/')[-1]} {float(metrics[key]):.4f}")
    return " | ".join(parts)
