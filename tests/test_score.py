"""``src.score`` and ``src.eval``'s ``crop_border``, and src.score's refusals of inputs it cannot
score for sure (ambiguous pairings, crops that leave nothing, no metrics)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from omegaconf import open_dict

from src.eval import evaluate
from src.io.images import write_image
from src.score import score
from src.utils.cli import run_or_explain
from src.utils.schema import ConfigValueError, check_config
from tests.helpers import compose_config
from tests.test_data import photo


def score_config(tmp_path: Path, pred: Path, gt: Path | None, *overrides: str):
    gt_override = [f"gt={gt}"] if gt is not None else []
    return compose_config("score", [f"pred={pred}", *gt_override, *overrides], tmp_path / "out")


def refused(cfg, capsys) -> str:
    """Run ``score`` as the command does; expect exit 2 and exactly one ``error:`` line."""
    with pytest.raises(SystemExit) as stopped:
        run_or_explain(lambda: score(cfg))
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def results_of(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "results.json").read_text())


@pytest.mark.shared
def test_crop_border_zero_scores_niqe_of_the_whole_image(shared_data: Path, tmp_path: Path):
    # MATLAB's niqe of Set14 baboon is 5.7296; cropping one pixel (scale=1's default) gives 5.8226.
    pred = tmp_path / "pred"
    pred.mkdir()
    shutil.copy(shared_data / "benchmarks" / "Set14" / "HR" / "baboon.png", pred)
    (whole,) = score(
        score_config(tmp_path, pred, None, "metrics=[niqe]", "scale=1", "crop_border=0")
    )
    assert whole["niqe"] == pytest.approx(5.72957338, abs=1e-4)
    assert results_of(tmp_path)["meta"]["crop_border"] == 0
    (cropped,) = score(score_config(tmp_path, pred, None, "metrics=[niqe]", "scale=1"))
    assert cropped["niqe"] == pytest.approx(5.8226, abs=1e-4)
    assert results_of(tmp_path)["meta"]["crop_border"] == 1


def test_crop_border_reaches_the_paper_scores_and_is_recorded(tmp_path: Path, capsys):
    hr = photo(0, 64, 64)
    sr = hr.copy()
    sr[1:-1, 1:-1] = np.clip(sr[1:-1, 1:-1].astype(int) + 3, 0, 255).astype(np.uint8)
    sr[0] = 255 - sr[0]  # wrong only in the outermost row: a crop of 2 never sees it
    write_image(tmp_path / "gt" / "a.png", hr)
    write_image(tmp_path / "pred" / "a.png", sr)
    by_crop = {}
    for crop in ("null", "0", "2"):
        (record,) = score(
            score_config(
                tmp_path, tmp_path / "pred", tmp_path / "gt", "scale=2", f"crop_border={crop}"
            )
        )
        by_crop[crop] = record["psnr_y"]
        assert results_of(tmp_path)["meta"]["crop_border"] == (2 if crop == "null" else int(crop))
    assert "crop 2" in capsys.readouterr().out
    assert by_crop["0"] < by_crop["2"] - 10
    assert by_crop["2"] == by_crop["null"]


@pytest.mark.parametrize("task", ["score", "eval"])
@pytest.mark.parametrize("value", ["-1", "1.5", "two"])
def test_crop_border_must_be_a_non_negative_integer(tmp_path: Path, task: str, value: str):
    overrides = ["pred=x", "scale=2"] if task == "score" else []
    cfg = compose_config(task, [*overrides, f"crop_border={value}"], tmp_path)
    with pytest.raises(ConfigValueError, match=r"crop_border must be an integer >= 0 or null"):
        check_config(cfg, task)


def test_hr_files_sharing_a_name_are_refused_naming_both(tmp_path: Path, capsys):
    write_image(tmp_path / "gt" / "baby.png", photo(0, 32, 32))
    write_image(tmp_path / "gt" / "baby.bmp", photo(1, 32, 32))
    write_image(tmp_path / "pred" / "baby.png", photo(0, 32, 32))
    line = refused(score_config(tmp_path, tmp_path / "pred", tmp_path / "gt", "scale=2"), capsys)
    assert "baby.bmp and baby.png" in line and "prediction baby.png" in line
    assert not (tmp_path / "out" / "results.json").exists()


def test_two_predictions_of_one_hr_image_are_refused_naming_both(tmp_path: Path, capsys):
    write_image(tmp_path / "gt" / "baby.png", photo(0, 32, 32))
    write_image(tmp_path / "pred" / "baby.png", photo(0, 32, 32))
    write_image(tmp_path / "pred" / "baby_x4.png", photo(1, 32, 32))
    line = refused(score_config(tmp_path, tmp_path / "pred", tmp_path / "gt", "scale=2"), capsys)
    assert "baby.png and baby_x4.png" in line and "HR baby.png" in line
    assert not (tmp_path / "out" / "results.json").exists()


def test_results_name_the_hr_file_of_each_prediction(tmp_path: Path):
    for name in ("baby", "bird"):
        write_image(tmp_path / "gt" / f"{name}.png", photo(len(name), 32, 32))
        write_image(tmp_path / "pred" / f"{name}_x2.png", photo(len(name), 32, 32))
    write_image(tmp_path / "gt" / "butterfly.png", photo(9, 32, 32))  # no prediction of it
    score(score_config(tmp_path, tmp_path / "pred", tmp_path / "gt", "scale=2"))
    results = results_of(tmp_path)
    rows = {row["name"]: row["hr"] for row in results["images"]}
    assert rows == {
        f"{name}_x2": str((tmp_path / "gt" / f"{name}.png").absolute()) for name in ("baby", "bird")
    }
    assert "hr" not in results["sets"][0]["extra"]
    csv_header = (tmp_path / "out" / "results.csv").read_text().splitlines()[0]
    assert "hr" not in csv_header.split(",")


@pytest.mark.parametrize("crop", [["scale=2", "crop_border=10"], ["scale=10"]])
def test_a_crop_that_leaves_no_pixels_is_refused(tmp_path: Path, capsys, crop: list[str]):
    write_image(tmp_path / "gt" / "a.png", photo(0, 20, 20))
    write_image(tmp_path / "pred" / "a.png", photo(0, 20, 20))
    line = refused(score_config(tmp_path, tmp_path / "pred", tmp_path / "gt", *crop), capsys)
    assert "a.png" in line and "cropping 10 pixels" in line and "at most 9" in line
    assert not (tmp_path / "out" / "results.json").exists()


def test_niqe_of_an_image_smaller_than_its_block_is_refused(tmp_path: Path, capsys):
    write_image(tmp_path / "pred" / "a.png", photo(0, 100, 100))
    cfg = score_config(tmp_path, tmp_path / "pred", None, "scale=4", "metrics=[niqe]")
    line = refused(cfg, capsys)
    assert "niqe needs at least 96x96" in line and "a.png" in line and "92x92" in line
    assert not (tmp_path / "out" / "results.json").exists()


def test_no_metrics_is_refused(tmp_path: Path, capsys):
    write_image(tmp_path / "gt" / "a.png", photo(0, 32, 32))
    write_image(tmp_path / "pred" / "a.png", photo(0, 32, 32))
    for gt in (tmp_path / "gt", None):
        cfg = score_config(tmp_path, tmp_path / "pred", gt, "scale=2", "metrics=[]")
        assert (
            refused(cfg, capsys)
            == "error: metrics must name at least one metric, e.g. metrics=[psnr,ssim]"
        )
        assert not (tmp_path / "out" / "results.json").exists()


def eval_once(tmp_path: Path, crop: str) -> dict:
    """Bicubic x2 of the set ``Mini`` under ``tmp_path``; its results.json."""
    cfg = compose_config(
        "eval",
        [
            "model=bicubic",
            "scale=2",
            "data=benchmark",
            "data.sets=[Mini]",
            f"paths.data_dir={tmp_path}",
            "comparisons=0",
            f"crop_border={crop}",
        ],
        tmp_path / f"eval_{crop}",
    )
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = False
    evaluate(cfg)
    return json.loads((tmp_path / f"eval_{crop}" / "results.json").read_text())


def test_eval_crops_crop_border_and_records_it(tmp_path: Path, capsys):
    write_image(tmp_path / "benchmarks" / "Mini" / "HR" / "a.png", photo(3, 60, 64))
    default = eval_once(tmp_path, "null")
    whole = eval_once(tmp_path, "0")
    printed = capsys.readouterr().out
    assert "scored as the papers do, crop 2" in printed
    assert "scored as the papers do, crop 0" in printed
    assert default["meta"]["crop_border"] == 2 and whole["meta"]["crop_border"] == 0
    psnr_default, psnr_whole = default["images"][0]["psnr_y"], whole["images"][0]["psnr_y"]
    assert math.isfinite(psnr_whole) and psnr_whole != pytest.approx(psnr_default, abs=1e-6)
