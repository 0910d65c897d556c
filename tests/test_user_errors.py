"""Errors a config or a data file can cause end in one ``error:`` line naming the key, not a
traceback: constructors' refusals of their arguments (Hydra instantiation), a data config without
a training set, a paired set whose LR is the wrong size."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from tests.helpers import SMALL_CLIPS, TINY, one_error_line, run_in_process
from tests.test_data import write_folder


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (
            [*TINY, "scale=5"],
            "error: scale=5: EDSR supports scales 2, 3, 4 or 8",
        ),
        (
            ["model=swinir", "model.net.upsampler=foo", "logger=csv"],
            "error: model.net.upsampler must be one of pixelshuffle, pixelshuffledirect, got 'foo'",
        ),
        (
            [*TINY, "loss=esrgan", "model.loss.terms.perceptual.loss.criterion=l3"],
            "error: model.loss.terms.perceptual.loss.criterion must be one of l1, l2, got 'l3'",
        ),
        (
            ["experiment=esrgan_x4", "model.gan_loss.kind=foo", "logger=csv"],
            "error: model.gan_loss.kind must be one of vanilla, lsgan, hinge, wgan, ragan",
        ),
        (
            [*TINY, "degradation=realesrgan", "data.degradation.first.resize.modes=[foo]"],
            "error: data.degradation.first.resize.modes must be one of area, bilinear, bicubic, "
            "got ['foo']",
        ),
        (
            [*TINY, "degradation=realesrgan", "+data.degradation.second.blur.kinds.foo=0.1"],
            "error: data.degradation.second.blur.kinds must be one of iso, aniso,",
        ),
        (
            ["model=pan", "scale=8", "logger=csv"],
            "error: scale=8: PAN supports scales 2, 3 or 4",
        ),
        (
            ["model=swinir", "scale=5", "logger=csv"],
            "error: scale=5: SwinIR supports scales 2, 3, 4 or 8",
        ),
        (
            ["model=swinir", "model.net.num_heads=[6,6]", "logger=csv"],
            "error: model.net (SwinIR): 6 depths but 2 num_heads entries",
        ),
        (
            ["model=hat", "model.net.embed_dim=100", "logger=csv"],
            "error: model.net (HAT): embed_dim 100 is not divisible by every num_heads entry",
        ),
        (
            ["model=span", "data.channels=1", "logger=csv"],
            "error: data.channels=1: SPAN takes 3-channel images only",
        ),
    ],
)
def test_a_bad_choice_or_scale_is_one_line_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: list[str], line: str
):
    outcome = run_in_process("train", [*overrides, "trainer.max_steps=1"], tmp_path, capsys)
    assert one_error_line(outcome).startswith(line)


def test_training_on_a_set_that_only_validates_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    write_folder(tmp_path / "benchmarks" / "Mine" / "HR", 2, height=32, width=32)
    overrides = [*TINY, "data=benchmark", "data.sets=[Mine]", f"paths.data_dir={tmp_path}"]
    line = one_error_line(run_in_process("train", overrides, tmp_path, capsys))
    assert "has no training set (data.train_set is null)" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_paired_set_with_lr_of_the_wrong_size_is_one_line_naming_the_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    hr = write_folder(tmp_path / "hr", 3, height=48, width=48)
    (tmp_path / "lr").mkdir()
    for path in hr:  # LR at x3 where the run says x2
        image = cv2.imread(str(path))
        cv2.imwrite(str(tmp_path / "lr" / path.name), cv2.resize(image, (16, 16)))
    overrides = [
        *TINY,
        "data=paired",
        f"data.hr_root={tmp_path / 'hr'}",
        f"data.lr_root={tmp_path / 'lr'}",
        "trainer.max_steps=1",
    ]
    outcome = run_in_process("train", overrides, tmp_path, capsys)
    assert "unreadable validation image(s)" in one_error_line(outcome)
    assert "mod-cropped to 48x48 needs an LR of 24x24" in outcome.stderr


def test_a_training_pair_with_lr_of_the_wrong_size_is_a_user_error():
    import numpy as np

    from src.data.datasets import PairSizeError, make_pair
    from src.data.degradations import BicubicDegradation
    from src.io.images import NamedImage
    from src.utils.errors import UserError

    image = NamedImage("a", np.zeros((48, 48, 3), np.uint8), lr=np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(PairSizeError, match="LR is 16x16, but the HR mod-cropped to x2 needs"):
        make_pair(image, "mine", 2, BicubicDegradation(), seed=0, index=0)
    assert issubclass(PairSizeError, UserError)


def test_eval_takes_tile_auto_as_predict_does(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """One rule for the shared inference options: eval refused tile=auto, which predict takes."""
    write_folder(tmp_path / "benchmarks" / "Mine" / "HR", 2, height=48, width=40)
    overrides = [
        "model=bicubic",
        "data=benchmark",
        "data.sets=[Mine]",
        f"paths.data_dir={tmp_path}",
        "tile=auto",
        "comparisons=0",
        "trainer.enable_progress_bar=false",
    ]
    outcome = run_in_process("eval", overrides, tmp_path, capsys)
    assert outcome.returncode == 0, outcome.stderr


VIDEO = [
    "model=basicvsr",
    "scale=4",
    "model.net.num_features=8",
    "model.net.num_blocks=1",
    "logger=csv",
]


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (
            [*VIDEO, *SMALL_CLIPS, "window_padding=wrap"],
            "error: window_padding must be one of replicate, reflection, reflection_circle, circle",
        ),
        (
            [*VIDEO, *SMALL_CLIPS, "clip_length=0"],
            "error: clip_length must be an integer >= 1 or null, got 0",
        ),
        (
            [*VIDEO, *SMALL_CLIPS, "+model.lr_multipliers.flow=0.1"],
            "error: model.lr_multipliers.flow: no network parameter is named so",
        ),
        (
            [
                *VIDEO,
                *SMALL_CLIPS,
                "logger=csv",
                "+model.pretrained_parts.spynet=/no/such/file.pth",
            ],
            "error: weights file not found: /no/such/file.pth",
        ),
        (
            [*VIDEO, *SMALL_CLIPS, "data.num_frames=9"],
            "error: synthetic_clips/astronaut_00: 4 frames, fewer than data.num_frames=9",
        ),
        (
            [*VIDEO, "data=vid4", "data.root=/no/such/vid4"],
            "error: Vid4 clips not found: expected a folder of clip folders at /no/such/vid4",
        ),
        (
            [*VIDEO, *TINY[2:]],
            "error: BasicVSR is a video network: train it on clips",
        ),
    ],
)
def test_a_bad_video_setting_is_one_line_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: list[str], line: str
):
    outcome = run_in_process("train", [*overrides, "trainer.max_steps=1"], tmp_path, capsys)
    assert one_error_line(outcome).startswith(line)
