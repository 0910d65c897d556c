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


@pytest.mark.slow  # the default suite keeps the eval twin below (an odd count on 2 ranks)
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


def write_benchmark(root: Path, name: str, count: int, height: int = 40, width: int = 56) -> None:
    """A benchmark set of ``count`` photos of different sizes (odd ones included)."""
    import cv2

    from tests.test_data import photo

    folder = root / "benchmarks" / name / "HR"
    folder.mkdir(parents=True)
    for index in range(count):
        image = photo(index, height + 6 * index, width + 3 * index)
        cv2.imwrite(str(folder / f"im{index}.png"), image)


def eval_both_ways(common: list[str], tmp_path: Path) -> dict[str, tuple[dict, str]]:
    """``src.eval`` in one process and under ``trainer=ddp_cpu``: each one's results.json and
    printed output."""
    runs = {}
    for trainer in ("default", "ddp_cpu"):
        out = tmp_path / trainer
        result = run_module(
            "src.eval", [*common, f"trainer={trainer}", f"hydra.run.dir={out}"], timeout=240
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs[trainer] = json.loads((out / "results.json").read_text()), result.stdout
    return runs


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
    results = {trainer: run[0] for trainer, run in eval_both_ways(common, tmp_path).items()}
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


def imdn_weights(path: Path) -> Path:
    """Random IMDN x2 weights, scaled so the output is a picture, not a clipped blank: a network
    whose contrast-aware attention reduces over whole feature maps (sums that a thread count
    orders)."""
    import torch

    from src.archs.imdn import IMDN

    torch.manual_seed(3)
    net = IMDN(scale=2, num_features=16, num_blocks=2)
    with torch.no_grad():  # mid-grey plus detail: few pixels clipped, many near a rounding edge
        net.upsampler[0].weight.mul_(0.5)
        net.upsampler[0].bias.fill_(0.5)
    torch.save(net.state_dict(), path)
    return path


def test_eval_of_a_network_with_reductions_prints_the_single_process_digits_under_ddp(
    tmp_path: Path,
):
    write_benchmark(tmp_path, "Odd", 5, height=240, width=320)  # a pixel or two flip per image
    weights = imdn_weights(tmp_path / "imdn.pth")
    common = [
        "model=imdn",
        "model.net.num_features=16",
        "model.net.num_blocks=2",
        f"model.pretrained={weights}",
        # Contiguous tensors: there the CPU kernels' sums follow the thread count (channels-last
        # ones gave the same bits at 1 and 2 threads here).
        "model.channels_last=false",
        "data=benchmark",
        "data.sets=[Odd]",
        f"paths.data_dir={tmp_path}",
        "trainer.enable_progress_bar=false",
        "comparisons=0",
    ]
    runs = eval_both_ways(common, tmp_path)
    single, ddp = runs["default"][0], runs["ddp_cpu"][0]
    printed = {
        trainer: [line for line in stdout.splitlines() if line.startswith("| Odd")]
        for trainer, (_, stdout) in runs.items()
    }
    for one, other in zip(single["images"], ddp["images"], strict=True):
        for metric in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"):
            assert other[metric] == one[metric], (one["name"], metric)
    assert printed["ddp_cpu"] == printed["default"] and len(printed["default"]) == 1
