"""Structured pruning of a trained SR network: channels removed, not masked.

Torch-Pruning's dependency graph (Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR
2023) groups the channels that must go together: a residual stream and every convolution adding
into it, the parts of a concatenation, both sides of an attention product. Each channel of a
group is scored, the score divided by the group's mean, and the lowest-scoring channels of the
whole network are removed (global ranking; :class:`Ranking`): by default by the magnitude of the
signal it carries (the mean absolute input of the layers reading it, on calibration LR images),
or by the L1 or L2 norm of its weights, which miss the channels that carry the image itself
(RLFN x2, 30% of its FLOPs removed: 36.5 dB on Set5 ranked by activation, 8.0 dB by weights).
As many go as remove ``ratio`` of the network's parameters (``target=params``) or of its FLOPs
(``target=flops``: multiply-accumulates at the efficiency protocol's 256x256 input, counted as
:mod:`src.models.efficiency` counts them). ``ratio`` is the fraction REMOVED: ``ratio=0.3`` keeps
70%. The share of channels that reaches it is found by bisection; the ratio reached is within
:data:`TOLERANCE` of the one asked for, or the run stops saying how close it came.

Never pruned: the image's channels (the network's input and output), the channels feeding a
pixel shuffle, whose order the shuffle turns into space, and the channels feeding a split or a
slice, whose sizes are constants of the network's code (IMDN's distillation split). The
convolutions whose output reaches one of these through channel-preserving operations alone are
found in the graph, not listed by name.

Every pruning is checked sound before it is accepted: the pruned network must compute what the
original computes with the removed channels' connections cut (the weights that read them zeroed),
on a random input. A network whose operations the graph misreads (channel-mixing operations it
takes for element-wise ones, computed kernels) fails the check and is refused by name.

What was removed is plain data, the *record* stored in the checkpoint's model config
(``model.pruning``): ``removed`` lists ``[module name, "out" | "in", [channel indices]]``, the
indices those of the network as built from its config, so :func:`replay` cuts a freshly built
network to the pruned shapes before its weights load. The record names modules and channels,
never code.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch_pruning as tp
from torch import nn

from src.archs.base import frames_of, size_multiple_of
from src.archs.reparam import is_fusable
from src.models.efficiency import DEFAULTS as EFFICIENCY_DEFAULTS
from src.models.efficiency import count_macs
from src.ops.inference import input_channels
from src.utils.choices import SINGLE
from src.utils.complexity import count_parameters
from src.utils.errors import UserError

Target = Literal["params", "flops"]
Importance = Literal["activation", "l1", "l2"]
TARGETS: tuple[Target, ...] = ("params", "flops")
IMPORTANCES: tuple[Importance, ...] = ("activation", "l1", "l2")
# How far the reached ratio may be from the one asked for (in fractions: 0.02 = 2 points).
TOLERANCE = 0.02
# Bisection over the share of channels removed: at most this many tries, and no finer than
# SEARCH_RESOLUTION (a thousandth of the channels: below one channel of any SR network here).
SEARCH_STEPS = 20
SEARCH_RESOLUTION = 1e-3
# No group of coupled channels loses more than this share of them (and one is always kept).
MAX_GROUP_SHARE = 0.9
# The efficiency protocol's input side, at which FLOPs are counted.
FLOPS_SIZE = int(EFFICIENCY_DEFAULTS["size"])
# The smallest input side the graph is traced and the soundness check run at.
TRACE_SIDE = 16
# Pruned and cut networks may differ by float32 rounding only (relative to the output's range).
SOUND_TOLERANCE = 1e-4
# Grad-fn names of operations that turn channels into space (or back): Torch-Pruning takes them
# for element-wise ones, so the channels feeding them are protected.
CHANNEL_TO_SPACE = ("PixelShuffle", "PixelUnshuffle", "ChannelShuffle")
# Graph nodes whose channel count is fixed: the output, and splits and slices whose sizes the
# network's code holds as constants.
FIXED_CHANNELS = (
    tp.ops.OPTYPE.OUTPUT,
    tp.ops.OPTYPE.SPLIT,
    tp.ops.OPTYPE.UNBIND,
    tp.ops.OPTYPE.SLICE,
)

Entry = tuple[str, str, list[int]]


class PruningError(UserError):
    """A network that cannot be pruned soundly, or a ratio that cannot be reached."""


class PruningRecordError(UserError):
    """A ``model.pruning`` record that does not fit the network it is replayed on."""


@dataclass(frozen=True)
class Cost:
    """What pruning reduces: trainable parameters and G multiply-accumulates at 256x256."""

    params: int
    gmacs: float

    def of(self, target: Target) -> float:
        return float(self.params) if target == "params" else self.gmacs


@dataclass
class Pruned:
    """A pruned network, its record, and what it cost before and after."""

    net: nn.Module
    record: dict[str, Any]
    before: Cost
    after: Cost
    reached: float  # the fraction of the target removed


def measure_cost(net: nn.Module) -> Cost:
    """Parameters, and FLOPs at the efficiency protocol's input side on the meta device."""
    meta = copy.deepcopy(net).to("meta").eval()
    return Cost(count_parameters(net), count_macs(meta, FLOPS_SIZE, "meta", input_channels(net)))


def pruned_cost(name: str, pruned: nn.Module) -> Cost:
    """:func:`measure_cost` of a pruned network; one that no longer runs is refused."""
    try:
        return measure_cost(pruned)
    except RuntimeError as error:
        raise unsound(name, error) from error


def unsound(name: str, error: RuntimeError) -> PruningError:
    return PruningError(
        f"{name} cannot be pruned soundly: the pruned network fails ({str(error).splitlines()[0]})"
    )


def example_input(net: nn.Module) -> torch.Tensor:
    """A small random image the network accepts (its size multiple respected)."""
    multiple = size_multiple_of(net)
    side = multiple * math.ceil(TRACE_SIDE / multiple)
    generator = torch.Generator().manual_seed(0)
    return torch.rand(1, input_channels(net), side, side, generator=generator)


def check_prunable(net: nn.Module) -> None:
    """Refuse what this module does not prune: video networks and unfolded training branches."""
    name = type(net).__name__
    if frames_of(net)[0] != SINGLE:
        raise PruningError(f"{name} is a video network; pruning is for single-image networks")
    if is_fusable(net):
        raise PruningError(
            f"{name} has re-parameterisable blocks (training-time branches): prune its fused "
            "form, fuse=true"
        )


@dataclass(frozen=True)
class Ranking:
    """How channels are ranked, each score divided by its group's mean (Torch-Pruning's
    normaliser): ``activation``, the mean magnitude of what the layers reading a channel receive
    on calibration images (``levels``: per layer name, per input channel; Torch-Pruning's
    ActivationImportance); ``l1`` and ``l2``, the norm of the channel's weights in every layer of
    its group (GroupMagnitudeImportance)."""

    kind: Importance
    levels: dict[str, torch.Tensor] | None = None

    def scorer(self) -> tp.importance.Importance:
        if self.kind == "activation":
            return tp.importance.ActivationImportance()
        return tp.importance.GroupMagnitudeImportance(p=1 if self.kind == "l1" else 2)

    def prepare(self, net: nn.Module) -> None:
        """Give each layer of ``net`` (a copy of the measured network) its input levels, where
        ActivationImportance reads them."""
        for name, module in net.named_modules():
            if self.levels is not None and name in self.levels:
                module._importance = self.levels[name]


def input_levels(net: nn.Module, calibration: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each convolution's and linear layer's mean input magnitude per channel over the
    ``calibration`` images (in the network's value range)."""
    levels: dict[str, torch.Tensor] = {}

    def recorder(name: str) -> Callable[..., None]:
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
            x = inputs[0].detach().abs()
            levels[name] = x.mean(dim=(0, 2, 3)) if x.dim() == 4 else x.flatten(0, -2).mean(0)

        return record

    layers = [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [module.register_forward_hook(recorder(name)) for name, module in layers]
    try:
        with torch.no_grad():
            net.eval()(calibration)
    except RuntimeError as error:
        raise PruningError(
            f"{type(net).__name__} fails on the calibration images: {str(error).splitlines()[0]}"
        ) from error
    finally:
        for handle in handles:
            handle.remove()
    return levels


def ranking_of(kind: Importance, net: nn.Module, calibration: torch.Tensor | None) -> Ranking:
    if kind not in IMPORTANCES:
        raise PruningError(f"importance={kind}: choose one of {', '.join(IMPORTANCES)}")
    if kind != "activation":
        return Ranking(kind)
    if calibration is None:
        raise PruningError("importance=activation needs calibration images")
    return Ranking(kind, input_levels(net, calibration))


def protected_layers(graph: tp.DependencyGraph) -> list[nn.Module]:
    """Convolutions and linear layers whose output channels reach the network's output, a
    pixel shuffle, a split or a slice through channel-preserving operations only (another
    convolution re-maps channels, so the walk stops there)."""
    remapping = (nn.modules.conv._ConvNd, nn.Linear)

    def reaches_image(node: Any, seen: set[int]) -> bool:
        for nxt in node.outputs:
            if id(nxt) in seen:
                continue
            seen.add(id(nxt))
            if nxt.type in FIXED_CHANNELS or moves_channels(nxt):
                return True
            if not isinstance(nxt.module, remapping) and reaches_image(nxt, seen):
                return True
        return False

    return [
        module
        for module, node in graph.module2node.items()
        if isinstance(module, remapping) and (reaches_image(node, set()) or grouped(module))
    ]


def grouped(module: nn.Module) -> bool:
    """A grouped (not depthwise) convolution: its channels go in groups this module does not
    keep whole."""
    groups = getattr(module, "groups", 1)
    return 1 < groups < getattr(module, "out_channels", groups)


def moves_channels(node: Any) -> bool:
    grad_fn = getattr(node, "grad_fn", None)
    name = grad_fn.name() if grad_fn is not None and hasattr(grad_fn, "name") else ""
    return any(op in name for op in CHANNEL_TO_SPACE)


def channel_dim(pruner: Any, handler: Callable[..., Any]) -> str:
    """``out`` or ``in``: which of a module's channel dimensions ``handler`` cuts. A module with
    one channel dimension (a depthwise convolution, a norm, PReLU) cuts it as ``out``."""
    single = type(pruner).prune_in_channels is type(pruner).prune_out_channels
    return "out" if single or handler == pruner.prune_out_channels else "in"


def channel_count(pruner: Any, module: nn.Module, dim: str) -> int:
    count = pruner.get_out_channels(module) if dim == "out" else pruner.get_in_channels(module)
    return int(count)


class RemovalLog:
    """Which channels were removed from each (module, dimension), as indices of the network as
    built; ``earlier`` are the entries of a network pruned before (its record)."""

    def __init__(self, earlier: Iterable[Entry] = ()) -> None:
        self.removed: dict[tuple[str, str], list[int]] = {}
        for name, dim, indices in earlier:
            self.removed.setdefault((name, dim), []).extend(indices)

    def remove(self, name: str, dim: str, current: list[int], size: int) -> None:
        """Remove positions ``current`` of a dimension now ``size`` long."""
        gone = set(self.removed.get((name, dim), ()))
        positions = [i for i in range(size + len(gone)) if i not in gone]
        self.removed.setdefault((name, dim), []).extend(positions[i] for i in current)

    def entries(self, order: list[str]) -> list[Entry]:
        """The removals, in the network's module order, ``out`` before ``in``."""
        rank = {name: i for i, name in enumerate(order)}
        keys = sorted(self.removed, key=lambda key: (rank.get(key[0], -1), key[1] != "out"))
        return [(name, dim, sorted(self.removed[(name, dim)])) for name, dim in keys]


def prunable_groups(graph: tp.DependencyGraph, ranking: Ranking) -> list[tuple[Any, Any]]:
    """The groups of coupled channels that may lose some (none with a protected layer's output),
    each with its channels' scores."""
    ranking.prepare(graph.model)
    scorer = ranking.scorer()
    groups = graph.get_all_groups(
        ignored_layers=protected_layers(graph),
        root_module_types=[nn.modules.conv._ConvNd, nn.Linear],
    )
    scored = [(group, scorer(group)) for group in groups]
    return [(group, scores) for group, scores in scored if scores is not None]


def channels_below(scores: list[torch.Tensor], share: float) -> list[list[int]]:
    """For each group, its channels among the lowest-scoring ``share`` of all the groups'
    channels, none losing more than :data:`MAX_GROUP_SHARE` of its own."""
    count = int(share * sum(len(group_scores) for group_scores in scores))
    if count == 0:
        return [[] for _ in scores]
    threshold = torch.cat(scores).kthvalue(count).values
    chosen = []
    for group_scores in scores:
        limit = min(len(group_scores) - 1, int(MAX_GROUP_SHARE * len(group_scores)))
        below = min(int((group_scores <= threshold).sum()), limit)
        chosen.append(sorted(torch.argsort(group_scores)[:below].tolist()))
    return chosen


def prune_channels(
    net: nn.Module, channel_share: float, ranking: Ranking, earlier: list[Entry]
) -> tuple[nn.Module, list[Entry], list[Entry]]:
    """A pruned copy of ``net`` with ``channel_share`` of its prunable channels removed; the
    removals of this pass (indices of ``net``) and the whole record (with ``earlier``)."""
    pruned = copy.deepcopy(net).eval()
    names = {module: name for name, module in pruned.named_modules()}
    order = list(dict(pruned.named_modules()))
    this_pass, record = RemovalLog(), RemovalLog(earlier)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch-Pruning's notes on operations it passes through
        try:
            graph = tp.DependencyGraph().build_dependency(
                pruned, example_input(pruned), verbose=False
            )
            groups = prunable_groups(graph, ranking)
            chosen = channels_below([scores for _, scores in groups], channel_share)
            for (group, _), channels in zip(groups, chosen, strict=True):
                root = group[0].dep
                cut = graph.get_pruning_group(root.target.module, root.handler, channels)
                if not channels or not graph.check_pruning_group(cut):
                    continue
                for dep, indices in cut:
                    log_removal(graph, names, dep, indices, (this_pass, record))
                cut.prune()
        except PruningError:
            raise
        except (RuntimeError, TypeError, ValueError, IndexError, KeyError, AttributeError) as e:
            raise PruningError(
                f"{type(net).__name__} cannot be pruned: Torch-Pruning's dependency graph does "
                f"not follow it ({type(e).__name__}: {e})"
            ) from e
    return pruned, this_pass.entries(order), record.entries(order)


def log_removal(
    graph: tp.DependencyGraph,
    names: dict[nn.Module, str],
    dep: Any,
    indices: list[Any],
    logs: tuple[RemovalLog, ...],
) -> None:
    """Note one cut of a group before it is made (its indices are of the current shapes)."""
    module = dep.target.module
    if isinstance(module, nn.Parameter):
        raise PruningError(
            f"a group of channels includes a parameter outside any layer "
            f"({graph._param_to_name.get(module, 'unnamed')}); its pruning cannot be replayed"
        )
    name = names.get(module)
    if name is None:  # Torch-Pruning's stand-ins for add, concatenation, split: no weights
        return
    pruner = graph.get_pruner_of_module(module)
    dim = channel_dim(pruner, dep.handler)
    current = [int(getattr(index, "idx", index)) for index in indices]
    size = channel_count(pruner, module, dim)
    for log in logs:
        log.remove(name, dim, current, size)


def cut_inputs(net: nn.Module, entries: list[Entry]) -> nn.Module:
    """A copy of ``net`` whose layers no longer read the removed input channels (those weights
    zeroed): what a sound pruning computes."""
    cut = copy.deepcopy(net).eval()
    modules = dict(cut.named_modules())
    with torch.no_grad():
        for name, dim, indices in entries:
            module = modules[name]
            if dim != "in" or not indices:
                continue
            if isinstance(module, nn.modules.conv._ConvTransposeNd):
                module.weight[indices] = 0
            elif isinstance(module, nn.Linear) or (
                isinstance(module, nn.modules.conv._ConvNd) and module.groups == 1
            ):
                module.weight[:, indices] = 0
    return cut


def check_sound(original: nn.Module, pruned: nn.Module, entries: list[Entry]) -> None:
    """Refuse a pruning whose network differs from the original with the removed channels'
    connections cut (see the module docstring)."""
    name = type(original).__name__
    x = example_input(original)
    with torch.no_grad():
        expected = cut_inputs(original, entries)(x)
        try:
            output = pruned.eval()(x)
        except RuntimeError as error:
            raise unsound(name, error) from error
    if output.shape != expected.shape:
        raise PruningError(
            f"{name} cannot be pruned soundly: its output changed shape "
            f"({tuple(expected.shape)} -> {tuple(output.shape)})"
        )
    difference = float((output - expected).abs().max())
    if difference > SOUND_TOLERANCE * (1.0 + float(expected.abs().max())):
        raise PruningError(
            f"{name} cannot be pruned soundly: Torch-Pruning's dependency graph misreads one of "
            f"its operations (the pruned network differs from the cut one by {difference:.3g})"
        )


def removed_fraction(before: Cost, after: Cost, target: Target) -> float:
    return 1.0 - after.of(target) / before.of(target)


@dataclass
class Attempt:
    """One try of the search: the share of channels removed and what it gave."""

    reached: float
    net: nn.Module
    this_pass: list[Entry]
    record: list[Entry]
    after: Cost


@contextmanager
def reference_convolutions() -> Iterator[None]:
    """oneDNN off: it compiles a kernel for each new convolution shape, and every try of the
    search has new shapes at a 16x16 input, where compiling costs more than running."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def search(
    net: nn.Module,
    ratio: float,
    target: Target,
    ranking: Ranking,
    earlier: list[Entry],
    progress: Callable[[str], None] | None,
) -> tuple[Attempt, Cost]:
    """Bisect the share of channels removed for the try closest to ``ratio``; and the cost of
    ``net`` itself."""
    before = measure_cost(net)
    low, high = 0.0, 1.0
    best: Attempt | None = None
    for _ in range(SEARCH_STEPS):
        share = (low + high) / 2
        pruned, this_pass, record = prune_channels(net, share, ranking, earlier)
        after = pruned_cost(type(net).__name__, pruned)
        reached = removed_fraction(before, after, target)
        if progress is not None:
            progress(f"{share:.1%} of the channels removed: {reached:.1%} of the {target}")
        if best is None or abs(reached - ratio) < abs(best.reached - ratio):
            best = Attempt(reached, pruned, this_pass, record, after)
        low, high = (share, high) if reached < ratio else (low, share)
        if abs(reached - ratio) <= TOLERANCE / 4 or high - low < SEARCH_RESOLUTION:
            break
    assert best is not None
    return best, before


def prune_to_target(
    net: nn.Module,
    ratio: float,
    target: Target,
    importance: Importance = "activation",
    calibration: torch.Tensor | None = None,
    earlier: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Pruned:
    """Prune a copy of ``net`` until ``ratio`` of its ``target`` is removed (within
    :data:`TOLERANCE`). ``calibration``: LR images in the network's value range, which
    ``importance=activation`` ranks channels on; ``earlier``: the record ``net`` was already
    pruned by (kept in the new one, which is relative to the network as built)."""
    if not 0.0 < ratio < 1.0:
        raise PruningError(f"ratio={ratio}: the fraction to remove, between 0 and 1 (exclusive)")
    if target not in TARGETS:
        raise PruningError(f"target={target}: choose one of {', '.join(TARGETS)}")
    check_prunable(net)
    earlier_entries = record_entries(earlier) if earlier else []
    ranking = ranking_of(importance, net, calibration)
    with reference_convolutions():
        best, before = search(net, ratio, target, ranking, earlier_entries, progress)
        if abs(best.reached - ratio) > TOLERANCE:
            raise PruningError(
                f"ratio={ratio}: the closest {type(net).__name__} comes is {best.reached:.3f} of "
                f"its {target} removed (channels go in coupled groups, and the layers at the "
                "image, pixel shuffles and splits are kept); choose a ratio near it"
            )
        check_sound(net, best.net, best.this_pass)
    for module in best.net.modules():
        module.__dict__.pop("_importance", None)  # the levels Ranking.prepare gave the copy
    record = {
        "target": target,
        "ratio": ratio,
        "reached": round(best.reached, 4),
        "importance": importance,
        "removed": [[name, dim, indices] for name, dim, indices in best.record],
    }
    return Pruned(best.net, record, before, best.after, best.reached)


# --- replaying a record ----------------------------------------------------------------------
def record_entries(record: Any) -> list[Entry]:
    """The ``removed`` entries of a record, checked to be plain ``[name, dim, [ints]]`` data."""
    if not isinstance(record, dict) or not isinstance(record.get("removed"), list):
        raise PruningRecordError("model.pruning must be a mapping with a 'removed' list")
    entries: list[Entry] = []
    for position, entry in enumerate(record["removed"]):
        where = f"model.pruning.removed[{position}]"
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
            raise PruningRecordError(f"{where} is not [module name, out|in, [channels]]")
        name, dim, indices = entry
        if not isinstance(name, str) or dim not in ("out", "in"):
            raise PruningRecordError(f"{where}: {name!r} {dim!r} is not a module name and out|in")
        if not isinstance(indices, (list, tuple)) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in indices
        ):
            raise PruningRecordError(f"{where}: the channels are not a list of integers")
        entries.append((name, dim, list(indices)))
    return entries


def replay(net: nn.Module, record: Any) -> None:
    """Remove from ``net`` (freshly built from its config) the channels ``record`` lists, in
    place, so that the pruned network's weights load into it."""
    modules = dict(net.named_modules())
    for name, dim, indices in record_entries(record):
        module = modules.get(name)
        pruner = tp.pruner.function.PrunerBox.get(tp.ops.module2type(module)) if module else None
        if module is None or pruner is None:
            raise PruningRecordError(
                f"model.pruning: {type(net).__name__} has no prunable layer named {name!r}"
            )
        size = channel_count(pruner, module, dim)
        if len(set(indices)) != len(indices) or not all(0 <= i < size for i in indices):
            raise PruningRecordError(
                f"model.pruning: channels of {name} ({dim}) repeat or fall outside 0..{size - 1}"
            )
        if len(indices) >= size:
            raise PruningRecordError(f"model.pruning: every {dim} channel of {name} is removed")
        cut = pruner.prune_out_channels if dim == "out" else pruner.prune_in_channels
        cut(module, indices)
