"""Import pretrained weights into an SR Lab network, safely and with readable errors.

``model.pretrained`` takes a file, or the name of a released file in the weight registry
(:mod:`src.models.weight_registry`: ``model.pretrained=basicvsr_vimeo90k_bi``), which is fetched
and checked by its sha256 once, cached, and loaded with the entry's key map. An existing file wins
over a name.

Only tensors are read: PyTorch files go through ``torch.load(weights_only=True)``, which refuses
any pickled class or function instead of running it, and ``.safetensors`` files hold no code at
all. A checkpoint that is a whole pickled ``nn.Module`` (or carries other Python objects) is
refused with :class:`PretrainedWeightsError`; re-save it as ``torch.save(net.state_dict(), ...)``
from a trusted environment.

The usual containers are unwrapped before the keys are compared with the network's:

* BasicSR: ``{"params_ema": ...}`` (preferred) or ``{"params": ...}``;
* PyTorch Lightning: ``{"state_dict": ...}``; SR Lab's Lightning module holds the network as
  ``net``, so its keys read ``net.<key>`` and the prefix is stripped (its EMA copy,
  ``ema.module.<key>``, is taken instead when the checkpoint has one). Keys outside ``net.`` (a
  loss network's weights, say) belong to the training module, not the network, and are dropped;
* ``{"model": ...}``;
* a ``module.`` prefix on every key (``nn.DataParallel`` / DDP) is stripped.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.io.tensors import PretrainedWeightsError, load_tensors_only
from src.io.weights import DEFAULT_CACHE
from src.models.weight_registry import (
    RegisteredWeights,
    check_fits,
    fetch_registered,
    find_weights,
)

# Container keys tried in order; the first one present whose value is a mapping wins.
CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model")
LIGHTNING_NET_PREFIX = "net."
# SR Lab keeps an EMA of the weights as an AveragedModel under ``ema``; preferred when present.
LIGHTNING_EMA_PREFIX = "ema.module."
DATA_PARALLEL_PREFIX = "module."
MAX_KEYS_LISTED = 10


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat ``{key: tensor}`` dict, containers and prefixes removed.

    Raises:
        PretrainedWeightsError: the file is missing, unreadable, of an unknown type, holds
            pickled objects or code, or does not contain a state dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"weights file not found: {path}")
    raw = load_tensors_only(path)
    return _unwrap(raw, path)


def import_weights(
    net: nn.Module, source: str | Path, cache_dir: str | Path = DEFAULT_CACHE
) -> None:
    """Load the weights ``source`` names (a file, or a registered name: fetched into
    ``cache_dir`` if not there) into ``net`` (in place), requiring an exact match.

    Every key of ``net.state_dict()`` must be in the file with the same shape, and the file may
    hold no other key; otherwise nothing is loaded and the error lists what differs. The one
    exception: buffers a network recomputes from its settings (Swin-style relative position
    indices and shifted-window masks, which the authors' files store) are dropped from the file
    when the network names them in a ``recomputed_buffers`` attribute (last key component).
    A registered file must be for ``net``'s class and scale; its keys are mapped to SR Lab's
    names first.

    Raises:
        PretrainedWeightsError: see :func:`read_state_dict`, or the keys or shapes differ, or a
            registered file is for another network or scale.
        UserError: ``source`` is neither a file nor a registered name, or the registered file
            could not be fetched or failed its checksum.
    """
    path, state, entry = _read_source(net, source, Path(cache_dir))
    fits = f" ({entry.name} fits {entry.settings})" if entry is not None else ""
    _load_exactly(net, state, f"weights in {path}", fits)


def import_part(net: nn.Module, prefix: str, path: str | Path) -> None:
    """Load the part of ``net`` named ``prefix`` (``spynet``) from the file at ``path``: a file
    of that part alone, or of a whole network holding it under the same prefix (BasicVSR's
    released file initialises the SPyNet of a BasicVSR variant). The part must match exactly,
    as :func:`import_weights` requires.

    Raises:
        PretrainedWeightsError: ``net`` has no such part, or the file does not fit it.
    """
    try:
        part = net.get_submodule(prefix)
    except AttributeError as error:
        raise PretrainedWeightsError(
            f"model.pretrained_parts.{prefix}: {type(net).__name__} has no part {prefix!r}"
        ) from error
    state = read_state_dict(path)
    inside = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(f"{prefix}.")}
    _load_exactly(part, inside or state, f"{prefix} weights in {path}", "")


def _load_exactly(net: nn.Module, state: dict[str, torch.Tensor], what: str, fits: str) -> None:
    """``state`` into ``net``, or an error listing every key and shape that differs."""
    expected = net.state_dict()
    state = without_recomputed_buffers(state, net, expected)
    report = _mismatch_report(state, expected)
    if report:
        raise PretrainedWeightsError(
            f"{what} do not fit {type(net).__name__}{fits}:\n{report}\n"
            "Check that the architecture, its hyper-parameters and the scale match the file."
        )
    net.load_state_dict(state, strict=True)


def _read_source(
    net: nn.Module, source: str | Path, cache_dir: Path
) -> tuple[Path, dict[str, torch.Tensor], RegisteredWeights | None]:
    """The file ``source`` stands for, its state dict in SR Lab's names, and its registry entry
    (None for a file given by path). A registered file is checked against ``net`` before any
    download."""
    found = find_weights(source)
    if isinstance(found, Path):
        return found, read_state_dict(found), None
    check_fits(found, net)
    path = fetch_registered(found, cache_dir)
    return path, found.key_map.apply(read_state_dict(path)), found


def without_recomputed_buffers(
    state: dict[str, torch.Tensor], net: nn.Module, expected: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """``state`` less the keys ``net`` rebuilds itself and does not keep in its state dict."""
    recomputed = frozenset(getattr(net, "recomputed_buffers", ()))
    if not recomputed:
        return state
    return {
        key: value
        for key, value in state.items()
        if key in expected or key.rsplit(".", 1)[-1] not in recomputed
    }


def _unwrap(raw: object, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(raw, Mapping):
        raise PretrainedWeightsError(
            f"{path} holds a {type(raw).__name__}, not a state dict of tensors"
        )
    state: Mapping[str, Any] = raw
    from_lightning = False
    for key in CONTAINER_KEYS:
        inner = state.get(key)
        if isinstance(inner, Mapping):
            state = inner
            from_lightning = key == "state_dict"
            break
    if from_lightning:
        state = _select_prefixed(state, LIGHTNING_EMA_PREFIX, LIGHTNING_NET_PREFIX)
    state = _strip_common_prefix(state, DATA_PARALLEL_PREFIX)
    not_tensors = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        listed = ", ".join(repr(key) for key in not_tensors[:MAX_KEYS_LISTED])
        raise PretrainedWeightsError(
            f"{path} is not a state dict of tensors: {len(not_tensors)} entries are not tensors "
            f"({listed})"
        )
    return {str(key): value for key, value in state.items()}


def _select_prefixed(state: Mapping[str, Any], *prefixes: str) -> Mapping[str, Any]:
    """Keep only the keys under the first of ``prefixes`` that any key has (prefix removed);
    unchanged if none has one."""
    for prefix in prefixes:
        selected = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if selected:
            return selected
    return state


def _strip_common_prefix(state: Mapping[str, Any], prefix: str) -> Mapping[str, Any]:
    """Remove ``prefix`` from every key, if (and only if) every key has it."""
    if state and all(key.startswith(prefix) for key in state):
        return {key[len(prefix) :]: value for key, value in state.items()}
    return state


def _shape(tensor: torch.Tensor) -> str:
    return str(tuple(tensor.shape))


def _listing(title: str, lines: list[str]) -> list[str]:
    if not lines:
        return []
    shown = [f"    {line}" for line in lines[:MAX_KEYS_LISTED]]
    if len(lines) > MAX_KEYS_LISTED:
        shown.append(f"    ... and {len(lines) - MAX_KEYS_LISTED} more")
    return [f"  {title} ({len(lines)}):", *shown]


def _mismatch_report(
    given: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> str:
    """A multi-line description of missing, unexpected and mis-shaped keys; "" if they fit."""
    missing = [f"{key} {_shape(value)}" for key, value in expected.items() if key not in given]
    unexpected = [f"{key} {_shape(value)}" for key, value in given.items() if key not in expected]
    mismatched = [
        f"{key}: file {_shape(given[key])}, network {_shape(value)}"
        for key, value in expected.items()
        if key in given and given[key].shape != value.shape
    ]
    if not (missing or unexpected or mismatched):
        return ""
    counts = (
        f"  {len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} "
        f"shape-mismatched; the file has {len(given)} keys, the network {len(expected)}"
    )
    lines = [
        counts,
        *_listing("missing from the file", missing),
        *_listing("unexpected in the file", unexpected),
        *_listing("shape mismatch", mismatched),
    ]
    return "\n".join(lines)
