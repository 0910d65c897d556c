"""The module records its own config, and configs stay as composed.

A module built in Python and trained by a plain Lightning Trainer saves a checkpoint that
``src.eval`` loads; a Hydra-built module records what ``to_plain(cfg.model)`` used to store; a
network from outside SR Lab is saved without a config and one warning; and the commands pass
what ``auto`` settings and a checkpoint's scale stand for to what they build instead of writing
them into the config.
"""

from __future__ import annotations

import copy
import functools
import json
import warnings
from pathlib import Path
from typing import Any

import cv2
import hydra
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from src.archs.edsr import EDSR
from src.models.checkpoint import (
    CheckpointError,
    module_from_checkpoint,
    read_checkpoint,
    stored_model_config,
)
from src.models.gan_module import generator_config
from src.models.loading import metric_options
from src.models.sr_module import RUN_ARGUMENTS, SRModule
from src.ops.inference import input_channels
from src.utils.config import to_plain
from src.utils.runtime import close_loggers
from tests.helpers import TINY, compose_config, run_in_process, tiny_folder_run
from tests.test_data import write_folder

NO_WARNING = "the checkpoint holds no model config"


def tiny_pairs(count: int = 4, seed: int = 0) -> list[dict[str, Any]]:
    """In-memory training pairs: 8 px LR, 16 px HR (their bicubic relation does not matter)."""
    generator = torch.Generator().manual_seed(seed)
    pairs = []
    for i in range(count):
        hr = torch.rand(3, 16, 16, generator=generator)
        lr = nn.functional.avg_pool2d(hr[None], 2)[0]
        pairs.append({"lr": lr, "hr": hr, "name": f"pair{i}"})
    return pairs


def plain_trainer(steps: int = 2) -> pl.Trainer:
    return pl.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def train_plainly(module: SRModule, path: Path, steps: int = 2) -> Path:
    """``steps`` steps of a plain Trainer on in-memory pairs, then ``trainer.save_checkpoint``."""
    trainer = plain_trainer(steps)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(val_dataloader|num_workers|bottleneck).*")
        trainer.fit(module, train_dataloaders=DataLoader(tiny_pairs(), batch_size=2))
    trainer.save_checkpoint(path)
    return path


def benchmark_overrides(data_dir: Path) -> list[str]:
    """A two-image folder benchmark set, "Mine", under ``data_dir``."""
    write_folder(data_dir / "benchmarks" / "Mine" / "HR", 2, height=32, width=40)
    return [
        "data=benchmark",
        "data.sets=[Mine]",
        f"paths.data_dir={data_dir}",
        "comparisons=0",
        "trainer.enable_progress_bar=false",
    ]


# --- (1) built in Python, trained by a plain Trainer, loaded by src.eval --------------------------
def test_a_module_built_in_python_and_trained_plainly_loads_in_eval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    torch.manual_seed(0)
    module = SRModule(
        net=EDSR(2, num_blocks=1, num_features=8),
        scale=2,
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
    )
    initial = copy.deepcopy(module.net.state_dict())
    checkpoint = train_plainly(module, tmp_path / "python.ckpt")
    assert any(not torch.equal(v, module.net.state_dict()[k]) for k, v in initial.items())

    overrides = [f"ckpt_path={checkpoint}", *benchmark_overrides(tmp_path / "data")]
    outcome = run_in_process("eval", overrides, tmp_path, capsys)
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["meta"]["model"] == "EDSR" and results["meta"]["scale"] == 2

    # The same scores as the in-memory module validated on the same images...
    cfg = compose_config("eval", overrides, tmp_path / "direct")
    datamodule = hydra.utils.instantiate(cfg.data)
    module.eval()
    plain_trainer().validate(module, datamodule=datamodule, verbose=False)
    expected = {record["name"]: record["psnr_y"] for record in module.val_scores}
    got = {record["name"]: record["psnr_y"] for record in results["images"]}
    assert got.keys() == expected.keys() and len(got) == 2
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name
    # ... because the rebuilt module gives the same output.
    rebuilt = module_from_checkpoint(checkpoint).eval()
    lr = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        assert torch.equal(rebuilt(lr), module(lr))


def test_the_checkpoint_of_a_python_module_holds_its_config_and_plain_hyper_parameters(
    tmp_path: Path,
):
    module = SRModule(
        net=EDSR(2, num_blocks=1, num_features=8),
        scale=2,
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3, betas=(0.9, 0.99)),
        val_set_names=["Set5"],
    )
    checkpoint = read_checkpoint(train_plainly(module, tmp_path / "python.ckpt"))  # weights_only
    config = checkpoint["srlab"]["model_config"]
    assert config == module.model_config
    assert config["net"] == {
        "_target_": "src.archs.edsr.EDSR",
        "scale": 2,
        "num_blocks": 1,
        "num_features": 8,
        "res_scale": 1.0,
        "num_channels": 3,
    }
    assert config["optimizer"] == {
        "_target_": "torch.optim.Adam",  # the spelling conf/ uses, which loading accepts
        "_partial_": True,
        "_convert_": "all",
        "lr": 1e-3,
        "betas": [0.9, 0.99],
    }
    assert config["loss"] == {"_target_": "torch.nn.L1Loss"}  # the default loss, described
    assert config["value_range"] == 1.0 and not set(RUN_ARGUMENTS) & set(config)
    assert checkpoint["hyper_parameters"]["val_set_names"] == ["Set5"]
    assert not {"net", "loss", "optimizer", "scheduler"} & set(checkpoint["hyper_parameters"])


# --- (2) a Hydra-built module records what the composed config said -------------------------------
def contains(recorded: Any, composed: Any, where: str = "model") -> None:
    """Every key of ``composed`` is in ``recorded`` with the same value (``recorded`` may also
    hold the defaults the config left out)."""
    if isinstance(composed, dict):
        assert isinstance(recorded, dict), where
        for key, value in composed.items():
            assert key in recorded, f"{where}.{key} missing"
            contains(recorded[key], value, f"{where}.{key}")
    else:
        assert recorded == composed, f"{where}: {recorded!r} != {composed!r}"


@pytest.mark.parametrize(
    ("overrides", "value_range"),
    [
        (["model=edsr", *TINY[:2]], 1.0),
        (["model=rfdn", "model.net.num_features=8", "model.net.num_blocks=1"], 255.0),
        (["model=edsr", *TINY[:2], "model.value_range=255", "loss=charbonnier"], 255.0),
        (
            [
                "experiment=esrgan_x4",
                "model.net.num_features=8",
                "model.net.num_blocks=1",
                "model.net.growth_rate=4",
                "model.discriminator.num_feat=8",
                "model.loss.terms.perceptual.loss.weights=random",
                "model.scheduler.gamma=0.25",
            ],
            1.0,
        ),
    ],
    ids=["edsr", "rfdn", "charbonnier-255", "esrgan"],
)
def test_a_hydra_built_module_records_what_the_config_said(
    tmp_path: Path, overrides: list[str], value_range: float
):
    cfg = compose_config("train", overrides, tmp_path)
    module = hydra.utils.instantiate(cfg.model, val_set_names=["Set5"], **metric_options(cfg))
    composed = to_plain(cfg.model)  # what the trainer stored before modules recorded themselves
    config = module.model_config
    assert config is not None and module.value_range == value_range
    assert (
        composed.pop("value_range") in (None, value_range) and config["value_range"] == value_range
    )
    contains(config, composed)
    assert not set(RUN_ARGUMENTS) & set(config)

    saved: dict[str, Any] = {}
    module.on_save_checkpoint(saved)
    assert saved["srlab"]["model_config"] == config
    assert stored_model_config(saved, "x.ckpt") == config  # only SR Lab's own classes named
    # What src.eval rebuilds from it records the same config again.
    rebuilt = hydra.utils.instantiate(generator_config(copy.deepcopy(config)))
    assert rebuilt.model_config == generator_config(config)


# --- (3) a network from outside SR Lab ------------------------------------------------------------
def test_a_foreign_network_is_saved_without_a_config_and_one_warning(tmp_path: Path):
    net = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2))
    module = SRModule(net=net, scale=2, optimizer=functools.partial(torch.optim.Adam, lr=1e-3))
    assert module.model_config is None and module.value_range == 1.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = train_plainly(module, tmp_path / "foreign.ckpt", steps=1)
        saved: dict[str, Any] = {}
        module.on_save_checkpoint(saved)  # a second save of the same module: no second warning
    ours = [w for w in caught if NO_WARNING in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert "model.net" in str(ours[0].message) and "model.pretrained" in str(ours[0].message)
    checkpoint = read_checkpoint(path)
    assert "model_config" not in checkpoint["srlab"] and checkpoint["srlab"]["scale"] == 2
    with pytest.raises(CheckpointError, match="no model config inside"):
        module_from_checkpoint(path)


def test_a_config_naming_classes_loading_refuses_is_not_stored(tmp_path: Path):
    module = SRModule(
        net=EDSR(2, num_blocks=1, num_features=8),
        scale=2,
        optimizer=functools.partial(torch.optim.SGD, lr=1e-2),
    )
    assert module.model_config["optimizer"]["_target_"] == "torch.optim.sgd.SGD"
    with pytest.warns(UserWarning, match="torch.optim.sgd.SGD"):
        saved: dict[str, Any] = {}
        module.on_save_checkpoint(saved)
    assert "model_config" not in saved["srlab"]  # a stored one would make the file unreadable


def test_torch_losses_with_settings_are_not_guessed():
    net = EDSR(2, num_blocks=1, num_features=8)
    assert SRModule(net=net, scale=2, loss=nn.HuberLoss()).model_config is None  # its delta
    summed = SRModule(net=net, scale=2, loss=nn.MSELoss(reduction="sum"))
    assert summed.model_config["loss"] == {"_target_": "torch.nn.MSELoss", "reduction": "sum"}


# --- (4) configs are not written after composition ------------------------------------------------
def write_gray_folder(folder: Path, count: int, side: int = 48) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        image = cv2.resize(rng.integers(0, 256, (8, 8), dtype=np.uint8), (side, side))
        cv2.imwrite(str(folder / f"gray_{i:03d}.png"), image)


def test_build_leaves_auto_settings_in_the_config(tmp_path: Path):
    from src.train import build

    write_gray_folder(tmp_path / "gray", 6)
    overrides = [
        *tiny_folder_run(tmp_path / "gray"),
        "data.train_set.val_count=2",
        "data.channels=auto",
        "trainer.precision=auto",
        "trainer.max_steps=2",
    ]
    cfg = compose_config("train", overrides, tmp_path / "run")
    before = OmegaConf.to_container(cfg)
    try:
        datamodule, model, trainer = build(cfg)
    finally:
        close_loggers()
    assert OmegaConf.to_container(cfg) == before
    assert cfg.data.channels == "auto" and cfg.trainer.precision == "auto"
    # ... while what was built got what auto stands for.
    assert datamodule.pixel_format.channels == 1 and input_channels(model.net) == 1
    assert model.model_config["net"]["num_channels"] == 1
    assert trainer.precision in ("32-true", "bf16-mixed")


def test_eval_runs_at_the_checkpoints_scale_without_writing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from src.eval import evaluate

    torch.manual_seed(0)
    module = SRModule(net=EDSR(3, num_blocks=1, num_features=8), scale=3)
    path = tmp_path / "x3.ckpt"
    saved: dict[str, Any] = {}
    module.on_save_checkpoint(saved)
    torch.save({"state_dict": module.state_dict(), **saved}, path)

    overrides = [f"ckpt_path={path}", *benchmark_overrides(tmp_path / "data")]
    cfg = compose_config("eval", overrides, tmp_path / "run")
    before = OmegaConf.to_container(cfg)
    (summary,) = evaluate(cfg)
    assert OmegaConf.to_container(cfg) == before and cfg.scale == 2
    assert "scale 3 (from the checkpoint)" in capsys.readouterr().out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["meta"]["scale"] == 3 and summary.images == 2
