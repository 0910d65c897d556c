"""Composing the real configs in tests, the way `python -m src.<task>` does."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from src.utils import config as _config  # noqa: F401  (registers the YAML resolvers)

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"

# Small, quick settings for runs inside tests: a 2-block EDSR, tiny patches, CSV logging only.
TINY = [
    "model.net.num_blocks=2",
    "model.net.num_features=16",
    "data.batch_size=4",
    "data.lr_patch_size=16",
    "logger=csv",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def tiny_folder_run(root: Path | str) -> list[str]:
    """The overrides of a :data:`TINY` training run on the image folder ``root``."""
    return [*TINY, "data=folder", f"data.root={root}"]


# Clip data small enough for a test: synthetic clips of 4 (training) and 3 (validation) frames of
# 48x48, samples of 3 frames with 8x8 LR crops, 2 a batch.
SMALL_CLIPS = [
    "data=synthetic_clips",
    "data.train_set.clips_per_image=1",
    "data.train_set.frames=4",
    "data.train_set.frame_size=[48,48]",
    "data.val_sets.0.clips_per_image=1",
    "data.val_sets.0.frames=3",
    "data.val_sets.0.frame_size=[48,48]",
    "data.num_frames=3",
    "data.lr_patch_size=8",
    "data.batch_size=2",
]


def compose_config(task: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose ``conf/<task>.yaml`` with ``overrides``, its run folder set to ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name=task,
            overrides=[*overrides, f"hydra.run.dir={output_dir}"],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def run_module(
    module: str, args: list[str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <module> <args>`` from the repo root and capture its output."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``error:`` line of a command that stopped with status 2, without a traceback."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


# The function each command's main runs, where it is not named as the command.
ENTRY_FUNCTIONS = {"eval": "evaluate"}


@dataclass
class Outcome:
    """What a command run in this process printed, and its exit status."""

    returncode: int
    stdout: str
    stderr: str


def run_in_process(
    task: str, overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Outcome:
    """``python -m src.<task> <overrides>`` in this process: the entry point's
    own error handling and exit status, without starting an interpreter (a tenth of the time)."""
    from src.utils.cli import run_or_explain

    entry = getattr(importlib.import_module(f"src.{task}"), ENTRY_FUNCTIONS.get(task, task))
    cfg = compose_config(task, overrides, tmp_path / "run")
    capsys.readouterr()
    code = 0
    try:
        result = run_or_explain(lambda: entry(cfg))
        code = 1 if getattr(result, "failed", None) else 0  # predict: some inputs failed
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)
