"""``python -m src.eval``: score a trained checkpoint or a model with imported weights.

It runs the SRModule's own validation (the shared inference path and metrics), so the figures
are the ones validation logged for the same weights. Results land in the run folder as
``results.{json,csv,md}`` plus comparison images.

    python -m src.eval ckpt_path=outputs/train/runs/<run>/checkpoints/best.ckpt
    python -m src.eval model=bicubic scale=4
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.callbacks.comparisons import ComparisonImages
from src.callbacks.timing import SetTimer
from src.data.datamodule import SRDataModule
from src.data.formats import resolve_auto_channels
from src.metrics.report import (
    SetSummary,
    attach_published,
    markdown_table,
    summarize,
    write_results,
)
from src.models.loading import (
    checkpoint_scale,
    load_module,
    load_onnx_module,
    metric_options,
    onnx_scale,
    read_run_checkpoint,
)
from src.models.onnx_runtime import OnnxNetwork, onnx_file
from src.models.sr_module import SRModule
from src.utils import config as _config  # noqa: F401  (registers the YAML resolvers)
from src.utils.cli import quote_overrides, run_or_explain
from src.utils.config import interpolation_overrides
from src.utils.precision import remember_scoring_threads
from src.utils.runtime import build_trainer, say
from src.utils.schema import check_config


def published_model(cfg: DictConfig, module: SRModule) -> str | None:
    """Which conf/model's published figures apply: ``published``, else the model of official
    weights (``model.pretrained``) or of a parameter-free baseline; none for own checkpoints."""
    if cfg.get("published") not in (None, "auto"):
        return str(cfg.published)
    if cfg.get("published") is None or cfg.get("ckpt_path") or cfg.get("onnx_path"):
        return None
    if cfg.model.get("pretrained") or not module.has_trainable_parameters:
        choice = HydraConfig.get().runtime.choices.get("model")
        return str(choice) if choice else None
    return None


def scored_border(module: SRModule) -> int | dict[str, int]:
    """The border cropped before scoring: one number, or one per set where they differ (image
    sets at the scale beside video sets, which are scored whole)."""
    borders = set(module.val_borders.values())
    if len(borders) == 1:
        return borders.pop()
    return dict(module.val_borders) if borders else module.border


def evaluate(cfg: DictConfig) -> list[SetSummary]:
    """Validate once, write the results files and print the table."""
    check_config(cfg, "eval")
    remember_scoring_threads()
    onnx_path = onnx_file(cfg)
    network = OnnxNetwork(onnx_path) if onnx_path else None
    checkpoint = None if network else read_run_checkpoint(cfg)
    scale = onnx_scale(cfg, network) if network else checkpoint_scale(cfg, checkpoint)
    channels = resolve_auto_channels(cfg, scale)
    scaled = interpolation_overrides(cfg.data, "scale", scale)
    datamodule: SRDataModule = hydra.utils.instantiate(cfg.data, **scaled, channels=channels)
    options = {"val_set_names": datamodule.val_set_names, **metric_options(cfg)}
    module = (
        load_onnx_module(network, cfg, **options)
        if network
        else load_module(cfg, checkpoint, channels, **options)
    )
    output_dir = Path(cfg.paths.output_dir)
    timer = SetTimer()
    callbacks: list[pl.Callback] = [timer]
    if cfg.comparisons:
        callbacks.append(
            ComparisonImages(str(output_dir / "comparisons"), cfg.comparisons, False, True)
        )
    trainer = build_trainer(
        cfg.trainer, logger=False, callbacks=callbacks, enable_model_summary=False
    )
    started = time.perf_counter()
    trainer.validate(module, datamodule=datamodule, verbose=False)
    seconds = time.perf_counter() - started
    summaries = attach_published(
        summarize(module.val_scores), published_model(cfg, module), module.scale
    )
    meta = {
        "model": getattr(module.net, "display_name", type(module.net).__name__),
        "scale": module.scale,
        "crop_border": scored_border(module),
        "ckpt_path": cfg.get("ckpt_path"),
        "onnx_path": onnx_path,
        "pretrained": cfg.model.get("pretrained") if not cfg.get("ckpt_path") else None,
        "self_ensemble": cfg.self_ensemble,
        "tile": cfg.tile,
        "seconds": round(seconds, 2),
        "timing": timer.summary(),
        "scoring": sorted({str(record.get("scoring", "")) for record in module.val_scores}),
    }
    if not trainer.is_global_zero:
        return summaries  # under DDP every rank holds all scores; rank 0 writes and prints them
    files = write_results(output_dir, summaries, module.val_scores, meta)
    unit = "frames" if any("clip" in record for record in module.val_scores) else "images"
    say(f"{meta['model']} x{module.scale}, {len(module.val_scores)} {unit} in {seconds:.1f} s")
    for set_name, timing in meta["timing"].items():
        say(
            f"  {set_name}: {timing['images']} {unit}, {timing['megapixels']:.1f} MP in "
            f"{timing['seconds']:.1f} s ({timing['ms_per_megapixel']:.0f} ms/MP)"
        )
    say(f"scored as the papers do, crop {meta['crop_border']}: {'; '.join(meta['scoring'])}")
    say(markdown_table(summaries))
    say(f"results: {', '.join(str(f) for f in files)}")
    return summaries


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the mean PSNR_Y over all sets (for sweeps)."""
    summaries = run_or_explain(lambda: evaluate(cfg))
    total = sum(s.images for s in summaries)
    return sum(s.psnr_y * s.images for s in summaries) / total


if __name__ == "__main__":
    sys.argv = quote_overrides(sys.argv)
    main()
