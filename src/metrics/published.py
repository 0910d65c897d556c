"""The papers' PSNR/SSIM tables, shipped with SR Lab, to print beside our own figures.

``reference/published.csv`` holds one row per (model config, scale, set): the figures as their
papers (or the authors' logs) print them, Y channel, ``scale`` pixels of border cropped.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TABLE = Path(__file__).with_name("reference") / "published.csv"


@dataclass(frozen=True)
class Published:
    """One published figure: the paper's method name and its PSNR_Y / SSIM_Y."""

    method: str
    psnr_y: float
    ssim_y: float


@cache
def published_table() -> dict[tuple[str, int, str], Published]:
    """``(model config, scale, set) -> Published`` for every row of the shipped table."""
    with TABLE.open() as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))
        return {
            (row["model"], int(row["scale"]), row["set"]): Published(
                row["method"], float(row["psnr_y"]), float(row["ssim_y"])
            )
            for row in rows
        }


def lookup(model: str | None, scale: int, set_name: str) -> Published | None:
    """The published figure for ``model`` (a conf/model name) at ``scale`` on ``set_name``."""
    if model is None:
        return None
    return published_table().get((model, scale, set_name))
