"""What 16-bit and single-channel data cost against the 8-bit RGB path, step by step.

One synthetic 1024x1024 HR image (a smooth test card with noise, full 16-bit range) in four
formats: 8-bit RGB (the benchmark path), 8-bit gray, 16-bit gray and 16-bit RGB, each written as
PNG. For each: decode (file to the array of its pixel format), LR (MATLAB-exact x2 downscale),
tensor (the array to float [0, 1]), score (PSNR and SSIM on Y and RGB, the papers' convention, of
the bicubic upscale against HR) and the bytes per HR pixel the decoded HR and LR keep in memory.
Each time is the median of ``--repeats`` runs, in milliseconds.

    python -m bench.high_depth [--size 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from src.data.datasets import to_tensor
from src.io.images import PixelFormat, read_pixels, sixteen_to_eight_bits
from src.metrics.paper import peak_of, score_batch
from src.ops.imresize import imresize, imresize_array
from src.utils.tables import markdown_table

SCALE = 2
FORMATS = {
    "8-bit RGB": PixelFormat(8, 3),
    "8-bit gray": PixelFormat(8, 1),
    "16-bit gray": PixelFormat(16, 1),
    "16-bit RGB": PixelFormat(16, 3),
}


def test_card(size: int) -> np.ndarray:
    """(size, size, 3) uint16: three different smooth patterns plus noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    rng = np.random.default_rng(0)
    planes = [
        0.5 + 0.4 * np.sin(9 * x + phase) * np.cos(7 * y - phase) for phase in (0.0, 1.0, 2.0)
    ]
    card = np.stack(planes, axis=2) + 0.03 * rng.standard_normal((size, size, 3))
    return np.clip(card * 65535, 0, 65535).astype(np.uint16)


def write_png(folder: Path, name: str, pixel_format: PixelFormat, card: np.ndarray) -> Path:
    pixels = card if pixel_format.channels == 3 else card[:, :, :1]
    if pixel_format.bit_depth == 8:
        pixels = sixteen_to_eight_bits(pixels)
    path = folder / f"{name.replace(' ', '_')}.png"
    stored = pixels[:, :, 0] if pixels.shape[2] == 1 else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(path), stored)
    return path


def median_ms(step: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def measure(path: Path, pixel_format: PixelFormat, repeats: int) -> dict[str, float]:
    hr = read_pixels(path, pixel_format)
    lr = imresize_array(hr, 1 / SCALE)
    hr_tensor, lr_tensor = to_tensor(hr)[None], to_tensor(lr)[None]
    sr = imresize(lr_tensor, scale=float(SCALE)).clamp(0, 1)
    peak = peak_of(pixel_format.bit_depth or 8)
    return {
        "decode": median_ms(lambda: read_pixels(path, pixel_format), repeats),
        "LR": median_ms(lambda: imresize_array(hr, 1 / SCALE), repeats),
        "tensor": median_ms(lambda: (to_tensor(hr), to_tensor(lr)), repeats),
        "score": median_ms(lambda: score_batch(sr, hr_tensor, SCALE, peak=peak), repeats),
        "bytes/px": (hr.nbytes + lr.nbytes) / (hr.shape[0] * hr.shape[1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    card = test_card(args.size)
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, pixel_format in FORMATS.items():
            path = write_png(Path(folder), name, pixel_format, card)
            print(f"measuring {name} ...", flush=True)
            rows[name] = measure(path, pixel_format, args.repeats)
    columns = ["decode", "LR", "tensor", "score", "bytes/px"]
    print(f"\n{args.size}x{args.size} HR, x{SCALE}, {torch.get_num_threads()} threads, ms")
    cells = {
        name: [f"{row[c]:.0f}" if c != "bytes/px" else f"{row[c]:.2f}" for c in columns]
        for name, row in rows.items()
    }
    table = [[name, *values] for name, values in cells.items()]
    print(markdown_table(["format", *columns], table, [False] + [True] * len(columns)))


if __name__ == "__main__":
    main()
