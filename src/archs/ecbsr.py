"""ECBSR: Zhang, Zeng and Zhang, "Edge-oriented Convolution Block for Real-time Super Resolution on
Mobile Devices", ACM Multimedia 2021.

Upstream: https://github.com/xindongzhang/ECBSR (commit c60b1d2, models/ecb.py, models/ecbsr.py
and models/plainsr.py), Apache-2.0 (LICENSE; no NOTICE file upstream).
SR Lab's code is its own; module and parameter names follow the upstream files, so a file saved
by the authors' training code loads into :class:`ECBSR`, and one of their plain (deploy) network
into its fused form.

The edge-oriented convolution block (ECB) trains five linear branches side by side and sums them:
a 3x3 convolution; a 1x1 expansion (to twice the output channels) followed by a 3x3 convolution;
a 1x1 convolution followed by a Sobel-x, a Sobel-y and a Laplacian filter, each scaled per channel
(a learned scale and bias on a fixed depthwise mask); optionally the identity (``with_idt``, where
input and output widths agree). The 1x1 branches see the input zero-padded before the 1x1
convolution, so their padding carries the 1x1 bias, as the authors pad. Then PReLU (the authors'
choice; ReLU, RReLU, Softplus or none also selectable). All five branches are linear, so the block
is one 3x3 convolution and its activation (:meth:`ECB.fuse`, :mod:`src.archs.reparam`). In eval
mode an ECB runs that folded kernel, as upstream; in training mode the branches. (The filter
branches' 1x1 biases ``b0`` get no gradient, upstream's neither: the padded map they shift is
constant, and the Sobel and Laplacian filters sum to zero.)

ECBSR is a plain chain: an ECB from the image to ``channel_nums`` features, ``module_nums`` ECBs,
an ECB (no activation) to ``scale``^2 values per image channel; the input is added to each of
those values (nearest-neighbour upscaling as a residual) and the result pixel-shuffled. Like the
authors (``colors=1``) only luma goes through the network by default, chroma is bicubic;
``colors=3`` runs RGB through it. The authors trained on 0..255 values and released no weights;
SR Lab trains it on [0, 1].

Parameters at x4 with ``colors=1`` and PReLU, in the fused (inference) form, the size the paper
reports (counted from the upstream layout: 9 C_in C_out + C_out per convolution, C_out per
PReLU): M4C8 3,624; M4C16 11,840; M10C32 97,776; M16C64 601,808 (at x2: 2,748; 10,100; 94,308;
594,884). The training form of M4C16 x4 trains 47,120 parameters.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork
from src.archs.reparam import conv_from_kernel
from src.ops.color import upscale_luma

# The expand-and-squeeze branch widens to this multiple of the output channels (upstream's 2.0).
DEPTH_MULTIPLIER = 2.0
SOBEL_X = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))
SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))
LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))
# Upstream draws each filter branch's scale and bias from N(0, 1e-3^2).
FILTER_INIT_STD = 1e-3


def make_activation(act_type: str, channels: int) -> nn.Module:
    """The activation upstream's ``act_type`` names (``linear``: none)."""
    factories: dict[str, Callable[[], nn.Module]] = {
        "prelu": lambda: nn.PReLU(num_parameters=channels),
        "relu": lambda: nn.ReLU(),
        "rrelu": lambda: nn.RReLU(lower=-0.05, upper=0.05),
        "softplus": lambda: nn.Softplus(),
        "linear": lambda: nn.Identity(),
    }
    if act_type not in factories:
        raise ValueError(f"act_type={act_type!r}: choose one of {', '.join(factories)}")
    return factories[act_type]()


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution of ``x`` zero-padded by one pixel: the border holds the bias."""
    return F.conv2d(F.pad(x, (1, 1, 1, 1)), weight, bias)


class ExpandSqueezeConv(nn.Module):
    """Upstream's ``conv1x1-conv3x3`` branch: 1x1 to ``mid`` channels, then an unpadded 3x3."""

    def __init__(self, c_in: int, c_out: int, depth_multiplier: float = DEPTH_MULTIPLIER):
        super().__init__()
        mid = int(c_out * depth_multiplier)
        expand, squeeze = nn.Conv2d(c_in, mid, 1), nn.Conv2d(mid, c_out, 3)
        self.k0, self.b0 = expand.weight, cast(nn.Parameter, expand.bias)
        self.k1, self.b1 = squeeze.weight, cast(nn.Parameter, squeeze.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(pointwise(x, self.k0, self.b0), self.k1, self.b1)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 3x3 kernel and bias (on the zero-padded input) this branch amounts to."""
        weight = torch.einsum("omhw,mi->oihw", self.k1, self.k0[:, :, 0, 0])
        bias = torch.einsum("omhw,m->o", self.k1, self.b0) + self.b1
        return weight, bias


class ScaledFilterConv(nn.Module):
    """Upstream's ``conv1x1-sobelx``/``-sobely``/``-laplacian`` branches: a 1x1 convolution, then
    a fixed 3x3 filter per channel times a learned per-channel scale, plus a bias."""

    def __init__(self, c_in: int, c_out: int, taps: tuple[tuple[float, ...], ...]):
        super().__init__()
        conv = nn.Conv2d(c_in, c_out, 1)
        self.k0, self.b0 = conv.weight, cast(nn.Parameter, conv.bias)
        self.scale = nn.Parameter(torch.randn(c_out, 1, 1, 1) * FILTER_INIT_STD)
        self.bias = nn.Parameter(torch.randn(c_out) * FILTER_INIT_STD)
        # Upstream stores the filter in every checkpoint (a frozen parameter): a buffer here.
        self.mask: torch.Tensor
        self.register_buffer("mask", torch.tensor(taps).expand(c_out, 1, 3, 3).clone())

    def depthwise_kernel(self) -> torch.Tensor:
        return self.scale * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = pointwise(x, self.k0, self.b0)
        return F.conv2d(features, self.depthwise_kernel(), self.bias, groups=features.shape[1])

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        depthwise = self.depthwise_kernel()[:, 0]
        weight = torch.einsum("ohw,oi->oihw", depthwise, self.k0[:, :, 0, 0])
        bias = self.bias + self.b0 * depthwise.sum(dim=(1, 2))
        return weight, bias


class PlainConv3X3(nn.Module):
    """The fused ECB: one 3x3 convolution and the activation (upstream's plainsr ``Conv3X3``,
    whose names it keeps: ``conv3x3``, ``act``)."""

    def __init__(self, conv3x3: nn.Conv2d, act: nn.Module):
        super().__init__()
        self.conv3x3 = conv3x3
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3x3(x))


class ECB(nn.Module):
    """Edge-oriented convolution block (see the module docstring)."""

    def __init__(
        self,
        inp_planes: int,
        out_planes: int,
        depth_multiplier: float = DEPTH_MULTIPLIER,
        act_type: str = "prelu",
        with_idt: bool = False,
    ):
        super().__init__()
        self.with_idt = bool(with_idt) and inp_planes == out_planes
        self.conv3x3 = nn.Conv2d(inp_planes, out_planes, 3, padding=1)
        self.conv1x1_3x3 = ExpandSqueezeConv(inp_planes, out_planes, depth_multiplier)
        self.conv1x1_sbx = ScaledFilterConv(inp_planes, out_planes, SOBEL_X)
        self.conv1x1_sby = ScaledFilterConv(inp_planes, out_planes, SOBEL_Y)
        self.conv1x1_lpl = ScaledFilterConv(inp_planes, out_planes, LAPLACIAN)
        self.act = make_activation(act_type, out_planes)

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        """The training form: the sum of the branches, before the activation."""
        out = self.conv3x3(x) + self.conv1x1_3x3(x)
        out = out + self.conv1x1_sbx(x) + self.conv1x1_sby(x) + self.conv1x1_lpl(x)
        return out + x if self.with_idt else out

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The one 3x3 kernel and bias the branches amount to (upstream's ``rep_params``)."""
        weight, bias = self.conv3x3.weight, cast(torch.Tensor, self.conv3x3.bias)
        for branch in (self.conv1x1_3x3, self.conv1x1_sbx, self.conv1x1_sby, self.conv1x1_lpl):
            branch_weight, branch_bias = branch.folded()
            weight, bias = weight + branch_weight, bias + branch_bias
        if self.with_idt:
            identity = torch.zeros_like(weight)
            identity[:, :, 1, 1] = torch.eye(weight.shape[0], dtype=weight.dtype)
            weight = weight + identity
        return weight, bias

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """One 3x3 convolution and a copy of the activation (:mod:`src.archs.reparam`)."""
        return PlainConv3X3(conv_from_kernel(*self.folded()), copy.deepcopy(self.act))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.act(self.branches(x))
        return self.act(F.conv2d(x, *self.folded(), padding=1))


class ECBSR(SRNetwork):
    """ECBSR; upstream's network with its names (see the module docstring)."""

    traits = NetworkTraits(scales=None, channels=(3,), tile_exact=True)

    # RGB in and out, whatever channels the convolutions see (Y by default).
    image_channels = 3

    def __init__(
        self,
        scale: int,
        module_nums: int = 4,
        channel_nums: int = 16,
        with_idt: bool = False,
        act_type: str = "prelu",
        colors: int = 1,
    ):
        super().__init__()
        if colors not in (1, 3):
            raise ValueError(f"colors={colors}: 1 (luma, as the authors) or 3 (RGB)")
        self.scale = scale
        self.colors = colors
        widths = [colors, *[channel_nums] * (module_nums + 1)]
        blocks = [
            ECB(c_in, c_out, act_type=act_type, with_idt=with_idt)
            for c_in, c_out in itertools.pairwise(widths)
        ]
        tail = ECB(channel_nums, colors * scale**2, act_type="linear", with_idt=with_idt)
        self.backbone = nn.Sequential(*blocks, tail)
        self.upsampler = nn.PixelShuffle(scale)

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """The network on ``colors`` channels: ``scale``^2 values per channel plus the input
        (upstream broadcasts its one channel; repeating each channel is that for any count)."""
        residual = x.repeat_interleave(self.scale**2, dim=1)
        return self.upsampler(self.backbone(x) + residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.colors == 1:
            return upscale_luma(x, self.scale, self.restore)
        return self.restore(x)
