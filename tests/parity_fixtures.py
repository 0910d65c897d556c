"""Authors'-code parity fixtures (issue 24, point 5): their format, the seeded weights both sides
share, and the writer run once, in a scratch folder beside the authors' code, to make them.

A fixture (``tests/fixtures/parity/<name>.npz``) holds no weights. It names every trainable
parameter of the authors' network with its shape, and the SR Lab name that parameter has (the
same name unless SR Lab's layout differs); both networks fill those parameters with
:func:`seeded_value`, a function of the fixture's seed, the authors' name and the shape only, so
the two sides agree without either storing the tensors. It also holds a small input, the authors'
output for it (made by their code, never by SR Lab's; several outputs, such as a feature
extractor's layers, are joined into one tensor by :func:`flat_output`), and in ``meta`` (JSON):
the SR Lab constructor and its arguments, the upstream repository, commit and file, the authors'
constructor arguments, how inputs and outputs were converted to the authors' value range, the
largest difference measured when the fixture was made, and the tolerance the test applies.

``kind`` is ``"authors"`` for a fixture made with the authors' code, ``"port"`` for one made with
the widely used port where the authors released no PyTorch code, and ``"snapshot"`` for a
network with no authors' code to run (SR Lab's own output, frozen so a refactor cannot change it
silently); the test reports which is which.
"""

from __future__ import annotations

import importlib
import json
import math
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "parity"
# Floor of every tolerance: float32 convolutions differ by a few ulp between CPU kernels
# (AVX2, AVX-512, oneDNN versions), and a fixture must pass on every machine.
TOLERANCE_FLOOR = 2e-5
# How far above the difference measured at creation the tolerance sits.
TOLERANCE_FACTOR = 10.0
# A difference above this when a fixture is made is a real disagreement, not rounding.
DISAGREEMENT = 1e-3
FORMAT_VERSION = 1


def _stream_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2**63)


def seeded_value(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The float32 tensor both sides put in parameter ``name`` (the authors' name).

    Uniform with variance 1 / fan_in (fan_in = elements per output channel) for weights of two or
    more dimensions, so activations stay of order one through a deep network; uniform in
    [-0.1, 0.1] for biases, scales and other vectors. numpy's PCG64 stream is the same on every
    platform, unlike torch's vectorised CPU samplers.
    """
    rng = np.random.default_rng(_stream_seed(seed, name))
    fan_in = math.prod(shape[1:]) if len(shape) >= 2 else 0
    half_width = math.sqrt(3.0 / fan_in) if fan_in else 0.1
    values = (rng.random(shape) * 2.0 - 1.0) * half_width
    return torch.from_numpy(values.astype(np.float32))


def seeded_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A float32 input in [0, 1)."""
    rng = np.random.default_rng(_stream_seed(seed, "<input>"))
    return torch.from_numpy(rng.random(shape).astype(np.float32))


def trainable_parameters(net: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters a fixture seeds: trainable ones (fixed ones, like a mean shift's, keep the
    values the network sets)."""
    return {name: p for name, p in net.named_parameters() if p.requires_grad}


def seed_network(
    net: nn.Module, names: Mapping[str, str], seed: int, near_one: Collection[str] = ()
) -> float:
    """Fill ``net``'s parameters: ``names`` maps each authors' name to the name in ``net``;
    the authors' names in ``near_one`` (normalisation layers' scales) get 1 + their value, so
    that a stack of batch norms does not shrink every signal to nothing. Spectral-normalised
    weights then get their exact power-iteration vectors (:func:`align_spectral_norms`).
    Returns the sum of every value written (float64), which the fixture records so that a change
    of the random stream is reported as such rather than as a mismatch."""
    own = dict(net.named_parameters())
    total = 0.0
    with torch.no_grad():
        for authors_name, own_name in names.items():
            target = own[own_name]
            value = seeded_value(authors_name, tuple(target.shape), seed)
            if authors_name in near_one:
                value = value + 1.0
            target.copy_(value)
            total += float(value.double().sum())
    align_spectral_norms(net)
    return total


def normalisation_scales(net: nn.Module) -> list[str]:
    """Names of the scale (``weight``) parameters of ``net``'s normalisation layers."""
    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    return [
        f"{name}.weight" if name else "weight"
        for name, module in net.named_modules()
        if isinstance(module, norms) and getattr(module, "weight", None) is not None
    ]


def align_spectral_norms(net: nn.Module) -> None:
    """Set the ``weight_u`` / ``weight_v`` buffers of ``torch.nn.utils.spectral_norm`` to the
    leading singular vectors of the seeded weight (float64 SVD). They start as draws from torch's
    global random state, so without this a spectral-normalised network's output in eval mode
    depends on that state rather than on the weights alone."""
    with torch.no_grad():
        for module in net.modules():
            if not hasattr(module, "weight_orig") or not hasattr(module, "weight_u"):
                continue
            weight = module.weight_orig.detach().double().flatten(1)
            left, _, right = torch.linalg.svd(weight, full_matrices=False)
            u, v = left[:, 0], right[0]
            sign = torch.sign(u[torch.argmax(u.abs())])
            module.weight_u.copy_((u * sign).float())
            module.weight_v.copy_((v * sign).float())


@dataclass(frozen=True)
class ParityFixture:
    """One fixture as read from disk."""

    path: Path
    meta: dict[str, Any]
    input: torch.Tensor
    output: torch.Tensor
    authors_names: list[str]
    own_names: list[str]
    shapes: list[tuple[int, ...]]

    @property
    def name_map(self) -> dict[str, str]:
        return dict(zip(self.authors_names, self.own_names, strict=True))


def read_fixture(path: Path) -> ParityFixture:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        return ParityFixture(
            path=path,
            meta=meta,
            input=(
                torch.from_numpy(data["input"].copy())
                if "input" in data
                else seeded_input(tuple(meta["input_shape"]), int(meta["seed"]))
            ),
            output=torch.from_numpy(data["output"].copy()),
            authors_names=[str(n) for n in data["authors_names"]],
            own_names=[str(n) for n in data["own_names"]],
            shapes=[tuple(int(d) for d in s) for s in json.loads(str(data["shapes"]))],
        )


def build_own_network(meta: Mapping[str, Any]) -> nn.Module:
    """SR Lab's network named by ``meta["target"]`` (``module.Class``) with ``meta["kwargs"]``."""
    module_name, _, class_name = str(meta["target"]).rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    net: nn.Module = cls(**meta["kwargs"])
    return net.eval()


def tolerance_for(measured: float) -> float:
    """The test's tolerance: ten times the difference measured at creation, rounded up to one
    significant digit, and never below :data:`TOLERANCE_FLOOR`."""
    wanted = max(TOLERANCE_FLOOR, TOLERANCE_FACTOR * measured)
    exponent = math.floor(math.log10(wanted))
    return math.ceil(wanted / 10**exponent) * 10**exponent


Convert = Callable[[torch.Tensor], torch.Tensor]
Output = torch.Tensor | Mapping[str, torch.Tensor] | Sequence[torch.Tensor]


def flat_output(output: Output) -> torch.Tensor:
    """A network's output as one float32 tensor: a tensor as it is; a dict (in its order) or a
    list of tensors, such as a feature extractor's layers, each flattened and concatenated."""
    if isinstance(output, torch.Tensor):
        return output.float()
    parts = list(output.values()) if isinstance(output, Mapping) else list(output)
    return torch.cat([part.float().flatten() for part in parts])


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def write_fixture(
    name: str,
    *,
    authors_net: nn.Module,
    own_target: str,
    own_kwargs: Mapping[str, Any],
    upstream: str,
    authors_kwargs: Mapping[str, Any],
    input_shape: tuple[int, ...],
    rename: Callable[[str], str] = _identity,  # type: ignore[assignment]
    to_authors_input: Convert = _identity,
    from_authors_output: Convert = _identity,
    conversion: str = "none: both take and give RGB in [0, 1]",
    kind: str = "authors",
    notes: str = "",
    seed: int = 0,
    norms_near_one: bool = False,
    store_input: bool = True,
    directory: Path = FIXTURE_DIR,
) -> Path:
    """Make ``<directory>/<name>.npz`` from the authors' network (built by the caller from their
    code) and check SR Lab's network against it. Raises if the two disagree by more than
    :data:`DISAGREEMENT` or if the parameter layouts do not correspond one to one.

    ``norms_near_one``: normalisation layers' scales are seeded around 1 (see
    :func:`seed_network`). ``store_input=False`` leaves the input out of the file (it is
    regenerated from the seed), for inputs too large to store."""
    authors_net = authors_net.eval()
    authors_params = trainable_parameters(authors_net)
    names = {authors_name: rename(authors_name) for authors_name in authors_params}
    own_meta = {"target": own_target, "kwargs": dict(own_kwargs)}
    own_net = build_own_network(own_meta)
    _check_correspondence(names, authors_params, trainable_parameters(own_net))

    near_one = normalisation_scales(authors_net) if norms_near_one else []
    seed_network(authors_net, {n: n for n in authors_params}, seed, near_one)
    weights_sum = seed_network(own_net, names, seed, near_one)
    x = seeded_input(input_shape, seed)
    with torch.no_grad():
        expected = flat_output(from_authors_output(authors_net(to_authors_input(x.clone()))))
        actual = flat_output(own_net(x.clone()))
    if not torch.isfinite(expected).all():
        raise ValueError(f"{name}: the authors' output is not finite; lower the depth or seed")
    if expected.shape != actual.shape:
        raise ValueError(f"{name}: shapes differ: authors {expected.shape}, SR Lab {actual.shape}")
    measured = float((expected - actual).abs().max())
    if measured > DISAGREEMENT:
        raise ValueError(f"{name}: SR Lab differs from the authors' code by {measured:.3g}")
    meta = {
        "format": FORMAT_VERSION,
        "name": name,
        "kind": kind,
        **own_meta,
        "upstream": upstream,
        "authors_kwargs": dict(authors_kwargs),
        "conversion": conversion,
        "seed": seed,
        "input_shape": list(input_shape),
        "near_one": near_one,
        "weights_sum": weights_sum,
        "output_std": float(expected.std()),
        "measured_max_abs_diff": measured,
        "tolerance": tolerance_for(measured),
        "torch": torch.__version__,
        "notes": notes,
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.npz"
    stored_input = {"input": x.numpy()} if store_input else {}
    np.savez_compressed(
        path,
        meta=np.array(json.dumps(meta, sort_keys=True)),
        **stored_input,
        output=expected.numpy(),
        authors_names=np.array(list(names)),
        own_names=np.array(list(names.values())),
        shapes=np.array(json.dumps([list(p.shape) for p in authors_params.values()])),
    )
    return path


def _check_correspondence(
    names: Mapping[str, str],
    authors_params: Mapping[str, nn.Parameter],
    own_params: Mapping[str, nn.Parameter],
) -> None:
    mapped = set(names.values())
    missing = sorted(set(own_params) - mapped)
    unknown = sorted(mapped - set(own_params))
    if missing or unknown:
        raise ValueError(
            f"parameter layouts differ: SR Lab parameters no authors' name maps to {missing[:8]}; "
            f"mapped names SR Lab lacks {unknown[:8]}"
        )
    for authors_name, own_name in names.items():
        a, b = authors_params[authors_name].shape, own_params[own_name].shape
        if a != b:
            raise ValueError(f"shape of {authors_name} {tuple(a)} != {own_name} {tuple(b)}")
