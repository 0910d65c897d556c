"""Reading SR Lab checkpoints safely and rebuilding the SRModule they were saved from.

A checkpoint of an SRModule carries the config that rebuilds it under ``"srlab"`` (the module
records it itself, :attr:`~src.models.sr_module.SRModule.model_config`, whether ``src.train`` or a
plain Lightning Trainer saved it), so ``src.eval ckpt_path=...`` and ``src.predict ckpt_path=...``
need no ``model=`` override.
Loading is ``torch.load(weights_only=True)``: a file that would execute code is refused.

The stored config is data from a file, and instantiating it would run whatever its ``_target_``
keys name (``builtins.open``, ``os.system``, ...). So before anything is built every
``_target_`` in it must be one of SR Lab's own: the classes the ``conf/`` model, loss,
optimiser and scheduler options name (:func:`allowed_targets`). Interpolations (``${...}``) and
``_args_`` are refused too: a stored config is resolved plain data. Anything else stops with one
line naming the key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import hydra

from src.io.tensors import PretrainedWeightsError, load_tensors_only
from src.models.gan_module import generator_config
from src.models.sr_module import SRModule
from src.models.targets import GAN_MODULE, SR_MODULE, allowed_targets
from src.utils.errors import UserError


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing, corrupt, unsafe or not from SR Lab."""


def refuse_code(node: Any, where: str, path: str | Path) -> None:
    """Raise CheckpointError at the first key of ``node`` that would choose code to run."""
    if isinstance(node, dict):
        target = node.get("_target_")
        if target is not None and target not in allowed_targets():
            raise CheckpointError(
                f"{path}: {where}._target_ is {target!r}, not one of SR Lab's own classes; "
                f"refusing to build it (a checkpoint cannot choose code to run). To use its "
                f"weights, choose the network yourself: model=<name> model.pretrained={path}"
            )
        if "_args_" in node:
            raise CheckpointError(f"{path}: {where}._args_ is not allowed in a stored config")
        for key, value in node.items():
            refuse_code(value, f"{where}.{key}", path)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            refuse_code(value, f"{where}[{index}]", path)
    elif isinstance(node, str) and "${" in node:
        raise CheckpointError(
            f"{path}: {where} holds an interpolation ({node!r}); a stored config is resolved "
            f"plain data, refusing it"
        )


def stored_model_config(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any] | None:
    """The checkpoint's ``srlab.model_config``, checked to name only SR Lab's own classes;
    None when there is none (a foreign Lightning checkpoint)."""
    meta = checkpoint.get("srlab")
    if not isinstance(meta, dict) or "model_config" not in meta:
        return None
    config = meta["model_config"]
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: srlab.model_config is not a mapping")
    if config.get("_target_") not in (SR_MODULE, GAN_MODULE):
        raise CheckpointError(
            f"{path}: srlab.model_config._target_ is {config.get('_target_')!r}, not {SR_MODULE}"
            f" or {GAN_MODULE}"
        )
    refuse_code(config, "srlab.model_config", path)
    return config


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True`` (``mmap``: tensors mapped, not read);
    errors name the file and the cause."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = load_tensors_only(path, mmap)
    except PretrainedWeightsError as error:
        raise CheckpointError(str(error)) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict' entry)")
    meta = checkpoint.get("srlab")
    if meta is not None:
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path}: its 'srlab' entry is not a mapping")
        for key in ("scale", "best_psnr_y"):
            value = meta.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise CheckpointError(f"{path}: srlab.{key} is {value!r}, not a number")
        stored_model_config(checkpoint, path)  # refuses a config that names foreign code
    return checkpoint


def module_from_checkpoint(
    path: str | Path, checkpoint: dict[str, Any] | None = None, **overrides: Any
) -> SRModule:
    """Rebuild the SRModule saved in ``path``; ``overrides`` replace model config keys.

    ``checkpoint``: the file as :func:`read_checkpoint` already gave it (read here otherwise)."""
    if checkpoint is None:
        checkpoint = read_checkpoint(path)
    stored = stored_model_config(checkpoint, path)
    if stored is None:
        raise CheckpointError(
            f"{path} was not written by SR Lab's trainer (no model config inside); "
            "load foreign weights with model=<name> model.pretrained=PATH instead"
        )
    # A GAN checkpoint is rebuilt as its generator: eval, predict and export use only that.
    config = generator_config(copy.deepcopy(stored))
    # The weights are the checkpoint's; a distilled student is rebuilt without its teacher.
    config.update(pretrained=None, pretrained_parts={}, teacher=None, **overrides)
    module = hydra.utils.instantiate(config)
    if not isinstance(module, SRModule):
        raise CheckpointError(f"{path}: the stored model config does not build an SRModule")
    prefixes = ("net.", "ema.") if module.ema is not None else ("net.",)
    weights = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefixes)}
    missing = [k for k in module.state_dict() if k.startswith(prefixes) and k not in weights]
    if missing:
        raise CheckpointError(f"{path}: network weights missing from checkpoint: {missing[:10]}")
    module.load_state_dict(weights, strict=False)
    return module
