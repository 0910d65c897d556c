"""The efficiency protocol of the NTIRE efficient SR challenges, for any ``conf/model`` network.

    python -m src.models efficiency model=rlfn scale=4 [size=256] [runs=10] [device=cpu]

Reports, for one ``size`` x ``size`` LR input:

* parameters (trainable; a network with re-parameterisable blocks, such as SPAN or ECBSR, also
  the size of its fused inference form: parameters and persistent buffers,
  :func:`src.archs.reparam.fused_parameter_count`);
* FLOPs as the challenge counts them, i.e. fvcore's multiply-accumulates of convolutions,
  matrix multiplications and attention (``torch.utils.flop_counter`` counts each as two
  operations; its figure halved) and its operations of bilinear and nearest upsampling, in G;
* activations: the elements of every convolution's output, as the challenge's
  ``get_model_activation`` counts them, in M;
* peak memory of one forward pass: on CUDA ``max_memory_allocated``; on a CPU the rise of the
  process's peak resident memory over the built model (Linux, its peak reset first);
* the mean runtime of ``runs`` forward passes after 3 warm-up passes, in fp32 and under bf16
  autocast, with the thread count. ``bf16=auto`` (the default) skips bf16 on a CPU without
  bf16 instructions (AVX512-BF16 or AMX), where torch runs bf16 convolutions with its slow
  reference kernel (RLFN x4 on a 256x256 input: 375 s for one pass on an AVX2 CPU, against 2 s
  in fp32); ``bf16=true`` measures it anyway.

FLOPs, activations, peak memory and runtime are measured on the network that inference runs:
for a network with re-parameterisable blocks, its fused form
(:func:`src.archs.reparam.fuse_network`, what ``src.eval``, ``src.predict`` and ``src.export``
run), never the training-time branches.

Memory and speed belong to benchmarks, never to timed tests.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from src.archs.base import traits_of
from src.archs.reparam import fuse_network, fused_parameter_count, is_fusable
from src.models.zoo import build_net
from src.utils.complexity import count_parameters
from src.utils.errors import UserError
from src.utils.precision import cpu_has_native_bf16
from src.utils.schema import ConfigValueError, EfficiencySettings, check_arguments

WARMUP = 3
CLEAR_REFS = Path("/proc/self/clear_refs")
DEFAULTS: dict[str, Any] = {
    "model": None,
    "scale": 4,
    "size": 256,
    "runs": 10,
    "device": "cpu",
    "bf16": "auto",
    "challenge": None,
    "val_set": None,
    "pretrained": None,
    "ckpt_path": None,
}


@dataclass(frozen=True)
class Efficiency:
    model: str
    network: str
    params: int
    folded_params: int | None
    gmacs: float
    activations_m: float
    conv_layers: int
    peak_memory_mb: float | None
    fp32_ms: float
    bf16_ms: float | None
    bf16_note: str = ""


def bf16_wanted(
    setting: str, device: torch.device, net: nn.Module | None = None
) -> tuple[bool, str]:
    """Whether to time bf16, and why not when not (``net``'s declaration may rule it out)."""
    if setting not in ("auto", "true", "false"):
        raise UserError(f"bf16={setting}: choose auto, true or false")
    if setting != "auto":
        return setting == "true", "" if setting == "true" else "not asked for"
    traits = traits_of(net)
    if traits is not None and not traits.bf16_safe:
        return False, f"skipped: {type(net).__name__} declares bf16 unsafe; bf16=true times it"
    if device.type == "cpu" and not cpu_has_native_bf16():
        return False, "skipped: no bf16 instructions on this CPU; bf16=true times it anyway"
    return True, ""


def folded_parameters(net: nn.Module) -> int | None:
    """The size of the fused inference form of a network with re-parameterisable blocks
    (:func:`src.archs.reparam.fused_parameter_count`); None for the others."""
    return fused_parameter_count(net) if is_fusable(net) else None


def inference_form(net: nn.Module) -> nn.Module:
    """What inference runs: the fused copy of a network with re-parameterisable blocks."""
    return fuse_network(net).eval() if is_fusable(net) else net


def per_output_element(operations: int) -> Callable[..., int]:
    """A ``FlopCounterMode`` formula: ``operations`` per output element, doubled (the counter
    counts a multiply-accumulate as two and its total is halved here)."""

    def formula(*args: object, out_shape: tuple[int, ...], **kwargs: object) -> int:
        return 2 * operations * math.prod(out_shape)

    return formula


# fvcore, the challenge's counter, also counts upsampling: 4 operations per output element of a
# bilinear one, 1 of a nearest one (its _DEFAULT_SUPPORTED_OPS); RLFN's and EFDN's attention
# upsamples bilinearly (0.01 G of EFDN's 16.70 G at 256x256).
FVCORE_UPSAMPLING = {
    torch.ops.aten.upsample_bilinear2d: per_output_element(4),
    torch.ops.aten.upsample_nearest2d: per_output_element(1),
}


def count_macs(net: nn.Module, size: int, device: str, channels: int = 3) -> float:
    counter = FlopCounterMode(display=False, custom_mapping=FVCORE_UPSAMPLING)
    with counter, torch.no_grad():
        net(torch.zeros(1, channels, size, size, device=device))
    return counter.get_total_flops() / 2 / 1e9


class ConvolutionOutputs(TorchDispatchMode):
    """Counts the outputs of every convolution run, whether by a module or functionally (SPAN's
    folded kernels go through ``F.conv2d``)."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0
        self.layers = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.convolution.default:
            self.elements += output.numel()
            self.layers += 1
        return output


def count_activations(net: nn.Module, size: int, device: str) -> tuple[float, int]:
    """(M elements of convolution outputs, number of convolutions run)."""
    counter = ConvolutionOutputs()
    with counter, torch.no_grad():
        net(torch.zeros(1, 3, size, size, device=device))
    return counter.elements / 1e6, counter.layers


def resident_kb(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` of this process from /proc, in kB (0 where unavailable)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return 0
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def peak_memory_mb(run: Callable[[], object], device: torch.device) -> float | None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run()
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    try:
        CLEAR_REFS.write_text("5")  # resets VmHWM to the current resident size
    except OSError:
        return None
    base = resident_kb("VmRSS")
    run()
    return (resident_kb("VmHWM") - base) / 1024


def mean_ms(run: Callable[[], object], runs: int, device: torch.device) -> float:
    for _ in range(WARMUP):
        run()
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.fmean(times) * 1e3


def forward(
    net: nn.Module, x: torch.Tensor, precision: AbstractContextManager[object]
) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad(), precision:
            return net(x)

    return run


def measure(
    name: str, scale: int, size: int, runs: int, device_name: str, bf16_setting: str = "auto"
) -> Efficiency:
    device = torch.device(device_name)
    meta = inference_form(build_net(name, scale, device="meta"))
    time_bf16, bf16_note = bf16_wanted(bf16_setting, device, meta)
    gmacs = count_macs(meta, size, "meta")
    activations, layers = count_activations(meta, size, "meta")
    net = build_net(name, scale, device=device_name)
    runs_net = inference_form(net)
    x = torch.rand(1, 3, size, size, device=device)
    fp32 = forward(runs_net, x, nullcontext())
    bf16 = forward(runs_net, x, torch.autocast(device.type, dtype=torch.bfloat16))
    peak = peak_memory_mb(fp32, device)
    bf16_ms: float | None = None
    if time_bf16:
        try:
            bf16_ms = mean_ms(bf16, runs, device)
        except RuntimeError as error:  # an operator without a bf16 kernel on this device
            bf16_note = f"failed: {str(error).splitlines()[0]}"
    return Efficiency(
        name,
        type(net).__name__,
        count_parameters(net),
        folded_parameters(net),
        gmacs,
        activations,
        layers,
        peak,
        mean_ms(fp32, runs, device),
        bf16_ms,
        bf16_note,
    )


def report(result: Efficiency, scale: int, size: int, runs: int, device: str) -> str:
    params = f"{result.params:,}"
    if result.folded_params is not None:
        params += f" ({result.folded_params:,} folded for inference)"
    peak = "-" if result.peak_memory_mb is None else f"{result.peak_memory_mb:.0f} MB"
    bf16 = f"({result.bf16_note})" if result.bf16_ms is None else f"{result.bf16_ms:.1f} ms"
    return "\n".join(
        [
            f"{result.model} ({result.network}) x{scale}, LR {size}x{size}, {device}, "
            f"{torch.get_num_threads()} threads",
            f"  parameters   {params}",
            f"  FLOPs        {result.gmacs:.2f} G (multiply-accumulates, as fvcore counts)",
            f"  activations  {result.activations_m:.2f} M ({result.conv_layers} convolutions)",
            f"  peak memory  {peak} (one fp32 forward pass)",
            f"  runtime      fp32 {result.fp32_ms:.1f} ms, bf16 {bf16} (mean of {runs} runs)",
        ]
    )


def parse(argv: list[str]) -> dict[str, Any]:
    """``key=value`` arguments (YAML values, as Hydra reads them) over :data:`DEFAULTS`, checked
    by the schema (:class:`src.utils.schema.EfficiencySettings`)."""
    settings: dict[str, Any] = dict(DEFAULTS)
    for argument in argv:
        key, sep, value = argument.partition("=")
        if not sep:
            raise ConfigValueError(f"efficiency: {argument!r} is not key=value")
        settings[key] = yaml.safe_load(value) if value else None
    check_arguments(settings, EfficiencySettings, "efficiency")
    return settings


def check_model(settings: dict[str, Any]) -> str:
    """The ``model=`` of parsed settings, known to the zoo."""
    from src.models.zoo import model_names

    name = str(settings["model"])
    if name not in model_names():
        raise UserError(f"model={name}: no such config; known: {', '.join(model_names())}")
    return name


def run(settings: dict[str, Any]) -> Efficiency:
    """Measure the network of parsed ``settings`` and print its report."""
    name = check_model(settings)
    numbers = {key: int(settings[key]) for key in ("scale", "size", "runs")}
    bf16 = settings["bf16"]
    settings["bf16"] = bf16 if bf16 == "auto" else "true" if bf16 else "false"
    print(f"measuring {name} ...", file=sys.stderr, flush=True)
    scale, size, runs = numbers["scale"], numbers["size"], numbers["runs"]
    result = measure(name, scale, size, runs, settings["device"], settings["bf16"])
    print(report(result, numbers["scale"], numbers["size"], numbers["runs"], settings["device"]))
    return result


def main(argv: list[str]) -> None:
    """The report alone; ``python -m src.models efficiency`` runs
    :func:`src.models.challenges.main`, which adds a challenge's score (``challenge=``)."""
    settings = parse(argv)
    if settings["challenge"] is not None:
        raise UserError("challenge=: scored by src.models.challenges.main")
    run(settings)
