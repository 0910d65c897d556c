"""The bicubic baseline: MATLAB ``imresize`` upscaling, no parameters.

Upstream: no official repository; the reference is MATLAB's ``imresize`` (bicubic, with
antialiasing), reimplemented in :mod:`src.ops.imresize`; no licence applies: SR Lab's code
is an independent implementation.

Every SR table has a bicubic row; scoring it through the same pipeline as the networks checks the
pipeline itself against the published row.
"""

from __future__ import annotations

import torch

from src.archs.base import NetworkTraits, SRNetwork
from src.ops.imresize import imresize


class Bicubic(SRNetwork):
    """Upscale by ``scale`` with MATLAB-exact bicubic interpolation."""

    traits = NetworkTraits(scales=None, tile_exact=True)

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return imresize(x, scale=float(self.scale))
