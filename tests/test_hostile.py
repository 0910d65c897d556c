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

from tests.helpers import REPO_ROOT, TINY, run_module
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
    module.model_config = {**copy.deepcopy(config), **change}
    return write_checkpoint(tmp_path / f"{name}.ckpt", module)


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
                *TINY,
                "data=folder",
                f"data.root={images}",
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
    from src.data.download import DownloadError
    from src.data.images import ImageReadError
    from src.data.sources import DatasetNotFoundError
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
