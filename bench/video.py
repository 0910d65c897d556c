"""Video upscaling speed: frames/s and peak memory of ``src.predict`` on a 480p clip at x4.

Writes one synthetic clip (FRAMES frames of SIZE, default 4 of 854x480: a textured pattern
panning a few pixels a frame, H.264 in .mp4 through :class:`src.io.video.VideoWriter`), then runs
``python -m src.predict model=<name> scale=4 input=<clip>`` once per network, each in a process
of its own: the video networks BasicVSR, BasicVSR++ and EDVR-M (the clip as one clip) against
EDSR frame by frame, at their configs' (the papers') sizes with random weights (speed does not
depend on the weights' values), in predict's defaults (fp32 with autocast off, ``tile=auto``
within ``tile_memory_mb``, ``clip_length``/``clip_overlap``). Per network:

* frames/s: frames over the seconds predict reports for upscaling the file (its ``upscaled ...
  in X s`` line: decode, network, encode; imports and building the network left out);
* process s: the whole process, start-up included;
* peak RSS: the predict process's largest resident set (``os.wait4``'s rusage);
* vs EDSR: frames/s over EDSR's.

* bf16 frames/s and bf16 speed-up: the same run with ``precision=bf16`` (bf16 autocast), where
  the CPU computes bf16 natively (AVX512-BF16 or AMX; ``--bf16 always`` runs it elsewhere too,
  where torch's reference kernels make it slow), over the fp32 frames/s.

Each output is checked (frame count and size) before its row is printed.

    python -m bench.video [--size 854x480] [--frames 4] [--models edsr basicvsr ...]
        [--threads N] [--bf16 auto|always|never] [--predict-args tile=null ...]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from src.io.video import VideoWriter, probe_video
from src.utils.precision import cpu_has_native_bf16
from src.utils.tables import markdown_table

SCALE = 4
MODELS = ("edsr", "basicvsr", "basicvsrpp", "edvr_m")
NAMES = {"edsr": "EDSR", "basicvsr": "BasicVSR", "basicvsrpp": "BasicVSR++", "edvr_m": "EDVR-M"}
BASELINE = "edsr"
PAN_PX = 3  # pixels the pattern moves right per frame
SECONDS_LINE = re.compile(r"^upscaled .* in ([0-9.]+) s:", re.MULTILINE)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Run:
    """One predict process: the seconds it reports for upscaling, its whole wall time, its peak
    resident memory (bytes) and the frames it wrote."""

    upscale_s: float
    process_s: float
    peak_rss: int
    frames: int


def parse_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` as (width, height)."""
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def write_clip(path: Path, width: int, height: int, frames: int, fps: int = 25) -> Path:
    """A ``frames``-frame clip of ``width`` x ``height``: smooth stripes and blobs with noise,
    panning ``PAN_PX`` px right per frame, encoded at ``fps``."""
    rng = np.random.default_rng(0)
    wide = width + PAN_PX * frames
    y, x = np.mgrid[0:height, 0:wide].astype(np.float32)
    phases = rng.uniform(0, 2 * np.pi, 3).astype(np.float32)
    planes = [
        0.5 + 0.25 * np.sin(x / (9 + 4 * c) + phase) * np.cos(y / (13 + 3 * c) - phase)
        for c, phase in enumerate(phases)
    ]
    scene = np.stack(planes, axis=2) + rng.normal(0, 0.04, (height, wide, 3)).astype(np.float32)
    scene = (scene.clip(0, 1) * 255).round().astype(np.uint8)
    with VideoWriter(path, width, height, fps=Fraction(fps)) as writer:
        for index in range(frames):
            start = PAN_PX * index
            writer.write(np.ascontiguousarray(scene[:, start : start + width]))
    return path


def run_predict(model: str, clip: Path, output: Path, extra: list[str], env: dict[str, str]) -> Run:
    """``src.predict`` on ``clip`` with ``model`` at x4 in a process of its own; raises with its
    error output when it fails or its output is not the clip upscaled."""
    command = [sys.executable, "-m", "src.predict", f"model={model}", f"scale={SCALE}"]
    command += [f"input={clip}", f"output={output}", "progress=false", *extra]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process_s = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        printed, errors = out.read(), err.read()
    seconds = SECONDS_LINE.search(printed)
    if process.returncode != 0 or seconds is None:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{errors}")
    frames = check_output(clip, output / clip.name)
    return Run(float(seconds.group(1)), process_s, usage.ru_maxrss * 1024, frames)


def check_output(clip: Path, result: Path) -> int:
    """The frame count of ``result``, after checking it is ``clip`` upscaled x4 frame for frame."""
    source, upscaled = probe_video(clip), probe_video(result)
    expected = (source.frames, source.width * SCALE, source.height * SCALE)
    got = (upscaled.frames, upscaled.width, upscaled.height)
    if got != expected:
        raise RuntimeError(f"{result}: frames, width, height {got}, expected {expected}")
    return upscaled.frames


def frames_per_second(run: Run) -> float:
    return run.frames / run.upscale_s


def table(runs: dict[str, Run], bf16_runs: dict[str, Run]) -> str:
    """The Markdown table of ``runs`` (vs EDSR where EDSR was run), with the bf16 runs' rates
    beside them where there are any."""
    baseline = runs.get(BASELINE)
    rows = []
    for model, run in runs.items():
        rate = frames_per_second(run)
        ratio = f"{rate / frames_per_second(baseline):.2f}x" if baseline else "-"
        row = [
            NAMES.get(model, model),
            f"{rate:.3f}",
            f"{run.upscale_s / run.frames:.1f}",
            f"{run.process_s:.1f}",
            f"{run.peak_rss / 2**20:.0f}",
            ratio,
        ]
        if bf16_runs:
            bf16 = bf16_runs.get(model)
            row += (
                [f"{frames_per_second(bf16):.3f}", f"{frames_per_second(bf16) / rate:.2f}x"]
                if bf16
                else ["-", "-"]
            )
        rows.append(row)
    header = ["network", "frames/s", "s/frame", "process s", "peak RSS MB", "vs EDSR"]
    if bf16_runs:
        header += ["bf16 frames/s", "bf16 speed-up"]
    return markdown_table(header, rows, [False] + [True] * (len(header) - 1))


def bf16_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """This CPU's bf16 instruction flags (empty where it has none or does not say)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return []
    flags = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return [flag for flag in BF16_FLAGS if flags and flag in flags.group(1).split()]


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        found = re.search(r"^model name\s*:\s*(.*)$", cpuinfo.read_text(), re.MULTILINE)
    except OSError:
        found = None
    return found.group(1) if found else "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="854x480", help="LR clip WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=4, help="frames in the clip")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="model configs")
    parser.add_argument("--threads", type=int, help="torch threads in predict (its default)")
    parser.add_argument(
        "--bf16",
        choices=("auto", "always", "never"),
        default="auto",
        help="also run precision=bf16: where the CPU has bf16 instructions (auto), always, never",
    )
    parser.add_argument(
        "--predict-args", nargs="*", default=[], help="more predict overrides (tile=null ...)"
    )
    args = parser.parse_args()
    width, height = parse_size(args.size)
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    threads = args.threads or torch.get_num_threads()
    extra = " ".join(args.predict_args) or "predict's defaults"
    with_bf16 = args.bf16 == "always" or (args.bf16 == "auto" and cpu_has_native_bf16())
    precisions = "fp32 and bf16" if with_bf16 else "fp32"
    print(
        f"src.predict x{SCALE}, {args.frames} frames of {width}x{height} (H.264 .mp4), "
        f"{precisions}, random weights, {extra}; torch {torch.__version__}, {threads} threads, "
        f"{cpu_model()}"
    )
    runs: dict[str, Run] = {}
    bf16_runs: dict[str, Run] = {}
    with tempfile.TemporaryDirectory() as folder:
        clip = write_clip(Path(folder) / "clip.mp4", width, height, args.frames)
        for model in args.models:
            output = Path(folder) / model
            runs[model] = run_predict(model, clip, output, args.predict_args, env)
            if with_bf16:
                bf16_args = [*args.predict_args, "precision=bf16", "overwrite=true"]
                bf16_runs[model] = run_predict(model, clip, output, bf16_args, env)
    print(table(runs, bf16_runs))
    flags = bf16_flags()
    has = f"this CPU has {', '.join(flags)}" if flags else "this CPU has no bf16 instructions"
    ran = "bf16 columns: precision=bf16" if with_bf16 else "no bf16 run (--bf16 always runs it)"
    print(f"bf16: {has}; {ran}")


if __name__ == "__main__":
    main()
