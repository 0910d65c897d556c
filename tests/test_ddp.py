"""DDP through Lightning on 2 CPU processes (gloo), each run in a subprocess with a timeout."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.helpers import TINY, run_module
from tests.test_data import write_folder


def last_logged(run_dir: Path, key: str) -> float:
    rows = [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r.get(key)]
    assert rows, f"{key} never logged in {run_dir}"
    return float(rows[-1][key])


def test_ddp_cpu_trains_and_validates_into_one_run_folder(tmp_path: Path):
    folder = tmp_path / "hr"
    write_folder(folder, 6, height=64, width=64)
    log_dir = tmp_path / "outputs"
    result = run_module(
        "src.train",
        [
            *TINY,
            "trainer=ddp_cpu",
            "data=folder",
            f"data.root={folder}",
            "trainer.max_steps=4",
            f"paths.log_dir={log_dir}",
        ],
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (log_dir / "train" / "runs").iterdir()  # the ranks share one folder
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert last_logged(run_dir, "val/psnr_y") > 0
    assert result.stdout.count("best PSNR_Y") == 1  # the summary comes from rank 0 only


@pytest.mark.shared
@pytest.mark.parametrize("sets", ["[Set5]"])
def test_set5_scores_under_ddp_equal_single_process(shared_data: Path, tmp_path: Path, sets: str):
    common = [
        "model=bicubic",
        "scale=4",
        "data=benchmark",
        f"data.sets={sets}",
        f"paths.data_dir={shared_data}",
        "logger=csv",
        "trainer.enable_progress_bar=false",
    ]
    scores = {}
    for trainer in ("default", "ddp_cpu"):
        run_dir = tmp_path / trainer
        result = run_module(
            "src.train", [*common, f"trainer={trainer}", f"hydra.run.dir={run_dir}"], timeout=240
        )
        assert result.returncode == 0, result.stderr[-3000:]
        scores[trainer] = last_logged(run_dir, "val/psnr_y"), last_logged(run_dir, "val/ssim_y")
    # 5 images on 2 ranks (3 + 2): a padded sampler would count one image twice.
    assert scores["ddp_cpu"][0] == pytest.approx(scores["default"][0], abs=1e-4)
    assert scores["ddp_cpu"][1] == pytest.approx(scores["default"][1], abs=1e-6)


def write_benchmark(root: Path, name: str, count: int) -> None:
    """A benchmark set of ``count`` small photos of different sizes (odd ones included)."""
    import cv2

    from tests.test_data import photo

    folder = root / "benchmarks" / name / "HR"
    folder.mkdir(parents=True)
    for index in range(count):
        cv2.imwrite(str(folder / f"im{index}.png"), photo(index, 40 + 6 * index, 56 + 3 * index))


def test_eval_under_ddp_scores_every_image_once_like_one_process(tmp_path: Path):
    write_benchmark(tmp_path, "Odd", 5)  # 5 images on 2 ranks: 3 + 2
    write_benchmark(tmp_path, "Even", 4)
    common = [
        "model=bicubic",
        "data=benchmark",
        "data.sets=[Odd,Even]",
        f"paths.data_dir={tmp_path}",
        "trainer.enable_progress_bar=false",
    ]
    results = {}
    for trainer in ("default", "ddp_cpu"):
        out = tmp_path / trainer
        result = run_module(
            "src.eval", [*common, f"trainer={trainer}", f"hydra.run.dir={out}"], timeout=240
        )
        assert result.returncode == 0, result.stderr[-3000:]
        results[trainer] = json.loads((out / "results.json").read_text())
    single, ddp = results["default"], results["ddp_cpu"]
    assert [(r["set"], r["name"]) for r in ddp["images"]] == [
        (r["set"], r["name"]) for r in single["images"]
    ]
    assert len(ddp["images"]) == 9
    for one, other in zip(single["images"], ddp["images"], strict=True):
        for metric in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"):
            assert other[metric] == pytest.approx(one[metric], abs=1e-6)
    for one, other in zip(single["sets"], ddp["sets"], strict=True):
        assert other["images"] == one["images"]
        assert other["psnr_y"] == pytest.approx(one["psnr_y"], abs=1e-6)

    # The same set means as validation logs for the same images.
    run_dir = tmp_path / "train"
    trained = run_module(
        "src.train", [*common, "logger=csv", f"hydra.run.dir={run_dir}"], timeout=240
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    for summary in ddp["sets"]:
        logged = last_logged(run_dir, f"val/{summary['set']}/psnr_y")
        assert summary["psnr_y"] == pytest.approx(logged, abs=1e-4)
        assert summary["ssim_y"] == pytest.approx(
            last_logged(run_dir, f"val/{summary['set']}/ssim_y"), abs=1e-5
        )
