"""``python -m src.train``: compose the config, build data, model and trainer, train, report.

Returns ``optimized_metric`` (default: the best ``val/psnr_y``) so Hydra sweepers (grid or
Optuna) can optimise it.

    python -m src.train model=edsr data=urban100 scale=4 trainer.max_steps=20000
    python -m src.train -m model=edsr,edsr_large optimizer.lr=1e-4,2e-4
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from src.data.datamodule import SRDataModule
from src.data.formats import resolve_auto_channels
from src.metrics.baseline import bicubic_scores
from src.models.checkpoint import CheckpointError, read_checkpoint
from src.models.loading import metric_options
from src.models.sr_module import SRModule
from src.models.teachers import attach_teacher
from src.ops.inference import input_channels
from src.utils import config as _config  # noqa: F401  (registers the YAML resolvers)
from src.utils import resume
from src.utils.cli import quote_overrides, run_or_explain
from src.utils.config import in_multirun, interpolation_overrides
from src.utils.errors import UserError
from src.utils.precision import remember_scoring_threads, resolve_auto, trainer_precision
from src.utils.run_config import group_choices, log_run_config, run_hparams
from src.utils.runtime import (
    build_callbacks,
    build_loggers,
    build_trainer,
    close_loggers,
    format_metrics,
    say,
)
from src.utils.schema import check_config
from src.utils.sweep import run_tracked, run_trial, sweepable

log = logging.getLogger("srlab.train")

SUMMARY_KEYS = ["val/psnr_y", "val/ssim_y", "val/psnr_rgb", "val/ssim_rgb"]


def resolve_precision(cfg: DictConfig, model: SRModule) -> Any:
    """The precision the Trainer runs with: ``trainer.precision``, or for ``auto`` what this
    device runs fastest (said, with why). The config keeps ``auto``."""
    choice = resolve_auto(cfg.trainer, model.has_trainable_parameters)
    if choice is None:
        return cfg.trainer.get("precision")
    say(f"precision {choice.precision} (trainer.precision=auto: {choice.reason})")
    return choice.precision


def check_channels(datamodule: SRDataModule, model: SRModule) -> None:
    """Refuse a network whose channel count is not the data's (a single-channel set through an
    RGB-only network would be broadcast, not trained)."""
    data_channels = datamodule.pixel_format.channels
    net_channels = input_channels(model.net)
    if model.has_trainable_parameters and net_channels != data_channels:
        raise UserError(
            f"data.channels={data_channels}, but {type(model.net).__name__} takes "
            f"{net_channels}-channel images; choose a network that follows data.channels "
            f"(README: 16-bit and single-channel images)"
        )


def check_trainable_data(datamodule: SRDataModule, model: SRModule) -> None:
    """Refuse to train a network on a data config without a training set (data=benchmark)."""
    if model.has_trainable_parameters and datamodule.train_set is None:
        data = group_choices().get("data", "this data config")
        raise UserError(
            f"data={data} has no training set (data.train_set is null): it validates "
            f"(src.eval, model=bicubic) but cannot train; choose a data config with one, e.g. "
            f"data=div2k, urban100, folder, paired or sample"
        )


def build_datamodule(cfg: DictConfig) -> SRDataModule:
    """The data module of ``cfg``, its data downloaded (or found missing)."""
    datamodule: SRDataModule = hydra.utils.instantiate(
        cfg.data, channels=resolve_auto_channels(cfg)
    )
    datamodule.ensure_available()
    return datamodule


def build(
    cfg: DictConfig, datamodule: SRDataModule | None = None
) -> tuple[SRDataModule, SRModule, pl.Trainer]:
    """Instantiate the data module (unless given one built from ``cfg``: src.prune calibrates on
    it first), the SR module and the trainer from a composed config.

    The data is downloaded (or found missing) first, before a logger or a run file exists.
    What ``auto`` settings stand for (``data.channels``, ``trainer.precision``) is passed to what
    is built; ``cfg`` stays as composed. A ``model.teacher`` is loaded and attached here."""
    channels = resolve_auto_channels(cfg)
    datamodule = datamodule or build_datamodule(cfg)
    model: SRModule = hydra.utils.instantiate(
        cfg.model,
        **interpolation_overrides(cfg.model, "data.channels", channels),
        val_set_names=datamodule.val_set_names,
        **metric_options(cfg),
    )
    check_channels(datamodule, model)
    check_trainable_data(datamodule, model)
    # Before fit: the adapters must exist for the optimiser and a resumed checkpoint's state.
    attach_teacher(model)
    precision = resolve_precision(cfg, model)
    loggers = build_loggers(cfg.get("logger"))
    progress_bar = cfg.trainer.get("enable_progress_bar", True)
    callbacks = build_callbacks(cfg.get("callbacks"), progress_bar, logging=bool(loggers))
    trainer = build_trainer(cfg.trainer, precision=precision, logger=loggers, callbacks=callbacks)
    return datamodule, model, trainer


def report(
    trainer: pl.Trainer, model: SRModule, datamodule: SRDataModule, scale: int, seconds: float
) -> None:
    """Print the final scores beside bicubic on the same validation images."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if "val/psnr_y" not in metrics:
        say(f"done in {seconds:.0f} s (no validation ran)")
        return
    assert datamodule.val_data is not None
    # All validation images, in this process (under DDP val_dataloader() is this rank's share).
    baseline = bicubic_scores(DataLoader(datamodule.val_data, batch_size=1), scale, model.gray)
    best = metrics.get("val/psnr_y_best", metrics["val/psnr_y"])
    say(f"done in {seconds:.0f} s, {trainer.global_step} steps")
    say(f"  last validation: {format_metrics(metrics, SUMMARY_KEYS)}")
    say(
        f"  best PSNR_Y {best:.4f} dB vs bicubic {baseline['psnr_y']:.4f} dB on the same "
        f"images ({best - baseline['psnr_y']:+.2f} dB)"
    )
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and getattr(checkpoint, "dirpath", None):
        say(f"  checkpoints: {checkpoint.dirpath}")  # type: ignore[attr-defined]


def resume_target(cfg: DictConfig) -> Path | None:
    """The checkpoint ``ckpt_path`` names: a path, ``last`` (the newest earlier run of this
    task) or ``auto`` (the newest earlier run of this config, or None: start fresh)."""
    requested = str(cfg.get("ckpt_path"))
    runs = Path(cfg.paths.log_dir) / cfg.task_name
    if requested == resume.LAST:
        found = resume.newest_run(cfg)
        if found is None:
            raise CheckpointError(f"ckpt_path=last: no earlier run with a last.ckpt under {runs}")
        return found
    if requested != resume.AUTO:
        return Path(requested)
    earlier = resume.newest_run_of_this_config(cfg)
    if earlier.checkpoint is None:
        others = f" ({earlier.other_configs} with another config)" if earlier.other_configs else ""
        say(f"ckpt_path=auto: no earlier run of this config under {runs}{others}; starting fresh")
    return earlier.checkpoint


def resume_path(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from, checked readable first (a corrupt file is named)."""
    if not cfg.get("ckpt_path"):
        return None
    path = resume_target(cfg)
    if path is None:
        return None
    checkpoint = read_checkpoint(path)  # a CheckpointError naming the file: missing or corrupt
    say(f"resuming from {path} (step {checkpoint.get('global_step', '?')})")
    return str(path)


def log_config(
    cfg: DictConfig,
    datamodule: SRDataModule,
    model: SRModule,
    trainer: pl.Trainer,
    facts: dict[str, Any] | None = None,
) -> None:
    """Give every logger the run's description; ``facts`` replace what the config alone would
    say (src.prune: the pruned network's FLOPs)."""
    train_set = datamodule.train_set.name if datamodule.train_set is not None else None
    hparams = run_hparams(
        cfg,
        model.net,
        train_set,
        datamodule.val_set_names,
        channels=datamodule.pixel_format.channels,
        precision=trainer_precision(cfg.trainer, model.has_trainable_parameters),
        value_range=model.value_range,
    )
    log_run_config(trainer.loggers, {**hparams, **(facts or {})}, str(cfg.optimized_metric))


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (or, for a model without parameters, only validate) and return the metrics."""
    check_config(cfg, "train")
    remember_scoring_threads()
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg)
    log_config(cfg, datamodule, model, trainer)
    return fit_and_report(cfg, datamodule, model, trainer, resume_path(cfg))


def fit_and_report(
    cfg: DictConfig,
    datamodule: SRDataModule,
    model: SRModule,
    trainer: pl.Trainer,
    resume: str | None,
) -> dict[str, Any]:
    """Fit from ``resume`` (or from the start), or validate a model without parameters;
    report and return the metrics. Shared with src.prune, which fine-tunes the pruned model."""
    started = time.perf_counter()
    if model.has_trainable_parameters:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
    else:
        say(f"{type(model.net).__name__} has no trainable parameters: validating only")
        trainer.validate(model, datamodule=datamodule)
    if trainer.is_global_zero and not getattr(trainer, "fast_dev_run", False):
        report(trainer, model, datamodule, int(cfg.scale), time.perf_counter() - started)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def objective(metrics: dict[str, Any], cfg: DictConfig) -> float | None:
    """What sweeps optimise: the logged value named by ``optimized_metric`` (by default the
    best validation PSNR_Y of the run); None when it was never logged."""
    value = metrics.get(str(cfg.optimized_metric))
    return None if value is None else float(value)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; the return value is the objective of sweeps.

    Every run writes ``run.json``, a failed one also ``failed.json``. Under ``--multirun`` a
    failed run returns None and the sweep goes on; a single run keeps exit status 2 for user
    errors and a traceback for bugs.
    """
    folder = Path(cfg.paths.output_dir)
    try:
        if in_multirun():
            return run_trial(lambda: objective(train(sweepable(cfg)), cfg), folder)
        return run_or_explain(lambda: run_tracked(lambda: objective(train(cfg), cfg), folder))
    finally:
        close_loggers()


if __name__ == "__main__":
    sys.argv = quote_overrides(sys.argv)
    main()
