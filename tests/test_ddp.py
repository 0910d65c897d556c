"""DDP through Lightning on 2 CPU processes (gloo), each run in a subprocess with a timeout."""

from __future__ import annotations

import csv
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
