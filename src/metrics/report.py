"""Per-set summaries of per-image scores, as a printed table and results.{json,csv,md}."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from src.metrics.paper import METRIC_NAMES


@dataclass(frozen=True)
class SetSummary:
    """Mean scores of one validation set (papers average the per-image scores)."""

    set: str
    images: int
    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    ssim_rgb: float


def summarize(records: list[dict[str, Any]]) -> list[SetSummary]:
    """Group per-image records (``set``, ``name`` and the metric names) into per-set means."""
    by_set: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_set[record["set"]].append(record)
    summaries = []
    for set_name, rows in by_set.items():
        means = {m: sum(float(r[m]) for r in rows) / len(rows) for m in METRIC_NAMES}
        summaries.append(SetSummary(set=set_name, images=len(rows), **means))
    return summaries


def markdown_table(summaries: list[SetSummary]) -> str:
    """A Markdown table, PSNR to 4 decimals (dB) and SSIM to 4, one row per set."""
    lines = [
        "| set | images | PSNR_Y | SSIM_Y | PSNR_RGB | SSIM_RGB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.set} | {s.images} | {s.psnr_y:.4f} | {s.ssim_y:.4f} | "
            f"{s.psnr_rgb:.4f} | {s.ssim_rgb:.4f} |"
        )
    return "\n".join(lines)


def write_results(
    directory: Path,
    summaries: list[SetSummary],
    records: list[dict[str, Any]],
    meta: dict[str, Any],
) -> list[Path]:
    """Write results.json (with per-image scores), results.csv and results.md; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, csv_path, md_path = (directory / f"results.{ext}" for ext in ("json", "csv", "md"))
    payload = {"meta": meta, "sets": [asdict(s) for s in summaries], "images": records}
    json_path.write_text(json.dumps(payload, indent=2))
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(summaries[0])))
        writer.writeheader()
        writer.writerows(asdict(s) for s in summaries)
    md_path.write_text(markdown_table(summaries) + "\n")
    return [json_path, csv_path, md_path]
