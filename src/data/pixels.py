"""The pixel manifest of the standard test sets: the sha256 of each reference HR image's decoded
pixels (``benchmark_pixels.tsv``), which :mod:`src.data.benchmarks` checks every copy against and
:mod:`src.data.benchmark_download` checks every download against."""

from __future__ import annotations

import csv
import hashlib
import warnings
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

MANIFEST = Path(__file__).with_name("benchmark_pixels.tsv")
SHOWN = 10  # file names quoted in one message, at most


def pixel_manifest(path: Path | None = None) -> dict[tuple[str, str], str]:
    """``(set, file name) -> sha256 of the decoded pixels`` of the reference copies, from
    ``path`` (default: the shipped manifest)."""
    return _read_pixel_manifest(path or MANIFEST)


@cache
def _read_pixel_manifest(path: Path) -> dict[tuple[str, str], str]:
    with path.open() as handle:
        return {
            (r["set"], r["file"]): r["sha256_of_pixels"]
            for r in csv.DictReader(handle, delimiter="\t")
        }


def name_list(files: Sequence[str]) -> str:
    """The first few of ``files``, comma-separated, and how many more there are."""
    more = f" and {len(files) - SHOWN} more" if len(files) > SHOWN else ""
    return ", ".join(files[:SHOWN]) + more


def warn_differing(name: str, files: Sequence[str]) -> None:
    """One warning naming the images of set ``name`` whose pixels are not the reference's."""
    if files:
        warnings.warn(
            f"{name}: {len(files)} image(s) decode to different pixels than the reference "
            f"copies, so scores may differ from published ones: {name_list(files)}",
            stacklevel=3,
        )


def pixel_digest(pixels: np.ndarray) -> str:
    """sha256 of uint8 pixels, C-contiguous, as the manifest computes it."""
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
