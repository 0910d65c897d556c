"""Batch augmentations (src/ops/batch_augment.py, conf/augment): each op against its formula, the
draws' seeding and mixture, clips, training-only use, checkpoints, exact resume, bad settings."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from src.archs.edsr import EDSR
from src.models.sr_module import SRModule
from src.ops import batch_augment as ba
from src.utils.errors import UserError
from tests.helpers import TINY, compose_config, one_error_line, run_in_process, tiny_folder_run
from tests.test_data import write_folder

ALL_OPS = {
    "mixup": {"prob": 1.0, "alpha": 1.2},
    "cutmix": {"prob": 1.0, "alpha": 0.7},
    "cutblur": {"prob": 1.0, "alpha": 0.7},
    "rgb_permute": {"prob": 1.0},
}


def pair(samples: int = 4, scale: int = 2, size: int = 8, frames: int | None = None):
    generator = torch.Generator().manual_seed(0)
    lead = (samples,) if frames is None else (samples, frames)
    lr = torch.rand(*lead, 3, size, size, generator=generator)
    hr = torch.rand(*lead, 3, size * scale, size * scale, generator=generator)
    return lr, hr


def nearest_up(lr: torch.Tensor, scale: int) -> torch.Tensor:
    return lr.repeat_interleave(scale, -2).repeat_interleave(scale, -1)


def block_mean(hr: torch.Tensor, scale: int) -> torch.Tensor:
    *lead, h, w = hr.shape
    return hr.reshape(*lead, h // scale, scale, w // scale, scale).mean(dim=(-3, -1))


def settings(ops=None, choice=None, seed=7) -> ba.AugmentSettings:
    return ba.parse_settings({"ops": ops or ALL_OPS, "choice_probs": choice, "seed": seed})


# --- each op against an independent expectation ----------------------------------------------
def test_mixup_mixes_lr_with_lr_and_hr_with_hr_by_one_weight():
    lr, hr = pair()
    order = (2, 0, 3, 1)
    out_lr, out_hr = ba.mixup(lr, hr, 0.3, order)
    for i, j in enumerate(order):
        assert torch.allclose(out_lr[i], 0.3 * lr[i] + 0.7 * lr[j])
        assert torch.allclose(out_hr[i], 0.3 * hr[i] + 0.7 * hr[j])


def test_cutmix_fills_the_same_box_of_lr_and_hr_from_the_partner():
    lr, hr = pair(scale=3)
    box, order = ba.Box(top=1, left=2, height=3, width=4), (1, 2, 3, 0)
    out_lr, out_hr = ba.cutmix(lr, hr, box, order)
    inside_lr = torch.zeros(8, 8, dtype=torch.bool)
    inside_lr[1:4, 2:6] = True
    inside_hr = nearest_up(inside_lr[None].float(), 3)[0].bool()
    for i, j in enumerate(order):
        assert torch.equal(out_lr[i][:, inside_lr], lr[j][:, inside_lr])
        assert torch.equal(out_lr[i][:, ~inside_lr], lr[i][:, ~inside_lr])
        assert torch.equal(out_hr[i][:, inside_hr], hr[j][:, inside_hr])
        assert torch.equal(out_hr[i][:, ~inside_hr], hr[i][:, ~inside_hr])


@pytest.mark.parametrize("inside", [True, False])
def test_cutblur_at_scale_1_is_the_papers_paste(inside: bool):
    lr, hr = pair(scale=1)
    box = ba.Box(top=2, left=1, height=4, width=5)
    out_lr, out_hr = ba.cutblur(lr, hr, box, inside)
    in_box = torch.zeros(8, 8, dtype=torch.bool)
    in_box[2:6, 1:6] = True
    # Inside: HR pixels in the box, LR elsewhere; outside: the other way round.
    expected = torch.where(in_box, hr, lr) if inside else torch.where(in_box, lr, hr)
    assert torch.equal(out_lr, expected)
    assert torch.equal(out_hr, hr)


@pytest.mark.parametrize("inside", [True, False])
def test_cutblur_at_scale_2_pastes_in_hr_space_and_comes_back_by_block_means(inside: bool):
    scale = 2
    lr, hr = pair(scale=scale)
    box = ba.Box(top=1, left=3, height=5, width=4)
    out_lr, out_hr = ba.cutblur(lr, hr, box, inside)
    # The paper's paste on the HR grid with LR nearest-upscaled, then back to LR by block means.
    upscaled = nearest_up(lr, scale)
    in_box = torch.zeros(16, 16, dtype=torch.bool)
    in_box[2:12, 6:14] = True
    mixed = torch.where(in_box, hr, upscaled) if inside else torch.where(in_box, upscaled, hr)
    assert torch.allclose(out_lr, block_mean(mixed, scale), atol=1e-6)
    assert torch.equal(out_hr, hr)
    untouched = torch.ones(8, 8, dtype=torch.bool)
    untouched[1:6, 3:7] = False
    if inside:  # LR pixels outside the box are the LR's own, bit for bit
        assert torch.equal(out_lr[..., untouched], lr[..., untouched])


def test_rgb_permutation_is_the_same_for_lr_and_hr():
    lr, hr = pair()
    out_lr, out_hr = ba.rgb_permute(lr, hr, (2, 0, 1))
    assert torch.equal(out_lr, torch.stack([lr[:, 2], lr[:, 0], lr[:, 1]], dim=1))
    assert torch.equal(out_hr, torch.stack([hr[:, 2], hr[:, 0], hr[:, 1]], dim=1))


def test_the_paper_box_has_the_alpha_side_and_lies_inside():
    rng = ba.generator(0, 0, 0)
    for _ in range(200):
        box = ba.draw_box(rng, 0.7, (48, 40))
        assert abs(box.height - 0.7 * 48) <= 2 and abs(box.width - 0.7 * 40) <= 2
        assert 0 <= box.top <= 48 - box.height and 0 <= box.left <= 40 - box.width


# --- draws: seeded, mixed with the given probabilities ---------------------------------------
def draw_at(step: int, rank: int = 0, seed: int = 7) -> ba.Draw | None:
    shape = ba.BatchShape(samples=8, lr_size=(16, 16), channels=3)
    return ba.draw(settings(seed=seed), ba.generator(seed, step, rank), shape)


def test_the_same_seed_and_step_draw_the_same_and_another_step_or_rank_not():
    assert draw_at(5) == draw_at(5)
    assert draw_at(5) != draw_at(6)
    assert draw_at(5, rank=0) != draw_at(5, rank=1)
    assert draw_at(5, seed=7) != draw_at(5, seed=8)


def test_moa_picks_each_op_with_its_probability_and_applies_it_with_its_prob():
    ops = {**ALL_OPS, "mixup": {"prob": 0.5, "alpha": 1.2}}
    chosen = settings(ops, {"mixup": 0.4, "cutmix": 0.3, "cutblur": 0.3, "rgb_permute": 0.0})
    shape = ba.BatchShape(samples=4, lr_size=(16, 16), channels=3)
    steps = 4000
    kinds = Counter(
        type(ba.draw(chosen, ba.generator(1, step, 0), shape)).__name__ for step in range(steps)
    )
    # mixup picked 40% of the time, applied half of those: 20% mixup, 20% nothing.
    expected = {"Mixup": 0.2, "NoneType": 0.2, "CutMix": 0.3, "CutBlur": 0.3, "RGBPermute": 0.0}
    for kind, share in expected.items():
        spread = 4 * (share * (1 - share) / steps) ** 0.5  # 4 binomial standard deviations
        assert abs(kinds[kind] / steps - share) <= max(spread, 1e-9), (kind, kinds)


def test_clip_batches_share_box_partner_and_channels_across_frames():
    lr, hr = pair(samples=3, frames=4)
    box = ba.Box(top=2, left=0, height=5, width=6)
    for augmentation in (
        ba.CutBlur(box, inside=True),
        ba.CutBlur(box, inside=False),
        ba.CutMix(box, (2, 0, 1)),
        ba.Mixup(0.25, (1, 2, 0)),
        ba.RGBPermute((1, 2, 0)),
    ):
        out_lr, out_hr = ba.apply(augmentation, lr, hr)
        for t in range(4):  # every frame as the image op on that frame alone
            frame_lr, frame_hr = ba.apply(augmentation, lr[:, t], hr[:, t])
            assert torch.allclose(out_lr[:, t], frame_lr, atol=1e-6), augmentation
            assert torch.allclose(out_hr[:, t], frame_hr, atol=1e-6), augmentation


def test_a_sharpened_target_and_the_plain_hr_get_one_draw():
    lr, hr = pair()
    sharpened = hr * 1.1
    one_op = settings({"mixup": {"prob": 1.0, "alpha": 1.2}})
    batch = {"lr": lr, "hr": sharpened, "hr_plain": hr}
    out = ba.augment_batch(one_op, batch, step=3, rank=0)
    assert torch.allclose(out["hr"], out["hr_plain"] * 1.1, atol=1e-6)
    cutblur = settings({"cutblur": {"prob": 1.0, "alpha": 0.7}})
    out = ba.augment_batch(cutblur, batch, step=3, rank=0)
    draw = ba.draw(cutblur, ba.generator(7, 3, 0), ba.BatchShape.of(lr))
    assert torch.equal(out["lr"], ba.apply(draw, lr, hr)[0])  # pasted from the plain HR
    assert torch.equal(out["hr"], sharpened)


# --- the module: training batches only --------------------------------------------------------
def modules() -> tuple[SRModule, SRModule]:
    torch.manual_seed(0)
    net = EDSR(2, num_blocks=1, num_features=8)
    plain = SRModule(net, 2, channels_last=False)
    augmented = SRModule(
        EDSR(2, num_blocks=1, num_features=8),
        2,
        channels_last=False,
        augment={"ops": ALL_OPS, "seed": 3},
    )
    augmented.net.load_state_dict(plain.net.state_dict())
    return plain, augmented


def test_validation_is_not_augmented_and_training_is():
    plain, augmented = modules()
    lr, hr = pair(samples=2, size=12)
    batch = {"lr": lr, "hr": hr, "set": ["a", "a"], "name": ["x", "y"]}
    training = augmented.augmented(batch)
    assert not torch.equal(training["lr"], lr), "the set-up must augment training batches"
    assert plain.augmented(batch) is batch
    with torch.no_grad():
        plain_out = plain.validation_step(batch, 0)
        augmented_out = augmented.validation_step(batch, 0)
    assert torch.equal(plain_out["sr"], augmented_out["sr"])
    assert plain_out["scores"] == augmented_out["scores"]


# --- runs: checkpoint, resume, recipes, bad settings -----------------------------------------
@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "hr"
    write_folder(path, 6, height=48, width=48)
    return path


def run_overrides(folder: Path, *extra: str) -> list[str]:
    return [
        *tiny_folder_run(folder),
        "data.train_set.val_count=1",
        "trainer.deterministic=true",
        "scheduler=constant",
        *extra,
    ]


def test_a_cutblur_run_trains_and_its_checkpoint_loads_with_its_augment(
    folder: Path, tmp_path: Path
):
    from src.models.checkpoint import module_from_checkpoint
    from src.train import train

    overrides = run_overrides(folder, "augment=cutblur", "trainer.max_steps=2")
    train(compose_config("train", overrides, tmp_path))
    module = module_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert module.batch_augment == ba.parse_settings(
        {"ops": {"cutblur": {"prob": 1.0, "alpha": 0.7}}, "seed": 42}
    )


@pytest.mark.slow
def test_a_resumed_augmented_run_equals_an_uninterrupted_one(folder: Path, tmp_path: Path):
    from src.train import train

    common = run_overrides(folder, "augment=moa", "trainer.val_check_interval=2")
    train(compose_config("train", [*common, "trainer.max_steps=4"], tmp_path / "whole"))
    train(compose_config("train", [*common, "trainer.max_steps=2"], tmp_path / "first"))
    first = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = [*common, "trainer.max_steps=4", f"ckpt_path={first}"]
    train(compose_config("train", resumed, tmp_path / "resumed"))
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
    again = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert whole["global_step"] == again["global_step"] == 4
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, again["state_dict"][key]), key


@pytest.mark.slow
def test_a_gan_recipe_trains_with_the_mixture(tmp_path: Path):
    import math

    from src.train import train
    from tests.test_gan import recipe_args

    args = recipe_args("realesrgan_compact_x4", tmp_path, steps=2)
    args = [arg for arg in args if not arg.startswith("hydra.run.dir")]
    metrics = train(compose_config("train", [*args, "augment=moa"], tmp_path))
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["train/d_loss"])


def test_the_recipe_table_names_the_augment_choice(monkeypatch: pytest.MonkeyPatch):
    from hydra import compose, initialize_config_dir

    from src.models import recipes

    def composed_with(name: str, augment: str):
        with initialize_config_dir(config_dir=str(recipes.CONF_DIR), version_base="1.3"):
            overrides = [f"experiment={name}", f"augment={augment}"]
            return compose("train", overrides=overrides, return_hydra_config=True)

    augment_column = recipes.HEADER.index("augment")
    assert recipes.recipe_row("edsr_x2_sample")[augment_column] == "none"
    monkeypatch.setattr(recipes, "composed", lambda name: composed_with(name, "moa"))
    assert recipes.recipe_row("edsr_x2_sample")[augment_column] == "moa"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["augment=cutblur", "model.augment.ops.cutblur.prob=1.5"], "ops.cutblur.prob must be"),
        (["augment=mixup", "model.augment.ops.mixup.alpha=0"], "ops.mixup.alpha must be"),
        (["augment=cutmix", "model.augment.ops.cutmix.alpha=1.5"], "ops.cutmix.alpha must be"),
        (["augment=cutblur", "+model.augment.ops.blurmix={prob:1.0}"], "ops.blurmix"),
        (
            ["augment=moa", "model.augment.choice_probs={mixup:0.5,cutblur:0.2}"],
            "choice_probs must sum to 1, got 0.7",
        ),
        (
            ["augment=cutblur", "model.augment.choice_probs={mixup:1.0}"],
            "choice_probs.mixup: not an op of model.augment.ops",
        ),
    ],
)
def test_bad_augment_settings_are_one_error_line(
    overrides: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    outcome = run_in_process("train", [*TINY, *overrides], tmp_path, capsys)
    assert message in one_error_line(outcome)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("augment", "message"),
    [
        ({"ops": {"cutblur": {"prob": -0.1}}}, "model.augment.ops.cutblur.prob must be in [0, 1]"),
        ({"ops": {"blurmix": {}}}, "unknown op 'blurmix'"),
        ({"ops": {}}, "model.augment.ops must name at least one op"),
        ({"ops": {"rgb_permute": {"alpha": 0.5}}}, "model.augment.ops.rgb_permute.alpha"),
        ({"ops": ALL_OPS, "choice_probs": {"mixup": 2.0}}, "choice_probs.mixup must be in"),
        ({"ops": ALL_OPS, "choice_probs": {"mixup": 0.6}}, "must sum to 1, got 0.6"),
        ({"ops": ALL_OPS, "seed": -1}, "model.augment.seed"),
    ],
)
def test_a_module_built_in_python_refuses_bad_augment_settings(augment, message: str):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace(".", r"\.")):
        SRModule(EDSR(2, num_blocks=1, num_features=8), 2, augment=augment)


def test_augment_none_is_a_named_option_a_sweep_can_list(tmp_path: Path):
    # Hydra refuses null inside a sweep's list (augment=null,cutblur); none is the same choice.
    assert compose_config("train", ["augment=none"], tmp_path).model.augment is None
    assert compose_config("train", [], tmp_path).model.augment is None
    chosen = compose_config("train", ["augment=cutblur"], tmp_path).model.augment
    assert list(chosen.ops) == ["cutblur"]
