"""``python -m src.leaderboard FOLDER``: every training run under a folder, in one table.

    python -m src.leaderboard outputs/train/multiruns/2026-11-24_10-00-00
    make leaderboard DIR=outputs

A run is a folder with ``.hydra/`` and any of ``metrics.csv``, ``run.json`` or ``failed.json``.
Each row: the run's overrides (``.hydra/overrides.yaml``; those every run shares are listed once
above the table), its status, parameters (as the run logged them at its start, in
``hparams.yaml``), steps (``last.ckpt``'s global step, else the last logged one), wall time
(``run.json``, else file times) and, from ``metrics.csv``, the best ``val/psnr_y`` with the
``val/ssim_y`` of the same validation, overall and per validation set. Sorted by best PSNR_Y;
failed and unfinished runs come last. Writes ``leaderboard.md``, ``leaderboard.csv`` and
``leaderboard.png`` (PSNR_Y against parameters) into FOLDER and prints the Markdown.

At the end of every ``--multirun`` the :class:`SweepSummary` Hydra callback (set in
``conf/hydra/default.yaml``) writes the same files into the sweep folder, and for an Optuna study
also ``trials.csv`` and ``trials.md``: one row per trial in job order (state, value, parameters).
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src.models.checkpoint import CheckpointError, read_checkpoint
from src.utils import config as _config  # noqa: F401  (registers the YAML resolvers)
from src.utils.files import atomic_path, write_text_atomic
from src.utils.run_config import PARAMS_KEY
from src.utils.sweep import FAILED_FILE, RUN_FILE, read_json
from src.utils.tables import markdown_table

log = logging.getLogger("srlab.leaderboard")

OUTPUT_NAMES = ("leaderboard.md", "leaderboard.csv", "leaderboard.png")
SET_COLUMN = re.compile(r"^val/(?P<set>.+)/psnr_y$")
COMPLETED = "completed"
# The key a sweep over seeds varies: its runs are also shown as means and spreads.
SEED_KEY = "seed"


@dataclass(frozen=True)
class Score:
    """The best ``psnr_y`` of a run's validations and the ``ssim_y`` of that same validation."""

    psnr_y: float
    ssim_y: float | None


@dataclass
class Run:
    """One row of the leaderboard."""

    folder: Path
    name: str
    status: str
    overrides: list[str]
    params: int | None = None
    steps: int | None = None
    seconds: float | None = None
    started: str | None = None
    job: int | None = None
    objective: float | None = None
    best: Score | None = None
    sets: dict[str, Score] = field(default_factory=dict)
    error: str = ""


# --- reading one run ---------------------------------------------------------------------------
def find_run_folders(root: Path) -> list[Path]:
    """Folders under ``root`` (itself included) that hold a training run."""
    markers = ("metrics.csv", RUN_FILE, FAILED_FILE)
    folders = {p.parent for p in root.rglob(".hydra") if p.is_dir()}
    return sorted(f for f in folders if any((f / m).is_file() for m in markers))


def _number(text: str | None) -> float | None:
    """A finite float from a CSV cell, or None."""
    try:
        value = float(text) if text not in (None, "") else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def best_scores(metrics_csv: Path) -> tuple[Score | None, dict[str, Score], int | None]:
    """Best overall and per-set scores in a Lightning ``metrics.csv``, and its last step."""
    if not metrics_csv.is_file():
        return None, {}, None
    with metrics_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    prefixes = {"": "val"}
    for column in rows[0] if rows else []:
        match = SET_COLUMN.match(column)
        if match:
            prefixes[match["set"]] = f"val/{match['set']}"
    found: dict[str, Score] = {}
    for name, prefix in prefixes.items():
        for row in rows:
            psnr = _number(row.get(f"{prefix}/psnr_y"))
            if psnr is not None and (name not in found or psnr > found[name].psnr_y):
                found[name] = Score(psnr, _number(row.get(f"{prefix}/ssim_y")))
    steps = [int(s) for row in rows if (s := _number(row.get("step"))) is not None]
    last_step = max(steps) + 1 if steps else None
    return found.pop("", None), found, last_step


def checkpoint_steps(folder: Path) -> int | None:
    """The global step stored in ``checkpoints/last.ckpt`` (memory-mapped, weights only)."""
    path = folder / "checkpoints" / "last.ckpt"
    if not path.is_file():
        return None
    try:
        return int(read_checkpoint(path, mmap=True)["global_step"])
    except (CheckpointError, KeyError, TypeError, ValueError):  # fall back to the logged steps
        return None


def logged_parameters(folder: Path) -> int | None:
    """Trainable parameters the run logged at its start (``hparams.yaml`` of the CSV logger)."""
    path = folder / "hparams.yaml"
    try:
        logged = OmegaConf.load(path) if path.is_file() else None
    except Exception:  # an unreadable file: no figure
        return None
    value = logged.get(PARAMS_KEY) if isinstance(logged, DictConfig) else None
    return int(value) if isinstance(value, int) else None


def read_overrides(folder: Path) -> list[str]:
    """The run's command-line overrides, from ``.hydra/overrides.yaml``."""
    path = folder / ".hydra" / "overrides.yaml"
    overrides: Any = OmegaConf.load(path) if path.is_file() else []
    return [str(o) for o in overrides]


def file_time_span(folder: Path) -> float | None:
    """Seconds between the run's saved config and its newest file (runs without run.json)."""
    start = folder / ".hydra" / "config.yaml"
    if not start.is_file():
        return None
    files = [p for p in (*folder.iterdir(), *(folder / "checkpoints").glob("*")) if p.is_file()]
    return max(p.stat().st_mtime for p in files) - start.stat().st_mtime if files else None


def run_status(record: dict[str, Any] | None, failure: dict[str, Any] | None, best: Any) -> str:
    """completed, failed, interrupted or unfinished (still running, or killed)."""
    if failure is not None:
        return "failed"
    if record is None:
        return COMPLETED if best is not None else "unfinished"
    status = str(record.get("status", ""))
    return {"running": "unfinished"}.get(status, status or "unfinished")


def read_run(folder: Path, root: Path) -> Run:
    """Everything the leaderboard shows about the run in ``folder``."""
    record = read_json(folder / RUN_FILE)
    failure = read_json(folder / FAILED_FILE)
    best, sets, logged_steps = best_scores(folder / "metrics.csv")
    status = run_status(record, failure, best)
    record = record or {}
    steps = checkpoint_steps(folder)
    name = folder.relative_to(root).as_posix() if folder != root else folder.name
    return Run(
        folder=folder,
        name=name,
        status=status,
        overrides=read_overrides(folder),
        params=logged_parameters(folder),
        steps=steps if steps is not None else logged_steps,
        seconds=record.get("seconds", file_time_span(folder)),
        started=record.get("started"),
        job=record.get("job_num"),
        objective=record.get("objective"),
        best=best,
        sets=sets,
        error=f"{failure.get('error')}: {failure.get('message')}" if failure else "",
    )


def collect_runs(root: Path) -> list[Run]:
    """Every run under ``root``, best PSNR_Y first; failed and unfinished runs last."""
    runs = [read_run(folder, root) for folder in find_run_folders(root)]

    def rank(run: Run) -> tuple[bool, float, str]:
        scored = run.status == COMPLETED and run.best is not None
        return (not scored, -run.best.psnr_y if run.best else 0.0, run.name)

    return sorted(runs, key=rank)


# --- tables ------------------------------------------------------------------------------------
def split_overrides(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """Overrides every run shares, and for each run the rest."""
    if len(runs) < 2:
        return [], [run.overrides for run in runs]
    common = [o for o in runs[0].overrides if all(o in run.overrides for run in runs[1:])]
    return common, [[o for o in run.overrides if o not in common] for run in runs]


def format_params(count: int | None) -> str:
    if count is None:
        return ""
    if count >= 1_000_000:
        return f"{count / 1e6:.2f}M"
    return f"{count / 1e3:.1f}K" if count >= 1_000 else str(count)


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m {rest:02d}s" if minutes else f"{seconds:.1f} s"


def _cell(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def set_names(runs: list[Run]) -> list[str]:
    return sorted({name for run in runs for name in run.sets})


def markdown(runs: list[Run], root: Path) -> str:
    """The leaderboard as a Markdown table, with a line above it for the shared overrides."""
    common, own = split_overrides(runs)
    sets = set_names(runs) if len(set_names(runs)) > 1 else []
    header = ["#", "run", "overrides", "status", "params", "steps", "time", "PSNR_Y", "SSIM_Y"]
    header += [f"{s} {m}" for s in sets for m in ("PSNR_Y", "SSIM_Y")] + ["note"]
    lines = [
        f"Leaderboard of `{root}`: {len(runs)} runs, "
        f"{sum(r.status == COMPLETED for r in runs)} completed; best validation PSNR_Y (dB) "
        "and the SSIM_Y of that validation, on Y (BT.601), `scale` border pixels cropped.",
        "",
    ]
    if common:
        lines += ["Shared overrides: " + " ".join(f"`{o}`" for o in common), ""]
    rows = []
    for index, (run, overrides) in enumerate(zip(runs, own, strict=True), start=1):
        best = run.best
        cells = [
            str(index),
            run.name,
            " ".join(overrides),
            run.status,
            format_params(run.params),
            "" if run.steps is None else str(run.steps),
            format_seconds(run.seconds),
            _cell(best.psnr_y if best else None, 4),
            _cell(best.ssim_y if best else None, 4),
        ]
        for name in sets:
            score = run.sets.get(name)
            cells += [_cell(score.psnr_y if score else None, 4)]
            cells += [_cell(score.ssim_y if score else None, 4)]
        cells.append(" ".join(run.error.split())[:100])
        rows.append(cells)
    return "\n".join([*lines, markdown_table(header, rows)]) + "\n"


def csv_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """One flat dict per run, every set's scores included."""
    rows = []
    for rank, run in enumerate(runs, start=1):
        row: dict[str, Any] = {
            "rank": rank,
            "run": run.name,
            "status": run.status,
            "overrides": " ".join(run.overrides),
            "params": run.params,
            "steps": run.steps,
            "seconds": run.seconds,
            "started": run.started,
            "job": run.job,
            "psnr_y": run.best.psnr_y if run.best else None,
            "ssim_y": run.best.ssim_y if run.best else None,
        }
        for name in set_names(runs):
            score = run.sets.get(name)
            row[f"{name}/psnr_y"] = score.psnr_y if score else None
            row[f"{name}/ssim_y"] = score.ssim_y if score else None
        rows.append({**row, "error": run.error, "folder": str(run.folder)})
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """``rows`` to ``path`` as CSV (atomically), the columns those of the first row."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["run"])
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def short_label(run: Run, overrides: list[str]) -> str:
    """``<run> lr=1e-4 scale=2``: the run's own overrides with only the last key part."""
    parts = [o.split("=", 1) for o in overrides]
    return " ".join([run.name, *(f"{p[0].split('.')[-1]}={p[-1]}" for p in parts)])


def plot(runs: list[Run], path: Path, title: str = "") -> bool:
    """PSNR_Y against parameters for the completed runs; False when there is nothing to plot."""
    _, own = split_overrides(runs)
    points = [
        (run.params, run.best.psnr_y, short_label(run, overrides))
        for run, overrides in zip(runs, own, strict=True)
        if run.status == COMPLETED and run.best is not None and run.params
    ]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    xs = [point[0] for point in points]
    ys = [point[1] for point in points]
    axes.scatter(xs, ys, s=28, color="tab:blue", zorder=3)
    axes.scatter(xs[0], ys[0], s=90, marker="*", color="tab:red", zorder=4, label="best")
    for x, y, label in points:
        text = axes.annotate(label, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        text.set_in_layout(False)  # long labels must not shrink the axes
    axes.set_xscale("log")
    # Room on the right for the labels of the largest networks.
    axes.set_xlim(min(xs) / 1.5, max(xs) * 4)
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("trainable parameters (log scale)")
    axes.set_ylabel("best validation PSNR_Y (dB)")
    count = f"{len(points)} completed run" + ("s" if len(points) != 1 else "")
    axes.set_title(f"{title}: {count}" if title else count, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary)
    plt.close(figure)
    return True


def write_leaderboard(root: Path, runs: list[Run], with_plot: bool = True) -> str:
    """Write ``leaderboard.{md,csv,png}`` into ``root``; return the Markdown."""
    text = markdown(runs, root)
    write_text_atomic(root / "leaderboard.md", text)
    write_csv(csv_rows(runs), root / "leaderboard.csv")
    image = root / "leaderboard.png"
    if not (with_plot and plot(runs, image, title=root.name)):
        image.unlink(missing_ok=True)  # no stale plot from an earlier call
    return text


# --- runs that differ only in some keys (seeds), as one row each --------------------------------
@dataclass
class Group:
    """Completed runs whose overrides are equal once the keys averaged over are left out."""

    overrides: list[str]
    runs: list[Run]


def without_keys(overrides: list[str], keys: list[str]) -> list[str]:
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in keys]


def group_runs(runs: list[Run], keys: list[str]) -> list[Group]:
    """The completed, scored runs grouped by their overrides less ``keys``, best mean first."""
    groups: dict[tuple[str, ...], Group] = {}
    for run in runs:
        if run.status != COMPLETED or run.best is None:
            continue
        own = without_keys(run.overrides, keys)
        groups.setdefault(tuple(sorted(own)), Group(own, [])).runs.append(run)
    for group in groups.values():  # each group's runs in the order of their values of ``keys``
        group.runs.sort(key=lambda r: sorted(set(r.overrides) - set(group.overrides)))
    return sorted(groups.values(), key=lambda g: -statistics.fmean(psnr_values(g.runs, None)))


def psnr_values(runs: list[Run], set_name: str | None) -> list[float]:
    """Each run's best PSNR_Y, overall (``set_name`` None) or on one set (missing: skipped)."""
    scores = [run.best if set_name is None else run.sets.get(set_name) for run in runs]
    return [score.psnr_y for score in scores if score is not None]


def mean_and_spread(values: list[float]) -> str:
    """``mean (sd s)``: the sample standard deviation (n - 1), none for a single value."""
    if not values:
        return ""
    mean = f"{statistics.fmean(values):.4f}"
    return f"{mean} (sd {statistics.stdev(values):.4f})" if len(values) > 1 else mean


def grouped_markdown(groups: list[Group], keys: list[str], root: Path) -> str:
    """One row per group: its overrides, the runs' values of ``keys``, and per set the mean
    and spread of the best PSNR_Y, then every run's value."""
    common, own = split_overrides([Run(Path(), "", "", g.overrides) for g in groups])
    sets = set_names([run for group in groups for run in group.runs]) or [""]
    header = ["overrides", "runs", *keys]
    header += [f"{name or 'all'} PSNR_Y mean (sd)" for name in sets]
    header += [f"{name or 'all'} PSNR_Y per run" for name in sets]
    rows = []
    for group, overrides in zip(groups, own, strict=True):
        values = {
            k: [dict(o.split("=", 1) for o in r.overrides).get(k, "") for r in group.runs]
            for k in keys
        }
        cells = [" ".join(overrides) or "(none)", str(len(group.runs))]
        cells += [", ".join(values[k]) for k in keys]
        cells += [mean_and_spread(psnr_values(group.runs, name or None)) for name in sets]
        cells += [
            ", ".join(f"{v:.4f}" for v in psnr_values(group.runs, name or None)) for name in sets
        ]
        rows.append(cells)
    title = (
        f"Runs of `{root}` grouped over {', '.join(f'`{k}`' for k in keys)}: {len(groups)} "
        f"group{'s' if len(groups) != 1 else ''} of completed runs; best validation PSNR_Y "
        "(dB), mean and sample standard deviation (n - 1), then each run's value in the order "
        "of the column before."
    )
    shared = ["Shared overrides: " + " ".join(f"`{o}`" for o in common), ""] if common else []
    return "\n".join([title, "", *shared, markdown_table(header, rows)]) + "\n"


def grouped_name(keys: list[str]) -> str:
    return "leaderboard_over_" + "_".join(k.replace(".", "-") for k in keys)


def write_grouped(root: Path, runs: list[Run], keys: list[str]) -> str | None:
    """``leaderboard_over_<keys>.md``: the runs grouped over ``keys``; None (nothing written)
    when no completed run has a score."""
    groups = group_runs(runs, keys)
    if not groups:
        return None
    text = grouped_markdown(groups, keys, root)
    write_text_atomic(root / f"{grouped_name(keys)}.md", text)
    return text


def swept_keys(runs: list[Run]) -> set[str]:
    """The keys whose values differ between the runs."""
    _, own = split_overrides(runs)
    return {o.split("=", 1)[0] for overrides in own for o in overrides}


# --- Optuna trials -----------------------------------------------------------------------------
def trial_rows(runs: list[Run], keys: list[str]) -> list[dict[str, Any]]:
    """One row per job in job order: Optuna's state, the objective and each parameter."""
    rows = []
    for run in sorted(runs, key=lambda r: (r.job is None, r.job or 0, r.name)):
        values = dict(o.split("=", 1) for o in run.overrides if "=" in o)
        completed = run.status == COMPLETED and run.objective is not None
        row: dict[str, Any] = {
            "job": run.job,
            "state": "COMPLETE" if completed else "FAIL",
            "value": run.objective if completed else None,
        }
        row.update({key: values.get(key, "") for key in keys})
        rows.append({**row, "seconds": run.seconds, "run": run.name, "error": run.error})
    return rows


def _text(value: object) -> str:
    """A table cell: blank for None, floats to 6 significant digits."""
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def trials_markdown(rows: list[dict[str, Any]]) -> str:
    header = [k for k in rows[0] if k != "error"] if rows else []
    return markdown_table(header, [[_text(row[k]) for k in header] for row in rows]) + "\n"


def write_trials(root: Path, runs: list[Run], search_keys: list[str]) -> None:
    """``trials.csv`` and ``trials.md``: the study's trials as this sweep ran them."""
    _, own = split_overrides(runs)
    varying = [o.split("=", 1)[0] for overrides in own for o in overrides]
    keys = list(dict.fromkeys([*search_keys, *varying]))
    rows = trial_rows(runs, keys)
    write_csv(rows, root / "trials.csv")
    write_text_atomic(root / "trials.md", trials_markdown(rows))


class SweepSummary(Callback):
    """Hydra callback: at the end of a ``--multirun``, the leaderboard in the sweep folder."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(str(config.hydra.sweep.dir))
        try:
            runs = collect_runs(root)
            if not runs:
                return
            print(write_leaderboard(root, runs), flush=True)
            if SEED_KEY in swept_keys(runs):  # several seeds: their means and spreads too
                grouped = write_grouped(root, runs, [SEED_KEY])
                print(grouped or "", flush=True)
            sweeper = OmegaConf.select(config, "hydra.sweeper", default=None) or {}
            if "optuna" in str(sweeper.get("_target_", "")):
                write_trials(root, runs, [str(k) for k in sweeper.get("params") or {}])
            log.info("leaderboard written to %s", root / "leaderboard.md")
        except Exception:
            log.exception("could not write the sweep's leaderboard (the runs are unaffected)")


# --- command line ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m src.leaderboard",
        description="One table of every training run under a sweep or outputs folder.",
    )
    parser.add_argument("folder", type=Path, help="a sweep folder, a run folder or outputs/")
    parser.add_argument("--no-plot", action="store_true", help="skip leaderboard.png")
    parser.add_argument(
        "--over",
        action="append",
        default=[],
        metavar="KEY",
        help="also group runs that differ only in KEY (repeatable; e.g. --over seed): each "
        "group's mean and spread, into leaderboard_over_<KEY>.md",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root: Path = args.folder
    if not root.is_dir():
        print(f"error: {root} is not a folder", file=sys.stderr)
        return 2
    runs = collect_runs(root)
    if not runs:
        print(
            f"error: no training runs under {root} (no .hydra/ with metrics.csv)", file=sys.stderr
        )
        return 2
    print(write_leaderboard(root, runs, with_plot=not args.no_plot))
    names = list(OUTPUT_NAMES)
    if args.over:
        grouped = write_grouped(root, runs, args.over)
        if grouped is None:
            print(
                f"error: no completed run under {root} to group over {args.over}", file=sys.stderr
            )
            return 2
        print(grouped)
        names.append(f"{grouped_name(args.over)}.md")
    written = [str(root / name) for name in names if (root / name).is_file()]
    print("written: " + ", ".join(written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
