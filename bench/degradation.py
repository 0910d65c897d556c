"""Real-ESRGAN degradations, patches per second: the per-patch path (NumPy/OpenCV, what each
DataLoader worker runs) against the batch path (torch, on the training device after transfer).

Both degrade the same 256x256 HR patches (x4, Real-ESRGAN's settings) cut from a photo, in
batches of ``--batch``; the per-patch path one patch at a time in this process (one loader
worker's rate), the batch path whole batches on ``--device`` (synchronised before the clock
stops). Each timing is the median of ``--repeats`` runs of ``--batches`` batches after one
warm-up batch.

    python -m bench.degradation [--batch 16] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import skimage.data
import torch

from src.data.batch_degradation import BatchRealESRGANDegradation
from src.utils.tables import markdown_table

SCALE, HR_PATCH = 4, 256


def hr_patches(count: int) -> np.ndarray:
    """``count`` random 256x256 crops of scikit-image's astronaut photo, uint8."""
    photo = skimage.data.astronaut()
    rng = np.random.default_rng(0)
    tops = rng.integers(0, photo.shape[0] - HR_PATCH, count)
    lefts = rng.integers(0, photo.shape[1] - HR_PATCH, count)
    return np.stack(
        [photo[t : t + HR_PATCH, x : x + HR_PATCH] for t, x in zip(tops, lefts, strict=True)]
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_patch_rate(degradation: BatchRealESRGANDegradation, patches: np.ndarray, batches: int):
    started = time.perf_counter()
    for index in range(batches * len(patches)):
        degradation(patches[index % len(patches)], SCALE, np.random.default_rng(index))
    return batches * len(patches) / (time.perf_counter() - started)


def batch_rate(
    degradation: BatchRealESRGANDegradation, hr: torch.Tensor, batches: int, device: torch.device
) -> float:
    size = hr.shape[0]
    sync(device)
    started = time.perf_counter()
    for index in range(batches):
        seeds = list(range(index * size, (index + 1) * size))
        degradation.degrade_batch(hr, seeds, SCALE)
    sync(device)
    return batches * size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    degradation = BatchRealESRGANDegradation()
    patches = hr_patches(args.batch)
    hr = torch.from_numpy(patches.transpose(0, 3, 1, 2).copy()).to(device).float() / 255
    print(
        f"batch {args.batch} of {HR_PATCH}x{HR_PATCH} HR patches, x{SCALE}, torch threads "
        f"{torch.get_num_threads()}, batch path on {device}"
    )
    per_patch_rate(degradation, patches[:1], 1)
    batch_rate(degradation, hr, 1, device)
    rows = {
        "per patch (NumPy/OpenCV, one worker)": [
            per_patch_rate(degradation, patches, args.batches) for _ in range(args.repeats)
        ],
        f"batch (torch, {device})": [
            batch_rate(degradation, hr, args.batches, device) for _ in range(args.repeats)
        ],
    }
    table = [
        [name, f"{statistics.median(rates):.1f}", ", ".join(f"{r:.1f}" for r in rates)]
        for name, rates in rows.items()
    ]
    print(markdown_table(["path", "patches/s (median)", "runs"], table, [False, True, False]))


if __name__ == "__main__":
    main()
