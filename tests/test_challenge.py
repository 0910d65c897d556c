"""The NTIRE efficient SR challenges' scores (src/models/challenges.py): the rules' formula with
numbers, each baseline against itself, the baselines counted here against their published
figures, the runtime ratio against the baseline measured in the same run, the PSNR floor, and
bad inputs (one ``error:`` line, exit 2)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from src.io.images import write_image
from src.models import challenges
from src.models.challenges import (
    CHALLENGES,
    challenge_terms,
    check_floor,
    final_score,
    main,
    metric_score,
)
from src.models.efficiency import Efficiency, count_macs, folded_parameters, inference_form
from src.models.zoo import build_net, model_names
from src.utils.cli import run_or_explain
from tests.helpers import one_error_line, run_module

BASELINE_SCORE = "7.3891"  # each year's README: the baseline's Score_Final


def _weights(tmp_path: Path, model: str = "span_ch28") -> Path:
    path = tmp_path / "weights.pth"
    torch.save(build_net(model, 4).state_dict(), path)
    return path


def _folder(path: Path, count: int = 2) -> Path:
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        write_image(path / f"{index:04d}.png", rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
    return path


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``python -m src.models efficiency <args>`` in this process: status, stdout, stderr."""
    capsys.readouterr()
    try:
        run_or_explain(lambda: main(args))
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- The formula ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CHALLENGES))
def test_a_baseline_scored_against_itself_scores_what_the_rules_say(name: str) -> None:
    challenge = CHALLENGES[name]
    assert challenge.gflops is not None and challenge.params_m is not None
    params = round(challenge.params_m * 1e6)
    terms = challenge_terms(challenge, 12.345, 12.345, challenge.gflops, params)
    assert [term.score for term in terms] == [math.exp(2.0)] * 3
    assert final_score(terms) == pytest.approx(math.exp(2.0), rel=1e-15, abs=0.0)
    assert f"{final_score(terms):.4f}" == BASELINE_SCORE


def test_the_score_is_the_rules_formula() -> None:
    """Half the baseline's runtime, twice its FLOPs and parameters:
    w_r exp(2 x 0.5) + w_f exp(2 x 2) + w_p exp(2 x 2), with each year's weights."""
    for name, (w_runtime, w_other) in {"ntire2026": (0.8, 0.1), "ntire2025": (0.7, 0.15)}.items():
        challenge = CHALLENGES[name]
        assert challenge.gflops is not None and challenge.params_m is not None
        terms = challenge_terms(
            challenge, 5.0, 10.0, 2 * challenge.gflops, round(2 * challenge.params_m * 1e6)
        )
        assert [term.ratio for term in terms] == pytest.approx([0.5, 2.0, 2.0])
        expected = w_runtime * math.e + 2 * w_other * math.exp(4.0)
        assert final_score(terms) == pytest.approx(expected, rel=1e-12)
    assert metric_score(1.0, 2.0) < metric_score(2.0, 2.0)  # lower is better


def test_flops_and_parameters_enter_at_the_published_precision() -> None:
    flops, params = challenge_terms(CHALLENGES["ntire2026"], 1.0, 1.0, 9.8338, 150_688)[1:]
    assert (flops.value, params.value) == (9.83, 0.151)


def test_each_record_is_consistent_and_its_baseline_is_in_the_zoo() -> None:
    expected = {"ntire2024": "rlfn_prune", "ntire2025": "efdn", "ntire2026": "span_ch28"}
    assert {name: c.baseline_model for name, c in CHALLENGES.items()} == expected
    for challenge in CHALLENGES.values():
        assert challenge.baseline_model in model_names()
        assert sum(challenge.weights.values()) == pytest.approx(1.0)
        assert challenge.scale == 4 and challenge.flops_size == 256
        assert [(f.set_name, f.floor_db) for f in challenge.floors] == [
            ("DIV2K_LSDIR_valid", 26.90),
            ("DIV2K_LSDIR_test", 26.99),
        ]


@pytest.mark.parametrize("name", sorted(CHALLENGES))
def test_the_baselines_counted_here_give_their_published_figures(name: str) -> None:
    """Parameters of the inference form and fvcore's FLOPs at 256 x 256, at the published
    precision: what makes a baseline score exactly exp(2) against itself."""
    challenge = CHALLENGES[name]
    net = build_net(challenge.baseline_model, 4, device="meta")
    params = folded_parameters(net) or sum(p.numel() for p in net.parameters())
    assert round(params / 1e6, 3) == challenge.params_m
    assert round(count_macs(inference_form(net), 256, "meta"), 2) == challenge.gflops


# --- The command ------------------------------------------------------------------------------


def test_the_2026_baseline_scored_against_itself_by_the_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["model=span_ch28", "scale=4", "size=16", "runs=1", "bf16=false", "challenge=ntire2026"]
    code, out, err = _run(args, capsys)
    assert code == 0, err
    assert f"score {BASELINE_SCORE}" in out
    for row in ("| runtime | 0.80 |", "| FLOPs | 0.10 | 9.83 G |", "| params | 0.10 | 0.151 M |"):
        assert row in out
    assert "one measurement serves both" in out and "measuring the baseline" not in err
    assert "published: 7.74 ms" in out and "unchecked: no weights" in out


def _fake_measure(fp32_ms: dict[str, float], calls: list[str]) -> Any:
    def measure(name: str, scale: int, size: int, runs: int, device: str, bf16: str = "auto"):
        calls.append(name)
        net = build_net(name, scale, device="meta")
        macs = count_macs(inference_form(net), size, "meta")
        params = sum(p.numel() for p in net.parameters())
        return Efficiency(
            name, type(net).__name__, params, folded_parameters(net), macs, 0.0, 0, None,
            fp32_ms[name], None,
        )  # fmt: skip

    return measure


def test_the_runtime_ratio_is_against_the_baseline_measured_in_the_same_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    fake = _fake_measure({"rlfn": 30.0, "span_ch28": 12.0}, calls)
    monkeypatch.setattr("src.models.efficiency.measure", fake)
    monkeypatch.setattr("src.models.challenges.measure", fake)
    args = ["model=rlfn", "scale=4", "size=32", "runs=1", "challenge=ntire2026"]
    code, out, err = _run(args, capsys)
    assert code == 0, err
    assert calls == ["rlfn", "span_ch28"]  # the network, then the baseline alike
    assert "| runtime | 0.80 | 30.00 ms | 12.00 ms (measured here) | 2.5000 |" in out
    rlfn = build_net("rlfn", 4, device="meta")
    gflops = round(count_macs(rlfn, 256, "meta"), 2)  # at 256, whatever size= was
    params = round(sum(p.numel() for p in rlfn.parameters()) / 1e6, 3)
    assert f"| FLOPs | 0.10 | {gflops:.2f} G | 9.83 G (published) |" in out
    assert f"| params | 0.10 | {params:.3f} M | 0.151 M (published) |" in out
    expected = 0.8 * math.exp(5.0) + 0.1 * math.exp(2 * gflops / 9.83)
    expected += 0.1 * math.exp(2 * params / 0.151)
    assert f"score {expected:.4f}" in out


# --- The PSNR floor ---------------------------------------------------------------------------


def test_the_floor_is_checked_through_src_eval_on_the_users_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[list[str]] = []
    psnr = {"value": 27.5}

    def fake_eval(overrides: list[str]) -> dict[str, Any]:
        sent.append(overrides)
        return {"psnr_rgb": psnr["value"], "images": 2}

    monkeypatch.setattr(challenges, "eval_psnr", fake_eval)
    challenge = CHALLENGES["ntire2026"]
    weights = _weights(tmp_path)
    mine = _folder(tmp_path / "mine" / "HR")
    check = check_floor(challenge, "span_ch28", 4, str(mine), str(weights), None)
    assert (check.set_name, check.psnr_db, check.images, check.passes) == ("mine", 27.5, 2, True)
    assert {"data=folder", "data.val_sets.0.split=all", "model.fused=true"} <= set(sent[0])
    assert f"model.pretrained='{weights}'" in sent[0]
    lines = "\n".join(challenges.floor_lines(challenge, check))
    assert "mine: 27.50 dB over 2 images, passes the 26.90 dB floor" in lines
    assert "indicative only" in lines

    psnr["value"] = 26.5
    rules_set = _folder(tmp_path / "DIV2K_LSDIR_valid")
    check = check_floor(challenge, "rlfn", 4, str(rules_set), str(weights), None)
    assert check.passes is False and "model.fused=true" not in sent[1]
    lines = "\n".join(challenges.floor_lines(challenge, check))
    assert "FAILS the 26.90 dB floor" in lines and "indicative" not in lines

    check = check_floor(challenge, "span_ch28", 4, "Set14", str(weights), None)
    assert check.set_name == "Set14" and {"data=benchmark", "data.sets=[Set14]"} <= set(sent[2])


@pytest.mark.slow
def test_the_floor_runs_src_eval_and_reports_its_psnr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = _weights(tmp_path, "rlfn_prune")
    folder = _folder(tmp_path / "tiny")
    args = ["model=rlfn_prune", "scale=4", "size=16", "runs=1", "challenge=ntire2024"]
    code, out, err = _run([*args, f"pretrained={weights}", f"val_set={folder}"], capsys)
    assert code == 0, err
    assert "tiny: " in out and " dB over 2 images, " in out and f"score {BASELINE_SCORE}" in out

    other = tmp_path / "other"
    other.mkdir()
    wrong = _weights(other, "efdn")  # weights of another network: src.eval's error, passed on
    code, _, err = _run([*args, f"pretrained={wrong}", f"val_set={folder}"], capsys)
    assert code == 2 and "error: src.eval: " in err and err.count("error:") == 1


# --- Bad inputs -------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """An existing weights file and folder of images, and a checkpoint of a narrower EFDN."""
    from src.archs.efdn import EFDN
    from src.models.sr_module import SRModule

    module = SRModule(net=EFDN(4, num_features=8), scale=4)
    saved: dict[str, Any] = {}
    module.on_save_checkpoint(saved)
    checkpoint = tmp_path / "narrow.ckpt"
    torch.save({"state_dict": module.state_dict(), **saved}, checkpoint)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    return {
        "weights": str(weights),
        "folder": str(_folder(tmp_path / "set")),
        "ckpt": str(checkpoint),
    }


BAD: list[tuple[list[str], str]] = [
    (
        ["challenge=ntire2023"],
        "error: challenge=ntire2023: no such challenge; known: ntire2024, ntire2025, ntire2026",
    ),
    (["challenge=ntire2026", "scale=2"], "error: challenge=ntire2026 ranks x4 networks, not"),
    (["val_set=Set5"], "error: val_set= is read only with challenge=<ntire2024|"),
    (["challenge=ntire2026", "val_set={folder}"], "error: val_set={folder} needs the network's"),
    (["challenge=ntire2026", "pretrained={weights}"], "error: the PSNR floor needs val_set="),
    (
        ["challenge=ntire2026", "pretrained=/no/such.pth", "val_set={folder}"],
        "error: pretrained=/no/such.pth: no such file",
    ),
    (
        ["challenge=ntire2026", "ckpt_path=/no/such.ckpt", "val_set={folder}"],
        "error: ckpt_path=/no/such.ckpt: no such file",
    ),
    (
        ["challenge=ntire2026", "pretrained={weights}", "ckpt_path={ckpt}", "val_set={folder}"],
        "error: give the weights as pretrained=PATH or as ckpt_path=PATH, not both",
    ),
    (
        ["challenge=ntire2026", "pretrained={weights}", "val_set=/no/such/set"],
        "error: val_set=/no/such/set: neither a folder of HR images nor a standard test set",
    ),
    (
        ["challenge=ntire2025", "model=efdn", "ckpt_path={ckpt}", "val_set={folder}"],
        "error: ckpt_path={ckpt} holds another network than the one measured (model=efdn, "
        "scale=4): head.weight: (8, 3, 3, 3) there, (48, 3, 3, 3) here",
    ),
]


@pytest.mark.parametrize(("args", "line"), BAD, ids=[line[7:40] for _, line in BAD])
def test_bad_challenge_inputs_stop_with_one_error_line(
    args: list[str], line: str, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    filled = [argument.format(**files) for argument in args]
    if not any(argument.startswith("model=") for argument in filled):
        filled.insert(0, "model=span_ch28")
    code, out, err = _run(["scale=4", "size=16", "runs=1", *filled], capsys)
    errors = [text for text in err.splitlines() if text.startswith("error:")]
    assert code == 2 and len(errors) == 1 and out == "", err
    assert errors[0].startswith(line.format(**files)), errors[0]


def test_the_command_exits_2_with_one_error_line() -> None:
    done = run_module("src.models", ["efficiency", "model=rlfn", "challenge=ntire1999"])
    assert one_error_line(done).startswith("error: challenge=ntire1999: no such challenge")


def test_the_report_alone_refuses_a_challenge() -> None:
    from src.models.efficiency import main as report_only
    from src.utils.errors import UserError

    with pytest.raises(UserError, match=r"challenge=: scored by src\.models\.challenges\.main"):
        report_only(["model=rlfn", "challenge=ntire2026"])
