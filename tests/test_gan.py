"""Perceptual and adversarial training: losses, critics, the GAN module and the recipes.

The recipes run on the bundled sample photos with tiny networks and *random* VGG weights (the
published file cannot be fetched here; ``weights=random`` is the explicit test-only switch).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from src.archs.patchgan import PatchGANDiscriminator
from src.archs.unet_discriminator import UNetDiscriminatorSN
from src.archs.vgg_discriminator import VGGStyleDiscriminator
from src.archs.vgg_features import VGGFeatures, layer_names
from src.models.losses import CompositeLoss, GANLoss, PerceptualLoss
from src.utils.errors import UserError
from tests.helpers import compose_config, run_module
from tests.test_ddp import last_logged
from tests.test_download import Server, server  # noqa: F401  (the 127.0.0.1 file server)

# Tiny generators and critics, random VGG weights, small patches: each recipe's code paths.
SMALL = {
    "rrdbnet": ["model.net.num_blocks=1", "model.net.num_features=8", "model.net.growth_rate=4"],
    "srvgg_compact": ["model.net.num_feat=8", "model.net.num_conv=2"],
}
RECIPES = {
    "esrgan_x4": ["model.discriminator.num_feat=8"],
    "realesrnet_x4": [],
    "realesrgan_x4": ["model.discriminator.num_feat=8"],
    "realesrgan_compact_x4": ["model.discriminator.num_feat=8"],
}
PERCEPTUAL_RANDOM = "model.loss.terms.perceptual.loss.weights=random"
# LR patch sides: 16 px, but 32 where the critic takes only 128 px HR patches (BasicSR's VGG one).
LR_PATCH = {"esrgan_x4": 32}


def recipe_args(name: str, run_dir: Path, steps: int = 4) -> list[str]:
    generator = "srvgg_compact" if "compact" in name else "rrdbnet"
    perceptual = [] if name == "realesrnet_x4" else [PERCEPTUAL_RANDOM]
    return [
        f"experiment={name}",
        *SMALL[generator],
        *RECIPES[name],
        *perceptual,
        "data.batch_size=2",
        f"data.lr_patch_size={LR_PATCH.get(name, 16)}",
        f"trainer.max_steps={steps}",
        "trainer.log_every_n_steps=1",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"hydra.run.dir={run_dir}",
    ]


def logged_keys(run_dir: Path) -> set[str]:
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return {key for row in rows for key, value in row.items() if value}


# --- losses ------------------------------------------------------------------------------------
def test_vgg_features_follow_torchvisions_layout():
    names = layer_names("vgg19")
    assert names[34] == "conv5_4" and names[2] == "conv1_2" and names[4] == "pool1"
    vgg = VGGFeatures(["conv1_2", "conv5_4"])
    assert len(vgg.features) == 35  # nothing deeper than conv5_4 is built
    # A torchvision-style file (features + classifier) loads strictly into what is kept.
    full = VGGFeatures(["pool5"])
    state = {f"features.{k}": v for k, v in full.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4096, 25088)
    vgg.load_torchvision(state)
    assert torch.equal(vgg.features[34].weight, full.features[34].weight)
    outputs = vgg(torch.rand(1, 3, 32, 32))
    assert set(outputs) == {"conv1_2", "conv5_4"} and outputs["conv5_4"].shape == (1, 512, 2, 2)


def test_perceptual_loss_is_zero_for_equal_images_and_grows_with_the_difference(capsys):
    loss = PerceptualLoss({"conv2_2": 0.1, "conv3_4": 1.0}, weights="random")
    image = torch.rand(2, 3, 32, 32)
    assert float(loss(image, image)) == 0.0
    assert "random weights" in capsys.readouterr().err  # announced, never silent
    near = float(loss((image + 0.01).clamp(0, 1), image))
    far = float(loss((image + 0.2).clamp(0, 1), image))
    assert 0 < near < far
    assert not any(k.startswith("vgg") for k in loss.state_dict())  # not in checkpoints


def test_perceptual_weights_are_fetched_by_checksum_once(
    server: Server,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    from src.io import weights

    full = VGGFeatures(["conv1_2"])
    data_path = tmp_path / "vgg.pth"
    torch.save({f"features.{k}": v for k, v in full.features.state_dict().items()}, data_path)
    published = server.publish("vgg19-test.pth", data_path.read_bytes())
    monkeypatch.setitem(weights.PUBLISHED, "vgg19", published)
    loss = PerceptualLoss({"conv1_2": 1.0}, cache_dir=str(tmp_path / "cache"))
    loss.prepare()
    assert torch.equal(loss.vgg.features[2].weight, full.features[2].weight)
    hits = len(server.state.hits)
    PerceptualLoss({"conv1_2": 1.0}, cache_dir=str(tmp_path / "cache")).prepare()
    assert len(server.state.hits) == hits  # the cached, verified file is reused


def test_missing_perceptual_weights_name_the_key(tmp_path: Path):
    loss = PerceptualLoss(weights=str(tmp_path / "nowhere.pth"), key="loss.perceptual.weights")
    with pytest.raises(UserError, match=r"loss\.perceptual\.weights=.*nowhere\.pth: no such file"):
        loss.prepare()


def test_gan_losses_match_their_formulas():
    real, fake = torch.tensor([2.0, 1.0]), torch.tensor([-1.0, 0.5])
    softplus = nn.functional.softplus
    vanilla = GANLoss("vanilla")
    expected_d = 0.5 * (softplus(-real).mean() + softplus(fake).mean())
    assert float(vanilla.discriminator(real, fake)) == pytest.approx(float(expected_d))
    assert float(vanilla.generator(real, fake)) == pytest.approx(float(softplus(-fake).mean()))
    hinge = GANLoss("hinge")
    assert float(hinge.discriminator(real, fake)) == pytest.approx(0.0 + (0.0 + 1.5) / 2)
    assert float(GANLoss("lsgan").generator(real, fake)) == pytest.approx((4 + 0.25) / 2)
    assert float(GANLoss("wgan").discriminator(real, fake)) == pytest.approx(-0.25 - 1.5)
    ragan = GANLoss("ragan")  # real vs the mean fake (-0.25), fake vs the mean real (1.5)
    d = 0.5 * (softplus(-(real + 0.25)).mean() + softplus(fake - 1.5).mean())
    g = 0.5 * (softplus(real + 0.25).mean() + softplus(-(fake - 1.5)).mean())
    assert float(ragan.discriminator(real, fake)) == pytest.approx(float(d))
    assert float(ragan.generator(real, fake)) == pytest.approx(float(g))


def test_composite_loss_sums_weighted_terms_and_keeps_each():
    terms = {"a": {"loss": nn.L1Loss(), "weight": 0.5}, "b": {"loss": nn.MSELoss(), "weight": 2}}
    loss = CompositeLoss(terms)
    x, y = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)
    assert float(loss(x, y)) == pytest.approx(0.5 * 0.5 + 2 * 0.25)
    assert set(loss.last) == {"a", "b"} and float(loss.last["b"]) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("critic", "side", "shape"),
    [
        (VGGStyleDiscriminator(num_feat=8, input_size=128), 128, (2, 1)),
        (VGGStyleDiscriminator(num_feat=4, input_size=256), 256, (2, 1)),
        (UNetDiscriminatorSN(num_feat=8), 64, (2, 1, 64, 64)),
        (PatchGANDiscriminator(num_feat=8), 64, (2, 1, 6, 6)),
    ],
)
def test_critics_give_their_logits_and_train(critic: nn.Module, side: int, shape: tuple[int, ...]):
    x = torch.rand(2, 3, side, side)
    logits = critic(x)
    assert tuple(logits.shape) == shape
    GANLoss("vanilla").discriminator(logits, critic(x * 0.5)).backward()
    assert all(p.grad is not None for p in critic.parameters() if p.requires_grad)


def test_critics_have_the_published_sizes():
    def count(net: nn.Module) -> int:
        return sum(p.numel() for p in net.parameters())

    assert count(VGGStyleDiscriminator()) == 14_499_401  # BasicSR's VGGStyleDiscriminator(128)
    # At 256 px BasicSR adds a sixth stage, so the linear layer still sees 4 x 4 positions.
    with torch.device("meta"):  # shapes only
        wide = VGGStyleDiscriminator(input_size=256)
    assert count(wide) == 21_055_049
    assert tuple(wide.state_dict()["conv5_1.weight"].shape) == (512, 512, 4, 4)
    assert tuple(wide.state_dict()["linear1.weight"].shape) == (100, 512 * 4 * 4)
    with pytest.raises(ValueError, match="128 or 256"):
        VGGStyleDiscriminator(input_size=64)
    assert count(UNetDiscriminatorSN()) == 4_376_897  # Real-ESRGAN's net_d
    assert list(UNetDiscriminatorSN().state_dict())[:3] == [
        "conv0.weight",
        "conv0.bias",
        "conv1.weight_orig",
    ]


# --- the module and the recipes ----------------------------------------------------------------
def test_both_networks_update_and_the_critics_steps_are_not_counted(tmp_path: Path):
    from src.train import build

    cfg = compose_config("train", recipe_args("esrgan_x4", tmp_path / "run", steps=2), tmp_path)
    datamodule, model, trainer = build(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("net.", "disc"))}
    trainer.fit(model, datamodule=datamodule)
    after = model.state_dict()
    for prefix in ("net.", "discriminator."):
        changed = [
            k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])
        ]
        assert changed, f"no {prefix} weight changed"
    assert trainer.global_step == 2  # generator steps: the critic's do not count


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_each_recipe_trains_four_steps_on_the_sample_photos(tmp_path: Path, recipe: str):
    run_dir = tmp_path / "run"
    result = run_module("src.train", recipe_args(recipe, run_dir), timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    keys = logged_keys(run_dir)
    assert "val/psnr_y" in keys
    if recipe != "realesrnet_x4":
        assert {
            "train/loss",
            "train/d_loss",
            "train/g_adversarial",
            "train/loss_perceptual",
        } <= keys
        assert "random weights" in result.stderr
        state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        assert any(k.startswith("discriminator.") for k in state)
        assert (
            len(
                torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)[
                    "optimizer_states"
                ]
            )
            == 2
        )


@pytest.mark.parametrize(
    "recipe", [pytest.param("esrgan_x4", marks=pytest.mark.slow), "realesrgan_compact_x4"]
)
def test_a_gan_run_resumed_equals_an_uninterrupted_one(tmp_path: Path, recipe: str):
    # A constant learning rate: the first part of the run stops at 4 steps by its own max_steps,
    # and a schedule made from max_steps would differ between it and the whole run. The compact
    # recipe degrades its batches on the device, from each patch's seed.
    common = [
        "trainer.deterministic=true",
        "trainer.val_check_interval=4",
        "callbacks.last_checkpoint.every_n_train_steps=4",
        "scheduler=constant",
    ]
    whole = run_module("src.train", [*recipe_args(recipe, tmp_path / "w", 8), *common])
    assert whole.returncode == 0, whole.stderr[-3000:]
    first = run_module("src.train", [*recipe_args(recipe, tmp_path / "a", 4), *common])
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = tmp_path / "a" / "checkpoints" / "last.ckpt"
    resumed = run_module(
        "src.train",
        [*recipe_args(recipe, tmp_path / "b", 8), *common, f"ckpt_path={checkpoint}"],
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = last_logged(tmp_path / "w", "val/psnr_y")
    assert last_logged(tmp_path / "b", "val/psnr_y") == pytest.approx(expected, abs=1e-4)
    one = torch.load(tmp_path / "w" / "checkpoints" / "last.ckpt", weights_only=True)
    other = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    for key, value in one["state_dict"].items():
        if key.startswith(("net.", "ema.", "discriminator.")) and value.is_floating_point():
            assert torch.allclose(value, other["state_dict"][key], atol=1e-5), key


def test_a_gan_checkpoint_evaluates_predicts_and_exports_its_generator(tmp_path: Path):
    run_dir = tmp_path / "run"
    assert run_module("src.train", recipe_args("esrgan_x4", run_dir)).returncode == 0
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    from src.models.checkpoint import module_from_checkpoint
    from src.models.sr_module import SRModule

    module = module_from_checkpoint(checkpoint)
    assert type(module) is SRModule and not hasattr(module, "discriminator")
    result = run_module(
        "src.eval",
        [
            f"ckpt_path={checkpoint}",
            f"hydra.run.dir={tmp_path}/e",
            "trainer.enable_progress_bar=false",
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert math.isfinite(float(result.stdout.split("| sample_val | 2 | ")[1].split(" |")[0]))
