"""What training needs from optimisers beyond torch's: schedule-free modes, Prodigy's step size,
the warm-up schedules, and the checks of combinations that do not go together.

**Schedule-free optimisers** (``schedulefree.AdamWScheduleFree``; Defazio et al., "The Road Less
Scheduled", NeurIPS 2024) keep two points: the parameters hold ``y``, where gradients are taken,
while the optimiser is in train mode, and ``x``, the average that is the model, in eval mode
(``optimizer.train()`` / ``optimizer.eval()``; the state keeps the third sequence, ``z``). SR Lab
switches them so that

* training steps run in train mode (:func:`use_train_weights` at the start of fit and after each
  validation);
* validation scores, and the weights left in the module after fit are, ``x``
  (:func:`use_eval_weights`);
* the EMA (``model.ema_decay``) averages ``x``, the weights inference would otherwise use: each
  update runs inside :func:`eval_weights`;
* a checkpoint holds what the authors ask for, ``x`` and the optimiser state in eval mode, so that
  ``src.eval``, ``src.predict`` and ``src.export`` read ``x`` (:func:`store_eval_weights`).

Going from ``y`` to ``x`` and back is not exact in floating point, so a switch never computes
``y`` again: the train-mode weights are kept beside the optimiser state under
:data:`TRAIN_POINT` while the parameters hold ``x``, and copied back when training resumes. A
checkpoint carries them too, so that a resumed run continues from the very ``y`` an
uninterrupted one holds (a checkpoint written elsewhere, without them, resumes through the
library's ``train()``).

A schedule-free optimiser with a scheduler that changes the learning rate is allowed (the
library supports it) but warned about: the authors advise no schedule, and ``warmup_steps`` of the
optimiser for a warm-up. ``optimizer=adamw_schedulefree`` chooses ``scheduler=constant`` (its
config's defaults list).

**Prodigy** (Mishchenko & Defazio, ICML 2024) steps by ``d x lr``, ``d`` its running estimate of
the distance to the solution: :func:`adaptive_step_sizes` gives it for logging.

**Schedules** (:func:`warmup_cosine`, :func:`warmup_stable_decay`) are torch ``LambdaLR`` s of a
closed-form factor of the step: a resumed run recomputes the same factor from the step count,
each parameter group keeps its own rate (``lr_multipliers``), and nothing of the schedule is
stored but the step. (A ``SequentialLR`` of ``LinearLR`` and ``CosineAnnealingLR`` would give
every group the same absolute floor, ``eta_min``, and step the cosine recursively.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, Literal

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ConstantLR, LambdaLR, LRScheduler

# The optimiser-state key holding a parameter's train-mode weights (y) while it holds x.
TRAIN_POINT = "srlab_train_point"
# What the step size of the network's optimiser (first) and the critic's (GAN) is logged as.
STEP_SIZE_KEYS = ("train/prodigy_step_size", "train/d_prodigy_step_size")
DecayShape = Literal["linear", "sqrt"]


# --- schedule-free modes ---------------------------------------------------------------------
def is_schedule_free(optimizer: Optimizer) -> bool:
    """Whether ``optimizer`` is a schedule-free one: ``train()``, ``eval()`` and the
    ``train_mode`` flag of the ``schedulefree`` package (pytorch-optimizer's follow it)."""
    return (
        callable(getattr(optimizer, "train", None))
        and callable(getattr(optimizer, "eval", None))
        and all("train_mode" in group for group in optimizer.param_groups)
    )


def schedule_free(optimizers: Iterable[Optimizer]) -> list[Optimizer]:
    return [optimizer for optimizer in optimizers if is_schedule_free(optimizer)]


def in_train_mode(optimizer: Optimizer) -> bool:
    return all(group["train_mode"] for group in optimizer.param_groups)


def parameters_of(optimizer: Optimizer) -> Iterator[torch.Tensor]:
    for group in optimizer.param_groups:
        yield from group["params"]


@torch.no_grad()
def use_eval_weights(optimizer: Optimizer) -> None:
    """Put a schedule-free ``optimizer`` in eval mode (its parameters hold x), keeping the
    train-mode weights beside its state; nothing when it is in eval mode already."""
    if not in_train_mode(optimizer):
        return
    for parameter in parameters_of(optimizer):
        state = optimizer.state.get(parameter)
        if state and "z" in state:  # parameters without a step yet hold x = y
            state[TRAIN_POINT] = parameter.detach().clone()
    optimizer.eval()  # type: ignore[attr-defined]


@torch.no_grad()
def use_train_weights(optimizer: Optimizer) -> None:
    """Put a schedule-free ``optimizer`` in train mode: the library's ``train()``, then the
    train-mode weights kept by :func:`use_eval_weights` (or a checkpoint) copied back exactly."""
    if in_train_mode(optimizer):
        return
    optimizer.train()  # type: ignore[attr-defined]
    for parameter in parameters_of(optimizer):
        state = optimizer.state.get(parameter)
        kept = state.pop(TRAIN_POINT, None) if state else None
        if kept is not None:
            parameter.copy_(kept)


def start_training(optimizers: Iterable[Optimizer]) -> None:
    """Every schedule-free optimiser in train mode (the start of fit, the end of validation)."""
    for optimizer in schedule_free(optimizers):
        use_train_weights(optimizer)


def stop_training(optimizers: Iterable[Optimizer]) -> None:
    """Every schedule-free optimiser in eval mode (validation, the end of fit)."""
    for optimizer in schedule_free(optimizers):
        use_eval_weights(optimizer)


@contextmanager
def eval_weights(optimizers: Iterable[Optimizer]) -> Iterator[None]:
    """Inside, the parameters of every schedule-free optimiser hold x; afterwards each one that
    was in train mode holds exactly the y it held before."""
    switched = [o for o in schedule_free(optimizers) if in_train_mode(o)]
    for optimizer in switched:
        use_eval_weights(optimizer)
    try:
        yield
    finally:
        for optimizer in switched:
            use_train_weights(optimizer)


def optimizer_snapshot(optimizer: Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` with each parameter's state copied: torch returns the live
    per-parameter dicts, which a later switch of mode changes."""
    state = optimizer.state_dict()
    return {**state, "state": {key: dict(value) for key, value in state["state"].items()}}


def store_eval_weights(
    checkpoint: dict[str, Any], module: nn.Module, optimizers: Sequence[Optimizer]
) -> None:
    """Make ``checkpoint`` (Lightning's, being written) hold every schedule-free optimiser's
    parameters as x and its state in eval mode, the train-mode weights under
    :data:`TRAIN_POINT`; the live module is left as it was."""
    chosen = [i for i, optimizer in enumerate(optimizers) if is_schedule_free(optimizer)]
    if not chosen:
        return
    names = {id(parameter): name for name, parameter in module.named_parameters()}
    weights = checkpoint.get("state_dict", {})
    states = checkpoint.get("optimizer_states")
    with eval_weights(optimizers):
        for index in chosen:
            for parameter in parameters_of(optimizers[index]):
                name = names.get(id(parameter))
                if name in weights:
                    weights[name] = parameter.detach().clone()
            if states is not None:  # absent from a weights-only checkpoint
                states[index] = optimizer_snapshot(optimizers[index])


def has_batch_norm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


# --- Prodigy ----------------------------------------------------------------------------------
def adaptive_step_size(optimizer: Optimizer) -> float | None:
    """``d x lr`` of a D-adaptation optimiser (Prodigy): the step its Adam update is scaled by,
    for the first parameter group; None for other optimisers."""
    group = optimizer.param_groups[0]
    if "d" not in group or "d0" not in group:
        return None
    return float(group["d"]) * float(group["lr"])


def adaptive_step_sizes(optimizers: Sequence[Optimizer]) -> dict[str, float]:
    """The logged step size of each Prodigy optimiser, by :data:`STEP_SIZE_KEYS`."""
    sizes: dict[str, float] = {}
    for index, optimizer in enumerate(optimizers):
        size = adaptive_step_size(optimizer)
        if size is not None:
            named = index < len(STEP_SIZE_KEYS)
            sizes[STEP_SIZE_KEYS[index] if named else f"{STEP_SIZE_KEYS[0]}_{index}"] = size
    return sizes


# --- combinations ----------------------------------------------------------------------------
def changes_learning_rate(scheduler: LRScheduler) -> bool:
    """Whether ``scheduler`` moves the learning rate (anything but a constant factor of 1)."""
    if isinstance(scheduler, ConstantLR):
        return scheduler.factor != 1.0 and scheduler.total_iters > 0
    return True


def check_combinations(
    optimizers: Sequence[Optimizer], schedulers: Sequence[LRScheduler], net: nn.Module
) -> None:
    """Warn about what works but goes against a schedule-free optimiser's authors' advice: a
    scheduler that changes its learning rate, BatchNorm statistics."""
    for optimizer in schedule_free(optimizers):
        name = type(optimizer).__name__
        for scheduler in schedulers:
            if scheduler.optimizer is optimizer and changes_learning_rate(scheduler):
                rank_zero_warn(
                    f"{name} is schedule-free: its averaging replaces a learning-rate schedule, "
                    f"yet {type(scheduler).__name__} changes its learning rate too; the authors "
                    "advise none (scheduler=constant, and the optimiser's warmup_steps for a "
                    "warm-up)"
                )
        if has_batch_norm(net):
            rank_zero_warn(
                f"{name} is schedule-free and {type(net).__name__} has BatchNorm layers: their "
                "running statistics are gathered at the training weights y, not at the "
                "averaged weights x that are validated and saved"
            )


# --- schedules --------------------------------------------------------------------------------
def warmup_factor(step: int, warmup_steps: int) -> float:
    """The linear warm-up's factor for the ``step``-th step (1-based): step / warmup_steps."""
    return min(step / warmup_steps, 1.0) if warmup_steps else 1.0


def cosine_factor(progress: float, min_lr_ratio: float) -> float:
    """Cosine annealing (SGDR) from 1 at ``progress`` 0 to ``min_lr_ratio`` at 1."""
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def decay_factor(progress: float, min_lr_ratio: float, shape: DecayShape) -> float:
    """WSD's decay from 1 at ``progress`` 0 to ``min_lr_ratio`` at 1: linear, or 1 - sqrt
    (Hagele et al., 2024)."""
    fall = math.sqrt(progress) if shape == "sqrt" else progress
    return 1.0 - (1.0 - min_lr_ratio) * fall


def phase_progress(step: int, start: int, length: int) -> float:
    """How far the ``step``-th step (1-based) is into a phase of ``length`` steps after
    ``start``: in (0, 1], 1 from its last step on."""
    return min(max(step - start, 0) / length, 1.0) if length else 1.0


def warmup_cosine_factor(
    index: int, warmup_steps: int, total_steps: int, min_lr_ratio: float
) -> float:
    """LambdaLR's factor at ``index`` (the steps taken so far): warm-up, then cosine to the
    floor at the last step."""
    step = index + 1
    if step <= warmup_steps:
        return warmup_factor(step, warmup_steps)
    progress = phase_progress(step, warmup_steps, total_steps - warmup_steps)
    return cosine_factor(progress, min_lr_ratio)


def wsd_factor(
    index: int,
    warmup_steps: int,
    decay_steps: int,
    total_steps: int,
    min_lr_ratio: float,
    shape: DecayShape,
) -> float:
    """LambdaLR's factor at ``index``: warm-up, flat, then the decay over the last
    ``decay_steps``, reaching the floor at the last step."""
    step = index + 1
    if step <= warmup_steps:
        return warmup_factor(step, warmup_steps)
    decay_start = total_steps - decay_steps
    if step <= decay_start:
        return 1.0
    return decay_factor(phase_progress(step, decay_start, decay_steps), min_lr_ratio, shape)


def check_fraction(name: str, value: float, high_open: bool = False) -> None:
    if not (0.0 <= value < 1.0 if high_open else 0.0 <= value <= 1.0):
        bound = "< 1" if high_open else "<= 1"
        raise ValueError(f"{name} must be a number >= 0 and {bound}, got {value!r}")


def check_total_steps(total_steps: int) -> None:
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}")


def steps_of(fraction: float, total_steps: int) -> int:
    """``fraction`` of ``total_steps``, rounded down (0.29 x 100 is 29, not 28.999...)."""
    return int(fraction * total_steps + 1e-9)


def lambda_schedule(optimizer: Optimizer, factor: Callable[[int], float]) -> LambdaLR:
    # ``factor`` is a functools.partial: LambdaLR's state_dict keeps only its (empty) __dict__,
    # so a resumed run takes the schedule from its config, never from the checkpoint.
    return LambdaLR(optimizer, lr_lambda=factor)


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.05,
    min_lr_ratio: float = 0.01,
) -> LambdaLR:
    """Linear warm-up over ``warmup_fraction`` of ``total_steps``, then cosine annealing to
    ``min_lr_ratio`` of each group's learning rate at the last step."""
    check_total_steps(total_steps)
    check_fraction("warmup_fraction", warmup_fraction, high_open=True)
    check_fraction("min_lr_ratio", min_lr_ratio)
    warmup_steps = steps_of(warmup_fraction, total_steps)
    factor = partial(
        warmup_cosine_factor,
        warmup_steps=warmup_steps,
        total_steps=total_steps,
        min_lr_ratio=min_lr_ratio,
    )
    return lambda_schedule(optimizer, factor)


def warmup_stable_decay(
    optimizer: Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.05,
    decay_fraction: float = 0.2,
    decay_shape: DecayShape = "sqrt",
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Warm-up-stable-decay: linear warm-up over ``warmup_fraction`` of ``total_steps``, each
    group's learning rate held, then a ``decay_shape`` decay to ``min_lr_ratio`` of it over the
    last ``decay_fraction``."""
    check_total_steps(total_steps)
    check_fraction("warmup_fraction", warmup_fraction, high_open=True)
    check_fraction("decay_fraction", decay_fraction)
    check_fraction("min_lr_ratio", min_lr_ratio)
    if warmup_fraction + decay_fraction > 1.0:
        raise ValueError(
            f"warmup_fraction ({warmup_fraction:g}) + decay_fraction ({decay_fraction:g}) must "
            "be at most 1: the warm-up and the decay would overlap"
        )
    if decay_shape not in ("linear", "sqrt"):
        raise ValueError(f"decay_shape must be one of linear, sqrt, got {decay_shape!r}")
    factor = partial(
        wsd_factor,
        warmup_steps=steps_of(warmup_fraction, total_steps),
        decay_steps=steps_of(decay_fraction, total_steps),
        total_steps=total_steps,
        min_lr_ratio=min_lr_ratio,
        shape=decay_shape,
    )
    return lambda_schedule(optimizer, factor)
