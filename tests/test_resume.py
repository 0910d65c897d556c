"""Fault tolerance: kill -9 mid-run and resume exactly; corrupt checkpoints; NaN losses."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, compose_config, run_module, tiny_folder_run
from tests.test_data import write_folder
from tests.test_ddp import last_logged


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "hr"
    write_folder(path, 6, height=64, width=64)
    return path


def training_args(folder: Path, run_dir: Path) -> list[str]:
    return [
        *tiny_folder_run(folder),
        "trainer.max_steps=60",
        "trainer.val_check_interval=30",
        "callbacks.last_checkpoint.every_n_train_steps=4",
        "trainer.deterministic=true",
        "model.ema_decay=0.9",
        f"hydra.run.dir={run_dir}",
    ]


def start_and_kill_after_first_checkpoint(args: list[str], checkpoint: Path) -> int:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline"}
    process = subprocess.Popen(
        [sys.executable, "-m", "src.train", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    return process.wait(timeout=30)


def test_killed_run_resumes_to_the_same_result(folder: Path, tmp_path: Path):
    whole = run_module("src.train", training_args(folder, tmp_path / "whole"), timeout=300)
    assert whole.returncode == 0, whole.stderr[-2000:]

    crashed = tmp_path / "crashed"
    checkpoint = crashed / "checkpoints" / "last.ckpt"
    code = start_and_kill_after_first_checkpoint(training_args(folder, crashed), checkpoint)
    assert code == -signal.SIGKILL, "the run finished before it could be killed"

    resumed = run_module(
        "src.train",
        [*training_args(folder, tmp_path / "resumed"), f"ckpt_path={checkpoint}"],
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout
    expected = last_logged(tmp_path / "whole", "val/psnr_y")
    assert last_logged(tmp_path / "resumed", "val/psnr_y") == pytest.approx(expected, abs=1e-4)


def test_corrupt_checkpoint_is_named_not_a_traceback(folder: Path, tmp_path: Path):
    broken = tmp_path / "last.ckpt"
    broken.write_bytes(b"PK\x03\x04 this is not a whole checkpoint")
    result = run_module(
        "src.train", [*training_args(folder, tmp_path / "r"), f"ckpt_path={broken}"]
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and str(broken) in result.stderr


def test_ckpt_path_last_without_earlier_runs_says_so(folder: Path, tmp_path: Path):
    args = [*training_args(folder, tmp_path / "r"), f"paths.log_dir={tmp_path / 'logs'}"]
    result = run_module("src.train", [*args, "ckpt_path=last"])
    assert result.returncode == 2 and "no earlier run with a last.ckpt" in result.stderr


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_nan_loss_stops_naming_the_step_or_skips(folder: Path, tmp_path: Path, policy: str):
    from src.models.sr_module import NonFiniteLossError
    from src.train import train

    overrides = [
        *tiny_folder_run(folder),
        "trainer.max_steps=3",
        "model.optimizer.lr=1e30",  # the first update blows the weights up
        f"model.nonfinite_loss={policy}",
    ]
    cfg = compose_config("train", overrides, tmp_path)
    if policy == "stop":
        with pytest.raises(NonFiniteLossError, match=r"at step \d"):
            train(cfg)
    else:
        with pytest.warns(UserWarning, match="batch skipped"):
            train(cfg)


def test_the_best_validation_before_a_resume_is_still_the_best_after(folder: Path, tmp_path: Path):
    # A constant, too high learning rate: the second validation (step 8) is worse than the
    # first (step 4), so the best of the run comes before the point it is resumed from.
    common = [
        *tiny_folder_run(folder),
        "trainer.val_check_interval=4",
        "scheduler=constant",
        "model.optimizer.lr=0.02",
        "trainer.deterministic=true",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    runs = tmp_path / "logs" / "train" / "runs"
    whole = run_module("src.train", [*common, "trainer.max_steps=8", f"hydra.run.dir={tmp_path}/w"])
    assert whole.returncode == 0, whole.stderr[-2000:]
    rows = [r for r in csv.DictReader((tmp_path / "w" / "metrics.csv").open()) if r["val/psnr_y"]]
    first, second = (float(r["val/psnr_y"]) for r in rows)
    assert first > second, "the set-up must put the best validation first"

    before = run_module("src.train", [*common, "trainer.max_steps=4", f"hydra.run.dir={runs}/a"])
    assert before.returncode == 0, before.stderr[-2000:]
    resumed = run_module(
        "src.train",
        [*common, "trainer.max_steps=8", "ckpt_path=last", f"hydra.run.dir={runs}/b"],
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert last_logged(runs / "b", "val/psnr_y") == pytest.approx(second, abs=1e-4)
    assert last_logged(runs / "b", "val/psnr_y_best") == pytest.approx(first, abs=1e-4)
    assert f"best PSNR_Y {first:.4f} dB" in resumed.stdout


def auto_args(folder: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        *tiny_folder_run(folder),
        "trainer.val_check_interval=2",
        "scheduler=constant",
        f"paths.log_dir={tmp_path / 'logs'}",
        *extra,
    ]


def test_ckpt_path_auto_without_an_earlier_run_starts_fresh_and_says_so(
    folder: Path, tmp_path: Path
):
    args = auto_args(folder, tmp_path, "trainer.max_steps=2", "ckpt_path=auto")
    result = run_module("src.train", args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ckpt_path=auto: no earlier run of this config" in result.stdout
    assert "resuming from" not in result.stdout


def test_ckpt_path_auto_resumes_the_newest_run_of_the_same_config(folder: Path, tmp_path: Path):
    runs = tmp_path / "logs" / "train" / "runs"
    same = auto_args(folder, tmp_path, "model.optimizer.lr=0.001")
    other = auto_args(folder, tmp_path, "model.optimizer.lr=0.002")
    first = run_module("src.train", [*same, "trainer.max_steps=2", f"hydra.run.dir={runs}/a"])
    assert first.returncode == 0, first.stderr[-2000:]
    # Newer, but another config: not the one to resume.
    newer = run_module("src.train", [*other, "trainer.max_steps=4", f"hydra.run.dir={runs}/b"])
    assert newer.returncode == 0, newer.stderr[-2000:]
    resumed = run_module(
        "src.train",
        [*same, "trainer.max_steps=4", "ckpt_path=auto", f"hydra.run.dir={runs}/c"],
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from {runs / 'a' / 'checkpoints' / 'last.ckpt'} (step 2)" in resumed.stdout
    rows = list(csv.DictReader((runs / "c" / "metrics.csv").open()))
    assert max(int(r["step"]) for r in rows) >= 2, "the resumed run must go on from step 2"


@pytest.mark.slow
def test_ckpt_path_auto_resumes_each_sweep_trial_from_its_own_trial(folder: Path, tmp_path: Path):
    multiruns = tmp_path / "logs" / "train" / "multiruns"
    sweep = ["-m", "model.optimizer.lr=0.001,0.002"]
    args = auto_args(folder, tmp_path)
    first = run_module(
        "src.train", [*sweep, *args, "trainer.max_steps=2", f"hydra.sweep.dir={multiruns}/a"]
    )
    assert first.returncode == 0, first.stderr[-2000:]
    again = run_module(
        "src.train",
        [*sweep, *args, "trainer.max_steps=4", "ckpt_path=auto", f"hydra.sweep.dir={multiruns}/b"],
    )
    assert again.returncode == 0, again.stderr[-2000:]
    for job in ("0", "1"):
        earlier = multiruns / "a" / job / "checkpoints" / "last.ckpt"
        assert f"resuming from {earlier} (step 2)" in again.stdout
