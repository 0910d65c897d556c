"""Every key of every command's composed config goes through the schema.

A key that neither a section's dataclass lists nor a ``_target_``'s constructor takes is read by
nothing; it is refused with one line naming it, instead of being silently ignored.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from src.utils.schema import ConfigValueError, accepted_arguments, check_config
from tests.helpers import CONF_DIR, compose_config, one_error_line, run_module

# The options of each group each command composes (train's model options cover every command's:
# they compose the same model configs).
GROUPS = {
    "train": [
        "model",
        "data",
        "degradation",
        "loss",
        "optimizer",
        "scheduler",
        "cache",
        "trainer",
        "logger",
        "callbacks",
        "experiment",
        "hparams_search",
        "debug",
    ],
    "eval": ["data", "trainer", "cache"],
    "predict": [],
    "export": [],
    "score": [],
}
REQUIRED = {"score": ["pred=x", "scale=2"], "predict": ["input=x"]}
VIDEO_X4_MODELS = ("basicvsr", "basicvsrpp", "edvr_l", "edvr_m", "iconvsr", "realbasicvsr")
# What an option needs given on the command line (``???`` in its file), or (a sweep's) from
# Hydra's multirun.
OPTION_NEEDS = {
    "data=folder": ["data.root=x"],
    "data=clip_folder": ["data.root=x"],
    "data=paired": ["data.hr_root=x", "data.lr_root=y"],
    "hparams_search=edsr_optuna": ["hydra.job.num=0"],
    # The video networks upsample x4 only.
    **{f"model={name}": ["scale=4"] for name in VIDEO_X4_MODELS},
}


def compositions() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for task, groups in GROUPS.items():
        found.append((task, []))
        for group in groups:
            for option in sorted((CONF_DIR / group).glob("*.yaml")):
                choice = f"{group}={option.stem}"
                found.append((task, [choice, *OPTION_NEEDS.get(choice, [])]))
    gan = ["model=srvgg_compact", "model._target_=src.models.gan_module.GANModule"]
    for critic in sorted((CONF_DIR / "discriminator").glob("*.yaml")):
        found.append(("train", [*gan, f"discriminator={critic.stem}"]))
    return found


def test_every_composition_of_every_command_holds_only_keys_something_reads(tmp_path: Path):
    failures = []
    for task, overrides in compositions():
        cfg = compose_config(task, [*REQUIRED.get(task, []), *overrides], tmp_path)
        try:
            check_config(cfg, task)
        except ConfigValueError as error:
            failures.append(f"{task} {overrides}: {error}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("task", "override", "message"),
    [
        (
            "eval",
            "+self_ensembel=true",
            "unknown key self_ensembel: src.eval reads no such setting (did you mean "
            "self_ensemble?)",
        ),
        ("predict", "+tiles=4", "unknown key tiles: src.predict reads no such setting"),
        ("export", "+opst=11", "unknown key opst: src.export reads no such setting"),
        ("score", "+metric=[niqe]", "unknown key metric: src.score reads no such setting"),
        ("train", "+max_steps=5", "unknown key max_steps: src.train reads no such setting"),
        (
            "train",
            "+model.net.num_blockz=3",
            "unknown key model.net.num_blockz: EDSR takes no such argument (did you mean "
            "num_blocks?)",
        ),
        ("train", "+model.ema=0.9", "unknown key model.ema: SRModule takes no such argument"),
        ("train", "+trainer.max_step=5", "unknown key trainer.max_step: Trainer takes no such"),
        ("train", "+data.batchsize=4", "unknown key data.batchsize: SRDataModule takes no such"),
        ("train", "+paths.out_dir=x", "unknown key paths.out_dir: the paths section reads no"),
        ("train", "+data.cache.memory=4", "unknown key data.cache.memory: the data.cache section"),
        ("train", "+model.optimizer.lr_decay=1", "unknown key model.optimizer.lr_decay: Adam"),
        (
            "train",
            "loss=esrgan +model.loss.terms.pixel.wieght=2",
            "unknown key model.loss.terms.pixel.wieght: the model.loss.terms.pixel section",
        ),
        ("train", "+callbacks.comparisons.every=3", "unknown key callbacks.comparisons.every"),
        ("predict", "+model.net.scales=2", "unknown key model.net.scales: EDSR takes no such"),
    ],
)
def test_a_key_nothing_reads_is_refused_by_name(tmp_path, task, override, message):
    cfg = compose_config(task, [*REQUIRED.get(task, []), *override.split()], tmp_path)
    with pytest.raises(ConfigValueError) as error:
        check_config(cfg, task)
    assert message in str(error.value)


def test_a_mistyped_key_stops_the_command_with_one_line(tmp_path: Path):
    result = run_module(
        "src.eval", ["model=bicubic", "+self_ensembel=true", f"hydra.run.dir={tmp_path}"]
    )
    assert one_error_line(result) == (
        "error: unknown key self_ensembel: src.eval reads no such setting (did you mean "
        "self_ensemble?)"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("++model.gan_weight=-1", "model.gan_weight must be a number >= 0, got -1"),
        ("++model.d_clip_grad_norm=-1", "model.d_clip_grad_norm must be a number > 0 or null"),
        ("++model.clip_grad_norm=0", "model.clip_grad_norm must be a number > 0 or null"),
        ("++model.gp_weight=-10", "model.gp_weight must be a number >= 0"),
        (
            "model.loss.terms.pixel.weight=-1",
            "model.loss.terms.pixel.weight must be a number >= 0, got -1",
        ),
        (
            "model.loss.terms.perceptual.weight=-0.5",
            "model.loss.terms.perceptual.weight must be a number >= 0",
        ),
    ],
)
def test_negative_gan_weights_and_clip_norms_are_refused(tmp_path, override, message):
    cfg = compose_config("train", ["experiment=esrgan_x4", override], tmp_path)
    with pytest.raises(ConfigValueError) as error:
        check_config(cfg, "train")
    assert message in str(error.value)


@pytest.mark.parametrize("precision", ["bf16-true", "16-true", "64-true"])
def test_precisions_that_round_the_validation_images_are_refused(tmp_path, precision):
    cfg = compose_config("train", [f"trainer.precision={precision}"], tmp_path)
    with pytest.raises(ConfigValueError, match=r"trainer\.precision must be one of auto, 32"):
        check_config(cfg, "train")


class _Base:
    def __init__(self, width: int, depth: int = 1):
        pass


class _Child(_Base):
    def __init__(self, gain: float = 1.0, **options: int):
        super().__init__(**options)


class _NoInit:
    pass


def test_arguments_follow_an_own_class_chain_and_stop_at_foreign_kwargs():
    _Child.__module__ = _Base.__module__ = "src.example"  # an SR Lab class chain
    assert accepted_arguments(_Child) == {"self", "gain", "width", "depth"}
    assert accepted_arguments(_NoInit) == set()  # object() takes nothing
    _Child.__module__ = "somelib.loggers"  # another library's **kwargs may go anywhere
    assert accepted_arguments(_Child) is None


def test_a_value_that_cannot_be_resolved_is_an_error_not_a_skipped_section(tmp_path: Path):
    cfg = compose_config("train", ["data=folder"], tmp_path)  # data.root: ??? left unset
    with pytest.raises(ConfigValueError, match=r"^data\.root must be given \(data\.train_set"):
        check_config(cfg, "train")
    cfg = compose_config("train", ["+tags_extra=${nowhere}"], tmp_path)
    with pytest.raises(ConfigValueError, match="tags_extra cannot be resolved"):
        check_config(cfg, "train")


def test_sharpen_target_keys_are_the_schemas(tmp_path: Path):
    """data.sharpen_target's keys are checked by the key walk (the data module no longer checks
    them by hand)."""
    cfg = compose_config("train", ["data.sharpen_target={weight:1,foo:2}"], tmp_path)
    with pytest.raises(ConfigValueError, match=r"unknown key data\.sharpen_target\.foo"):
        check_config(cfg, "train")
