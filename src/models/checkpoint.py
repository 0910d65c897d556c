"""Reading SR Lab checkpoints safely and rebuilding the SRModule they were saved from.

A checkpoint written by ``src.train`` carries the resolved model config under ``"srlab"``, so
``src.eval ckpt_path=...`` and ``src.predict ckpt_path=...`` need no ``model=`` override.
Loading is ``torch.load(weights_only=True)``: a file that would execute code is refused.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import hydra

from src.models.pretrained import PretrainedWeightsError, load_tensors_only
from src.models.sr_module import SRModule


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, unsafe or not from SR Lab."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True``; errors name the file and the cause."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = load_tensors_only(path)
    except PretrainedWeightsError as error:
        raise CheckpointError(str(error)) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict' entry)")
    return checkpoint


def module_from_checkpoint(path: str | Path, **overrides: Any) -> SRModule:
    """Rebuild the SRModule saved in ``path``; ``overrides`` replace model config keys."""
    checkpoint = read_checkpoint(path)
    meta = checkpoint.get("srlab")
    if not isinstance(meta, dict) or "model_config" not in meta:
        raise CheckpointError(
            f"{path} was not written by SR Lab's trainer (no model config inside); "
            "load foreign weights with model=<name> model.pretrained=PATH instead"
        )
    config = copy.deepcopy(meta["model_config"])
    config.update(pretrained=None, **overrides)
    module = hydra.utils.instantiate(config)
    if not isinstance(module, SRModule):
        raise CheckpointError(f"{path}: the stored model config does not build an SRModule")
    prefixes = ("net.", "ema.") if module.ema is not None else ("net.",)
    weights = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefixes)}
    missing = [k for k in module.state_dict() if k.startswith(prefixes) and k not in weights]
    if missing:
        raise CheckpointError(f"{path}: network weights missing from checkpoint: {missing[:10]}")
    module.load_state_dict(weights, strict=False)
    module.model_config = meta["model_config"]
    return module
