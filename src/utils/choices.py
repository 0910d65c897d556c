"""Every setting with a fixed set of valid values: one table, beside the schema.

The schema (:mod:`src.utils.schema`) checks a composed config against :data:`CHOICES` before
anything is built, so a wrong value is one ``error:`` line naming its key. The classes that take
these values import their tuples from here, so a Python caller meets the same rule. The scales
and channels each network supports are its own declaration (:mod:`src.archs.base`);
``python -m src.models choices`` prints both tables, as the README shows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

CRITERIA = ("l1", "l2")
GAN_LOSS_KINDS = ("vanilla", "lsgan", "hinge", "wgan", "ragan")
KERNEL_KINDS = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
RESIZE_MODES = ("area", "bilinear", "bicubic")
RESIZE_DIRECTIONS = ("up", "down", "keep")
BORDERS = ("reflect", "replicate")
UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect")
ACTIVATIONS = ("relu", "prelu", "leakyrelu")
NORMS = ("batch", "instance", "none")
RESIDUAL_CONVS = ("1conv", "3conv")
# How a network uses time (src/archs/base.py NetworkTraits.frames): one image at a time; a window
# of frames to its centre frame (EDVR); a whole clip to a whole clip (the BasicVSR family).
SINGLE, WINDOW, SEQUENCE = "single", "window", "sequence"
FRAME_KINDS = (SINGLE, WINDOW, SEQUENCE)
# Frames past a clip's ends for a window network (src/ops/video_inference.py window_indices):
# the modes of BasicSR's video test sets.
WINDOW_PADDINGS = ("replicate", "reflection", "reflection_circle", "circle")

Form = Literal["value", "items", "keys"]


@dataclass(frozen=True)
class Choice:
    """``key`` of each config node ``section`` names (``*``: any key) takes ``values``: as
    itself (``value``), as each item of a list (``items``) or as each key of a mapping
    (``keys``)."""

    section: str
    key: str
    values: tuple[str, ...]
    form: Form = "value"

    def unknown(self, given: Any) -> list[str]:
        """The entries of ``given`` outside ``values`` (empty when all are valid)."""
        if self.form == "value":
            entries = [given]
        elif self.form == "keys":
            entries = list(given) if isinstance(given, dict) else [given]
        else:
            entries = list(given) if isinstance(given, list | tuple) else [given]
        return [str(entry) for entry in entries if str(entry) not in self.values]


CHOICES: tuple[Choice, ...] = (
    Choice("", "window_padding", WINDOW_PADDINGS),
    Choice("model.net", "upsampler", UPSAMPLERS),
    Choice("model.net", "act_type", ACTIVATIONS),
    Choice("model.net", "resi_connection", RESIDUAL_CONVS),
    Choice("model.discriminator", "norm", NORMS),
    Choice("model.gan_loss", "kind", GAN_LOSS_KINDS),
    Choice("model.loss.terms.*.loss", "criterion", CRITERIA),
    Choice("model.discriminator.loss.terms.*.loss", "criterion", CRITERIA),
    Choice("data.degradation", "border", BORDERS),
    Choice("data.degradation.*.resize", "modes", RESIZE_MODES, "items"),
    Choice("data.degradation.*.resize", "probs", RESIZE_DIRECTIONS, "keys"),
    Choice("data.degradation.*.blur", "kinds", KERNEL_KINDS, "keys"),
)
