"""Every config group composes and instantiates; misspelt keys fail with Hydra's message."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from hydra.errors import ConfigCompositionException

from src.data.clip_datamodule import ClipDataModule
from src.data.datamodule import SRDataModule
from src.models.sr_module import SRModule
from src.utils.precision import trainer_precision
from tests.helpers import CONF_DIR, compose_config


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def required_keys(data: str) -> list[str]:
    """The overrides a data config cannot do without (its folders)."""
    return {
        "folder": ["data.root=/some/folder"],
        "clip_folder": ["data.root=/some/clips"],
        "paired": ["data.hr_root=/some/hr", "data.lr_root=/some/lr"],
    }.get(data, [])


@pytest.mark.parametrize("model", options("model"))
def test_every_model_config_builds_an_sr_module(model: str, tmp_path: Path):
    scale = 4
    cfg = compose_config("train", [f"model={model}", f"scale={scale}"], tmp_path)
    module = hydra.utils.instantiate(cfg.model)
    assert isinstance(module, SRModule)
    assert module.scale == scale and module.net.scale == scale
    assert module.optimizer_factory is not None and module.scheduler_factory is not None


@pytest.mark.parametrize("data", options("data"))
def test_every_data_config_composes_for_evaluation(data: str, tmp_path: Path):
    assert compose_config("eval", [f"data={data}"], tmp_path).data.scale == 2


@pytest.mark.parametrize("data", options("data"))
def test_every_data_config_builds_a_datamodule(data: str, tmp_path: Path):
    cfg = compose_config("train", [f"data={data}", *required_keys(data)], tmp_path)
    datamodule = hydra.utils.instantiate(cfg.data)
    assert isinstance(datamodule, SRDataModule | ClipDataModule)
    assert datamodule.val_set_names


@pytest.mark.parametrize("data", options("data"))
def test_every_data_config_takes_the_same_policy_keys(data: str, tmp_path: Path):
    policy = ["data.on_bad_image=skip", "data.val_workers=1", "data.batch_size=3"]
    cfg = compose_config("train", [f"data={data}", *required_keys(data), *policy], tmp_path)
    datamodule = hydra.utils.instantiate(cfg.data)
    assert (datamodule.on_bad_image, datamodule.val_workers) == ("skip", 1)
    assert datamodule.batch_size == 3
    sources = [*datamodule.val_sets, datamodule.train_set]
    parts = [part for s in sources if s is not None for part in getattr(s, "sources", [s])]
    for part in parts:  # every source that can meet a bad file follows the one key
        assert getattr(part, "on_bad_image", "skip") == "skip", (data, part)


@pytest.mark.parametrize(
    "override",
    [
        *(f"trainer={t}" for t in options("trainer")),
        *(f"logger={name}" for name in options("logger")),
        *(f"degradation={d}" for d in options("degradation")),
        *(f"cache={name}" for name in options("cache")),
        *(f"loss={name}" for name in options("loss")),
        *(f"optimizer={name}" for name in options("optimizer")),
        *(f"scheduler={name}" for name in options("scheduler")),
        *(f"debug={name}" for name in options("debug")),
        *(f"experiment={name}" for name in options("experiment")),
        "callbacks=none",
    ],
)
def test_group_options_compose_and_instantiate(override: str, tmp_path: Path):
    cfg = compose_config("train", [override], tmp_path)
    group = override.split("=")[0]
    node = {
        "loss": cfg.model.loss,
        "optimizer": cfg.model.optimizer,
        "scheduler": cfg.model.scheduler,
        "degradation": cfg.data.degradation,
    }.get(group)
    if node is not None:
        assert hydra.utils.instantiate(node) is not None
    if group == "cache":
        assert hydra.utils.instantiate(cfg.data).cache.on_disk == (override != "cache=memory")
    if group == "trainer" and (cfg.trainer.accelerator != "gpu" or torch.cuda.is_available()):
        precision = trainer_precision(cfg.trainer)
        trainer = hydra.utils.instantiate(cfg.trainer, logger=False, precision=precision)
        assert trainer.max_steps == cfg.trainer.max_steps


def test_scale_is_one_key_for_model_and_data(tmp_path: Path):
    cfg = compose_config("train", ["scale=3"], tmp_path)
    assert cfg.model.net.scale == 3 and cfg.model.scale == 3 and cfg.data.scale == 3


def test_group_overrides_land_in_their_package(tmp_path: Path):
    cfg = compose_config("train", ["loss=charbonnier", "model.optimizer.lr=1e-4"], tmp_path)
    assert cfg.model.loss._target_.endswith("CharbonnierLoss")
    assert cfg.model.optimizer.lr == pytest.approx(1e-4)


@pytest.mark.parametrize("bad", ["model.net.num_blockz=3", "trainer.max_stepz=10", "modle=edsr"])
def test_misspelt_keys_fail_with_hydras_message(bad: str, tmp_path: Path):
    with pytest.raises(ConfigCompositionException):
        compose_config("train", [bad], tmp_path)


def test_unknown_option_of_a_group_is_refused(tmp_path: Path):
    with pytest.raises(Exception, match="edsr_huge"):
        compose_config("train", ["model=edsr_huge"], tmp_path)


@pytest.mark.parametrize("task", ["train", "eval", "predict", "export"])
def test_entry_configs_compose(task: str, tmp_path: Path):
    cfg = compose_config(task, [], tmp_path)
    assert cfg.task_name == task
    assert cfg.paths.output_dir == str(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "on_disk", "crop"),
    [
        (["data=div2k"], True, None),
        (["data=df2k"], True, None),
        (["data=div2k", "cache=memory"], False, 480),
        (["data=flickr2k", "cache=subimages"], True, 480),
        (["data=t91"], False, 480),
    ],
)
def test_2k_sets_default_to_the_mapped_cache_and_the_command_line_wins(
    overrides: list[str], on_disk: bool, crop: int | None, tmp_path: Path
):
    cache = compose_config("train", overrides, tmp_path).data.cache
    assert (cache.on_disk, cache.crop) == (on_disk, crop)
