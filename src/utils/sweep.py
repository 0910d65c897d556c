"""What a training run leaves for sweeps and the leaderboard: ``run.json`` and ``failed.json``.

``run.json`` (every run, rank 0): status, start and end time, seconds, pid, host, Hydra job number,
overrides and the objective. ``failed.json`` (a failed run): the root error's type and message,
and the traceback. The leaderboard reads both.

Under ``--multirun`` a failing run must not stop the sweep: :func:`run_trial` records the error
and returns None. Hydra's basic sweeper then goes on with the next job, and the Optuna sweeper
marks the trial FAIL (None is "not float-castable"). NaN is not an option: optuna 2.10 refuses a
NaN value in ``study.tell``, and hydra-optuna-sweeper 1.3.0 then calls ``tell`` again with that
value and state FAIL, which raises and ends the whole study.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from src.utils.errors import UserError
from src.utils.files import write_text_atomic

log = logging.getLogger("srlab.sweep")

RUN_FILE = "run.json"
FAILED_FILE = "failed.json"


# Lightning strategies that start their extra processes by re-running the command line.
RELAUNCHING_STRATEGIES = frozenset(
    {"ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false"}
)


class NonFiniteObjectiveError(RuntimeError):
    """A run finished without a finite objective (no validation, or a NaN score)."""


class SweepConfigError(UserError, ValueError):
    """A setting that cannot work inside a sweep."""


def sweepable(cfg: DictConfig) -> DictConfig:
    """``cfg`` unchanged, unless its trainer would re-run the whole sweep in child processes.

    ``strategy=ddp`` on several devices relaunches ``sys.argv``; under ``--multirun`` each child
    would start the sweep again. Ranks started by a cluster (SLURM tasks, torchrun) are fine.
    """
    trainer = cfg.get("trainer") or {}
    if str(trainer.get("strategy")) not in RELAUNCHING_STRATEGIES or trainer.get("devices") == 1:
        return cfg
    if "WORLD_SIZE" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return cfg
    raise SweepConfigError(
        f"trainer.strategy={trainer.get('strategy')} re-runs the command line for its extra "
        "processes, which under --multirun would start the whole sweep again; use "
        "trainer.strategy=ddp_spawn or trainer.devices=1 in sweeps"
    )


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically (:func:`write_text_atomic`): readers never see half."""
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def now_iso() -> str:
    """The current time, ISO 8601 with microseconds and the UTC offset."""
    return datetime.now(timezone.utc).astimezone().isoformat()


def job_details() -> dict[str, Any]:
    """This Hydra job's number and command-line overrides (empty outside a Hydra app)."""
    if not HydraConfig.initialized():
        return {}
    hydra_config = cast(DictConfig, HydraConfig.get())
    number = OmegaConf.select(hydra_config, "job.num", default=None)
    overrides = OmegaConf.to_container(hydra_config.overrides.task)
    return {"job_num": number, "overrides": overrides}


def is_rank_zero() -> bool:
    """False in the extra processes of a multi-process (DDP) run."""
    return getattr(rank_zero_only, "rank", 0) == 0


@dataclass
class RunRecord:
    """The content of ``run.json``; :meth:`save` rewrites the file (rank 0 only)."""

    folder: Path
    data: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    objective: float | None = None

    def save(self, **updates: Any) -> None:
        self.data.update(updates)
        if is_rank_zero():
            write_json(self.folder / RUN_FILE, self.data)

    def finish(self, status: str, **updates: Any) -> None:
        seconds = round(time.time() - self.started, 3)
        self.save(status=status, finished=now_iso(), seconds=seconds, **updates)


def describe(error: BaseException) -> tuple[str, str]:
    """The error's root cause (unwrapped from Hydra's InstantiationException): type, message."""
    from src.utils.cli import root_cause  # imports the data and model packages

    cause = root_cause(error)
    return type(cause).__name__, str(cause)


def record_failure(folder: Path, error: BaseException) -> str:
    """Write ``failed.json`` for ``error`` and return its one-line summary."""
    kind, message = describe(error)
    details = {
        "error": kind,
        "message": message,
        "time": now_iso(),
        **job_details(),
        "traceback": "".join(traceback.format_exception(error)),
    }
    if is_rank_zero():
        write_json(folder / FAILED_FILE, details)
    return f"{kind}: {message}"


@contextmanager
def track_run(folder: Path) -> Iterator[RunRecord]:
    """``run.json`` at the start and the end of a run; a failure also writes ``failed.json``.

    Exceptions pass through unchanged.
    """
    record = RunRecord(folder)
    record.save(
        status="running",
        started=now_iso(),
        pid=os.getpid(),
        host=socket.gethostname(),
        **job_details(),
    )
    try:
        yield record
    except KeyboardInterrupt:
        record.finish("interrupted")
        raise
    except BaseException as error:
        record.finish("failed", error=record_failure(folder, error))
        raise
    record.finish("completed", objective=record.objective)


def run_tracked(task: Callable[[], float | None], folder: Path) -> float | None:
    """Run ``task`` (which returns the objective) inside :func:`track_run`."""
    with track_run(folder) as record:
        record.objective = task()
    return record.objective


def finite(value: float | None) -> float:
    """``value`` when it is a finite number; otherwise the run counts as failed."""
    if value is None or not math.isfinite(value):
        raise NonFiniteObjectiveError(f"the run ended without a finite objective ({value})")
    return value


def run_trial(task: Callable[[], float | None], folder: Path) -> float | None:
    """One job of a sweep: its objective, or None (with ``failed.json``) when it failed."""
    try:
        return run_tracked(lambda: finite(task()), folder)
    except (Exception, SystemExit) as error:
        kind, message = describe(error)
        log.error(
            "run failed (%s: %s); recorded in %s, the sweep goes on",
            kind,
            message,
            folder / FAILED_FILE,
        )
        return None
