"""``python -m src.prune``: prune a trained checkpoint structurally, then fine-tune it.

    python -m src.prune ckpt_path=PATH ratio=0.5 target=params|flops [fuse=true] \\
        data=div2k trainer.max_steps=5000 model.optimizer.lr=1e-4

The checkpoint's network (its EMA weights where it has them) loses ``ratio`` of its parameters
or FLOPs (:mod:`src.models.pruning`), and is fine-tuned in the same run by src.train's own
machinery (data, trainer, loggers, callbacks, checkpoints). The run's checkpoints hold the pruning
record in their model config, so ``src.eval``, ``src.predict`` and ``src.export`` load them like
any other. ``trainer.max_steps=0`` prunes only, and still writes ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from src.data.datamodule import SRDataModule
from src.models.checkpoint import (
    CheckpointError,
    module_from_checkpoint,
    read_checkpoint,
    stored_model_config,
)
from src.models.loading import checkpoint_scale, inference_options, metric_options
from src.models.pruning import Cost, Pruned, prune_to_target
from src.models.sr_module import SRModule
from src.models.targets import GAN_MODULE
from src.train import build, build_datamodule, fit_and_report, log_config, objective
from src.utils import config as _config  # noqa: F401  (registers the YAML resolvers)
from src.utils.cli import quote_overrides, run_or_explain
from src.utils.errors import UserError
from src.utils.precision import remember_scoring_threads
from src.utils.runtime import build_trainer, close_loggers, say
from src.utils.schema import check_config
from src.utils.sweep import run_tracked

PSNR = "val/psnr_y"
# Training batches whose LR patches importance=activation ranks channels on.
CALIBRATION_BATCHES = 4


def source_path(cfg: DictConfig) -> Path:
    if not cfg.get("ckpt_path"):
        raise UserError("ckpt_path is not set: give the checkpoint to prune, ckpt_path=PATH")
    return Path(cfg.ckpt_path)


def source_config(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """The checkpoint's model config: what the pruned network is rebuilt from."""
    stored = stored_model_config(checkpoint, path)
    if stored is None:
        raise CheckpointError(
            f"{path} holds no model config (not written by SR Lab's trainer): src.prune rebuilds "
            "the network from it; train or fine-tune it with src.train first"
        )
    if stored.get("_target_") == GAN_MODULE:
        raise CheckpointError(
            f"{path} is a GAN checkpoint: src.prune fine-tunes with the PSNR losses only; prune "
            "the PSNR stage, then train the GAN from it"
        )
    return stored


def fine_tune_config(cfg: DictConfig, stored: dict[str, Any]) -> dict[str, Any]:
    """The model config of the fine-tuning: the checkpoint's, with the run's inference options,
    loss, optimizer, scheduler and batch augmentation (``augment=``; none unless chosen) and any
    ``+model.<key>``; no teacher, no weight files (the weights are the pruned network's)."""
    if "net" in cfg.model:
        raise UserError("model.net: src.prune prunes the checkpoint's network; leave model.net")
    config = copy.deepcopy(stored)
    config.update(pretrained=None, pretrained_parts={}, teacher=None, augment=None)
    config.update(inference_options(cfg))
    config.update(OmegaConf.to_container(cfg.model, resolve=True))  # type: ignore[arg-type]
    if cfg.fuse:
        config["fused"] = True
    return config


@dataclass(frozen=True)
class Source:
    """The checkpoint to prune, read once, and its model config."""

    path: Path
    checkpoint: dict[str, Any]
    stored: dict[str, Any]


def read_source(cfg: DictConfig) -> Source:
    path = source_path(cfg)
    checkpoint = read_checkpoint(path)
    return Source(path, checkpoint, source_config(checkpoint, path))


def source_module(cfg: DictConfig, source: Source, **overrides: Any) -> SRModule:
    """The checkpoint's module, fused with ``fuse=true`` (refused where there is nothing to
    fuse), with ``overrides`` of its config."""
    module = module_from_checkpoint(source.path, source.checkpoint, **overrides)
    if cfg.fuse and not module.fuse_for_inference() and not module.hparams.get("fused"):
        raise UserError(
            f"fuse=true: {type(module.net).__name__} has no re-parameterisable block to fuse; "
            "leave fuse=false"
        )
    return module


def calibration_images(datamodule: SRDataModule, value_range: float) -> torch.Tensor:
    """LR training patches as training sees them (:data:`CALIBRATION_BATCHES` batches), in the
    network's value range: what ``importance=activation`` ranks channels on."""
    if datamodule.train_set is None:
        raise UserError(
            "importance=activation ranks channels on training patches, and this data config "
            "has no training set; choose one with a train_set"
        )
    datamodule.setup("fit")
    batches = islice(datamodule.train_dataloader(), CALIBRATION_BATCHES)
    lr = [datamodule.on_after_batch_transfer(batch, 0)["lr"] for batch in batches]
    return torch.cat(lr).float() * value_range


def prune_source(cfg: DictConfig, source: Source, datamodule: SRDataModule) -> Pruned:
    """Prune the checkpoint's inference weights (EMA where kept), saying how it goes."""
    module = source_module(cfg, source)
    net = module.inference_net
    name = type(net).__name__
    say(f"pruning {name} ({source.path}): {cfg.ratio} of its {cfg.target} to remove ...")
    calibration = None
    if cfg.importance == "activation":
        calibration = calibration_images(datamodule, module.value_range)
        say(f"  ranking channels on {len(calibration)} LR training patches")
    pruned = prune_to_target(
        net,
        float(cfg.ratio),
        cfg.target,
        cfg.importance,
        calibration,
        earlier=source.stored.get("pruning"),
        progress=lambda line: say(f"  {line}"),
    )
    say(f"pruned {name}: {pruned.reached:.1%} of its {cfg.target} removed")
    for line in describe_costs(pruned.before, pruned.after):
        say(line)
    return pruned


def describe_costs(before: Cost, after: Cost) -> list[str]:
    def change(old: float, new: float) -> str:
        return f"{(new - old) / old:+.1%}"

    params = f"{before.params:,} -> {after.params:,} ({change(before.params, after.params)})"
    flops = f"{before.gmacs:.3f} G -> {after.gmacs:.3f} G ({change(before.gmacs, after.gmacs)})"
    return [
        f"  parameters  {params}",
        f"  FLOPs       {flops}, multiply-accumulates at a 256x256 LR input",
    ]


def load_pruned(model: SRModule, net: nn.Module) -> None:
    """The pruned weights into the module built with the record (strictly: the replayed shapes
    are the pruned ones), and into its EMA copy."""
    weights = net.state_dict()
    model.net.load_state_dict(weights)
    if model.ema is not None:
        model.ema.module.load_state_dict(weights)


def validation_psnr(cfg: DictConfig, module: SRModule, datamodule: SRDataModule) -> float | None:
    """The module's validation PSNR_Y, scored in fp32 by a trainer without loggers or callbacks
    (the run's logs and checkpoints are the fine-tuning's); None without validation images."""
    if not datamodule.val_set_names:
        return None
    quiet = build_trainer(
        cfg.trainer,
        devices=1,  # one process, whatever the fine-tuning's strategy
        num_nodes=1,
        strategy="auto",
        precision="32",
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,  # no_grad: the module's metric states stay usable for training
    )
    results = quiet.validate(module, datamodule=datamodule, verbose=False)
    module.best_psnr_y.reset()  # the fine-tuning's best is its own
    return float(results[0][PSNR]) if results and PSNR in results[0] else None


def scores_before(
    cfg: DictConfig, source: Source, model: SRModule, datamodule: SRDataModule
) -> dict[str, float | None]:
    """Validation PSNR_Y of the original network and of the pruned one, not yet fine-tuned."""
    original = source_module(
        cfg,
        source,
        val_set_names=datamodule.val_set_names,
        **metric_options(cfg),
        **inference_options(cfg),
    )
    return {
        "original": validation_psnr(cfg, original, datamodule),
        "pruned": validation_psnr(cfg, model, datamodule),
    }


def write_pruned_checkpoint(cfg: DictConfig, model: SRModule, trainer: pl.Trainer) -> Path:
    """``trainer.max_steps=0``: the pruned module, saved where a run saves its last checkpoint."""
    folder = getattr(trainer.checkpoint_callback, "dirpath", None)
    path = Path(folder or Path(cfg.paths.output_dir) / "checkpoints") / "last.ckpt"
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path


def summarise(
    cfg: DictConfig,
    pruned: Pruned,
    scores: dict[str, float | None],
    val_sets: list[str],
    where: Any,
) -> None:
    say(
        f"pruning done: target={cfg.target} ratio={cfg.ratio}, reached {pruned.reached:.4f} "
        f"({pruned.net.__class__.__name__}, importance {cfg.importance})"
    )
    for line in describe_costs(pruned.before, pruned.after):
        say(line)
    psnr = [f"{name} {value:.4f} dB" for name, value in scores.items() if value is not None]
    if psnr:
        say(f"  PSNR_Y      {', '.join(psnr)} ({', '.join(val_sets)})")
    if where:
        say(f"  checkpoints {where}")


def prune(cfg: DictConfig) -> dict[str, Any]:
    """Prune, fine-tune (unless ``trainer.max_steps=0``), report; the run's metrics."""
    source = read_source(cfg)
    with open_dict(cfg):
        cfg.scale = checkpoint_scale(cfg, source.checkpoint)
        cfg.model = fine_tune_config(cfg, source.stored)
        if cfg.trainer.get("max_steps") == 0:  # prune only: keeps the step intervals valid
            cfg.trainer.val_check_interval = 1
    check_config(cfg, "prune")
    remember_scoring_threads()
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    pruned = prune_source(cfg, source, datamodule)
    with open_dict(cfg):
        cfg.model.pruning = pruned.record
    datamodule, model, trainer = build(cfg, datamodule)
    load_pruned(model, pruned.net)
    log_config(cfg, datamodule, model, trainer, {"model/gflops": round(2 * pruned.after.gmacs, 3)})
    scores = scores_before(cfg, source, model, datamodule)
    metrics: dict[str, Any] = {}
    if int(cfg.trainer.max_steps) > 0:
        metrics = fit_and_report(cfg, datamodule, model, trainer, resume=None)
        scores["fine-tuned"] = metrics.get(PSNR)
        where = getattr(trainer.checkpoint_callback, "dirpath", None)
    else:
        where = write_pruned_checkpoint(cfg, model, trainer)
    summarise(cfg, pruned, scores, datamodule.val_set_names, where)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="prune")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; like src.train's, it returns the fine-tuning's objective, writes
    ``run.json`` (and ``failed.json``) and exits with status 2 after one line for user errors."""
    folder = Path(cfg.paths.output_dir)
    try:
        return run_or_explain(lambda: run_tracked(lambda: objective(prune(cfg), cfg), folder))
    finally:
        close_loggers()


if __name__ == "__main__":
    sys.argv = quote_overrides(sys.argv)
    main()
