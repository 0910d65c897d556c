"""RealBasicVSR's training through the GAN module (src/models/gan_module.py: clips, the cleaning
loss, the critic-less first stage) and its recipes (conf/experiment/realbasicvsr.yaml,
realbasicvsr_net.yaml), on synthetic clips with a tiny network and random VGG weights."""

from __future__ import annotations

import copy
import csv
from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from src.archs.edsr import EDSR
from src.archs.realbasicvsr import RealBasicVSR
from src.models.gan_module import GANModule, generator_config
from src.utils.errors import UserError
from tests.helpers import run_in_process

TINY = [
    "data=synthetic_clips",
    "model.net.num_features=8",
    "model.net.num_propagation_blocks=1",
    "model.net.num_cleaning_blocks=1",
    "data.num_frames=3",
    "data.lr_patch_size=16",
    "data.batch_size=2",
    # Fewer, shorter synthetic clips: 5 to train on, 2 of 4 small frames to validate, once.
    "data.train_set.clips_per_image=1",
    "data.train_set.frames=4",
    "data.val_sets.0.clips_per_image=1",
    "data.val_sets.0.frames=4",
    "data.val_sets.0.frame_size=[64,64]",
    "trainer.num_sanity_val_steps=0",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=csv",
]
GAN = [
    "experiment=realbasicvsr",
    "model.discriminator.num_feat=8",
    "model.loss.terms.perceptual.loss.weights=random",
]


def logged_keys(run_dir: Path) -> set[str]:
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return {key for row in rows for key, value in row.items() if value}


def tiny_net() -> RealBasicVSR:
    return RealBasicVSR(
        num_features=8, num_propagation_blocks=1, num_cleaning_blocks=1, dynamic_refine_thres=255
    )


def test_a_gan_run_logs_every_loss_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    outcome = run_in_process("train", [*GAN, *TINY], tmp_path, capsys)
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    keys = logged_keys(tmp_path / "run")
    expected = {"loss", "loss_pixel", "loss_perceptual", "loss_clean", "g_adversarial", "d_loss"}
    assert {f"train/{name}" for name in expected} <= keys
    assert "val/psnr_y" in keys


def test_the_first_stage_trains_without_a_critic_on_the_cleaning_target():
    """No critic: one optimiser, no adversarial term. The cleaning loss compares the cleaned LR
    with the content target (``hr``, the sharpened HR) averaged over 4x4 blocks, not with the
    plain HR the critic would see."""
    torch.manual_seed(0)
    net = tiny_net()
    module = GANModule(net, 4, clean_weight=1.0, optimizer=partial(torch.optim.Adam, lr=1e-4))
    hr = torch.rand(3, 3, 32, 32)
    sample = {"lr": F.avg_pool2d(hr, 4), "hr": hr, "hr_plain": hr.flip(-1), "seed": 0}
    with torch.no_grad():
        _, cleaned = copy.deepcopy(net).forward_with_cleaned(sample["lr"][None])
    expected = F.l1_loss(cleaned[0], F.avg_pool2d(hr, 4))
    trainer = pl.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        accelerator="cpu",
    )
    before = copy.deepcopy(net.state_dict())
    trainer.fit(module, DataLoader([sample], batch_size=1))
    logged = trainer.logged_metrics
    assert "train/d_loss" not in logged and "train/g_adversarial" not in logged
    assert float(logged["train/loss_clean"]) == pytest.approx(float(expected), rel=1e-5)
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("image_cleaning.") for k in changed)
    assert not any(".spynet." in k for k in changed)  # SPyNet stays fixed, as upstream


@pytest.mark.slow
def test_the_first_stage_recipe_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    outcome = run_in_process(
        "train",
        [
            "experiment=realbasicvsr_net",
            *TINY,
            "trainer.max_steps=1",
            "trainer.val_check_interval=1",
        ],
        tmp_path,
        capsys,
    )
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    keys = logged_keys(tmp_path / "run")
    assert {"train/loss", "train/loss_clean"} <= keys and "train/d_loss" not in keys


def test_the_generator_config_leaves_the_cleaning_weight_out():
    config = {"_target_": "src.models.gan_module.GANModule", "clean_weight": 1.0, "net": {}}
    assert "clean_weight" not in generator_config(config)


def test_a_cleaning_loss_needs_a_network_that_cleans():
    with pytest.raises(UserError, match=r"clean_weight.*EDSR"):
        GANModule(EDSR(scale=2, num_features=8, num_blocks=1), 2, clean_weight=1.0)


def test_a_negative_cleaning_weight_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    outcome = run_in_process(
        "train", ["experiment=realbasicvsr_net", *TINY, "model.clean_weight=-1"], tmp_path, capsys
    )
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
    assert outcome.returncode == 2 and errors == [
        "error: model.clean_weight must be a number >= 0, got -1"
    ], outcome.stderr[-2000:]
