"""Hostile and bad input: checkpoints that name code, and the one error type.

A checkpoint that passes ``torch.load(weights_only=True)`` is still data from a file: its stored
model config must not choose what gets built. Every command that reads a checkpoint is tried
with configs whose ``_target_`` would truncate a file or run a shell command.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import (
    REPO_ROOT,
    one_error_line,
    run_in_process,
    run_module,
    tiny_folder_run,
)
from tests.predict_helpers import micro_module, write_checkpoint
from tests.test_data import write_folder


def hostile_configs(victim: Path, marker: Path) -> dict[str, tuple[str, dict]]:
    """(the key the error must name, a model config) for each way of choosing code."""
    truncate = {"_target_": "builtins.open", "file": str(victim), "mode": "w"}
    shell = {"_target_": "os.system", "command": f"touch {marker}"}
    return {
        "net": ("srlab.model_config.net._target_", {"net": truncate}),
        "loss": ("srlab.model_config.loss._target_", {"loss": shell}),
        "top": ("srlab.model_config._target_", {"_target_": "os.system", "command": "true"}),
        "args": (
            "srlab.model_config.net._args_",
            {"net": {"_target_": "src.archs.edsr.EDSR", "_args_": [2]}},
        ),
        "interpolation": ("srlab.model_config.pretrained", {"pretrained": "${oc.env:HOME}"}),
    }


@pytest.fixture
def trap(tmp_path: Path) -> tuple[Path, Path]:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    return victim, tmp_path / "shell-ran"


def hostile_checkpoint(tmp_path: Path, change: dict, name: str) -> Path:
    module, config = micro_module(tmp_path)
    hostile = {**copy.deepcopy(config), **change}
    return write_checkpoint(tmp_path / f"{name}.ckpt", module, hostile)


def assert_refused(result: subprocess.CompletedProcess[str], key: str, trap: tuple[Path, Path]):
    victim, marker = trap
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and key in errors[0], result.stderr[-2000:]
    assert victim.read_text() == "precious" and not marker.exists()


def commands(checkpoint: Path, tmp_path: Path, images: Path) -> dict[str, tuple[str, list[str]]]:
    out = tmp_path / "out"
    return {
        "eval": ("src.eval", [f"ckpt_path={checkpoint}", f"hydra.run.dir={out}/e"]),
        "predict": (
            "src.predict",
            [
                f"ckpt_path={checkpoint}",
                f"input={images}",
                f"output={out}/p",
                f"hydra.run.dir={out}/p",
            ],
        ),
        "export": (
            "src.export",
            [
                f"ckpt_path={checkpoint}",
                "format=safetensors",
                f"output={out}/x.safetensors",
                f"hydra.run.dir={out}/x",
            ],
        ),
        "resume": (
            "src.train",
            [
                *tiny_folder_run(images),
                "trainer.max_steps=2",
                f"ckpt_path={checkpoint}",
                f"hydra.run.dir={out}/t",
            ],
        ),
    }


@pytest.mark.parametrize("command", ["eval", "predict", "export", "resume"])
def test_a_checkpoint_naming_foreign_code_is_refused_by_every_command(
    tmp_path: Path, trap: tuple[Path, Path], command: str
):
    images = tmp_path / "images"
    write_folder(images, 4, height=32, width=32)
    key, change = hostile_configs(*trap)["net"]
    checkpoint = hostile_checkpoint(tmp_path, change, "net")
    module, args = commands(checkpoint, tmp_path, images)[command]
    assert_refused(run_module(module, args), key, trap)


@pytest.mark.parametrize("case", ["loss", "top", "args", "interpolation"])
def test_every_way_of_naming_code_is_refused(tmp_path: Path, trap: tuple[Path, Path], case: str):
    from src.models.checkpoint import CheckpointError, read_checkpoint

    key, change = hostile_configs(*trap)[case]
    checkpoint = hostile_checkpoint(tmp_path, change, case)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(checkpoint)
    assert key in str(error.value) and str(checkpoint) in str(error.value)
    victim, marker = trap
    assert victim.read_text() == "precious" and not marker.exists()


def test_the_trap_is_real_without_the_check(tmp_path: Path, trap: tuple[Path, Path]):
    """Control: instantiating the stored config as it is would truncate the file."""
    import hydra

    _, change = hostile_configs(*trap)["net"]
    hydra.utils.instantiate(change["net"]).close()
    assert trap[0].read_text() == ""


def test_an_sr_lab_checkpoint_still_loads(tmp_path: Path):
    from src.models.checkpoint import module_from_checkpoint

    module, _ = micro_module(tmp_path)
    path = write_checkpoint(tmp_path / "good.ckpt", module)
    rebuilt = module_from_checkpoint(path)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            rebuilt.net.state_dict().values(), module.net.state_dict().values(), strict=True
        )
    )


@pytest.mark.parametrize("value", ["2; rm -rf /", [2], {"a": 1}])
def test_non_numbers_where_numbers_belong_are_refused(tmp_path: Path, value):
    from src.models.checkpoint import CheckpointError, read_checkpoint

    module, _ = micro_module(tmp_path)
    path = write_checkpoint(tmp_path / "odd.ckpt", module)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["srlab"]["best_psnr_y"] = value
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=r"srlab\.best_psnr_y"):
        read_checkpoint(path)


def test_every_user_facing_error_is_a_user_error():
    from src.data.sources import DatasetNotFoundError
    from src.io.download import DownloadError
    from src.io.images import ImageReadError
    from src.models.checkpoint import CheckpointError
    from src.models.pretrained import PretrainedWeightsError
    from src.models.sr_module import NonFiniteLossError
    from src.utils.errors import UserError
    from src.utils.sweep import SweepConfigError

    kinds = [
        DownloadError,
        ImageReadError,
        DatasetNotFoundError,
        CheckpointError,
        PretrainedWeightsError,
        NonFiniteLossError,
        SweepConfigError,
    ]
    assert all(issubclass(kind, UserError) for kind in kinds)
    # Their old bases stay, for code that catches those.
    assert issubclass(DatasetNotFoundError, FileNotFoundError)
    assert issubclass(ImageReadError, ValueError)


def test_the_cli_helper_imports_neither_data_nor_models():
    code = (
        "import sys, src.utils.cli; "
        "print(any(m.startswith(('src.data', 'src.models')) for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# --- every predict and export setting, given a bad value -------------------------------------
NO_CUDA = not torch.cuda.is_available()
# (key=value, a piece of the one error line); {tmp} is the test's folder, {ckpt} its checkpoint.
BAD_PREDICT_SETTINGS = [
    ("tile=0", "tile must be"),
    ("tile_overlap=-1", "tile_overlap must be"),
    ("tile_memory_mb=0", "tile_memory_mb must be"),
    ("self_ensemble=maybe", "self_ensemble must be true or false"),
    ("overwrite=2", "overwrite must be true or false"),
    ("progress=sometimes", "progress must be true or false"),
    ("output_format=gif", "output_format must be one of"),
    ("device=banana", "device must be one of auto, cpu, cuda, mps or"),
    ("device=cuda:x", "device must be one of auto, cpu, cuda, mps or"),
    ("device=cuda:99", "device=cuda:99"),
    pytest.param(
        "device=cuda", "device=cuda", marks=pytest.mark.skipif(not NO_CUDA, reason="CUDA is here")
    ),
    ("memory_mb=-5", "memory_mb must be"),
    ("scale=0", "scale must be"),
    ("input={tmp}/missing", "input not found: {tmp}/missing"),
    ("input=null", "give input="),
    ("output={ckpt}", "is a file, not a folder"),
    ("ckpt_path={tmp}/missing.ckpt", "{tmp}/missing.ckpt"),
    ("onnx_path={tmp}/missing.onnx", "{tmp}/missing.onnx"),
]
BAD_EXPORT_SETTINGS = [
    ("format=tflite", "format must be one of onnx, safetensors"),
    ("opset=11", "opset must be an integer >= 18"),
    ("opset=99", "opset=99"),
    ("sample_size=4", "sample_size must be"),
    ("verify=maybe", "verify must be true or false"),
    ("overwrite=2", "overwrite must be true or false"),
    ("output={tmp}", "is a folder"),
    ("output={ckpt}", "is one of the inputs"),
    ("output={tmp}/model.safetensors", "format=onnx writes"),
    ("ckpt_path={tmp}/missing.ckpt", "{tmp}/missing.ckpt"),
]


def run_with_bad_setting(
    command: str, setting: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[str, Path]:
    """``src.<command>`` of a micro checkpoint with ``setting``, in this process (the real
    command line is tested in test_a_bad_setting_from_the_command_line_is_one_error_line); its
    one error line and the checkpoint (whose bytes must be unchanged)."""
    module, _ = micro_module(tmp_path)
    checkpoint = write_checkpoint(tmp_path / "micro.ckpt", module)
    images = tmp_path / "images"
    write_folder(images, 1, height=16, width=16)
    key = setting.split("=", 1)[0]
    defaults = {
        "ckpt_path": f"ckpt_path={checkpoint}",
        "input": f"input={images}",
        "output": f"output={tmp_path / 'out'}",
    }
    if command == "export":
        defaults.pop("input")
        defaults["output"] = f"output={tmp_path / 'out.onnx'}"
    args = [value for name, value in defaults.items() if name != key]
    setting = setting.format(tmp=tmp_path, ckpt=checkpoint)
    before = checkpoint.read_bytes()
    line = one_error_line(run_in_process(command, [*args, setting], tmp_path, capsys))
    assert checkpoint.read_bytes() == before
    return line, checkpoint


@pytest.mark.parametrize(("setting", "message"), BAD_PREDICT_SETTINGS)
def test_a_bad_predict_setting_is_one_error_line_before_any_work(
    tmp_path: Path, setting: str, message: str, capsys: pytest.CaptureFixture[str]
):
    line, checkpoint = run_with_bad_setting("predict", setting, tmp_path, capsys)
    assert message.format(tmp=tmp_path, ckpt=checkpoint) in line, line
    assert not (tmp_path / "out" / "img_001.png").exists()


@pytest.mark.parametrize(("setting", "message"), BAD_EXPORT_SETTINGS)
def test_a_bad_export_setting_is_one_error_line_and_writes_nothing(
    tmp_path: Path, setting: str, message: str, capsys: pytest.CaptureFixture[str]
):
    line, checkpoint = run_with_bad_setting("export", setting, tmp_path, capsys)
    assert message.format(tmp=tmp_path, ckpt=checkpoint) in line, line
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.safetensors"))
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("command", ["predict", "export"])
def test_a_bad_setting_from_the_command_line_is_one_error_line(tmp_path: Path, command: str):
    args = ["input=x", "device=banana"] if command == "predict" else ["opset=11"]
    result = run_module(f"src.{command}", [*args, f"hydra.run.dir={tmp_path}/run"])
    expected = "device must be one of auto" if command == "predict" else "opset must be"
    assert expected in one_error_line(result)
