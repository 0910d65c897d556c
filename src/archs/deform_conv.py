"""Modulated deformable convolution layer (DCNv2) with its offset/mask convolution, the layer
of EDVR's PCD alignment and BasicVSR++'s flow-guided deformable alignment.

Zhu, Hu, Lin and Dai, "Deformable ConvNets v2: More Deformable, Better Results", CVPR 2019;
used for video alignment as in Chan, Wang, Yu, Dong and Loy, "Understanding Deformable Alignment
in Video Super-Resolution", AAAI 2021 (BasicSR's ``DCNv2Pack``).

Upstream: https://github.com/XPixelGroup/BasicSR (commit 323cc14, ``basicsr/archs/arch_util.py``
``DCNv2Pack`` and commit 3a45f63, ``basicsr/ops/dcn/deform_conv.py``
``ModulatedDeformConvPack``), Apache-2.0; mmcv's ``ModulatedDeformConv2dPack``
(https://github.com/open-mmlab/mmcv, commit f127a73), Apache-2.0. SR Lab's code is its own;
parameter names and initialisation follow BasicSR so released EDVR/BasicVSR++ weights load.

Parameters: ``weight`` (C_out, C_in / groups, k, k), ``bias`` (C_out), and ``conv_offset``, a
convolution with the layer's geometry giving ``3 * deformable_groups * k * k`` channels from the
feature that steers the sampling (the input itself by default, another feature in EDVR's
``DCNv2Pack.forward(x, feat)``). Its output splits as BasicSR's: ``o1, o2, mask = chunk(3)``,
offset ``cat(o1, o2)`` (the first two thirds, (dy, dx) interleaved per tap: the layout of
:mod:`src.ops.deform_conv`, unchanged from torchvision and mmcv), mask ``sigmoid(mask)``.
``conv_offset`` starts at zero (no offset, mask 1/2), the weight uniform in +-1/sqrt(C_in k k)
and the bias at zero, as BasicSR. A subclass with another offset network (BasicVSR++'s
second-order alignment replaces ``conv_offset`` by a stack of convolutions and adds the flow)
computes its own offset and mask and calls :meth:`deform`. The sampling runs on every device,
never skipped on CPU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from src.ops.deform_conv import modulated_deform_conv2d

__all__ = ["ModulatedDeformConv2d"]


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 layer with BasicSR's ``DCNv2Pack`` parameters: ``forward(x, feat=None)`` predicts
    offsets and masks from ``feat`` (``x`` when None) and samples ``x`` with them."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in_channels={in_channels} and "
                f"out_channels={out_channels}"
            )
        if in_channels % deformable_groups:
            raise ValueError(
                f"deformable_groups={deformable_groups} must divide in_channels={in_channels}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, *self.kernel_size)
        )
        self.bias: nn.Parameter | None
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset: nn.Module = nn.Conv2d(
            in_channels,
            3 * deformable_groups * taps,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            bias=True,
        )
        self.reset_parameters()

    @property
    def deform_groups(self) -> int:
        """mmcv's name for :attr:`deformable_groups` (BasicVSR++'s code reads it)."""
        return self.deformable_groups

    def reset_parameters(self) -> None:
        """BasicSR's initialisation: uniform weight, zero bias, zero ``conv_offset``."""
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if isinstance(self.conv_offset, nn.Conv2d):
            nn.init.zeros_(self.conv_offset.weight)
            if self.conv_offset.bias is not None:
                nn.init.zeros_(self.conv_offset.bias)

    def offset_and_mask(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        """``conv_offset(feat)`` split as BasicSR: offset (first two thirds), sigmoid mask."""
        out = self.conv_offset(feat)
        o1, o2, mask = torch.chunk(out, 3, dim=1)
        return torch.cat((o1, o2), dim=1), torch.sigmoid(mask)

    def deform(self, x: Tensor, offset: Tensor, mask: Tensor | None) -> Tensor:
        """The deformable convolution of ``x`` with this layer's weights and given offsets."""
        return modulated_deform_conv2d(
            x,
            offset,
            mask,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.deformable_groups,
        )

    def forward(self, x: Tensor, feat: Tensor | None = None) -> Tensor:
        offset, mask = self.offset_and_mask(x if feat is None else feat)
        return self.deform(x, offset, mask)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, deformable_groups={self.deformable_groups}, "
            f"bias={self.bias is not None}"
        )
