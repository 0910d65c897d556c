"""Per-set summaries of per-image scores, as a printed table and results.{json,csv,md}."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from src.metrics.paper import METRIC_NAMES
from src.metrics.published import lookup


@dataclass(frozen=True)
class SetSummary:
    """Mean scores of one validation set (papers average the per-image scores)."""

    set: str
    images: int
    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    ssim_rgb: float
    published_psnr_y: float | None = None
    published_ssim_y: float | None = None


def attach_published(
    summaries: list[SetSummary], model: str | None, scale: int
) -> list[SetSummary]:
    """Add the papers' figures for ``model`` (a conf/model name) where the table has them."""
    result = []
    for summary in summaries:
        figure = lookup(model, scale, summary.set)
        if figure is not None:
            summary = replace(
                summary, published_psnr_y=figure.psnr_y, published_ssim_y=figure.ssim_y
            )
        result.append(summary)
    return result


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


def _as_printed(psnr: float) -> str:
    """A published PSNR with the decimals its paper printed (2, or 4 for authors' logs)."""
    return f"{psnr:.2f}" if abs(psnr * 100 - round(psnr * 100)) < 1e-6 else f"{psnr:.4f}"


def _published_cells(summary: SetSummary) -> str:
    if summary.published_psnr_y is None or summary.published_ssim_y is None:
        return " - | - |"
    d_psnr = summary.psnr_y - summary.published_psnr_y
    d_ssim = summary.ssim_y - summary.published_ssim_y
    return (
        f" {_as_printed(summary.published_psnr_y)} / {summary.published_ssim_y:.4f} |"
        f" {d_psnr:+.4f} / {d_ssim:+.4f} |"
    )


def markdown_table(summaries: list[SetSummary]) -> str:
    """A Markdown table, one row per set: our scores, the published ones and the difference."""
    lines = [
        "| set | images | PSNR_Y | SSIM_Y | PSNR_RGB | SSIM_RGB | published Y | ours - published |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.set} | {s.images} | {s.psnr_y:.4f} | {s.ssim_y:.4f} | "
            f"{s.psnr_rgb:.4f} | {s.ssim_rgb:.4f} |" + _published_cells(s)
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
