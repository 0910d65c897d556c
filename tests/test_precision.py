"""trainer.precision=auto: bf16 where the device computes it natively, fp32 elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.utils import precision
from src.utils.precision import choose_precision
from tests.helpers import compose_config, run_module, tiny_folder_run


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
    monkeypatch.delenv(precision.NATIVE_BF16_ENV, raising=False)  # the CPU's own answer
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
            *tiny_folder_run(folder),
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


@pytest.mark.parametrize(("value", "native"), [("1", True), ("yes", True), ("0", False)])
def test_the_environment_forces_what_auto_believes_of_the_cpu(monkeypatch, value, native):
    monkeypatch.setenv(precision.NATIVE_BF16_ENV, value)
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512_bf16"} if not native else set())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.cpu_has_native_bf16() is native
    assert choose_precision("auto").precision == ("bf16-mixed" if native else "32")


def test_a_bad_forcing_value_is_one_error_naming_the_variable(monkeypatch):
    from src.utils.errors import UserError

    monkeypatch.setenv(precision.NATIVE_BF16_ENV, "maybe")
    with pytest.raises(UserError, match="SRLAB_CPU_NATIVE_BF16='maybe' must be 1 or 0"):
        precision.cpu_has_native_bf16()


def test_scoring_runs_fp32_inside_a_bf16_autocast_and_restores_the_defaults():
    from src.archs.edsr import EDSR
    from src.models.sr_module import SRModule

    torch.manual_seed(0)
    module = SRModule(EDSR(2, num_blocks=1, num_features=8), scale=2).eval()
    lr = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        reference = module(lr)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # what bf16-mixed validation is in
            inside = module(lr)
            assert torch.is_autocast_enabled("cpu")  # restored after the forward
            bf16 = module.net(lr)
    assert inside.dtype == torch.float32 and torch.equal(inside, reference)
    assert bf16.dtype == torch.bfloat16 and not torch.equal(bf16.float(), reference)
    assert torch.get_default_dtype() == torch.float32
