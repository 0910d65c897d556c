"""The one inference path: whole-image or tiled, optionally with x8 self-ensemble.

Validation, ``src.eval`` and ``src.predict`` all call :func:`upscale`, so a score seen during
training is the score evaluation prints and the image prediction writes.

Tiling splits the LR image into a grid of non-overlapping *cores* of ``tile`` pixels; each core is
run with ``overlap`` pixels of real image context on every side, and only the core's part of the
output is kept. No blending is needed: a pixel's output depends only on its neighbourhood, so with
enough context each kept pixel equals the whole-image result up to floating-point noise. Networks
with image-wide statistics (IMDN's contrast-aware and RCAN's channel attention) or window
attention (SwinIR) see only their tile, so their tiled output differs slightly.

``tile="auto"`` picks the largest square tile whose network call fits ``tile_memory_mb``, or the
whole image when that fits. The heuristic: the network's working memory grows linearly with the
number of LR pixels, so one call on a small probe (``PROBE_SIZE`` x ``PROBE_SIZE``) measures the
peak of live tensor bytes per LR pixel (every tensor allocated by a torch op during the call,
tracked until it is freed), and a tile of ``t`` px with ``overlap`` px of context on each side
needs about ``(t + 2 overlap)^2`` times that, plus a ``MEMORY_MARGIN`` for the allocator, the
input and output slices and kernel scratch space. The budget covers one network call; the
stitched output image (3 x 4 bytes per output pixel) comes on top. Measured for EDSR x4
(``bench/tiling.py``): the probe gives 8460 bytes per LR pixel; a whole 1024 x 1024 image raised
the process's peak resident memory by 8450 MB (8460 MB estimated), 256 px tiles with 16 px of
context by 972 MB (669 MB per call + 201 MB of output estimated). A network that torch cannot
see into (onnxruntime) states its figure as a ``bytes_per_lr_pixel`` attribute instead.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from src.utils.errors import UserError

Network = Callable[[torch.Tensor], torch.Tensor]
# A tile size in LR pixels, "auto" (fit tile_memory_mb) or None (the whole image at once).
Tile = int | str | None
AUTO = "auto"
DEFAULT_TILE_MEMORY_MB = 2048.0
PROBE_SIZE = 32
MEMORY_MARGIN = 1.25
MIN_AUTO_TILE = 16


class TileError(UserError, ValueError):
    """A tile setting that cannot work: an unknown value, or a memory budget too small."""


def input_channels(net: torch.nn.Module) -> int:
    """The channels of the images a network takes: its ``image_channels`` where it says (the
    Y-only networks take RGB and convolve one channel, Y), else its first convolution's input
    channels (3 for a network without one, such as bicubic, which takes any)."""
    declared = getattr(net, "image_channels", None)
    if declared is not None:
        return int(declared)
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            return int(module.in_channels)
    return 3


def call_padded(net: Network, lr: torch.Tensor, multiple: int, scale: int) -> torch.Tensor:
    """``net(lr)`` for a network that needs input sides a multiple of ``multiple`` (declared by
    the network, see :mod:`src.archs.base`): ``lr`` is padded at the bottom and right by
    reflection, as BasicSR's inference does for its pixel-unshuffle networks, and the output is
    cropped back to ``scale`` times the input size."""
    if multiple <= 1:
        return net(lr)
    # No branch on the size: an exported graph keeps the padding for every input size.
    height, width = lr.shape[-2:]
    images = lr.reshape(-1, *lr.shape[-3:])  # reflection pads (N, C, H, W); a clip is flattened
    padded = torch.nn.functional.pad(
        images, (0, -width % multiple, 0, -height % multiple), "reflect"
    )
    return net(padded.reshape(*lr.shape[:-2], *padded.shape[-2:]))[
        ..., : height * scale, : width * scale
    ]


def _starts(length: int, tile: int) -> Iterator[int]:
    """Start offsets of the cores that cover ``length`` pixels in steps of ``tile``."""
    yield from range(0, length, tile)


def upscale_tiled(
    net: Network, lr: torch.Tensor, scale: int, tile: int, overlap: int
) -> torch.Tensor:
    """Run ``net`` over tiles of ``lr`` (..., H, W) and stitch the kept cores; leading
    dimensions (a batch, a batch of clips) pass through whole to each network call."""
    if tile <= 0:
        raise TileError(f"tile must be a positive number of pixels, got {tile}")
    if overlap < 0:
        raise TileError(f"tile_overlap must be >= 0, got {overlap}")
    h, w = lr.shape[-2:]
    if h <= tile and w <= tile:
        return net(lr)
    out: torch.Tensor | None = None
    for top in _starts(h, tile):
        for left in _starts(w, tile):
            bottom, right = min(top + tile, h), min(left + tile, w)
            y0, x0 = max(top - overlap, 0), max(left - overlap, 0)
            y1, x1 = min(bottom + overlap, h), min(right + overlap, w)
            patch_out = net(lr[..., y0:y1, x0:x1])
            if out is None:
                out = patch_out.new_empty(*patch_out.shape[:-2], h * scale, w * scale)
            keep = patch_out[
                ...,
                (top - y0) * scale : (bottom - y0) * scale,
                (left - x0) * scale : (right - x0) * scale,
            ]
            out[..., top * scale : bottom * scale, left * scale : right * scale] = keep
    assert out is not None
    return out


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """The tensors in an op's result: a tensor, or (nested) tuples and lists of them."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _tensors(item)


class _PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storage allocated by torch ops inside the block and still alive."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in _tensors(out):
            storage = tensor.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            # In-place ops and views hand back storage already counted.
            if size == 0 or key in self._sizes:
                continue
            self._sizes[key] = size
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key)
        return out


@torch.no_grad()
def measure_bytes_per_lr_pixel(net: Network, like: torch.Tensor) -> float:
    """Peak working memory of one call of ``net`` per LR pixel, measured on a small probe.

    ``like`` (N, C, H, W), or a clip (N, T, C, H, W), gives the leading shape, dtype and device
    of the probe.
    """
    stated = getattr(net, "bytes_per_lr_pixel", None)
    if isinstance(stated, int | float):
        return float(stated) * like.shape[0]
    probe = torch.rand(
        *like.shape[:-2], PROBE_SIZE, PROBE_SIZE, dtype=like.dtype, device=like.device
    )
    tracker = _PeakTensorMemory()
    with tracker:
        net(probe)
    if tracker.peak == 0:
        raise TileError(
            "tile=auto cannot measure this network's memory (it runs no torch ops and states no "
            "bytes_per_lr_pixel); give tile=<px> instead"
        )
    return (tracker.peak + probe.nbytes) / PROBE_SIZE**2


def auto_tile(
    net: Network, lr: torch.Tensor, overlap: int, memory_mb: float = DEFAULT_TILE_MEMORY_MB
) -> int | None:
    """The largest square tile (LR px) whose network call fits ``memory_mb``; None: no tiling.

    See the module docstring for the heuristic.
    """
    height, width = lr.shape[-2:]
    if height * width <= PROBE_SIZE**2:
        return None  # no larger than the probe itself: just run it
    budget = memory_mb * 2**20 / MEMORY_MARGIN
    per_pixel = measure_bytes_per_lr_pixel(net, lr)
    if height * width * per_pixel <= budget:
        return None
    tile = math.isqrt(int(budget / per_pixel)) - 2 * overlap
    if tile < MIN_AUTO_TILE:
        needed = (MIN_AUTO_TILE + 2 * overlap) ** 2 * per_pixel * MEMORY_MARGIN / 2**20
        raise TileError(
            f"tile_memory_mb={memory_mb:g} is too small for this network: a {MIN_AUTO_TILE} px "
            f"tile with {overlap} px of context needs about {needed:.0f} MB"
        )
    return tile


def resolve_tile(
    net: Network, lr: torch.Tensor, tile: Tile, overlap: int, memory_mb: float
) -> int | None:
    """``tile`` as a number of pixels or None, working out ``"auto"``."""
    if tile is None or isinstance(tile, int):
        return tile
    if tile != AUTO:
        raise TileError(f'tile must be a number of pixels, "auto" or null, got {tile!r}')
    return auto_tile(net, lr, overlap, memory_mb)


def _d4_forward(x: torch.Tensor, index: int) -> torch.Tensor:
    """Apply the ``index``-th of the 8 flips/rotations of the square to (..., H, W)."""
    if index >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k=index % 4, dims=(-2, -1))


def _d4_inverse(x: torch.Tensor, index: int) -> torch.Tensor:
    """Undo :func:`_d4_forward` for the same ``index``."""
    x = torch.rot90(x, k=-(index % 4), dims=(-2, -1))
    if index >= 4:
        x = x.flip(-1)
    return x


def upscale(
    net: Network,
    lr: torch.Tensor,
    scale: int,
    tile: Tile = None,
    tile_overlap: int = 16,
    self_ensemble: bool = False,
    tile_memory_mb: float = DEFAULT_TILE_MEMORY_MB,
) -> torch.Tensor:
    """Super-resolve ``lr`` (N, C, H, W) with ``net``; the shared path of val, eval and predict.

    ``tile``: LR pixels per tile, ``"auto"`` (the largest tile that fits ``tile_memory_mb``) or
    None (whole image). ``self_ensemble`` averages the outputs of the 8 flipped/rotated inputs
    (Lim et al., EDSR, CVPRW 2017, "geometric self-ensemble").
    """
    # Square tiles, so one choice serves the rotated views of the self-ensemble too.
    size = resolve_tile(net, lr, tile, tile_overlap, tile_memory_mb)

    def run(x: torch.Tensor) -> torch.Tensor:
        if size is None:
            return net(x)
        return upscale_tiled(net, x, scale, size, tile_overlap)

    if not self_ensemble:
        return run(lr)
    total = torch.zeros(())
    for index in range(8):
        total = total + _d4_inverse(run(_d4_forward(lr, index)), index)
    return total / 8.0
