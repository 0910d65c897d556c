"""The classes SR Lab's own configs build, by the names those configs spell them with.

A stored model config may name only these (:func:`src.models.checkpoint.allowed_targets`), and a
module that describes itself (:attr:`src.models.sr_module.SRModule.model_config`) names each class
as ``conf/`` does: ``torch.optim.Adam``, not the ``torch.optim.adam.Adam`` its ``__module__`` says.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# The config groups whose options a stored model config is made of.
BUILDING_GROUPS = ("model", "loss", "optimizer", "scheduler", "discriminator", "experiment")


def targets_in(node: Any) -> Iterator[str]:
    """Every ``_target_`` value in a nested config."""
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            yield node["_target_"]
        for value in node.values():
            yield from targets_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from targets_in(value)


@cache
def conf_targets() -> frozenset[str]:
    """The ``_target_`` names of the ``conf/`` options a model config is composed from."""
    found: set[str] = set()
    for group in BUILDING_GROUPS:
        for path in (CONF_DIR / group).rglob("*.yaml"):
            found.update(targets_in(OmegaConf.to_container(OmegaConf.load(path))))
    return frozenset(found)


@cache
def config_aliases() -> Mapping[Any, str]:
    """Each class or function ``conf/`` builds, mapped to the name ``conf/`` gives it (the
    shortest, where it has several); names that do not import here are left out."""
    from hydra.utils import get_object

    aliases: dict[Any, str] = {}
    for name in sorted(conf_targets(), key=lambda n: (len(n), n)):
        try:
            obj = get_object(name)
        except Exception:  # an optional dependency missing here: nothing can be built from it
            continue
        try:
            aliases.setdefault(obj, name)
        except TypeError:  # an unhashable object cannot be looked up by identity anyway
            continue
    return aliases


# The modules themselves: what a stored config's top ``_target_`` names.
SR_MODULE = "src.models.sr_module.SRModule"
GAN_MODULE = "src.models.gan_module.GANModule"


@cache
def allowed_targets() -> frozenset[str]:
    """The classes SR Lab's own configs build: what a stored config may name."""
    return conf_targets() | {SR_MODULE, GAN_MODULE}
