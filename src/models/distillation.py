"""Knowledge distillation for PSNR training: a frozen teacher and the loss terms against it.

``model.teacher`` (an :class:`~src.models.sr_module.SRModule` argument) names the teacher: an SR
Lab checkpoint (``ckpt_path``), or a ``conf/model`` network (``model``) with official weights
(``pretrained``), built at the student's scale; :mod:`src.models.teachers` loads it. It adds to
the student's loss

* output distillation: ``weight`` x criterion(student SR, teacher SR), logged as
  ``train/loss_distill_output`` (before ``weight``, as loss terms are logged);
* feature distillation: for each ``features`` pair ``{student: <module>, teacher: <module>,
  weight: w}``, w x criterion(adapter(student feature), teacher feature), where the adapter is a
  learned 1x1 convolution from the student's channels to the teacher's (FitNets' regressor,
  Romero et al., ICLR 2015); their weighted sum is logged as ``train/loss_distill_feature``.

The criterion is L1 by default (``criterion: l2`` for MSE) for both. Features are compared in
[0, 1] units: each network's feature is divided by its own ``value_range``, so a teacher that
works on 0..255 (RLFN's released weights) meets a [0, 1] student at its scale.

The teacher runs through its own module's network call (:meth:`SRModule.run_net`: its value
range, its size multiple, its EMA weights when its checkpoint has them), frozen, in eval mode and
under ``torch.no_grad``, once per training step for both terms. It is held outside the student's
module tree, so it is in no state dict, no checkpoint, no DDP wrapper and no EMA; the adapters
are the student module's children (trained, checkpointed and resumed with it) but never part of
its network ``net``, which eval, predict and export use.

This module sits below the SR module, which imports it (for the settings check and the loss
terms); it names the teacher's module only by what it uses of it (:class:`TeachingModule`).
Loading a teacher needs the SR module and the checkpoint reader, so it lives above both, in
:mod:`src.models.teachers`.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from src.archs.base import frames_of, size_multiple_of, traits_of
from src.models.losses import distance
from src.ops.inference import input_channels
from src.utils.choices import CRITERIA, SINGLE
from src.utils.errors import UserError

KEY = "model.teacher"
SETTINGS = ("ckpt_path", "model", "pretrained", "weight", "criterion", "features")
PAIR_KEYS = ("student", "teacher", "weight")
# The side of the probe input that finds each hooked layer's channels (rounded up to the
# networks' size multiples).
PROBE_SIDE = 16
CLOSE_NAMES = 5


@dataclass(frozen=True)
class FeaturePair:
    """One feature-distillation pair: module names in the student's and teacher's networks."""

    student: str
    teacher: str
    weight: float


@dataclass(frozen=True)
class TeacherSpec:
    """``model.teacher``, checked."""

    ckpt_path: str | None
    model: str | None
    pretrained: str | None
    weight: float
    criterion: str
    features: tuple[FeaturePair, ...]


# --- settings ------------------------------------------------------------------------------
def non_negative(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise UserError(f"{key} must be a number >= 0, got {value!r}")
    return float(value)


def module_name(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise UserError(f"{key} must be a module name (e.g. body.0), got {value!r}")
    return value


def feature_pair(entry: Any, key: str) -> FeaturePair:
    """One entry of ``model.teacher.features``."""
    if not isinstance(entry, Mapping):
        raise UserError(
            f"{key} must be a mapping {{student: <module>, teacher: <module>, weight: w}}, "
            f"got {entry!r}"
        )
    unknown = sorted(set(map(str, entry)) - set(PAIR_KEYS))
    if unknown:
        raise UserError(f"{key}.{unknown[0]}: not a setting of a feature pair ({PAIR_KEYS})")
    for name in ("student", "teacher"):
        if name not in entry:
            raise UserError(f"{key}.{name} must be given: the module name to hook")
    return FeaturePair(
        student=module_name(entry["student"], f"{key}.student"),
        teacher=module_name(entry["teacher"], f"{key}.teacher"),
        weight=non_negative(entry.get("weight", 1.0), f"{key}.weight"),
    )


def teacher_spec(settings: Mapping[str, Any] | None) -> TeacherSpec | None:
    """``model.teacher`` checked; None when no teacher is named (distillation off)."""
    if settings is None:
        return None
    unknown = sorted(set(map(str, settings)) - set(SETTINGS))
    if unknown:
        raise UserError(f"{KEY}.{unknown[0]}: no such setting (there are {', '.join(SETTINGS)})")
    entries = settings.get("features") or []
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        raise UserError(f"{KEY}.features must be a list of pairs, got {entries!r}")
    criterion = settings.get("criterion", "l1")
    if criterion not in CRITERIA:
        raise UserError(f"{KEY}.criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    spec = TeacherSpec(
        ckpt_path=settings.get("ckpt_path") or None,
        model=settings.get("model") or None,
        pretrained=settings.get("pretrained") or None,
        weight=non_negative(settings.get("weight", 1.0), f"{KEY}.weight"),
        criterion=str(criterion),
        features=tuple(feature_pair(e, f"{KEY}.features[{i}]") for i, e in enumerate(entries)),
    )
    return checked_source(spec)


def checked_source(spec: TeacherSpec) -> TeacherSpec | None:
    """``spec`` when it names one teacher and something to distil; None when it names none."""
    if spec.ckpt_path is None and spec.model is None:
        given = "features" if spec.features else "pretrained" if spec.pretrained else None
        if given is not None:
            raise UserError(
                f"{KEY}.{given} needs a teacher: set {KEY}.ckpt_path=<SR Lab checkpoint> or "
                f"{KEY}.model=<model name> with {KEY}.pretrained=<weights>"
            )
        return None
    if spec.ckpt_path is not None and spec.model is not None:
        raise UserError(
            f"give {KEY}.ckpt_path (an SR Lab checkpoint) or {KEY}.model (a network with "
            f"{KEY}.pretrained weights), not both"
        )
    if spec.model is not None and spec.pretrained is None:
        raise UserError(
            f"{KEY}.model={spec.model} needs {KEY}.pretrained=<weights>: a randomly initialised "
            "teacher teaches nothing"
        )
    if spec.ckpt_path is not None and spec.pretrained is not None:
        raise UserError(
            f"{KEY}.pretrained goes with {KEY}.model; a checkpoint ({KEY}.ckpt_path) carries "
            "its own weights"
        )
    if spec.weight == 0 and not spec.features:
        raise UserError(f"{KEY}.weight is 0 and {KEY}.features is empty: nothing to distil")
    return spec


# --- hooks -----------------------------------------------------------------------------------
def submodule(net: nn.Module, name: str, key: str, whose: str) -> nn.Module:
    """``net``'s module ``name``, or an error naming ``key`` and listing close names."""
    names = [n for n, _ in net.named_modules() if n]
    if name in names:
        return net.get_submodule(name)
    close = difflib.get_close_matches(name, names, n=CLOSE_NAMES, cutoff=0.5)
    shown = close or [n for n in names if "." not in n][: CLOSE_NAMES * 2]
    what = "close names" if close else "its top-level modules"
    raise UserError(
        f"{key}={name!r}: the {whose} network ({type(net).__name__}) has no module so named; "
        f"{what}: {', '.join(shown)}"
    )


@contextlib.contextmanager
def capture_features(
    net: nn.Module, layers: Sequence[str]
) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Within the block, every output of ``net``'s modules ``layers`` (by name), in call order;
    nothing is hooked outside it (so no copy of ``net``, such as its EMA, carries a hook)."""
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    handles = []
    for name in dict.fromkeys(layers):

        def record(_module: nn.Module, _inputs: Any, output: Any, name: str = name) -> None:
            captured[name].append(output)

        handles.append(net.get_submodule(name).register_forward_hook(record))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def probe_shapes(
    net: nn.Module, layers: Sequence[str], channels: int, side: int
) -> dict[str, torch.Size]:
    """The output shape of each of ``layers`` for one ``side`` x ``side`` input, with ``net``
    in eval mode (no batch statistic moves) and without gradients."""
    was_training = net.training
    device = next(net.parameters(), torch.empty(0)).device
    net.eval()
    try:
        with torch.no_grad(), capture_features(net, layers) as captured:
            net(torch.rand(1, channels, side, side, device=device))
    finally:
        net.train(was_training)
    return {name: single_feature(outputs, name).shape for name, outputs in captured.items()}


def single_feature(outputs: list[Any], name: str) -> torch.Tensor:
    """The one (N, C, H, W) output a hooked module gave in a forward pass."""
    if len(outputs) != 1:
        raise UserError(
            f"{KEY}.features: module {name!r} ran {len(outputs)} times in one forward pass; "
            "hook a module that runs once"
        )
    (output,) = outputs
    if not isinstance(output, torch.Tensor) or output.dim() != 4:
        kind = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise UserError(
            f"{KEY}.features: module {name!r} gives {kind}, not a feature map (N, C, H, W)"
        )
    return output


# --- the teacher -------------------------------------------------------------------------------
class TeachingModule(Protocol):
    """What a :class:`Teacher` uses of the SR module it wraps (an SRModule, which imports this
    module, so it is not named here)."""

    @property
    def inference_net(self) -> nn.Module: ...

    @property
    def value_range(self) -> float: ...

    @property
    def device(self) -> torch.device: ...

    def run_net(
        self, lr: torch.Tensor, net: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor: ...

    def eval(self) -> Any: ...

    def requires_grad_(self, requires_grad: bool = True) -> Any: ...

    def to(self, device: torch.device) -> Any: ...


class Teacher:
    """A trained SR module used only for its outputs: frozen, always in eval mode, run without
    gradients. A plain object, not an ``nn.Module``, so that no module holding it counts it
    among its children (state dicts, ``.train()``, DDP and EMA never see it)."""

    def __init__(self, module: TeachingModule):
        self.module = module
        module.requires_grad_(False)
        module.eval()

    @property
    def net(self) -> nn.Module:
        """The network it runs: its EMA copy when its checkpoint has one, as eval uses."""
        return self.module.inference_net

    @property
    def value_range(self) -> float:
        return self.module.value_range

    def to(self, device: torch.device) -> None:
        """Move the teacher's weights to ``device`` (the student module's)."""
        if self.module.device != device:
            self.module.to(device)

    def precision(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """The training step's autocast for a network declared bf16-safe, else none."""
        traits = traits_of(self.net)
        if traits is None or traits.bf16_safe:
            return contextlib.nullcontext()
        return torch.autocast(device.type, enabled=False)

    def __call__(
        self, lr: torch.Tensor, layers: Sequence[str]
    ) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
        """The teacher's SR of ``lr`` (in [0, 1]) and the outputs of its modules ``layers``."""
        self.to(lr.device)
        self.module.eval()
        with (
            torch.no_grad(),
            self.precision(lr.device),
            capture_features(self.net, layers) as captured,
        ):
            sr = self.module.run_net(lr.float(), self.net)
        return sr, captured


def check_image_network(net: nn.Module, key: str) -> None:
    if frames_of(net)[0] != SINGLE:
        raise UserError(
            f"{key}: {type(net).__name__} is a video network; distillation takes image networks"
        )


# --- the loss terms ---------------------------------------------------------------------------
def feature_adapters(
    pairs: Sequence[FeaturePair], student: nn.Module, teacher: Teacher
) -> nn.ModuleList:
    """One 1x1 convolution per pair, from the student layer's channels to the teacher's, both
    found by running each network once on a small input."""
    if not pairs:
        return nn.ModuleList()
    for index, pair in enumerate(pairs):
        where = f"{KEY}.features[{index}]"
        submodule(student, pair.student, f"{where}.student", "student's")
        submodule(teacher.net, pair.teacher, f"{where}.teacher", "teacher's")
    multiple = math.lcm(size_multiple_of(student), size_multiple_of(teacher.net))
    side = multiple * math.ceil(PROBE_SIDE / multiple)
    channels = input_channels(student)
    students = probe_shapes(student, [p.student for p in pairs], channels, side)
    teachers = probe_shapes(teacher.net, [p.teacher for p in pairs], channels, side)
    adapters = nn.ModuleList()
    for index, pair in enumerate(pairs):
        mine, theirs = students[pair.student], teachers[pair.teacher]
        if mine[-2:] != theirs[-2:]:
            raise UserError(
                f"{KEY}.features[{index}]: {pair.student} gives {mine[-2]}x{mine[-1]} maps "
                f"and {pair.teacher} {theirs[-2]}x{theirs[-1]} for one input; pair layers of "
                "one resolution"
            )
        adapters.append(nn.Conv2d(mine[1], theirs[1], kernel_size=1))
    return adapters


class Distillation(nn.Module):
    """The distillation terms of a student's loss; its children are the feature adapters
    alone, the teacher is held beside them (see :class:`Teacher`).

    Call it with the LR batch, the student's SR and the student features captured during that
    forward pass (:meth:`student_layers` hooked by :func:`capture_features`); it runs the teacher
    once and returns the sum of the terms, keeping each in ``last`` for logging."""

    def __init__(
        self, spec: TeacherSpec, teacher: Teacher, adapters: nn.ModuleList, value_range: float
    ):
        super().__init__()
        self.spec = spec
        self.teacher = teacher
        self.adapters = adapters
        self.student_range = value_range
        self.criterion = distance(spec.criterion)
        self.last: dict[str, torch.Tensor] = {}

    @property
    def student_layers(self) -> list[str]:
        return [pair.student for pair in self.spec.features]

    @property
    def teacher_layers(self) -> list[str]:
        return [pair.teacher for pair in self.spec.features]

    def forward(
        self, lr: torch.Tensor, sr: torch.Tensor, student_features: dict[str, list[torch.Tensor]]
    ) -> torch.Tensor:
        teacher_sr, teacher_features = self.teacher(lr, self.teacher_layers)
        self.last = {}
        total = sr.new_zeros((), dtype=torch.float32)
        if self.spec.weight > 0:
            output = self.criterion(sr.float(), teacher_sr.float())
            self.last["distill_output"] = output.detach()
            total = total + self.spec.weight * output
        if self.spec.features:
            feature = self.feature_term(student_features, teacher_features)
            self.last["distill_feature"] = feature.detach()
            total = total + feature
        return total

    def feature_term(
        self,
        student_features: dict[str, list[torch.Tensor]],
        teacher_features: dict[str, list[torch.Tensor]],
    ) -> torch.Tensor:
        """Sum over pairs of weight x criterion(adapter(student feature), teacher feature), each
        feature divided by its network's value range."""
        total = torch.zeros((), device=next(self.adapters.parameters()).device)
        for adapter, pair in zip(self.adapters, self.spec.features, strict=True):
            mine = single_feature(student_features[pair.student], pair.student)
            theirs = single_feature(teacher_features[pair.teacher], pair.teacher)
            mapped = adapter(mine / self.student_range).float()
            target = theirs.float() / self.teacher.value_range
            # Networks that pad to a size multiple pad at the bottom and right: the common
            # top-left part is the image's.
            height = min(mapped.shape[-2], target.shape[-2])
            width = min(mapped.shape[-1], target.shape[-1])
            value = self.criterion(mapped[..., :height, :width], target[..., :height, :width])
            total = total + pair.weight * value
        return total

    def parameter_groups(self, params: Any) -> Any:
        """The optimiser's parameters ``params`` (an iterable of parameters or of groups) with
        the adapters' joined as one more group; ``params`` alone when there are none."""
        adapters = list(self.adapters.parameters())
        if not adapters:
            return params
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        # Named, so the learning-rate monitor logs it as lr-<optimizer>/distillation_adapters.
        return [*groups, {"params": adapters, "name": "distillation_adapters"}]


def distillation_spec(
    settings: Mapping[str, Any] | None, student: nn.Module, compiled: bool = False
) -> TeacherSpec | None:
    """``model.teacher`` checked, with what can be checked before a teacher is loaded; None when
    it names no teacher (distillation off).

    ``student``: the student's network; ``compiled``: it is ``torch.compile``'d for training,
    where hooks added per step would go unseen."""
    spec = teacher_spec(settings)
    if spec is None:
        return None
    if compiled and spec.features:
        raise UserError(
            f"{KEY}.features hooks the student's modules, which a torch.compile'd network "
            "does not honour; set model.compile=false, or distil outputs only"
        )
    check_image_network(student, "model.net")
    return spec


def build_distillation(
    spec: TeacherSpec, teacher: Teacher, student: nn.Module, value_range: float
) -> Distillation:
    """The distillation terms ``spec`` asks for, against the loaded ``teacher``; ``student``:
    the student's network (its channels, its modules to hook), working on 0..``value_range``."""
    adapters = feature_adapters(spec.features, student, teacher)
    return Distillation(spec, teacher, adapters, value_range)
