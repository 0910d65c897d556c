"""``trainer.precision=auto``: bf16 autocast where the device computes bf16 natively, else fp32.

Native bf16 means CUDA devices of compute capability 8.0 and up (Ampere and later) and CPUs with
AVX512-BF16 or AMX instructions (oneDNN runs bf16 convolutions at about twice the fp32 rate
there). Elsewhere bf16 is emulated and slower than fp32, so fp32 is kept. A model without
trainable parameters (``model=bicubic``) only validates, and validation is scored in fp32.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from src.utils.errors import UserError

AUTO = "auto"
BF16 = "bf16-mixed"
FP32 = "32"
# Forces what ``auto`` believes of the CPU: 1 (native bf16) or 0 (none), whatever it has, so a
# run or the test suite can be tried both ways on one machine.
NATIVE_BF16_ENV = "SRLAB_CPU_NATIVE_BF16"
# The CPU threads a command started with (see fp32_scoring); set by src.train and src.eval.
SCORING_THREADS_ENV = "SRLAB_SCORING_THREADS"


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision ``auto`` resolved to, and why."""

    precision: str
    reason: str


def cpu_flags() -> set[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where there is no such file)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def forced_native_bf16() -> bool | None:
    """``SRLAB_CPU_NATIVE_BF16`` as a bool (1/0, true/false, yes/no); None when it is unset."""
    value = os.environ.get(NATIVE_BF16_ENV, "").strip().lower()
    if not value:
        return None
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise UserError(f"{NATIVE_BF16_ENV}={value!r} must be 1 or 0 (or unset)")


def cpu_has_native_bf16() -> bool:
    """True for CPUs with AVX512-BF16 or AMX-BF16 (what torch's oneDNN kernels use), unless
    ``SRLAB_CPU_NATIVE_BF16`` says otherwise."""
    forced = forced_native_bf16()
    if forced is not None:
        return forced
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    if any(getattr(torch.cpu, name, lambda: False)() for name in checks):
        return True
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def uses_cuda(accelerator: str) -> bool:
    """Whether a Trainer with this ``accelerator`` setting runs on a CUDA device."""
    if accelerator in ("gpu", "cuda"):
        return True
    return accelerator == AUTO and torch.cuda.is_available()


def choose_precision(accelerator: str, trainable: bool = True) -> PrecisionChoice:
    """What ``trainer.precision=auto`` means for this accelerator and model."""
    if not trainable:
        return PrecisionChoice(FP32, "the model has no trainable parameters: scored in fp32")
    if uses_cuda(accelerator):
        if not torch.cuda.is_available():
            return PrecisionChoice(FP32, "no CUDA device is visible")
        major, minor = torch.cuda.get_device_capability()
        name = torch.cuda.get_device_name()
        if major >= 8:
            return PrecisionChoice(BF16, f"{name} (compute capability {major}.{minor}) runs bf16")
        return PrecisionChoice(
            FP32, f"{name} (compute capability {major}.{minor}) has no native bf16 (needs 8.0)"
        )
    if accelerator not in ("cpu", AUTO):
        return PrecisionChoice(FP32, f"accelerator {accelerator}: bf16 is not known to be native")
    if cpu_has_native_bf16():
        return PrecisionChoice(BF16, "this CPU has AVX512-BF16/AMX (native bf16)")
    return PrecisionChoice(FP32, "this CPU has no AVX512-BF16 or AMX: bf16 would be emulated")


def resolve_auto(trainer: DictConfig, trainable: bool = True) -> PrecisionChoice | None:
    """What ``precision: auto`` in a Trainer config stands for; None when the config names a
    precision itself. The config is left as it is: the Trainer is given the choice."""
    if str(trainer.get("precision")) != AUTO:
        return None
    return choose_precision(str(trainer.get("accelerator", AUTO)), trainable)


def trainer_precision(trainer: DictConfig, trainable: bool = True) -> Any:
    """The precision a Trainer config runs with: its own setting, or what ``auto`` stands for."""
    choice = resolve_auto(trainer, trainable)
    return trainer.get("precision") if choice is None else choice.precision


def remember_scoring_threads() -> None:
    """Record the CPU threads this command starts with, before Lightning's DDP launcher gives
    each process its share; the processes it starts inherit the record."""
    os.environ.setdefault(SCORING_THREADS_ENV, str(torch.get_num_threads()))


def scoring_threads() -> int | None:
    """The CPU threads scoring runs with: the count recorded at the command's start, or None
    (keep the current count) where nothing was recorded."""
    recorded = os.environ.get(SCORING_THREADS_ENV, "")
    return int(recorded) if recorded.isdigit() and int(recorded) > 0 else None


@contextlib.contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` inside the block (None: unchanged)."""
    previous = torch.get_num_threads()
    if count is None or count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def fp32_scoring(device: torch.device) -> Iterator[None]:
    """How every scored or written image is computed (validation, eval, predict, export's
    check), whatever the training precision or the process count: autocast off, float32 as the
    default dtype, and on the CPU the threads the command started with.

    Under ``bf16-mixed`` Lightning runs validation inside bf16 autocast; a PSNR from there is
    about 0.03 dB away from the fp32 forward of the same weights that ``src.eval`` runs. Under
    ``trainer=ddp_cpu`` each process gets a share of the cores, and a reduction over a tensor
    (a mean, a norm: IMDN's contrast-aware attention) sums in another order with another thread
    count; a pixel near a rounding boundary then flips and per-image PSNR moved by up to 4.6e-5
    dB against the single-process run. Scoring with the single process's thread count makes the
    two runs compute the same bits (the processes then share the cores while they score).
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    threads = scoring_threads() if device.type == "cpu" else None
    try:
        with torch.autocast(device.type, enabled=False), cpu_threads(threads):
            yield
    finally:
        torch.set_default_dtype(previous)


# What ``src.predict precision=...`` may run the network in; scoring is always fp32.
INFERENCE_PRECISIONS = ("fp32", "bf16")


@contextlib.contextmanager
def inference_precision(device: torch.device, precision: str) -> Iterator[None]:
    """:func:`fp32_scoring`, then bf16 autocast inside it when ``precision`` is ``bf16`` (the
    network's convolutions and matrix products in bf16, its weights and output in float32).
    Only ``src.predict`` offers bf16: a written image may come from it, a score never does."""
    if precision not in INFERENCE_PRECISIONS:
        raise UserError(f"precision={precision}: choose {' or '.join(INFERENCE_PRECISIONS)}")
    with fp32_scoring(device):
        if precision == "fp32":
            yield
            return
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
