"""What every SR network declares next to its code, and the base class that carries it.

A network's :class:`NetworkTraits` say what callers would otherwise guess or keep in lists of
names (as spandrel's architecture descriptors and timm's pretrained configs do): the scales it
supports, the input size multiple it needs, the image channels it can be built for, whether bf16
autocast is safe, whether tiled inference is exact, and the value range its released weights
expect. The schema, the shared inference path, predict, export and the zoo table read them.

:class:`SRNetwork` also records its constructor arguments (:mod:`src.utils.construction`), so a
network built anywhere, by Hydra or in a notebook, can be saved with the config that rebuilds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from src.utils.choices import SINGLE
from src.utils.construction import RecordsArguments

# The pixel-shuffle upsampler's scales: x2 stages for powers of two, one x3 stage for x3.
PIXEL_SHUFFLE_SCALES = (2, 3, 4, 8)
# The one-step "pixelshuffledirect" upsampler of the light transformer variants: any scale.
ANY_SCALE_DIRECT: Mapping[str, tuple[int, ...] | None] = {"pixelshuffledirect": None}


@dataclass(frozen=True)
class NetworkTraits:
    """A network's declaration.

    Attributes:
        scales: the upscaling factors it can be built for; None: any integer of 1 or more.
        upsampler_scales: where scales depend on the ``upsampler`` argument, the scales of each
            upsampler that differs from ``scales``.
        size_multiple: LR height and width must be multiples of this; the shared inference path
            pads to it (1: any size; window networks pad inside themselves).
        channels: the image channel counts it can be built for (``data.channels``).
        bf16_safe: runs under bf16 autocast with a relative error under 2% (tested).
        tile_exact: only local operations, so tiles with an overlap of at least its receptive
            radius give exactly the whole-image output; False for global pooling, statistics
            over the image, or windows aligned to the image's corner.
        value_range: the pixel range its released weights expect (1.0: [0, 1]; 255.0: 0..255).
        frames: ``single`` (an image network, (N, C, H, W) in and out), ``window`` (a window of
            ``window`` frames (N, T, C, H, W) to its centre frame) or ``sequence`` (a clip to a
            clip, (N, T, C, H, W) in and out).
        window: the frames a ``window`` network takes (its ``num_frames``); 1 otherwise.
    """

    scales: tuple[int, ...] | None
    upsampler_scales: Mapping[str, tuple[int, ...] | None] = field(default_factory=dict)
    size_multiple: int = 1
    channels: tuple[int, ...] = (1, 3)
    bf16_safe: bool = True
    tile_exact: bool = False
    value_range: float = 1.0
    frames: str = SINGLE
    window: int = 1

    @property
    def is_video(self) -> bool:
        """Whether the network looks at more than one frame."""
        return self.frames != SINGLE

    def scales_for(self, upsampler: str | None = None) -> tuple[int, ...] | None:
        """The supported scales with ``upsampler`` (None: the network's default)."""
        if upsampler is not None and upsampler in self.upsampler_scales:
            return self.upsampler_scales[upsampler]
        return self.scales

    def supports_scale(self, scale: int, upsampler: str | None = None) -> bool:
        scales = self.scales_for(upsampler)
        return scale >= 1 if scales is None else scale in scales

    def scales_text(self, upsampler: str | None = None) -> str:
        """``2, 3, 4 or 8``; ``any`` where every integer scale works."""
        return words_or(self.scales_for(upsampler))


def words_or(values: tuple[int, ...] | None) -> str:
    """``2, 3, 4 or 8``; ``any`` for None."""
    if values is None:
        return "any"
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


class SRNetwork(RecordsArguments, nn.Module):
    """Base of SR Lab's super-resolution networks: a plain ``nn.Module`` with a declaration
    (``traits``, a class attribute a network may refine per instance) and its recorded
    constructor arguments (``init_arguments``)."""

    traits: ClassVar[NetworkTraits]

    @property
    def size_multiple(self) -> int:
        """The input size multiple of this instance (may depend on its scale)."""
        return self.traits.size_multiple


def traits_of(net: Any) -> NetworkTraits | None:
    """The declaration of a network instance or class; None for a network outside SR Lab."""
    traits = getattr(net, "traits", None)
    return traits if isinstance(traits, NetworkTraits) else None


def frames_of(net: Any) -> tuple[str, int, int]:
    """How ``net`` uses time: its frames kind, its window and the window position of the frame
    it restores; (``single``, 1, 0) for a network without a declaration. An instance may narrow
    its class's declaration (EDVR's ``num_frames`` and ``center_frame``)."""
    traits = traits_of(net)
    if traits is None or traits.frames == SINGLE:
        return SINGLE, 1, 0
    window = int(getattr(net, "num_frames", traits.window))
    return traits.frames, window, int(getattr(net, "center_frame", window // 2))


def size_multiple_of(net: Any) -> int:
    """The input size multiple ``net`` needs (1 for a network without a declaration)."""
    multiple = getattr(net, "size_multiple", 1)
    return int(multiple) if isinstance(multiple, int) else 1
