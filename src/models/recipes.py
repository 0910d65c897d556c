"""``python -m src.models recipes``: what each ``conf/experiment`` recipe uses, as one table.

Each experiment is composed as ``python -m src.train experiment=<name>`` composes it (nothing is
instantiated, no data is read) and described by the choices Hydra made for it: the network its
``model.net._target_`` builds, the data, degradation, loss, optimiser and scheduler groups, the
batch augmentation (the ``augment`` group, ``conf/augment``; ``none`` when null), the scale and
the training steps. The README's recipe table is this output; ``tests/test_readme_models.py``
fails when they differ, so a new experiment cannot be left out of it.
"""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from src.models.zoo import CONF_DIR
from src.utils.tables import markdown_table

EXPERIMENTS = CONF_DIR / "experiment"
GROUPS = ("data", "degradation", "loss", "optimizer", "scheduler", "augment")
HEADER = ["experiment", "network", "scale", "data", "degradation", "loss", "optimizer"]
HEADER += ["scheduler", "augment", "steps"]


def experiment_names() -> list[str]:
    """The recipes: ``conf/experiment/*.yaml`` (the ``base/`` parts they build on are not)."""
    return sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))


def composed(name: str) -> DictConfig:
    """The train config of ``experiment=<name>``, with Hydra's record of its choices."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"experiment={name}"], return_hydra_config=True)


def network_name(cfg: DictConfig) -> str:
    """The class name ``model.net._target_`` names (a GAN recipe's generator)."""
    net = cfg.model.get("net") or cfg.model.get("generator", {})
    return str(net.get("_target_", "-")).rsplit(".", 1)[-1]


def recipe_row(name: str) -> list[str]:
    cfg = composed(name)
    choices = cfg.hydra.runtime.choices
    picked = [str(choices.get(group) or "none") for group in GROUPS]
    steps = cfg.trainer.get("max_steps")
    return [name, network_name(cfg), f"x{cfg.scale}", *picked, f"{steps:,}" if steps else "-"]


def recipes_markdown() -> str:
    """The table of every recipe, one row each."""
    rows = [recipe_row(name) for name in experiment_names()]
    return markdown_table(HEADER, rows, [False] * (len(HEADER) - 1) + [True])
