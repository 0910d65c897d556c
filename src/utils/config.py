"""OmegaConf resolvers used by the YAML configs, and small config helpers.

Registered on import of this module; every entry point and the tests import it before composing.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def _int_mul(value: Any, factor: Any) -> int:
    """``${int_mul:${trainer.max_steps},0.5}``: a step count scaled and rounded down."""
    return int(int(value) * float(factor))


def _min_int(*values: Any) -> int:
    """``${min_int:250,${trainer.max_steps}}``: the smallest of several step counts."""
    return min(int(v) for v in values)


def register_resolvers() -> None:
    """Make the resolvers above known to OmegaConf (idempotent)."""
    for name, function in (("int_mul", _int_mul), ("min_int", _min_int)):
        OmegaConf.register_new_resolver(name, function, replace=True)


def to_plain(config: DictConfig | ListConfig) -> Any:
    """A resolved, plain-Python copy of a config node (safe to store in a checkpoint)."""
    return OmegaConf.to_container(config, resolve=True)


register_resolvers()
