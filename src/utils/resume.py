"""Which earlier run ``src.train`` resumes: ``ckpt_path=last`` and ``ckpt_path=auto``.

* ``last``: the newest ``checkpoints/last.ckpt`` of any earlier run of the task.
* ``auto``: the newest ``last.ckpt`` of an earlier run of the *same config*, or nothing (the run
  starts fresh, and says so). Two runs have the same config when the configs Hydra saved for them
  (``.hydra/config.yaml`` in each run folder) are equal, unresolved, once the keys that say where
  and how visibly a run goes (:data:`IGNORED_KEYS`) are left out. ``trainer.max_steps`` is among
  them, so a finished run can be resumed to train longer. Each sweep trial has its own config (its
  overrides), so relaunching a sweep with ``ckpt_path=auto`` resumes every trial from its own
  folder of the earlier sweep.

Only run folders are read here; the checkpoint itself is checked by the caller.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

LAST = "last"
AUTO = "auto"
# What Hydra saves in each run folder: the composed config, interpolations unresolved.
SAVED_CONFIG = Path(".hydra") / "config.yaml"
# Dotted keys that do not make a run another run: where it writes, how it logs and shows
# progress, which checkpoint it was started from, and how long it trains.
IGNORED_KEYS = (
    "ckpt_path",
    "paths",
    "logger",
    "tags",
    "trainer.max_steps",
    "trainer.enable_progress_bar",
    "callbacks.progress_bar",
)


@dataclass(frozen=True)
class EarlierRuns:
    """What ``ckpt_path=auto`` found: the checkpoint to resume (None: start fresh) and how many
    earlier runs with a ``last.ckpt`` had another config."""

    checkpoint: Path | None
    other_configs: int


def comparable(config: DictConfig) -> dict[str, Any]:
    """``config`` as plain data, unresolved, without :data:`IGNORED_KEYS`."""
    plain = cast(dict[str, Any], OmegaConf.to_container(config, resolve=False))
    for dotted in IGNORED_KEYS:
        *parents, leaf = dotted.split(".")
        node: Any = plain
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return plain


def last_checkpoints(cfg: DictConfig) -> Iterator[Path]:
    """``last.ckpt`` of every earlier run of this task (single runs and sweep trials), not of
    this run's own folder."""
    runs = Path(cfg.paths.log_dir) / cfg.task_name
    current = Path(cfg.paths.output_dir).resolve()
    for path in runs.rglob("checkpoints/last.ckpt"):
        if path.parents[1].resolve() != current:
            yield path


def newest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: p.stat().st_mtime) if paths else None


def same_config(run_folder: Path, wanted: dict[str, Any]) -> bool:
    """Whether the config Hydra saved in ``run_folder`` is ``wanted`` (False when it saved none
    or it does not parse)."""
    saved = run_folder / SAVED_CONFIG
    try:
        loaded = OmegaConf.load(saved)
    except (OSError, ValueError, TypeError):  # absent, unreadable or not YAML
        return False
    return isinstance(loaded, DictConfig) and comparable(loaded) == wanted


def newest_run_of_this_config(cfg: DictConfig) -> EarlierRuns:
    """``ckpt_path=auto``: the newest earlier ``last.ckpt`` whose run had ``cfg``'s config."""
    wanted = comparable(cfg)
    matching: list[Path] = []
    others = 0
    for checkpoint in last_checkpoints(cfg):
        if same_config(checkpoint.parents[1], wanted):
            matching.append(checkpoint)
        else:
            others += 1
    return EarlierRuns(newest(matching), others)


def newest_run(cfg: DictConfig) -> Path | None:
    """``ckpt_path=last``: the newest earlier ``last.ckpt`` of this task, whatever its config."""
    return newest(list(last_checkpoints(cfg)))
