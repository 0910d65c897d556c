"""End-to-end runs of src.train and src.eval on tiny models and images."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import pytest
from omegaconf import open_dict

from src.archs.edsr import EDSR
from src.eval import evaluate
from src.metrics.report import SetSummary
from src.train import train
from src.utils.runtime import close_loggers
from tests.helpers import TINY, compose_config, run_module
from tests.test_data import write_folder
from tests.wandb_reader import config, history


@pytest.fixture
def hr_folder(tmp_path: Path) -> Path:
    """A dataset laid out like Urban100: <data_dir>/benchmarks/Urban100/HR/img_XXX.png."""
    folder = tmp_path / "data" / "benchmarks" / "Urban100" / "HR"
    write_folder(folder, 12, height=64, width=72)
    return folder


def folder_overrides(folder: Path) -> list[str]:
    return ["data=folder", f"data.root={folder}", "data.train_set.val_count=2"]


def test_fast_dev_run(hr_folder: Path, tmp_path: Path):
    cfg = compose_config("train", [*TINY, *folder_overrides(hr_folder), "debug=fdr"], tmp_path)
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"])
    assert "val/psnr_y" in metrics  # one validation batch ran too


# Both precisions explicitly, whatever this CPU's `auto` would pick: validation scores the fp32
# forward in either, so it equals src.eval of the checkpoint.
PRECISIONS = ["32", "bf16-mixed"]


def eval_checkpoint(hr_folder: Path, checkpoint: Path, output_dir: Path) -> SetSummary:
    cfg = compose_config(
        "eval", [*folder_overrides(hr_folder), f"ckpt_path={checkpoint}"], output_dir
    )
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = False
    (summary,) = evaluate(cfg)
    return summary


@pytest.mark.parametrize("precision", PRECISIONS)
def test_validation_then_eval_parity(hr_folder: Path, tmp_path: Path, precision: str):
    run_dir = tmp_path / "run"
    overrides = [
        *TINY,
        *folder_overrides(hr_folder),
        "trainer.max_steps=6",
        "trainer.log_every_n_steps=2",
        f"trainer.precision={precision}",
    ]
    metrics = train(compose_config("train", overrides, run_dir))
    assert metrics["val/psnr_y_best"] >= metrics["val/psnr_y"] - 1e-6
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file()
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert any(row.get("val/psnr_y") for row in rows) and any(row.get("train/loss") for row in rows)
    assert sorted(p.name for p in (run_dir / "comparisons").iterdir())

    eval_dir = tmp_path / "eval"
    summary = eval_checkpoint(hr_folder, checkpoint, eval_dir)
    assert summary.images == 2
    # Validation logs float32; eval prints the float64 mean of the same per-image scores.
    assert summary.psnr_y == pytest.approx(metrics["val/psnr_y"], abs=1e-4)
    assert summary.ssim_y == pytest.approx(metrics["val/ssim_y"], abs=1e-5)
    assert {"results.json", "results.csv", "results.md"} <= {p.name for p in eval_dir.iterdir()}
    best = eval_checkpoint(hr_folder, run_dir / "checkpoints" / "best.ckpt", tmp_path / "best")
    assert best.psnr_y == pytest.approx(metrics["val/psnr_y_best"], abs=1e-4)


def test_wandb_offline_run_logs_images_and_psnr(
    hr_folder: Path, tmp_path: Path, monkeypatch, capsys
):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc credentials either
    overrides = [*TINY, *folder_overrides(hr_folder), "logger=wandb", "trainer.max_steps=3"]
    try:
        metrics = train(compose_config("train", overrides, tmp_path))
    finally:
        close_loggers()
    offline_lines = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("wandb:")
    ]
    assert len(offline_lines) == 1 and "WANDB_API_KEY" in offline_lines[0]

    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    rows, logged = [], []
    deadline = time.monotonic() + 60
    while not logged and time.monotonic() < deadline:  # wandb's service may still be flushing
        rows = history(run_file)
        logged = [row["val/psnr_y"] for row in rows if "val/psnr_y" in row]
        if not logged:
            time.sleep(0.5)
    assert logged and logged[-1] == pytest.approx(metrics["val/psnr_y"], abs=1e-4)
    # The run says what it is: the runs table and a sweep's panels group and filter by these.
    run_config = config(run_file)
    assert run_config["model"] == "edsr" and run_config["model/network"] == "EDSR"
    assert run_config["scale"] == 2 and run_config["optimizer/lr"] == pytest.approx(2e-4)
    assert run_config["model/net/num_blocks"] == 2 and run_config["data/batch_size"] == 4
    expected_params = sum(p.numel() for p in EDSR(2, num_blocks=2, num_features=16).parameters())
    assert run_config["model/params"] == expected_params
    assert run_config["model/gflops"] > 0 and run_config["trainer/precision"] in (
        "32",
        "bf16-mixed",
    )
    images = [key for row in rows for key in row if key.startswith("compare/")]
    assert any(key.endswith("/captions") for key in images)
    media = list(run_file.parent.glob("files/media/images/compare/**/*.png"))
    assert len(media) == 2  # one comparison per validation image
    from src.io.images import read_rgb

    assert read_rgb(media[0]).max() > 0  # uint8 images: not saved black


def test_urban100_command_trains(hr_folder: Path, tmp_path: Path):
    data_dir = hr_folder.parents[2]
    result = run_module(
        "src.train",
        [
            "model=edsr",
            "data=urban100",
            "data.download=false",  # a partial copy of the set, used as it is
            f"paths.data_dir={data_dir}",
            "trainer.max_steps=20",
            "data.train_set.val_count=2",
            f"hydra.run.dir={tmp_path / 'run'}",
            *TINY,
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best PSNR_Y" in result.stdout and "bicubic" in result.stdout
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()


def test_missing_urban100_is_one_clear_sentence(tmp_path: Path):
    result = run_module(
        "src.train",
        [
            "data=urban100",
            "data.download=false",
            f"paths.data_dir={tmp_path}",
            f"hydra.run.dir={tmp_path / 'run'}",
            *TINY,
        ],
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error: Urban100 images not found" in result.stderr
    assert str(tmp_path / "benchmarks" / "Urban100" / "HR") in result.stderr


def test_bicubic_model_validates_without_training(hr_folder: Path, tmp_path: Path):
    overrides = [*folder_overrides(hr_folder), "model=bicubic", "logger=csv"]
    metrics = train(compose_config("train", overrides, tmp_path))
    assert metrics["val/psnr_y"] > 20


@pytest.mark.parametrize("precision", PRECISIONS)
def test_ema_weights_are_validated_checkpointed_and_evaluated(
    hr_folder: Path, tmp_path: Path, precision: str
):
    import torch

    from src.archs.edsr import EDSR
    from src.models.pretrained import import_weights

    run_dir = tmp_path / "run"
    overrides = [
        *TINY,
        *folder_overrides(hr_folder),
        "trainer.max_steps=5",
        "model.ema_decay=0.5",
        f"trainer.precision={precision}",
    ]
    metrics = train(compose_config("train", overrides, run_dir))
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    raw, ema = state["net.head.weight"], state["ema.module.head.weight"]
    assert not torch.equal(raw, ema)  # both kept, and they differ

    summary = eval_checkpoint(hr_folder, checkpoint, tmp_path / "e")
    assert summary.psnr_y == pytest.approx(metrics["val/psnr_y"], abs=1e-4)

    net = EDSR(2, num_blocks=2, num_features=16)
    import_weights(net, checkpoint)  # an SR Lab checkpoint as model.pretrained: the EMA weights
    assert torch.equal(net.head.weight, ema)


@pytest.mark.slow
def test_compiled_training_writes_plain_checkpoints(hr_folder: Path, tmp_path: Path):
    from src.models.checkpoint import module_from_checkpoint

    overrides = [*TINY, *folder_overrides(hr_folder), "trainer.max_steps=2", "model.compile=true"]
    metrics = train(compose_config("train", overrides, tmp_path))
    assert math.isfinite(metrics["train/loss"])
    module = module_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt", compile=False)
    assert not any("_orig_mod" in key for key in module.state_dict())


def test_a_run_without_a_logger_trains_with_the_default_callbacks(tmp_path: Path):
    # The default callbacks hold a learning-rate monitor, which Lightning refuses without a
    # logger: logger=none drops it instead of stopping with a traceback.
    args = [*TINY, "logger=none", "trainer.max_steps=2", "trainer.val_check_interval=2"]
    result = run_module("src.train", [*args, f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
