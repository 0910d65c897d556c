"""trainer.precision=auto: bf16 where the device computes it natively, fp32 elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.utils import precision
from src.utils.precision import choose_precision
from tests.helpers import TINY, compose_config, run_module


def test_cpu_with_native_bf16_trains_in_bf16(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    choice = choose_precision("auto")
    assert choice.precision == "bf16-mixed" and "AVX512-BF16" in choice.reason
    assert choose_precision("cpu", trainable=False).precision == "32"  # model=bicubic


def test_cpu_without_native_bf16_stays_fp32(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    choice = choose_precision("cpu")
    assert choice.precision == "32" and "emulated" in choice.reason


@pytest.mark.parametrize(("capability", "expected"), [((8, 0), "bf16-mixed"), ((7, 0), "32")])
def test_cuda_bf16_from_compute_capability_8(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "a GPU")
    choice = choose_precision("gpu")
    assert choice.precision == expected and f"{capability[0]}.{capability[1]}" in choice.reason
    assert choose_precision("auto").precision == expected


def test_cpu_flags_are_read_from_proc_cpuinfo(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert precision.cpu_has_native_bf16()
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2"})
    assert not precision.cpu_has_native_bf16()


def test_auto_is_the_default_and_evaluation_stays_fp32(tmp_path: Path):
    assert compose_config("train", [], tmp_path).trainer.precision == "auto"
    assert compose_config("eval", [], tmp_path).trainer.precision == 32
    assert compose_config("eval", ["trainer=gpu"], tmp_path).trainer.precision == 32


def test_a_run_says_which_precision_it_chose_and_logs_it(tmp_path: Path):
    folder = tmp_path / "hr"
    from tests.test_data import write_folder

    write_folder(folder, 4, height=48, width=48)
    run_dir = tmp_path / "run"
    result = run_module(
        "src.train",
        [
            *TINY,
            "data=folder",
            f"data.root={folder}",
            "trainer.max_steps=2",
            f"hydra.run.dir={run_dir}",
        ],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = choose_precision("auto")
    assert f"precision {expected.precision} (trainer.precision=auto: {expected.reason})" in (
        result.stdout
    )
    from omegaconf import OmegaConf

    logged = OmegaConf.load(run_dir / "hparams.yaml")
    assert str(logged["trainer/precision"]) == expected.precision
