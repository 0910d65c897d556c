"""``trainer.precision=auto``: bf16 autocast where the device computes bf16 natively, else fp32.

Native bf16 means CUDA devices of compute capability 8.0 and up (Ampere and later) and CPUs with
AVX512-BF16 or AMX instructions (oneDNN runs bf16 convolutions at about twice the fp32 rate
there). Elsewhere bf16 is emulated and slower than fp32, so fp32 is kept. A model without
trainable parameters (``model=bicubic``) only validates, and validation is scored in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

AUTO = "auto"
BF16 = "bf16-mixed"
FP32 = "32"


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


def cpu_has_native_bf16() -> bool:
    """True for CPUs with AVX512-BF16 or AMX-BF16 (what torch's oneDNN kernels use)."""
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
    """Replace ``precision: auto`` in a Trainer config by its choice (returned); None when the
    config names a precision itself."""
    if str(trainer.get("precision")) != AUTO:
        return None
    choice = choose_precision(str(trainer.get("accelerator", AUTO)), trainable)
    trainer.precision = choice.precision
    return choice
