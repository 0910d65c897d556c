"""Evaluation speed: ``make bench-eval``.

Two figures, each per megapixel of HR, with the thread count stated:

* the paper-convention scorer alone (PSNR and SSIM on Y and on RGB, :func:`score_batch`) on
  eight 1-megapixel SR/HR pairs;
* the whole ``python -m src.eval model=bicubic`` of each set, one process per set: the seconds
  it prints for set-up and validation (decode, LR, upscale, score, comparison images), against
  the set's megapixels of HR.

The sets: Set5, Set14 and B100 from ``../shared/data`` when it is there, and two synthetic sets
shaped like Urban100 (1024x768) and Manga109 (832x1176) -- the two are 183 of the five standard
sets' 202 megapixels -- written as PNG into a scratch folder.

    python -m bench.eval [--images 100] [--scale 2] [--sets Set5,Urban100] [--skip-sets]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_BENCHMARKS = REPO_ROOT.parent / "shared" / "data" / "benchmarks"
SYNTHETIC = {"Urban100": (768, 1024), "Manga109": (1176, 832)}
SCORER_PAIRS = 8


def synthetic_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random picture with grain (it compresses and decodes like a photo)."""
    small = rng.integers(0, 256, (height // 12, width // 12, 3)).astype(np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    image += rng.integers(-8, 9, image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_sets(root: Path, images: int, wanted: list[str]) -> list[str]:
    """The benchmark folder of the run: shared sets linked, synthetic ones written (those of
    ``wanted`` that exist)."""
    root.mkdir(parents=True)
    names = []
    for name in ("Set5", "Set14", "B100"):
        if name in wanted and (SHARED_BENCHMARKS / name / "HR").is_dir():
            (root / name).symlink_to(SHARED_BENCHMARKS / name)
            names.append(name)
    rng = np.random.default_rng(0)
    for name, (height, width) in SYNTHETIC.items():
        if name not in wanted:
            continue
        folder = root / name / "HR"
        folder.mkdir(parents=True)
        for index in range(images):
            image = synthetic_image(rng, height, width)
            cv2.imwrite(str(folder / f"img_{index:03d}.png"), image)
        names.append(name)
    return names


def megapixels(folder: Path, scale: int) -> float:
    """HR megapixels of a set, after the mod-crop to ``scale``."""
    total = 0
    for path in sorted(folder.glob("*.png")):
        height, width = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape[:2]
        total += (height - height % scale) * (width - width % scale)
    return total / 1e6


def scorer_ms_per_megapixel(repeats: int) -> float:
    """Median milliseconds per megapixel of :func:`score_batch` on 1-megapixel pairs."""
    from src.metrics.paper import score_batch

    rng = np.random.default_rng(1)
    pairs = []
    for _ in range(SCORER_PAIRS):
        hr = synthetic_image(rng, 1000, 1000)
        sr = np.clip(hr + rng.normal(0, 4, hr.shape), 0, 255).astype(np.uint8)
        pairs.append([torch.from_numpy(x.transpose(2, 0, 1).copy())[None] / 255 for x in (sr, hr)])
    score_batch(*pairs[0], border=2)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for sr, hr in pairs:
            score_batch(sr, hr, border=2)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / SCORER_PAIRS * 1e3


def eval_seconds(data_dir: Path, set_name: str, scale: int, out: Path) -> tuple[float, float]:
    """(seconds src.eval reports for the set, wall seconds of the whole process)."""
    command = [
        sys.executable,
        "-m",
        "src.eval",
        "model=bicubic",
        f"scale={scale}",
        "data=benchmark",
        f"data.sets=[{set_name}]",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={out}",
        "trainer.enable_progress_bar=false",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    found = re.search(r"images in ([0-9.]+) s", result.stdout)
    if result.returncode != 0 or found is None:
        raise SystemExit(f"src.eval failed on {set_name}:\n{result.stdout}\n{result.stderr}")
    return float(found.group(1)), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="images per synthetic set")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes of the scorer")
    parser.add_argument("--skip-sets", action="store_true", help="the scorer only")
    parser.add_argument("--skip-scorer", action="store_true", help="the sets only")
    parser.add_argument(
        "--sets", default="Set5,Set14,B100,Urban100,Manga109", help="comma-separated set names"
    )
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    if not args.skip_scorer:
        scorer = scorer_ms_per_megapixel(args.repeats)
        print(f"scorer (PSNR + SSIM on Y and RGB), {SCORER_PAIRS} 1-MP pairs: {scorer:.0f} ms/MP")
    if args.skip_sets:
        return
    print(f"\npython -m src.eval model=bicubic scale={args.scale}, one process per set")
    print(f"{'set':<10}{'images':>7}{'MP':>8}{'eval s':>8}{'ms/MP':>7}{'process s':>10}")
    total_mp = total_s = 0.0
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "benchmarks"
        for name in write_sets(root, args.images, args.sets.split(",")):
            folder = root / name / "HR"
            mp = megapixels(folder, args.scale)
            seconds, wall = eval_seconds(Path(scratch), name, args.scale, Path(scratch) / name)
            count = len(list(folder.glob("*.png")))
            print(
                f"{name:<10}{count:>7}{mp:>8.1f}{seconds:>8.1f}{seconds / mp * 1e3:>7.0f}"
                f"{wall:>10.1f}"
            )
            total_mp, total_s = total_mp + mp, total_s + seconds
    print(f"{'all':<10}{'':>7}{total_mp:>8.1f}{total_s:>8.1f}{total_s / total_mp * 1e3:>7.0f}")


if __name__ == "__main__":
    main()
