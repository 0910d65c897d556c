"""The one inference path: whole-image or tiled, optionally with x8 self-ensemble.

Validation, ``src.eval`` and ``src.predict`` all call :func:`upscale`, so a score seen during
training is the score evaluation prints and the image prediction writes.

Tiling splits the LR image into a grid of non-overlapping *cores* of ``tile`` pixels; each core is
run with ``overlap`` pixels of real image context on every side, and only the core's part of the
output is kept. No blending is needed: a pixel's output depends only on its neighbourhood, so with
enough context each kept pixel equals the whole-image result up to floating-point noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

Network = Callable[[torch.Tensor], torch.Tensor]


def _starts(length: int, tile: int) -> Iterator[int]:
    """Start offsets of the cores that cover ``length`` pixels in steps of ``tile``."""
    yield from range(0, length, tile)


def upscale_tiled(
    net: Network, lr: torch.Tensor, scale: int, tile: int, overlap: int
) -> torch.Tensor:
    """Run ``net`` over tiles of ``lr`` (N, C, H, W) and stitch the kept cores."""
    if tile <= 0:
        raise ValueError(f"tile must be a positive number of pixels, got {tile}")
    if overlap < 0:
        raise ValueError(f"tile_overlap must be >= 0, got {overlap}")
    n, _, h, w = lr.shape
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
                out = patch_out.new_empty(n, patch_out.shape[1], h * scale, w * scale)
            keep = patch_out[
                ...,
                (top - y0) * scale : (bottom - y0) * scale,
                (left - x0) * scale : (right - x0) * scale,
            ]
            out[..., top * scale : bottom * scale, left * scale : right * scale] = keep
    assert out is not None
    return out


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
    tile: int | None = None,
    tile_overlap: int = 16,
    self_ensemble: bool = False,
) -> torch.Tensor:
    """Super-resolve ``lr`` (N, C, H, W) with ``net``; the shared path of val, eval and predict.

    ``self_ensemble`` averages the outputs of the 8 flipped/rotated inputs (Lim et al., EDSR,
    CVPRW 2017, "geometric self-ensemble").
    """

    def run(x: torch.Tensor) -> torch.Tensor:
        if tile is None:
            return net(x)
        return upscale_tiled(net, x, scale, tile, tile_overlap)

    if not self_ensemble:
        return run(lr)
    total = torch.zeros(())
    for index in range(8):
        total = total + _d4_inverse(run(_d4_forward(lr, index)), index)
    return total / 8.0
