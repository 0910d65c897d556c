"""Per-set summaries of per-image scores, as a printed table and results.{json,csv,md}.

Besides the paper scores every metric of ``metrics=[...]`` gets a column (``extra``); a metric
where lower is better (NIQE, LPIPS) is marked with a down arrow in the table's header.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from src.metrics.paper import METRIC_NAMES
from src.metrics.published import lookup
from src.metrics.registry import LOWER_IS_BETTER
from src.utils import tables
from src.utils.files import write_text_atomic

# The clips of the video test sets the published table has rows for: only a whole set is
# compared with its published mean.
FULL_VIDEO_SETS = {"Vid4": 4, "Vid4-BD": 4, "REDS4": 4}


@dataclass(frozen=True)
class SetSummary:
    """Mean scores of one validation set (papers average the per-image scores)."""

    set: str
    images: int
    psnr_y: float = math.nan  # NaN: not scored (no reference given to src.score)
    ssim_y: float = math.nan
    psnr_rgb: float = math.nan
    ssim_rgb: float = math.nan
    published_psnr_y: float | None = None
    published_ssim_y: float | None = None
    extra: dict[str, float] = field(default_factory=dict)
    # Clips of a video set (0 for images): its means are then the mean over clips of each
    # clip's mean over its frames, the video papers' average; ``images`` counts frames.
    clips: int = 0

    def row(self) -> dict[str, Any]:
        """A flat row for CSV: the extra metrics as columns of their own."""
        flat = asdict(self)
        return {**{k: v for k, v in flat.items() if k != "extra"}, **flat["extra"]}


def attach_published(
    summaries: list[SetSummary], model: str | None, scale: int
) -> list[SetSummary]:
    """Add the papers' figures for ``model`` (a conf/model name) where the table has them."""
    result = []
    for summary in summaries:
        figure = lookup(model, scale, summary.set)
        if summary.clips and summary.clips != FULL_VIDEO_SETS.get(summary.set):
            figure = None  # a part of a video set: the paper's mean is over all its clips
        if figure is not None:
            summary = replace(
                summary, published_psnr_y=figure.psnr_y, published_ssim_y=figure.ssim_y
            )
        result.append(summary)
    return result


# Keys of a per-image or per-frame record that are not scores.
RECORD_KEYS = ("set", "name", "clip", "frame", "frames")


def summarize(records: list[dict[str, Any]]) -> list[SetSummary]:
    """Group per-image records (``set``, ``name`` and the metric names) into per-set means;
    per-frame records (with ``clip``) are averaged per clip first (:func:`clip_means`)."""
    by_set: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_set[record["set"]].append(record)
    summaries = []
    for set_name, rows in by_set.items():
        frames = len(rows)
        clips = clip_means(rows) if "clip" in rows[0] else []
        if clips:
            rows = clips
        means = {m: mean(rows, m) for m in METRIC_NAMES if m in rows[0]}
        keys = dict.fromkeys(k for row in rows for k in score_keys(row) if k not in METRIC_NAMES)
        extra = {k: mean([row for row in rows if k in row], k) for k in keys}
        summaries.append(
            SetSummary(set=set_name, images=frames, **means, extra=extra, clips=len(clips))
        )
    return summaries


def score_keys(record: dict[str, Any]) -> list[str]:
    """The numeric scores of a record, in order."""
    return [k for k, v in record.items() if k not in RECORD_KEYS and isinstance(v, (int, float))]


def clip_means(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per clip of per-frame records: ``set``, ``clip``, ``frames`` and the mean of
    each score over the clip's frames, in the order the clips first appear."""
    by_clip: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if "clip" in record:
            by_clip[(record["set"], record["clip"])].append(record)
    rows = []
    for (set_name, clip), frames in by_clip.items():
        keys = dict.fromkeys(k for frame in frames for k in score_keys(frame))
        # A pair metric (tOF, tLP) is on the frames that end a pair: the mean over those.
        scores = {k: mean([f for f in frames if k in f], k) for k in keys}
        rows.append({"set": set_name, "clip": clip, "frames": len(frames), **scores})
    return rows


def mean(rows: list[dict[str, Any]], key: str) -> float:
    return sum(float(r[key]) for r in rows) / len(rows)


def _as_printed(psnr: float) -> str:
    """A published PSNR with the decimals its paper printed (2, or 4 for authors' logs)."""
    return f"{psnr:.2f}" if abs(psnr * 100 - round(psnr * 100)) < 1e-6 else f"{psnr:.4f}"


def _published_cells(summary: SetSummary) -> list[str]:
    if summary.published_psnr_y is None or summary.published_ssim_y is None:
        return ["-", "-"]
    d_psnr = summary.psnr_y - summary.published_psnr_y
    d_ssim = summary.ssim_y - summary.published_ssim_y
    return [
        f"{_as_printed(summary.published_psnr_y)} / {summary.published_ssim_y:.4f}",
        f"{d_psnr:+.4f} / {d_ssim:+.4f}",
    ]


def cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def extra_header(column: str) -> str:
    """``NIQE ↓``: a metric's column name, marked when lower is better."""
    name = column.upper().replace("_VGG", "-VGG")
    return f"{name} ↓" if column in LOWER_IS_BETTER else name


def markdown_table(summaries: list[SetSummary]) -> str:
    """A Markdown table, one row per set: our scores (the paper ones, then any other metric),
    the published ones and the difference."""
    extras = list(dict.fromkeys(k for s in summaries for k in s.extra))
    video = any(s.clips for s in summaries)
    header = ["set", *(["clips", "frames"] if video else ["images"])]
    header += ["PSNR_Y", "SSIM_Y", "PSNR_RGB", "SSIM_RGB"]
    header += [extra_header(k) for k in extras] + ["published Y", "ours - published"]
    rows = []
    for s in summaries:
        counts = [str(s.clips or "-"), str(s.images)] if video else [str(s.images)]
        paper = [cell(v) for v in (s.psnr_y, s.ssim_y, s.psnr_rgb, s.ssim_rgb)]
        others = [f"{s.extra[k]:.4f}" if k in s.extra else "-" for k in extras]
        rows.append([s.set, *counts, *paper, *others, *_published_cells(s)])
    return tables.markdown_table(header, rows, [False] + [True] * (len(header) - 1))


def write_results(
    directory: Path,
    summaries: list[SetSummary],
    records: list[dict[str, Any]],
    meta: dict[str, Any],
) -> list[Path]:
    """Write results.json (with per-image scores and, for video sets, per-clip means),
    results.csv and results.md, each atomically (a killed run leaves the earlier file whole);
    return the paths."""
    json_path, csv_path, md_path = (directory / f"results.{ext}" for ext in ("json", "csv", "md"))
    payload: dict[str, Any] = {"meta": meta, "sets": [asdict(s) for s in summaries]}
    clips = clip_means(records)
    if clips:
        payload["clips"] = clips
    payload["images"] = records
    write_text_atomic(json_path, json.dumps(payload, indent=2))
    write_text_atomic(csv_path, csv_text([s.row() for s in summaries]))
    write_text_atomic(md_path, markdown_table(summaries) + "\n")
    return [json_path, csv_path, md_path]


def csv_text(rows: list[dict[str, Any]]) -> str:
    """``rows`` as CSV, one column per key any row has."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
