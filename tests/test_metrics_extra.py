"""NIQE, LPIPS, the metric registry and src.score (other toolboxes' outputs, scored our way)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from src.metrics.niqe import niqe
from src.metrics.paper import rgb_to_y
from src.metrics.registry import build_metrics
from src.metrics.report import markdown_table, summarize
from src.score import names_match
from src.utils.errors import UserError
from tests.helpers import run_module
from tests.test_data import photo


def luma_of(path: Path) -> np.ndarray:
    rgb = cv2.imread(str(path))[:, :, ::-1].astype(np.float64)
    return rgb_to_y(torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None])[0, 0].numpy()


@pytest.mark.shared
def test_niqe_of_baboon_is_matlabs(shared_data: Path):
    # MATLAB R2021a gives 5.72957338 for baboon (the figure BasicSR reports beside its own).
    value = niqe(luma_of(shared_data / "benchmarks" / "Set14" / "HR" / "baboon.png"))
    assert value == pytest.approx(5.72957338, abs=1e-5)


def test_niqe_finds_a_photo_more_natural_than_its_blurred_copy():
    import skimage.data

    photo_luma = skimage.data.camera().astype(np.float64)
    blurred = cv2.GaussianBlur(photo_luma, (0, 0), 3)
    assert niqe(photo_luma) < niqe(blurred)
    assert math.isfinite(niqe(photo_luma[:100, :100]))  # one block: a degenerate but finite fit
    with pytest.raises(ValueError, match="at least 96x96"):
        niqe(photo_luma[:90])


def test_lpips_is_zero_for_equal_images_and_needs_its_files(tmp_path: Path, capsys):
    (metric,) = build_metrics(["lpips"], weights="random")
    x = torch.rand(2, 3, 64, 64).mul(255).round().div(255)  # 8-bit levels, as scores see SR
    assert metric(x, x, border=0)["lpips"] == [0.0, 0.0]
    assert "random weights" in capsys.readouterr().err
    (missing,) = build_metrics(["lpips"], weights=str(tmp_path))
    with pytest.raises(UserError, match=r"metric_weights=.*no such file"):
        missing.prepare()


def test_unknown_metric_names_the_known_ones():
    with pytest.raises(UserError, match=r"unknown \['fid'\]; known: psnr, ssim, niqe, lpips"):
        build_metrics(["psnr", "fid"])


def test_lower_is_better_columns_are_marked_in_tables():
    records = [
        {
            "set": "A",
            "name": "x",
            "psnr_y": 30.0,
            "ssim_y": 0.9,
            "psnr_rgb": 28.0,
            "ssim_rgb": 0.8,
            "niqe": 4.0,
            "lpips": 0.1,
        }
    ]
    table = markdown_table(summarize(records))
    assert "| NIQE ↓ | LPIPS ↓ |" in table and "| 4.0000 | 0.1000 |" in table


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("baby", "baby", True),
        ("baby_x4", "baby", True),
        ("babyx4", "baby", True),
        ("baby-SR", "baby", True),
        ("img_010", "img_01", False),
        ("baby2", "baby", False),
    ],
)
def test_predictions_are_matched_to_hr_by_name(prediction, reference, expected):
    assert names_match(prediction, reference) is expected


def test_score_equals_eval_on_the_same_outputs(tmp_path: Path):
    """Bicubic x2 of a small set: src.eval scores it; src.predict writes the same SR images from
    the same MATLAB LR; src.score of those files gives the same per-image numbers."""
    from src.io.images import write_image
    from src.ops.imresize import imresize_uint8, modcrop

    hr_dir = tmp_path / "benchmarks" / "Mini" / "HR"
    lr_dir, sr_dir = tmp_path / "lr", tmp_path / "sr"
    for index in range(3):
        hr = photo(index, 100 + 10 * index, 120)
        write_image(hr_dir / f"im{index}.png", hr)
        write_image(lr_dir / f"im{index}x2.png", imresize_uint8(modcrop(hr, 2), 0.5))
    evaluated = run_module(
        "src.eval",
        [
            "model=bicubic",
            "data=benchmark",
            "data.sets=[Mini]",
            f"paths.data_dir={tmp_path}",
            "metrics=[psnr,ssim,niqe]",
            f"hydra.run.dir={tmp_path}/e",
            "trainer.enable_progress_bar=false",
        ],
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    predicted = run_module(
        "src.predict",
        [
            "model=bicubic",
            f"input={lr_dir}",
            f"output={sr_dir}",
            "progress=false",
            f"hydra.run.dir={tmp_path}/p",
        ],
    )
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    scored = run_module(
        "src.score",
        [
            f"pred={sr_dir}",
            f"gt={hr_dir}",
            "scale=2",
            "metrics=[psnr,ssim,niqe]",
            f"hydra.run.dir={tmp_path}/s",
        ],
    )
    assert scored.returncode == 0, scored.stderr[-2000:]
    by_eval = json.loads((tmp_path / "e" / "results.json").read_text())["images"]
    by_score = json.loads((tmp_path / "s" / "results.json").read_text())["images"]
    assert [r["name"] for r in by_score] == [f"im{i}x2" for i in range(3)]
    for one, other in zip(by_eval, by_score, strict=True):
        for column in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "niqe"):
            assert other[column] == pytest.approx(one[column], abs=1e-9), column
    assert "| sr | 3 |" in scored.stdout and "NIQE ↓" in scored.stdout


def test_score_without_reference_scores_no_reference_metrics_only(tmp_path: Path):
    from src.io.images import write_image

    write_image(tmp_path / "sr" / "a.png", cv2.resize(photo(1, 40, 40), (200, 200)))
    result = run_module(
        "src.score",
        [f"pred={tmp_path / 'sr'}", "scale=4", "metrics=[niqe]", f"hydra.run.dir={tmp_path}/s"],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((tmp_path / "s" / "results.json").read_text())["images"][0]
    assert math.isfinite(record["niqe"]) and "psnr_y" not in record
    refused = run_module(
        "src.score", [f"pred={tmp_path / 'sr'}", "scale=4", f"hydra.run.dir={tmp_path}/t"]
    )
    assert refused.returncode == 2 and "give gt=DIR" in refused.stderr
