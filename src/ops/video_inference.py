"""The one inference path for clips: image, sliding-window and recurrent networks on video.

A clip (N, T, C, h, w) in [0, 1] goes through :func:`upscale_clip`, used by validation, ``src.eval``
and ``src.predict``, with each network's declared use of time (``NetworkTraits.frames``):

* ``single`` (an image network): frame by frame, through the image path
  (:func:`src.ops.inference.upscale`, with its tiles and self-ensemble);
* ``window`` (EDVR): for each frame, the window of ``window`` frames that has it at the network's
  centre position, past the clip's ends padded as BasicSR's video test sets pad them
  (:func:`window_indices`);
* ``sequence`` (BasicVSR and its family): the clip at once or, with ``clip_length``, in temporal
  chunks of ``clip_length`` frames each run with up to ``clip_overlap`` frames of context on each
  side, of which only the chunk's own outputs are kept, the same rule as spatial tiles. A recurrent
  network's output depends on every frame of its input, so chunked output differs from the
  whole-clip output near the chunk boundaries; the papers' protocols run the whole clip
  (``clip_length=null``), and chunks bound the memory of a film.

A recurrent network that takes exactly ``fixed_frames`` frames a call (an ONNX file, whose clip
length ``src.export frames=`` fixed) runs chunks of that many frames (:func:`stream_fixed_frames`):
``clip_overlap`` frames of context each side (lowered to ``(fixed_frames - 1) // 2`` at most),
the rest kept, the window moved inside the clip at its ends (more context on the inner side);
``clip_length`` does not apply. A clip shorter than ``fixed_frames`` is refused.

Spatial tiles combine with all three: each network call sees (N, T', C, tile, tile) windows.
:func:`stream_upscale` runs the same chunks over frames as they are decoded, so a film is never
held in memory whole: at most ``clip_length + 2 clip_overlap`` LR frames at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import torch

from src.ops.inference import DEFAULT_TILE_MEMORY_MB, Tile, upscale
from src.utils.choices import SEQUENCE, SINGLE, WINDOW, WINDOW_PADDINGS
from src.utils.errors import UserError

Network = Callable[[torch.Tensor], torch.Tensor]


class ShortClipError(UserError, ValueError):
    """A clip with fewer frames than every call of the network takes (a fixed-T ONNX file): a
    problem of that input, which src.predict reports before going on with the others."""


@dataclass(frozen=True)
class Chunk:
    """Frames ``start:stop`` are run; frames ``keep_start:keep_stop`` of the clip are kept."""

    start: int
    stop: int
    keep_start: int
    keep_stop: int


def chunk_plan(total: int, clip_length: int | None, clip_overlap: int) -> list[Chunk]:
    """Temporal chunks covering ``total`` frames: cores of ``clip_length`` frames, each run with
    ``clip_overlap`` frames of context on each side (as far as the clip reaches)."""
    if clip_length is not None and clip_length < 1:
        raise UserError(
            f"clip_length must be a positive number of frames or null, got {clip_length}"
        )
    if clip_overlap < 0:
        raise UserError(f"clip_overlap must be >= 0 frames, got {clip_overlap}")
    if clip_length is None or clip_length >= total:
        return [Chunk(0, total, 0, total)]
    chunks = []
    for core in range(0, total, clip_length):
        core_stop = min(core + clip_length, total)
        chunks.append(
            Chunk(
                max(core - clip_overlap, 0), min(core_stop + clip_overlap, total), core, core_stop
            )
        )
    return chunks


def window_indices(centre: int, total: int, window: int, position: int, padding: str) -> list[int]:
    """The frames of the window whose ``position``-th frame is ``centre``, in a clip of ``total``
    frames; indices past the ends follow ``padding`` (the modes of BasicSR's video test sets:
    ``replicate`` repeats the end frame, ``reflection`` mirrors about it, ``reflection_circle``
    continues from the window's other side, ``circle`` wraps round the window)."""
    if padding not in WINDOW_PADDINGS:
        raise UserError(
            f"window_padding must be one of {', '.join(WINDOW_PADDINGS)}, got {padding!r}"
        )
    first, last = centre - position, centre - position + window - 1
    last_frame = total - 1
    indices = []
    for index in range(first, last + 1):
        if index < 0:
            index = {
                "replicate": 0,
                "reflection": -index,
                "reflection_circle": last - index,
                "circle": window + index,
            }[padding]
        elif index > last_frame:
            index = {
                "replicate": last_frame,
                "reflection": 2 * last_frame - index,
                "reflection_circle": first - (index - last_frame),
                "circle": index - window,
            }[padding]
        indices.append(min(max(index, 0), last_frame))  # a window longer than the clip
    return indices


@dataclass(frozen=True)
class ClipInference:
    """How a clip is run: the network's use of time and the chunking, tiling and ensemble."""

    frames: str = SINGLE
    window: int = 1
    window_position: int | None = None  # None: the centre, window // 2
    padding: str = "reflection_circle"
    clip_length: int | None = None
    clip_overlap: int = 2
    tile: Tile = None
    tile_overlap: int = 16
    self_ensemble: bool = False
    tile_memory_mb: float = DEFAULT_TILE_MEMORY_MB
    # The shortest clip the network takes (IconVSR: one keyframe window, 5 frames).
    min_frames: int = 1
    # Every call of a recurrent network takes exactly this many frames (a fixed-T ONNX file).
    fixed_frames: int | None = None


def sequence_context(settings: ClipInference) -> int:
    """The context frames each side of a chunk's core: ``clip_overlap``, raised so that every
    chunk of a long enough clip holds the network's ``min_frames`` (a chunk of one core frame
    at a clip's end would otherwise be shorter than IconVSR's keyframe window)."""
    return max(settings.clip_overlap, settings.min_frames - 1)


def fixed_chunk_frames(fixed_frames: int, clip_overlap: int) -> tuple[int, int]:
    """(frames kept of each call, frames of context each side) for calls of exactly
    ``fixed_frames`` frames: ``clip_overlap`` of context, lowered to keep at least one frame."""
    context = min(clip_overlap, (fixed_frames - 1) // 2)
    return fixed_frames - 2 * context, context


def stream_fixed_frames(
    frames: Iterable[torch.Tensor], net: Network, scale: int, settings: ClipInference
) -> Iterator[torch.Tensor]:
    """:func:`stream_upscale` for a network that takes exactly ``T = fixed_frames`` frames a
    call: the core of ``keep`` frames starting at frame ``s`` is run in frames ``w .. w + T - 1``,
    ``w = min(max(s - lead, 0), total - T)`` (:func:`fixed_chunk_frames`), as soon as they are
    read; at most ``T + 1`` frames are held. ``clip_length`` does not apply (T bounds the
    memory)."""
    length = settings.fixed_frames
    assert length is not None
    keep, lead = fixed_chunk_frames(length, settings.clip_overlap)
    buffer: list[torch.Tensor] = []  # frames first .. first + len(buffer) - 1
    first = start = 0  # start: the first frame not yet written
    ran: tuple[int, torch.Tensor] | None = None  # the last window run, by its first frame

    def run(window_first: int) -> torch.Tensor:
        nonlocal ran
        if ran is None or ran[0] != window_first:
            clip = torch.stack(buffer[window_first - first : window_first - first + length], dim=1)
            ran = (window_first, _image_call(net, clip, scale, settings))
        return ran[1]

    read = 0
    for read, frame in enumerate(frames, start=1):
        buffer.append(frame)
        while max(start - lead, 0) + length <= read:
            window_first = max(start - lead, 0)
            out = run(window_first)
            for index in range(start, start + keep):
                yield out[:, index - window_first]
            start += keep
        # What a later window can start at: the next core's, or the last T frames at the end.
        needed = max(min(max(start - lead, 0), read - length), first)
        buffer, first = buffer[needed - first :], needed
    if start >= read:
        return
    if read < length:
        raise ShortClipError(
            f"a clip of {read} frames is shorter than the {length} frames each call takes (an "
            f"ONNX file's fixed clip length): export it again with frames={read} or fewer"
        )
    while start < read:
        window_first = min(max(start - lead, 0), read - length)
        out = run(window_first)
        for index in range(start, min(start + keep, read)):
            yield out[:, index - window_first]
        start += keep


def upscale_clip(
    net: Network, lr: torch.Tensor, scale: int, settings: ClipInference
) -> torch.Tensor:
    """Super-resolve a clip (N, T, C, h, w) to (N, T, C, sh, sw) with ``net``."""
    if lr.dim() != 5:
        raise ValueError(f"a clip is (N, T, C, H, W), got {tuple(lr.shape)}")
    frames = list(_upscaled_frames(net, lr, scale, settings))
    return torch.stack(frames, dim=1)


def _image_call(net: Network, x: torch.Tensor, scale: int, settings: ClipInference) -> torch.Tensor:
    return upscale(
        net,
        x,
        scale,
        tile=settings.tile,
        tile_overlap=settings.tile_overlap,
        self_ensemble=settings.self_ensemble,
        tile_memory_mb=settings.tile_memory_mb,
    )


def _upscaled_frames(
    net: Network, lr: torch.Tensor, scale: int, settings: ClipInference
) -> Iterator[torch.Tensor]:
    """Each output frame (N, C, sh, sw) in order."""
    total = lr.shape[1]
    if settings.frames == SINGLE:
        for index in range(total):
            yield _image_call(net, lr[:, index], scale, settings)
    elif settings.frames == WINDOW:
        position = (
            settings.window // 2 if settings.window_position is None else settings.window_position
        )
        for index in range(total):
            chosen = window_indices(index, total, settings.window, position, settings.padding)
            yield _image_call(net, lr[:, chosen], scale, settings)
    elif settings.frames == SEQUENCE and settings.fixed_frames is not None:
        yield from stream_fixed_frames(lr.unbind(1), net, scale, settings)
    elif settings.frames == SEQUENCE:
        for chunk in chunk_plan(total, settings.clip_length, sequence_context(settings)):
            out = _image_call(net, lr[:, chunk.start : chunk.stop], scale, settings)
            for index in range(chunk.keep_start, chunk.keep_stop):
                yield out[:, index - chunk.start]
    else:
        raise ValueError(f"unknown frames kind {settings.frames!r}")


def stream_upscale(
    frames: Iterable[torch.Tensor],
    net: Network,
    scale: int,
    settings: ClipInference,
) -> Iterator[torch.Tensor]:
    """Upscaled frames (N, C, sh, sw), in order, of ``frames`` (N, C, h, w) read one at a time.

    Chunks follow :func:`chunk_plan` (``clip_length`` frames kept of each, ``clip_overlap`` of
    context each side, at least :func:`sequence_context`; a window network gets at least its
    window as context, so only the clip's true ends are padded); each chunk is run as a clip by
    :func:`upscale_clip`. Without a ``clip_length`` every frame is read before the first is
    upscaled. A network of ``fixed_frames`` runs :func:`stream_fixed_frames` instead.
    """
    if settings.frames == SEQUENCE and settings.fixed_frames is not None:
        yield from stream_fixed_frames(frames, net, scale, settings)
        return
    length = settings.clip_length
    overlap = sequence_context(settings)
    if settings.frames == WINDOW:
        overlap = max(overlap, settings.window)
    whole = replace(settings, clip_length=None)
    buffer: list[torch.Tensor] = []
    first = 0  # clip index of buffer[0]
    core = 0  # clip index of the first frame not yet written
    for index, frame in enumerate(frames):
        buffer.append(frame)
        if length is not None and index + 1 >= core + length + overlap:
            yield from _run_chunk(net, buffer, first, core, core + length, scale, whole)
            core += length
            drop = max(core - overlap - first, 0)
            buffer, first = buffer[drop:], first + drop
    if buffer and core < first + len(buffer):
        yield from _run_chunk(net, buffer, first, core, first + len(buffer), scale, whole)


def _run_chunk(
    net: Network,
    buffer: list[torch.Tensor],
    first: int,
    keep_start: int,
    keep_stop: int,
    scale: int,
    settings: ClipInference,
) -> Iterator[torch.Tensor]:
    """Run the buffered frames as one clip; yield those of ``keep_start:keep_stop``."""
    out = upscale_clip(net, torch.stack(buffer, dim=1), scale, settings)
    for index in range(keep_start, keep_stop):
        yield out[:, index - first]
