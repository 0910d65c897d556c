"""int8 quantisation, measured: ``make bench-quantize``.

One model (default RLFN x2 with its official weights) run four ways in ONE process on the same
inputs: PyTorch fp32, onnxruntime fp32 (the exported graph) and onnxruntime int8 (that graph
quantised by :mod:`src.models.quantization`, one row per ``--int8`` recipe). Each is an SRModule
scored as ``src.eval`` scores: the shared inference path, then PSNR_Y and SSIM_Y under the papers'
convention (:func:`src.metrics.paper.score_batch`, border = scale) on Set5, Set14 and B100, LR by
the MATLAB-exact bicubic. Latency: the median of ``--repeats`` calls on one LR image (the first
image of the first set), the networks taking turns so that load from other processes falls on
all of them alike, with ``--threads`` for torch and onnxruntime both.

    python -m bench.quantize [--int8 percentile:] [--int8 percentile:conv_1,net,conv_2,upsampler]

An ``--int8`` recipe is ``<calibration method>:<quantize_keep_float entries, comma-separated>``;
the default recipes are RLFN's (:data:`DEFAULT_RECIPES`), about 25 minutes on 2 busy cores.
Calibration: ``--patches`` LR patches of ``--size`` px from ``--calibration`` (default BSD200,
the 200 BSD300 images that are not B100), seed 0.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from src.data.benchmarks import BenchmarkSet
from src.data.datasets import make_pairs, to_tensor
from src.data.degradations import BicubicDegradation
from src.metrics.paper import score_batch
from src.models.exporting import check_onnx_parity, export_onnx
from src.models.loading import load_module, load_onnx_module
from src.models.onnx_runtime import OnnxNetwork
from src.models.quantization import (
    CalibrationMethod,
    CalibrationSettings,
    QuantizeSettings,
    calibration_patches,
    quantize_int8,
)
from src.models.sr_module import SRModule
from src.utils.tables import markdown_table

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
# RLFN's: everything int8, then fp32 for its global skip path (the first convolution, the
# network's own Add, the last convolution and the upsampler), then for some blocks besides.
SKIP_PATH = "conv_1,net,conv_2,upsampler"
DEFAULT_RECIPES = (
    "minmax:",
    "percentile:",
    f"percentile:{SKIP_PATH}",
    f"percentile:{SKIP_PATH},block_*.esa",
    f"percentile:{SKIP_PATH},block_1,block_6",
    f"percentile:{SKIP_PATH},block_1,block_6,block_*.esa",
    f"percentile:{SKIP_PATH},block_1,block_3,block_6",
)

# A pause before each timed call: onnxruntime's threads spin for a while after a run, which
# would take cores from the next network's call.
SETTLE_SECONDS = 0.05
Pair = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Row:
    """One way of running the model: its name, module, mean (PSNR_Y, SSIM_Y) per set, and
    median latency in seconds."""

    name: str
    module: SRModule
    scores: dict[str, tuple[float, float]]
    latency: float = 0.0


def compose_model(model: str, scale: int, pretrained: str) -> DictConfig:
    """``conf/export.yaml`` composed for the model (its inference options: whole images)."""
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose(
            config_name="export",
            overrides=[f"model={model}", f"scale={scale}", f"model.pretrained={pretrained}"],
        )


def benchmark_pairs(root: Path, names: list[str], scale: int) -> dict[str, list[Pair]]:
    """(LR, HR) tensors of each set, made as ``data=benchmark`` makes them."""
    pairs = {}
    for name in names:
        images = BenchmarkSet(name, str(root), scale, allow_download=False).load()
        made = make_pairs(images, name, scale, BicubicDegradation(), seed=0)
        pairs[name] = [
            (to_tensor(p.lr)[None], to_tensor(p.hr)[None]) for p in made if p.lr is not None
        ]
    return pairs


@torch.no_grad()
def score(module: SRModule, pairs: list[Pair]) -> tuple[float, float]:
    """Mean PSNR_Y and SSIM_Y of ``module`` over ``pairs``, as validation scores them."""
    scores = [
        score_batch(module(lr).clamp(0.0, 1.0), hr, border=module.border)[0] for lr, hr in pairs
    ]
    return (
        statistics.fmean(s.psnr_y for s in scores),
        statistics.fmean(s.ssim_y for s in scores),
    )


@torch.no_grad()
def time_in_turns(rows: list[Row], lr: torch.Tensor, repeats: int) -> None:
    """Each row's median latency on ``lr``: one warm-up call each, then ``repeats`` rounds in
    which every row runs once, after a pause."""
    times: dict[str, list[float]] = {row.name: [] for row in rows}
    for row in rows:
        row.module(lr)
    for _ in range(repeats):
        for row in rows:
            time.sleep(SETTLE_SECONDS)
            start = time.perf_counter()
            row.module(lr)
            times[row.name].append(time.perf_counter() - start)
    for row in rows:
        row.latency = statistics.median(times[row.name])


def parse_recipe(text: str) -> QuantizeSettings:
    method, _, kept = text.partition(":")
    if method not in ("minmax", "percentile"):
        raise SystemExit(f"--int8 {text}: the method is minmax or percentile")
    entries = tuple(entry for entry in kept.split(",") if entry)
    return QuantizeSettings(cast(CalibrationMethod, method), entries)


def recipe_name(settings: QuantizeSettings) -> str:
    kept = f", fp32: {' '.join(settings.keep_float)}" if settings.keep_float else ""
    return f"ORT int8 ({settings.method}{kept})"


def print_table(rows: list[Row], sets: list[str], lr: torch.Tensor) -> None:
    base = rows[0]
    header = ["run"]
    for name in sets:
        header += [f"{name} PSNR_Y / SSIM_Y", "Δ dB"]
    size = f"{lr.shape[-1]}x{lr.shape[-2]}"
    header += [f"latency ms ({size} LR)", "speed-up vs torch", "vs ORT fp32"]
    cells = []
    for row in rows:
        line = [row.name]
        for name in sets:
            psnr, ssim = row.scores[name]
            line += [f"{psnr:.3f} / {ssim:.4f}", f"{psnr - base.scores[name][0]:+.3f}"]
        line += [
            f"{row.latency * 1e3:.1f}",
            f"{base.latency / row.latency:.2f}x",
            f"{rows[1].latency / row.latency:.2f}x",
        ]
        cells.append(line)
    print(markdown_table(header, cells, [False] + [True] * (len(header) - 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="rlfn")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument(
        "--pretrained", default=str(SHARED / "weights" / "bytedance_RLFN" / "rlfn_x2.pth")
    )
    parser.add_argument("--calibration", default=str(SHARED / "data" / "train" / "BSD200"))
    parser.add_argument("--benchmarks", default=str(SHARED / "data" / "benchmarks"))
    parser.add_argument("--sets", default="Set5,Set14,B100")
    parser.add_argument("--patches", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--int8", action="append", help="a recipe: method:keep,float,entries")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipes = [parse_recipe(text) for text in args.int8 or DEFAULT_RECIPES]
    cfg = compose_model(args.model, args.scale, args.pretrained)
    module = load_module(cfg).eval()
    sets = args.sets.split(",")
    pairs = benchmark_pairs(Path(args.benchmarks), sets, module.scale)
    calibration = CalibrationSettings(
        Path(args.calibration), module.scale, args.patches, args.size, seed=0
    )
    patches = calibration_patches(calibration)
    print(
        f"torch {torch.__version__}, {args.threads} threads; {type(module.net).__name__} "
        f"x{module.scale}; calibration: {len(patches)} LR patches of {args.size} px from "
        f"{args.calibration}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="srlab-bench-int8-") as scratch:
        fp32_path = Path(scratch) / "fp32.onnx"
        graph = export_onnx(module, fp32_path)
        check_onnx_parity(fp32_path, graph, type(module.net).__name__)
        runs = [("torch fp32", module), ("ORT fp32", onnx_module(fp32_path, cfg, args.threads))]
        for index, settings in enumerate(recipes):
            int8_path = Path(scratch) / f"int8_{index}.onnx"
            quantize_int8(fp32_path, int8_path, patches, settings)
            runs.append((recipe_name(settings), onnx_module(int8_path, cfg, args.threads)))
        rows = []
        for name, run in runs:
            scores = {set_name: score(run, pairs[set_name]) for set_name in sets}
            rows.append(Row(name, run, scores))
            print(f"scored {name}", flush=True)
        lr = pairs[sets[0]][0][0]
        time_in_turns(rows, lr, args.repeats)
    print_table(rows, sets, lr)


def onnx_module(path: Path, cfg: DictConfig, threads: int) -> SRModule:
    return load_onnx_module(OnnxNetwork(path, threads=threads), cfg).eval()


if __name__ == "__main__":
    main()
