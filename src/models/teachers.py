"""Loading the teacher ``model.teacher`` names, and giving it to its student.

A teacher is an SR module: one saved in an SR Lab checkpoint (``ckpt_path``, rebuilt by
:func:`~src.models.checkpoint.module_from_checkpoint`), or the ``conf/model`` network ``model``
with its ``pretrained`` weights, composed as the zoo composes it, at the student's scale. So
this module sits above :mod:`src.models.sr_module` and :mod:`src.models.checkpoint`, and the
student's module and the loss terms (:mod:`src.models.distillation`) import neither back.

An entry point that trains calls :func:`attach_teacher` right after building the module and
before ``trainer.fit`` (``src.train`` does, in its ``build``), so that the feature adapters exist
before the optimiser is configured and before a resumed checkpoint's state is restored into them.
"""

from __future__ import annotations

import difflib
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from src.archs.base import traits_of
from src.models.checkpoint import module_from_checkpoint
from src.models.distillation import (
    CLOSE_NAMES,
    KEY,
    Distillation,
    Teacher,
    TeacherSpec,
    check_image_network,
)
from src.models.sr_module import SRModule
from src.models.zoo import CONF_DIR, model_names
from src.ops.inference import input_channels
from src.utils.cli import root_cause
from src.utils.config import interpolation_overrides
from src.utils.errors import UserError


def attach_teacher(module: SRModule) -> Distillation | None:
    """Load the teacher ``module``'s ``model.teacher`` names and let ``module`` learn from it;
    the distillation terms it now has, or None (and nothing done) when it names no teacher."""
    spec = module.teacher_spec
    if spec is None:
        return None
    teacher = load_teacher(spec, int(module.scale), input_channels(module.net))
    return module.distil_from(teacher)


def load_teacher(spec: TeacherSpec, scale: int, channels: int) -> Teacher:
    """The teacher ``spec`` names, checked to work at the student's scale and channels."""
    if spec.ckpt_path is not None:
        module, source = teacher_from_checkpoint(spec.ckpt_path), f"{KEY}.ckpt_path"
    else:
        assert spec.model is not None and spec.pretrained is not None
        module = teacher_from_config(spec.model, spec.pretrained, scale, channels)
        source = f"{KEY}.model"
    check_fits_student(module, source, scale, channels)
    return Teacher(module)


def check_fits_student(module: SRModule, source: str, scale: int, channels: int) -> None:
    """Refuse a teacher at another scale, for another channel count, or for video."""
    if int(module.scale) != scale:
        raise UserError(
            f"{source}: the teacher is x{module.scale}, the student x{scale}; distillation "
            "needs one scale"
        )
    check_image_network(module.net, source)
    if input_channels(module.net) != channels:
        raise UserError(
            f"{source}: the teacher takes {input_channels(module.net)}-channel images, the "
            f"student {channels}-channel ones"
        )


def teacher_from_checkpoint(path: str) -> SRModule:
    """The SR module saved in ``path`` (rebuilt without a teacher of its own)."""
    try:
        return module_from_checkpoint(path)
    except UserError as error:
        raise UserError(f"{KEY}.ckpt_path: {error}") from error


def teacher_from_config(name: str, pretrained: str, scale: int, channels: int) -> SRModule:
    """The SR module of ``conf/model/<name>.yaml`` at ``scale`` for ``channels``-channel
    images, with the weights ``pretrained`` names imported."""
    if name not in model_names():
        close = difflib.get_close_matches(name, model_names(), n=CLOSE_NAMES)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise UserError(f"{KEY}.model={name}: no such model config in conf/model{hint}")
    model = composed_model(name, scale)
    traits = traits_of(hydra.utils.get_class(model.net._target_))
    if traits is not None and not traits.supports_scale(scale, model.net.get("upsampler")):
        raise UserError(
            f"{KEY}.model={name} is not built for the student's scale x{scale} "
            f"(it supports {traits.scales_text(model.net.get('upsampler'))})"
        )
    overrides = interpolation_overrides(model, "data.channels", channels)
    try:
        module: SRModule = hydra.utils.instantiate(
            model, **overrides, pretrained=pretrained, teacher=None, ema_decay=None
        )
    except Exception as error:
        cause = root_cause(error)
        if isinstance(cause, UserError):
            raise UserError(teacher_weights_message(str(cause))) from cause
        raise
    return module


def teacher_weights_message(message: str) -> str:
    """A refusal of the teacher's weights, naming ``model.teacher.pretrained``."""
    student_key = "model.pretrained="
    if message.startswith(student_key):
        return f"{KEY}.pretrained={message[len(student_key) :]}"
    return f"{KEY}.pretrained: {message}"


def composed_model(name: str, scale: int) -> Any:
    """The ``model`` section of the train config with ``model=<name>`` at ``scale``, composed
    as :func:`src.models.zoo.build_net` does; inside an entry point (Hydra already set up on
    ``conf/``) with that Hydra."""
    overrides = [f"model={name}", f"scale={scale}"]
    if GlobalHydra.instance().is_initialized():
        return compose("train", overrides=overrides).model
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides).model
