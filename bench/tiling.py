"""Tiled against whole-image inference: agreement, peak memory and time, ``python -m bench.tiling``.

Upscales one random SIZE x SIZE image (default 1024, x4) with EDSR (16 blocks, 64 features,
seeded random weights: timing and agreement do not depend on training) through the shared path,
``SRModule.forward`` (channels-last, as predict runs it), once whole and once with
``tile=TILE tile_overlap=OVERLAP``. Each runs in its own subprocess so that its peak resident
memory (``getrusage`` maxrss) is its own; a 64 px warm-up call comes first so one-off start-up
costs are left out of the timing. Prints the PSNR of the tiled output against the whole one, the
peak memory of each (absolute and above the warmed-up process), the time per output megapixel,
and the measured time ratio beside the bound set by the extra context pixels each tile computes
(computed tile area / kept area). Median of ``--repeats`` timed runs, at the stated thread count.

    python -m bench.tiling [--size 1024] [--scale 4] [--tile 256] [--overlap 16] [--threads 2]
    python -m bench.tiling --probe   # time per LR pixel of single network calls, by input size
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from src.archs.edsr import EDSR
from src.models.sr_module import SRModule
from src.ops.inference import measure_bytes_per_lr_pixel

MB = 2**20


def computed_area_ratio(height: int, width: int, tile: int, overlap: int) -> float:
    """Pixels the network computes over all tiles (core + context) / pixels kept."""

    def spans(length: int) -> int:
        starts = range(0, length, tile)
        return sum(min(s + tile + overlap, length) - max(s - overlap, 0) for s in starts)

    return spans(height) * spans(width) / (height * width)


def build(scale: int, tile: int | None, overlap: int) -> SRModule:
    torch.manual_seed(0)
    net = EDSR(scale, num_blocks=16, num_features=64)
    module = SRModule(net, scale, tile=tile, tile_overlap=overlap, channels_last=True)
    return module.eval()


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


@torch.no_grad()
def worker(args: argparse.Namespace) -> None:
    """One measured run; writes its output and figures into ``args.out``."""
    torch.set_num_threads(args.threads)
    tile = None if args.mode == "whole" else args.tile
    module = build(args.scale, tile, args.overlap)
    module(torch.rand(1, 3, 64, 64))  # warm-up: oneDNN primitives, allocator
    generator = torch.Generator().manual_seed(1)
    lr = torch.rand(1, 3, args.size, args.size, generator=generator)
    before = max_rss_mb()
    times, sr = [], None
    for _ in range(max(args.repeats, 1)):
        sr = None  # free the last output first: a run must not find it still held
        started = time.perf_counter()
        sr = module(lr)
        times.append(time.perf_counter() - started)
    assert sr is not None
    figures = {
        "seconds": statistics.median(times),
        "all_seconds": times,
        "peak_mb": max_rss_mb(),
        "before_mb": before,
        "load": os.getloadavg()[0],
    }
    out = Path(args.out)
    np.save(out / f"{args.mode}.npy", sr[0].clamp(0, 1).numpy())
    (out / f"{args.mode}.json").write_text(json.dumps(figures))


def run_worker(mode: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.tiling", "--worker", mode, "--out", str(out)]
    for key in ("size", "scale", "tile", "overlap", "threads", "repeats"):
        command += [f"--{key}", str(getattr(args, key))]
    subprocess.run(command, check=True)
    return json.loads((out / f"{mode}.json").read_text())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def compare(args: argparse.Namespace) -> None:
    out_mp = (args.size * args.scale) ** 2 / 1e6
    bound = computed_area_ratio(args.size, args.size, args.tile, args.overlap)
    print(
        f"EDSR (16 blocks, 64 features) x{args.scale}, {args.size}x{args.size} LR -> "
        f"{out_mp:.1f} MP out; tile={args.tile} tile_overlap={args.overlap}; "
        f"{args.threads} threads, median of {args.repeats}; "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    with tempfile.TemporaryDirectory(prefix="srlab-tiling-") as folder:
        out = Path(folder)
        runs = {mode: run_worker(mode, args, out) for mode in ("whole", "tiled")}
        whole, tiled = (np.load(out / f"{mode}.npy") for mode in runs)
    print(
        f"tiled vs whole: PSNR {psnr(tiled, whole):.1f} dB (float32 outputs in [0, 1]), "
        f"max |difference| {np.abs(tiled - whole).max():.2e}"
    )
    for mode, figures in runs.items():
        print(
            f"{mode:>6}: {figures['seconds']:.1f} s, {figures['seconds'] / out_mp:.2f} s per "
            f"output MP; peak RSS {figures['peak_mb']:.0f} MB "
            f"(+{figures['peak_mb'] - figures['before_mb']:.0f} MB over the warmed-up process); "
            f"runs {', '.join(f'{t:.1f}' for t in figures['all_seconds'])} s, "
            f"load average {figures['load']:.1f} at the end"
        )
    ratio = runs["tiled"]["seconds"] / runs["whole"]["seconds"]
    fastest = min(runs["tiled"]["all_seconds"]) / min(runs["whole"]["all_seconds"])
    print(
        f"time tiled / whole: {ratio:.3f} (medians), {fastest:.3f} (fastest runs: other jobs on "
        f"the machine only add time); computed tile area / kept area: {bound:.3f}"
    )
    net = build(args.scale, None, args.overlap).net
    per_pixel = measure_bytes_per_lr_pixel(net, torch.rand(1, 3, 8, 8))
    print(
        f"tile=auto probe: {per_pixel:.0f} bytes per LR pixel of one call, so about "
        f"{per_pixel * args.size**2 / MB:.0f} MB whole and "
        f"{per_pixel * (args.tile + 2 * args.overlap) ** 2 / MB:.0f} MB per tile"
    )


@torch.no_grad()
def probe_sizes(args: argparse.Namespace) -> None:
    """Seconds per LR megapixel of one network call at several input sizes (median of 3)."""
    torch.set_num_threads(args.threads)
    module = build(args.scale, None, args.overlap)
    module(torch.rand(1, 3, 64, 64))
    print(f"EDSR x{args.scale}, one call, {args.threads} threads: seconds per LR megapixel")
    for size in (64, 128, 192, 288, 416, 576):
        lr = torch.rand(1, 3, size, size)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            module(lr)
            times.append(time.perf_counter() - started)
        seconds = sorted(times)[1]
        print(f"  {size:4d} px: {seconds / (size * size / 1e6):7.1f} s/MP ({seconds:.3f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median is shown")
    parser.add_argument("--probe", action="store_true", help="time single calls by input size")
    parser.add_argument("--worker", choices=("whole", "tiled"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.mode = args.worker
        worker(args)
    elif args.probe:
        probe_sizes(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
