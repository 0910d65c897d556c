"""A GAN training step against a PSNR one, same generator, same data: ``make bench-gan``.

Composes ``experiment=realesrgan_compact_x4`` (SRVGGNetCompact, U-Net critic with spectral norm,
L1 + five-layer VGG19 perceptual + GAN losses, batch degradations) and the same generator with
``loss=l1`` and no critic (as ``realesrnet_x4`` trains RRDBNet), builds each with
``src.train``'s own ``build`` and times the training steps of a short run on ``data=sample``
(batch 4 of 64x64 LR patches by default): the median step after two warm-up steps. VGG19 gets
random weights (the timing does not depend on their values; real runs download them).

    python -m bench.gan_step [--steps 8] [--batch 4] [--patch 64]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from src.train import build
from src.utils.tables import markdown_table

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
WARMUP = 2


class StepTimer(pl.Callback):
    """Wall time of each training batch, start of the batch to its end."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._started = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.seconds.append(time.perf_counter() - self._started)


def step_seconds(overrides: list[str], steps: int, run_dir: Path) -> float:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            [*overrides, f"hydra.run.dir={run_dir}", f"trainer.max_steps={steps}"],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    datamodule, model, trainer = build(cfg)
    timer = StepTimer()
    trainer.callbacks.append(timer)  # type: ignore[attr-defined]
    trainer.fit(model, datamodule=datamodule)
    return statistics.median(timer.seconds[WARMUP:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=64)
    args = parser.parse_args()
    common = [
        "data=sample",
        f"data.batch_size={args.batch}",
        f"data.lr_patch_size={args.patch}",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "+trainer.limit_val_batches=0",
        "callbacks=none",
    ]
    variants = {
        "PSNR (L1, no critic)": [
            "model=srvgg_compact",
            "model.net.num_conv=32",
            "model.ema_decay=0.999",
            "scale=4",
            "loss=l1",
            "degradation=realesrgan_batch",
            "data.sharpen_target={weight: 0.5, kernel_size: 51, threshold: 10}",
        ],
        "GAN (L1 + VGG19 + U-Net critic)": [
            "experiment=realesrgan_compact_x4",
            "model.loss.terms.perceptual.loss.weights=random",
        ],
    }
    print(f"SRVGGNetCompact x4, batch {args.batch} of {args.patch}x{args.patch} LR patches")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for index, (name, overrides) in enumerate(variants.items()):
            run_dir = Path(folder) / str(index)
            results[name] = step_seconds([*overrides, *common], args.steps, run_dir)
    table = [[name, f"{seconds:.2f}"] for name, seconds in results.items()]
    print(markdown_table(["step", "seconds (median)"], table, [False, True]))
    psnr, gan = results.values()
    print(f"GAN step / PSNR step: {gan / psnr:.1f}x")


if __name__ == "__main__":
    main()
