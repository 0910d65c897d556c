"""Backward warping by optical flow: the one warp every SR Lab video network aligns with.

Upstream: https://github.com/XPixelGroup/BasicSR (commit 8d56e3a, basicsr/archs/arch_util.py,
``flow_warp``), Apache-2.0 (no NOTICE file upstream).
SR Lab's code is its own; it samples exactly as ``flow_warp`` does, so BasicSR's video networks
(SPyNet, BasicVSR) keep their outputs, and the warp of any later network is this one.

``flow_warp(x, flow)`` reads each output pixel (i, j) of ``x`` at (j + flow_x, i + flow_y): a
backward warp, with the flow in pixels, channel 0 horizontal and channel 1 vertical, laid out
(N, 2, H, W) as a flow network outputs it. The sampling is upstream's: ``grid_sample`` with
``align_corners=True`` (pixel centres at -1 and +1 of the normalised grid, so an integer flow is
an exact shift), bilinear interpolation, and zeros outside the image (BasicVSR's propagation) or
the border pixel repeated (``padding_mode="border"``: SPyNet's pyramid). The grid is built and
sampled in float32 at least: a bf16 sampling grid is off by up to a third of a pixel on a 180 px
wide frame, so under bf16 autocast the features are sampled in float32 and returned in their own
dtype.

:class:`FlowWarp` is the same warp as a module of one tensor (the image's channels followed by the
two flow channels), the form the parity fixtures call.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

PaddingMode = Literal["zeros", "border", "reflection"]
InterpolationMode = Literal["bilinear", "nearest", "bicubic"]


def sampling_grid(flow: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``grid_sample``'s (N, H, W, 2) grid for ``flow`` (N, 2, H, W): each pixel's own position
    plus its flow, normalised so that -1 and +1 are the centres of the first and last pixels.
    Computed as upstream computes it (position + flow, then 2 v / max(size - 1, 1) - 1), in
    ``dtype`` or the flow's own dtype, whichever is wider."""
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (N, 2, H, W), got {tuple(flow.shape)}")
    dtype = torch.promote_types(flow.dtype, dtype)
    _, _, height, width = flow.shape
    rows = torch.arange(height, device=flow.device, dtype=dtype).view(1, height, 1)
    columns = torch.arange(width, device=flow.device, dtype=dtype).view(1, 1, width)
    x = columns + flow[:, 0].to(dtype)
    y = rows + flow[:, 1].to(dtype)
    x = 2.0 * x / max(width - 1, 1) - 1.0
    y = 2.0 * y / max(height - 1, 1) - 1.0
    return torch.stack((x, y), dim=3)


def flow_warp(
    x: torch.Tensor,
    flow: torch.Tensor,
    padding_mode: PaddingMode = "zeros",
    mode: InterpolationMode = "bilinear",
) -> torch.Tensor:
    """Warp ``x`` (N, C, H, W) backward by ``flow`` (N, 2, H, W; pixels, x then y): output pixel
    (i, j) is ``x`` read at (j + flow[:, 0, i, j], i + flow[:, 1, i, j])."""
    if x.dim() != 4 or x.shape[0] != flow.shape[0] or x.shape[-2:] != flow.shape[-2:]:
        raise ValueError(
            f"flow_warp needs x (N, C, H, W) and flow (N, 2, H, W) of the same N, H and W; "
            f"got {tuple(x.shape)} and {tuple(flow.shape)}"
        )
    grid = sampling_grid(flow, torch.promote_types(x.dtype, torch.float32))
    warped = F.grid_sample(
        x.to(grid.dtype), grid, mode=mode, padding_mode=padding_mode, align_corners=True
    )
    return warped.to(x.dtype)


class FlowWarp(nn.Module):
    """:func:`flow_warp` with fixed settings, as a module of one (N, C + 2, H, W) tensor: the
    image's C channels, then the flow's horizontal and vertical channels (pixels)."""

    def __init__(self, padding_mode: PaddingMode = "zeros", mode: InterpolationMode = "bilinear"):
        super().__init__()
        self.padding_mode: PaddingMode = padding_mode
        self.mode: InterpolationMode = mode

    def forward(self, image_and_flow: torch.Tensor) -> torch.Tensor:
        image, flow = image_and_flow[:, :-2], image_and_flow[:, -2:]
        return flow_warp(image, flow, self.padding_mode, self.mode)
