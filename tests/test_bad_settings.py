"""Settings checked before any work, big and odd images, killed writes, awkward paths.

Every case ends the way the README promises: one ``error:`` line naming the key or the file,
exit status 2 (or 1 for per-file failures that spared the other files), no traceback.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.utils.cli import quote_overrides
from src.utils.schema import ConfigValueError, check_config
from tests.helpers import (
    TINY,
    Outcome,
    compose_config,
    one_error_line,
    run_in_process,
    run_module,
)
from tests.predict_helpers import micro_module, write_checkpoint
from tests.test_data import write_folder


@pytest.mark.parametrize(
    ("task", "override", "message"),
    [
        ("train", "trainer.max_steps=-1", "trainer.max_steps must be an integer >= 1, got -1"),
        ("train", "scale=0", "scale must be an integer >= 1, got 0"),
        ("train", "model.optimizer.lr=-1", "model.optimizer.lr must be a number > 0, got -1"),
        ("train", "model.ema_decay=1", "model.ema_decay must be a number > 0 and < 1 or null"),
        ("train", "model.gray=maybe", "model.gray must be one of expand, raw"),
        ("train", "model.nonfinite_loss=ignore", "model.nonfinite_loss must be one of stop, skip"),
        ("train", "data.batch_size=0", "data.batch_size must be an integer >= 1"),
        ("train", "data.on_bad_image=ignore", "data.on_bad_image must be one of error, skip"),
        ("train", "data.val_workers=-2", "data.val_workers must be an integer >= 0"),
        (
            "train",
            "data.sharpen_target={weight: -1}",
            "data.sharpen_target.weight must be a number >= 0, got -1",
        ),
        ("train", "data.num_workers=two", "data.num_workers must be an integer >= 0"),
        ("train", "trainer.precision=8", "trainer.precision must be one of auto, 32"),
        ("train", "trainer.gradient_clip_val=-1", "trainer.gradient_clip_val must be a number"),
        ("train", "trainer.val_check_interval=5000", "is larger than trainer.max_steps"),
        ("train", "callbacks.last_checkpoint.every_n_train_steps=0", "every_n_train_steps"),
        ("train", "trainer.devices=0", "trainer.devices must be an integer >= 1 or one of -1"),
        ("train", "model.optimizer.betas=[2,3]", "model.optimizer.betas must be a list of a"),
        ("train", "discriminator=vgg128", "discriminator= needs the GAN module"),
        ("train", "data.bit_depth=12", "data.bit_depth must be one of auto, 8, 16, got 12"),
        ("train", "data.channels=2", "data.channels must be one of auto, 1, 3, got 2"),
        ("eval", "data.bit_depth=10", "data.bit_depth must be one of auto, 8, 16, got 10"),
        ("train", "data.download=maybe", "data.download must be true or false, got 'maybe'"),
        ("eval", "crop_border=-1", "crop_border must be an integer >= 0 or null, got -1"),
        ("predict", "output_format=dicom", "output_format must be one of png, jpg"),
        ("eval", "tile=-4", "tile must be an integer >= 1 or one of auto or null, got -4"),
        ("eval", "comparisons=-1", "comparisons must be an integer >= 0"),
        ("predict", "tile=big", "tile must be an integer >= 1 or one of auto or null"),
        ("predict", "tile_memory_mb=0", "tile_memory_mb must be a number > 0"),
        ("predict", "memory_mb=lots", "memory_mb must be a number > 0 or one of auto"),
        ("export", "opset=3", "opset must be an integer >= 18, got 3"),
        ("export", "format=tflite", "format must be one of onnx, safetensors, got 'tflite'"),
    ],
)
def test_the_schema_names_the_key_types_ranges_and_choices(tmp_path, task, override, message):
    with pytest.raises(ConfigValueError) as error:
        check_config(compose_config(task, [override, *required(task)], tmp_path), task)
    assert message in str(error.value)


def required(task: str) -> list[str]:
    return ["input=x"] if task == "predict" else []


@pytest.mark.parametrize("task", ["train", "eval", "predict", "export"])
def test_the_default_configs_pass_the_schema(tmp_path: Path, task: str):
    check_config(compose_config(task, required(task), tmp_path), task)


def test_a_bad_training_setting_stops_the_command_before_any_work(tmp_path: Path):
    result = run_module("src.train", [*TINY, "trainer.max_steps=-1", f"hydra.run.dir={tmp_path}/r"])
    assert one_error_line(result) == "error: trainer.max_steps must be an integer >= 1, got -1"
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_settings_lightning_refuses_are_one_line_naming_the_trainer(tmp_path: Path):
    from src.utils.errors import UserError
    from src.utils.precision import trainer_precision
    from src.utils.runtime import build_trainer

    cfg = compose_config("train", ["trainer.accelerator=tpu"], tmp_path)  # no torch_xla here
    precision = trainer_precision(cfg.trainer)
    with pytest.raises(UserError, match=r"^trainer: .*torch_xla"):
        build_trainer(cfg.trainer, logger=False, precision=precision)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    module, _ = micro_module(tmp_path)
    return write_checkpoint(tmp_path / "micro.ckpt", module)


def predict_args(checkpoint: Path, inputs: Path, output: Path | str, tmp_path: Path) -> list[str]:
    return [
        f"ckpt_path={checkpoint}",
        f"input={inputs}",
        f"output={output}",
        "progress=false",
        f"hydra.run.dir={tmp_path}/run",
    ]


def run_predict(args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Outcome:
    """``python -m src.predict <args>`` in this process."""
    overrides = [a for a in args if not a.startswith("hydra.run.dir=")]
    return run_in_process("predict", overrides, tmp_path, capsys)


@pytest.mark.parametrize("where", ["a file", "unwritable"])
def test_an_unusable_output_is_found_before_any_image_is_upscaled(
    tmp_path: Path, checkpoint: Path, where: str, capsys
):
    inputs = tmp_path / "in"
    write_folder(inputs, 2, height=16, width=16)
    output: Path | str = tmp_path / "taken"
    if where == "a file":
        Path(output).write_text("a file, not a folder")
        expected = "is a file, not a folder"
    else:
        output, expected = "/proc/srlab-cannot-be-made", "cannot be written"
    result = run_predict(predict_args(checkpoint, inputs, output, tmp_path), tmp_path, capsys)
    line = one_error_line(result)
    assert f"output={output}" in line and expected in line
    assert "upscaled" not in result.stdout


def test_export_to_a_folder_or_unwritable_place_is_refused_up_front(tmp_path, checkpoint):
    for output, expected in ((tmp_path, "is a folder"), ("/proc/x/y.onnx", "cannot be written")):
        result = run_module(
            "src.export",
            [f"ckpt_path={checkpoint}", f"output={output}", f"hydra.run.dir={tmp_path}/run"],
        )
        assert expected in one_error_line(result)


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header announces ``width`` x ``height`` RGB with no pixel data after it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_an_image_too_big_to_upscale_is_refused_from_its_header_and_the_rest_go_on(
    tmp_path: Path, checkpoint: Path, capsys
):
    inputs = tmp_path / "in"
    write_folder(inputs, 2, height=16, width=16)
    png_header_only(inputs / "huge.png", 20000, 20000)  # 400 MP; nothing to decode
    out = tmp_path / "out"
    result = run_predict(predict_args(checkpoint, inputs, out, tmp_path), tmp_path, capsys)
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert any(
        "huge.png: 20000x20000 (400 MP) needs about" in e and "memory_mb" in e for e in errors
    ), result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["img_001.png", "img_002.png"]


def test_a_multi_frame_gif_says_only_its_first_frame_is_upscaled(tmp_path, checkpoint, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    frames = [Image.fromarray(np.full((12, 14, 3), 60 * i, np.uint8)) for i in range(3)]
    frames[0].save(inputs / "anim.gif", save_all=True, append_images=frames[1:])
    out = tmp_path / "out"
    result = run_predict(predict_args(checkpoint, inputs, out, tmp_path), tmp_path, capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "anim.gif: 3 frames; only the first is upscaled" in result.stderr
    assert Image.open(out / "anim.gif").size == (28, 24)


def test_random_weights_are_said(tmp_path: Path, capsys):
    inputs = tmp_path / "in"
    write_folder(inputs, 1, height=16, width=16)
    args = ["model.net.num_blocks=1", f"input={inputs}", f"output={tmp_path}/out", "progress=false"]
    result = run_predict(args, tmp_path, capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warning: no weights given" in result.stderr and "randomly initialised" in result.stderr


def test_a_killed_write_leaves_nothing_that_is_read_later(tmp_path: Path, checkpoint: Path, capsys):
    inputs, out = tmp_path / "in", tmp_path / "out"
    write_folder(inputs, 2, height=16, width=16)
    out.mkdir()
    dead = 2**22 + 12345  # above the kernel's default pid_max: no such process
    stale = out / f".img_001.{dead}.k3x9.partial.png"
    live = out / f".img_009.{os.getpid()}.a1b2.partial.png"  # a write still going on
    for path in (stale, live, inputs / stale.name):
        path.write_bytes(b"half a png")
    result = run_predict(predict_args(checkpoint, inputs, out, tmp_path), tmp_path, capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 images" in result.stdout  # the partial file in the input folder is no input
    assert not stale.exists() and live.exists()
    assert "removed 1 unfinished file(s)" in result.stdout


def test_paths_with_spaces_and_non_ascii_letters_work_unquoted(tmp_path: Path, checkpoint):
    inputs = tmp_path / "my photos" / "été"
    write_folder(inputs, 1, height=16, width=16)
    out = tmp_path / "sortie à voir"
    result = run_module("src.predict", predict_args(checkpoint, inputs, out, tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "img_001.png").is_file()


def test_quoting_leaves_sweeps_flags_and_quoted_values_alone():
    argv = ["prog", "-m", "input=a b", "lr=1e-4,2e-4", "output='x y'", "name=été", "k=v"]
    assert quote_overrides(argv) == [
        "prog",
        "-m",
        "input='a b'",
        "lr=1e-4,2e-4",
        "output='x y'",
        "name='été'",
        "k=v",
    ]
    assert quote_overrides(quote_overrides(argv)) == quote_overrides(argv)


def test_gan_training_refuses_lightnings_gradient_clipping(tmp_path: Path):
    cfg = compose_config("train", ["experiment=esrgan_x4", "trainer.gradient_clip_val=1"], tmp_path)
    with pytest.raises(ConfigValueError, match=r"use model\.clip_grad_norm"):
        check_config(cfg, "train")
