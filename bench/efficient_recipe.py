"""The efficient-SR path start to finish, each step measured (``make efficient-recipe``).

    python -m bench.efficient_recipe [--data-dir ../shared/data] [--out DIR]
        [--teacher ../shared/weights/bytedance_RLFN/rlfn_x2.pth] [--steps 600]
        [--prune-ratio 0.25] [--finetune-steps 300]

Runs SR Lab's own commands, each in a process of its own, on ECBSR M4C16 x2 (RGB, so that its
ONNX graph traces; ``experiment=ecbsr_x2_t91``) trained on T91:

1. ``src.train``: the student alone;
2. ``src.train`` with ``model.teacher``: the same student, seed and steps, distilled from the
   official RLFN x2;
3. the distilled student fused (its re-parameterisable blocks folded: what ``src.eval``,
   ``src.predict`` and ``src.export`` run of any fusable checkpoint);
4. ``src.prune fuse=true ratio=R trainer.max_steps=0``: pruned, not fine-tuned;
5. ``src.prune`` the same with ``trainer.max_steps=F``: pruned and fine-tuned;
6. ``src.export format=onnx quantize=int8 calibration=<T91>``: int8 (ONNX Runtime).

Each row: PSNR_Y on Set5, Set14 and B100 from ``src.eval`` (its ``results.json``), parameters
and FLOPs of what runs (fused; at a 256x256 LR input, the efficiency protocol's counter), and
the CPU latency of one 256x256 LR input (mean of ``--runs`` after 3 warm-ups, the threads this
process has): torch fp32 for rows 1-5, ONNX Runtime for row 6, with ORT fp32 of row 5's network
beside it in the notes, so the int8 speed-up is measured against the same runtime.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from src.models.checkpoint import module_from_checkpoint
from src.models.efficiency import count_macs, mean_ms
from src.models.loading import load_module
from src.utils.complexity import count_parameters
from src.utils.tables import markdown_table

SETS = ("Set5", "Set14", "B100")
SIZE = 256
STUDENT = ["experiment=ecbsr_x2_t91", "model.net.colors=3", "logger=csv"]


@dataclass(frozen=True)
class Row:
    step: str
    psnr: dict[str, float]
    params: int | None
    gmacs: float | None
    latency_ms: float
    engine: str


def run(command: list[str], log: Path) -> None:
    """``python -m <command>``, its output into ``log``; stops the recipe when it fails."""
    print(f"$ python -m {' '.join(command)}", flush=True)
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-m", *command], stdout=out, stderr=out)
    if done.returncode != 0:
        raise SystemExit(f"error: step failed ({done.returncode}); its output: {log}")
    print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)


def last_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


def scores(source: str, data_dir: str, out: Path) -> dict[str, float]:
    """PSNR_Y per set from ``src.eval`` of a checkpoint or an ONNX file."""
    command = ["src.eval", source, "data=benchmark", f"paths.data_dir={data_dir}"]
    command += [f"data.sets=[{','.join(SETS)}]", f"hydra.run.dir={out}"]
    run(command, out.with_suffix(".log"))
    results = json.loads((out / "results.json").read_text())
    return {row["set"]: float(row["psnr_y"]) for row in results["sets"]}


def torch_costs(checkpoint: Path, runs: int, fused: bool = True) -> tuple[int, float, float]:
    """Parameters, GMACs and fp32 latency (ms) of the network in ``checkpoint``: as ``src.eval``
    runs it (fused where it can be), or as it trained (``fused=False``)."""
    if fused:
        module = load_module(OmegaConf.create({"ckpt_path": str(checkpoint)}))
    else:
        module = module_from_checkpoint(checkpoint)
    module.eval()
    net = module.inference_net
    x = torch.rand(1, 3, SIZE, SIZE)

    def call() -> object:
        with torch.no_grad():
            return module.run_net(x, net)

    latency = mean_ms(call, runs, x.device)
    return count_parameters(net), count_macs(net, SIZE, "cpu"), latency


def onnx_latency(path: Path, runs: int) -> float:
    """Mean ms of one 256x256 LR input through ONNX Runtime (this process's threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).random((1, 3, SIZE, SIZE), dtype=np.float32)
    for _ in range(3):
        session.run(None, {name: x})
    started = time.perf_counter()
    for _ in range(runs):
        session.run(None, {name: x})
    return (time.perf_counter() - started) / runs * 1e3


def table(rows: list[Row]) -> str:
    header = ["step", *SETS, "params", "GMACs (256x256)", "latency ms", "runtime"]
    body = [
        [
            row.step,
            *(f"{row.psnr[s]:.2f}" for s in SETS),
            f"{row.params:,}" if row.params is not None else "-",
            f"{row.gmacs:.2f}" if row.gmacs is not None else "-",
            f"{row.latency_ms:.1f}",
            row.engine,
        ]
        for row in rows
    ]
    return markdown_table(header, body, [False, *[True] * 6, False])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--teacher", default="../shared/weights/bytedance_RLFN/rlfn_x2.pth")
    parser.add_argument("--out", type=Path, default=Path("outputs/efficient_recipe"))
    parser.add_argument("--steps", type=int, default=600, help="training steps of rows 1 and 2")
    parser.add_argument("--prune-ratio", type=float, default=0.25, help="parameters removed")
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--runs", type=int, default=20, help="timed passes per latency")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    common = [f"paths.data_dir={args.data_dir}", f"seed={args.seed}"]
    steps = [f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps}"]
    teacher = ["model.teacher.model=rlfn", f"model.teacher.pretrained={args.teacher}"]
    run(
        ["src.train", *STUDENT, *common, *steps, f"hydra.run.dir={out}/1_student"],
        out / "1_student.log",
    )
    run(
        ["src.train", *STUDENT, *common, *steps, *teacher, f"hydra.run.dir={out}/2_distilled"],
        out / "2_distilled.log",
    )
    distilled = last_checkpoint(out / "2_distilled")
    prune = ["src.prune", f"ckpt_path={distilled}", "fuse=true", f"ratio={args.prune_ratio}"]
    prune += ["target=params", "data=t91", "data.lr_patch_size=24", "data.sets=[Set5]", *common]
    run([*prune, "trainer.max_steps=0", f"hydra.run.dir={out}/4_pruned"], out / "4_pruned.log")
    finetune = [f"trainer.max_steps={args.finetune_steps}"]
    finetune += [f"trainer.val_check_interval={args.finetune_steps}"]
    run([*prune, *finetune, f"hydra.run.dir={out}/5_finetuned"], out / "5_finetuned.log")
    finetuned = last_checkpoint(out / "5_finetuned")
    int8 = out / "6_int8.onnx"
    fp32 = out / "5_fp32.onnx"
    export = ["src.export", f"ckpt_path={finetuned}", "format=onnx", "overwrite=true"]
    run([*export, f"output={fp32}", f"hydra.run.dir={out}/export_fp32"], out / "export_fp32.log")
    calibration = f"calibration={Path(args.data_dir).resolve()}/train/T91"
    run(
        [*export, "quantize=int8", calibration, f"output={int8}", f"hydra.run.dir={out}/export"],
        out / "export_int8.log",
    )

    rows: list[Row] = []
    # (step, checkpoint, fused): row 3 is row 2's checkpoint as every command runs it.
    measured = [
        ("1. student alone (fused)", last_checkpoint(out / "1_student"), True),
        ("2. distilled from RLFN x2 (training form)", distilled, False),
        ("3. fused", distilled, True),
        ("4. pruned", last_checkpoint(out / "4_pruned"), True),
        ("5. pruned + fine-tuned", finetuned, True),
    ]
    evaluated: dict[Path, dict[str, float]] = {}
    for step, checkpoint, fused in measured:
        if checkpoint not in evaluated:  # src.eval scores the fused form (equal to 1e-5)
            folder = out / f"eval_{checkpoint.parts[-3]}"
            evaluated[checkpoint] = scores(f"ckpt_path={checkpoint}", args.data_dir, folder)
        params, gmacs, latency = torch_costs(checkpoint, args.runs, fused)
        rows.append(Row(step, evaluated[checkpoint], params, gmacs, latency, "torch fp32"))
    psnr = scores(f"onnx_path={int8}", args.data_dir, out / "eval_int8")
    latency = onnx_latency(int8, args.runs)
    rows.append(Row("6. int8", psnr, rows[-1].params, rows[-1].gmacs, latency, "ORT int8"))
    print(table(rows))
    print(
        f"ORT fp32 of row 5's network: {onnx_latency(fp32, args.runs):.1f} ms; "
        f"{torch.get_num_threads()} threads; outputs under {out}"
    )


if __name__ == "__main__":
    main()
