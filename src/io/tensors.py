"""Weight files read without running any code: PyTorch files through
``torch.load(weights_only=True)``, which refuses any pickled class or function instead of running
it, and ``.safetensors`` files, which hold no code at all. Used for pretrained weights, SR Lab's
checkpoints and the published weight files of losses and metrics (VGG, LPIPS, DISTS).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from src.utils.errors import UserError

TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"

_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_UNPICKLER_DETAIL = re.compile(r"WeightsUnpickler error:\s*(\S[^\n]*)")


class PretrainedWeightsError(UserError, RuntimeError):
    """A weights file that cannot be, or must not be, loaded into the given network."""


def load_tensors_only(path: Path, mmap: bool = False) -> object:
    """The file's content, read without running any code (weights-only unpickler/safetensors).
    ``mmap``: a PyTorch file's tensors are mapped, not read (a cheap look at a big checkpoint)."""
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        return _load_safetensors(path)
    if suffix in TORCH_SUFFIXES:
        return _load_torch(path, mmap)
    accepted = ", ".join((*TORCH_SUFFIXES, SAFETENSORS_SUFFIX))
    raise PretrainedWeightsError(
        f"unsupported weights file type {suffix!r} for {path}; accepted: {accepted}"
    )


def _load_torch(path: Path, mmap: bool = False) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise PretrainedWeightsError(_refusal_message(path, str(exc))) from None
    except Exception as exc:  # torch reports corrupt files with many error types
        raise PretrainedWeightsError(
            f"cannot read {path} as a PyTorch checkpoint: {type(exc).__name__}: {exc}"
        ) from exc


def _refusal_message(path: Path, unpickler_error: str) -> str:
    """Explain why the weights-only unpickler refused ``path`` (nothing from it has run)."""
    accepted = (
        "Only state dicts of tensors (torch.save(net.state_dict(), ...)) or .safetensors files "
        "are accepted; if you trust the file, re-save its state dict where it was made."
    )
    found = _UNSUPPORTED_GLOBAL.search(unpickler_error)
    if found or "add_safe_globals" in unpickler_error:
        culprit = f" (it references {found.group(1)})" if found else ""
        return (
            f"refusing to load {path}: it contains pickled Python objects or code{culprit}, "
            f"which could run arbitrary code if unpickled, so none of it was loaded. {accepted}"
        )
    detail = _UNPICKLER_DETAIL.search(unpickler_error)
    reason = detail.group(1).strip() if detail else unpickler_error.splitlines()[0]
    return (
        f"refusing to load {path}: the safe (weights-only) unpickler cannot read it ({reason}); "
        f"it is corrupted or holds pickled data other than tensors. {accepted}"
    )


def _load_safetensors(path: Path) -> object:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise PretrainedWeightsError(
            f"reading {path} needs the safetensors package: pip install safetensors"
        ) from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error type for a malformed file
        raise PretrainedWeightsError(f"cannot read {path} as safetensors: {exc}") from exc
