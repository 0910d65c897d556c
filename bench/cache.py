"""Decode once: set-up time, memory and disk of ``cache=memory``, ``mapped`` and ``subimages``.

Writes a folder of synthetic DIV2K-sized PNGs (2040x1356, smooth content with grain), then, each
in a fresh process so that peak memory is its own, sets up the x2 training data of every cache
mode (for the on-disk modes: the first run that builds the cache, then a run that maps it) and
times its loader as ``make bench`` does (after 5 start-up batches). Prints set-up seconds,
loader patches per second, peak RSS and the cache's size on disk.

    python -m bench.cache [--images 40]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from bench.run import BATCH, PATCH, SCALE, bench_loader, loader_module

WIDTH, HEIGHT, BATCHES = 2040, 1356, 50
MODES = {
    "memory": {},
    "mapped": {"on_disk": True, "crop": None},
    "subimages": {"on_disk": True},
}


def write_images(folder: Path, count: int) -> None:
    """``count`` smooth random photos with grain, as PNG (compressible like real photos)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        small = rng.integers(0, 256, (HEIGHT // 12, WIDTH // 12, 3)).astype(np.uint8)
        image = cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        image += rng.integers(-8, 9, image.shape, dtype=np.int16)
        cv2.imwrite(str(folder / f"{index:04d}.png"), np.clip(image, 0, 255).astype(np.uint8))


def measure(folder: Path, mode: str, cache_dir: Path) -> dict[str, float]:
    """Set up one cache mode and time its loader, in this process."""
    cache = {**MODES[mode], "dir": str(cache_dir)}
    datamodule = loader_module(folder, 0, BATCHES, cache, "bicubic")
    started = time.perf_counter()
    datamodule.prepare_data()
    datamodule.setup("fit")
    setup = time.perf_counter() - started
    rate = bench_loader(datamodule, BATCHES)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"setup_s": setup, "patches_per_s": rate, "peak_rss_mb": peak_mb}


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def run_mode(folder: Path, mode: str, cache_dir: Path) -> dict[str, float]:
    """:func:`measure` in a fresh Python process."""
    command = [sys.executable, "-m", "bench.cache", "--measure", mode, "--folder", str(folder)]
    output = subprocess.run(
        [*command, "--cache-dir", str(cache_dir)], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--measure", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.folder, args.measure, args.cache_dir)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "images"
        print(f"writing {args.images} synthetic {WIDTH}x{HEIGHT} PNGs ...", flush=True)
        write_images(folder, args.images)
        print(f"{folder_mb(folder):.0f} MB of PNG; x{SCALE}, batch {BATCH}, LR patch {PATCH}")
        print(f"{'mode':<22}{'set-up s':>9}{'patches/s':>11}{'peak RSS MB':>13}{'disk MB':>9}")
        for mode in MODES:
            cache_dir = Path(scratch) / f"cache-{mode}"
            runs = ["first run", "next run"] if MODES[mode] else ["every run"]
            for run in runs:
                result = run_mode(folder, mode, cache_dir)
                disk = f"{folder_mb(cache_dir):.0f}" if cache_dir.exists() else "-"
                print(
                    f"{f'{mode}, {run}':<22}{result['setup_s']:>9.1f}"
                    f"{result['patches_per_s']:>11.0f}{result['peak_rss_mb']:>13.0f}{disk:>9}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
