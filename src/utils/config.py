"""OmegaConf resolvers used by the YAML configs, and small config helpers.

Registered on import of this module; every entry point and the tests import it before composing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf


def _int_mul(value: Any, factor: Any) -> int:
    """``${int_mul:${trainer.max_steps},0.5}``: a step count scaled and rounded down."""
    return int(int(value) * float(factor))


def _min_int(*values: Any) -> int:
    """``${min_int:250,${trainer.max_steps}}``: the smallest of several step counts."""
    return min(int(v) for v in values)


def in_multirun() -> bool:
    """True inside a job of ``--multirun`` (a grid sweep, an Optuna study, a launcher)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _sweep_name() -> str:
    """``${sweep_name:}``: the sweep folder's name under ``--multirun``, "" in a single run."""
    if not in_multirun():
        return ""
    return Path(str(HydraConfig.get().sweep.dir)).name


def _sweep_job() -> str:
    """``${sweep_job:}``: `` #<job> <overrides>`` under ``--multirun``, "" in a single run."""
    if not in_multirun():
        return ""
    job = HydraConfig.get().job
    return f" #{job.num} {job.override_dirname}".rstrip()


def register_resolvers() -> None:
    """Make the resolvers above known to OmegaConf (idempotent)."""
    resolvers = (
        ("int_mul", _int_mul),
        ("min_int", _min_int),
        ("sweep_name", _sweep_name),
        ("sweep_job", _sweep_job),
    )
    for name, function in resolvers:
        OmegaConf.register_new_resolver(name, function, replace=True)


def to_plain(config: DictConfig | ListConfig) -> Any:
    """A resolved, plain-Python copy of a config node (safe to store in a checkpoint)."""
    return OmegaConf.to_container(config, resolve=True)


def interpolation_overrides(node: DictConfig, key: str, value: Any) -> dict[str, Any]:
    """Overrides that give ``value`` to every entry of ``node`` that reads the setting ``key``
    (``${scale}``, ``${oc.select:data.channels,3}``), nested as in ``node``.

    ``hydra.utils.instantiate(node, **overrides)`` then builds with a value derived after
    composition (the scale of a checkpoint, the channel count ``data.channels=auto`` stands for)
    while the config itself stays as it was composed. A list holding such an entry is given
    whole (a merge replaces lists).
    """
    reads = re.compile(r"\$\{(?:oc\.select:)?" + re.escape(key) + r"(?:,[^{}]*)?\}")

    def walk(item: Any) -> Any:
        """The override of ``item``, or None where it reads no ``key``."""
        if isinstance(item, str):
            return value if reads.fullmatch(item) else None
        if isinstance(item, dict):
            entries = {k: walk(v) for k, v in item.items()}
            return {k: v for k, v in entries.items() if v is not None} or None
        if isinstance(item, list):
            items = [walk(v) for v in item]
            if all(v is None for v in items):
                return None
            return [item[i] if v is None else v for i, v in enumerate(items)]
        return None

    return walk(OmegaConf.to_container(node, resolve=False)) or {}


register_resolvers()
