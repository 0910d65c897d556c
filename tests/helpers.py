"""Composing the real configs in tests, the way `python -m src.<task>` does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
