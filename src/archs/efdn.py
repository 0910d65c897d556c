"""EFDN: Yan Wang, "Edge-Enhanced Feature Distillation Network for Efficient Super-Resolution",
CVPR Workshops (NTIRE 2022), 2022; the baseline of the NTIRE 2025 efficient SR challenge.

Upstream: https://github.com/icandle/EFDN (commit 3e7c7b4, models/EFDN_deploy.py and
models/unitv2.py), Apache-2.0 (LICENSE; no NOTICE file upstream). The challenge ships the same
network and weights as ``models/team00_EFDN.py`` and ``model_zoo/team00_EFDN.pth`` of
https://github.com/Amazingren/NTIRE2025_ESR.
SR Lab's code is its own; module and parameter names follow the upstream files, so the released
(deploy-form) weights load strictly into ``EFDN(4, deploy=True)``, or into the fused form of the
training network.

The edge-enhanced diverse branch block (EDBB) trains linear branches side by side and sums them:
a 3x3 convolution (``rep_conv``), a 1x1 convolution, and a 1x1 convolution followed by a Sobel-x,
a Sobel-y and a Laplacian filter, each scaled per channel (ECBSR's branches,
:mod:`src.archs.ecbsr`); optionally the 1x1-then-3x3 sequence (``with_13``) and the identity
(``with_idt``), both off in the authors' code. Then PReLU. All branches are linear, so the block
is one 3x3 convolution and its PReLU (:meth:`EDBB.fuse`, named as upstream's ``EDBB_deploy``).
An EDBB runs its branches in both modes, as upstream's does until it is switched to deploy;
``src.eval``, ``src.predict`` and ``src.export`` run the fused network. Upstream builds the
1x1-3x3 branch even when it is off (its weights then get no gradient); here it exists only with
``with_13``.

A cell: a 1x1 convolution with PReLU, two EDBBs, the four intermediate features each reduced to
half the channels by a 1x1 convolution, concatenated, fused by a 1x1 convolution, RFDN's enhanced
spatial attention (:class:`src.archs.rfdn.ESA`) and a residual connection. Four cells with 1x1
fusions of pairs of cell outputs (the last pairs the second cell's output with the fourth's, as
upstream), a long residual from the head, and a 3x3 convolution with pixel shuffle. Upstream's
deploy network clamps its output to [0, 1]; here the scorer and the writers clip instead, so
scores and images are the same and training sees the unclamped output.

48 features, x4: 276,192 parameters in the fused (released) form, the 0.276M the NTIRE 2025 rules
quote; the training form trains 353,760 (538,848 with the 1x1-3x3 branch).
"""

from __future__ import annotations

import copy
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork
from src.archs.ecbsr import (
    LAPLACIAN,
    SOBEL_X,
    SOBEL_Y,
    ExpandSqueezeConv,
    ScaledFilterConv,
    make_activation,
)
from src.archs.reparam import conv_from_kernel
from src.archs.rfdn import ESA

NUM_CELLS = 4
# The 1x1-3x3 branch does not widen (upstream's default depth_multiplier).
DEPTH_MULTIPLIER = 1.0


class EDBBDeploy(nn.Module):
    """The fused EDBB: one 3x3 convolution and the activation (upstream's ``EDBB_deploy``, whose
    names it keeps: ``rep_conv``, ``act``)."""

    def __init__(self, rep_conv: nn.Conv2d, act: nn.Module):
        super().__init__()
        self.rep_conv = rep_conv
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.rep_conv(x))


class EDBB(nn.Module):
    """Edge-enhanced diverse branch block (see the module docstring)."""

    def __init__(
        self,
        inp_planes: int,
        out_planes: int,
        act_type: str = "prelu",
        with_idt: bool = False,
        with_13: bool = False,
    ):
        super().__init__()
        self.with_idt = bool(with_idt) and inp_planes == out_planes
        self.rep_conv = nn.Conv2d(inp_planes, out_planes, 3, padding=1)
        self.conv1x1 = nn.Conv2d(inp_planes, out_planes, 1)
        self.conv1x1_3x3 = (
            ExpandSqueezeConv(inp_planes, out_planes, DEPTH_MULTIPLIER) if with_13 else None
        )
        self.conv1x1_sbx = ScaledFilterConv(inp_planes, out_planes, SOBEL_X)
        self.conv1x1_sby = ScaledFilterConv(inp_planes, out_planes, SOBEL_Y)
        self.conv1x1_lpl = ScaledFilterConv(inp_planes, out_planes, LAPLACIAN)
        self.act = make_activation(act_type, out_planes)

    def filter_branches(self) -> list[ExpandSqueezeConv | ScaledFilterConv]:
        """The 1x1-then-3x3 branches that are on."""
        branches: list[ExpandSqueezeConv | ScaledFilterConv] = [
            self.conv1x1_sbx,
            self.conv1x1_sby,
            self.conv1x1_lpl,
        ]
        return branches if self.conv1x1_3x3 is None else [self.conv1x1_3x3, *branches]

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        """The training form: the sum of the branches, before the activation."""
        out = self.rep_conv(x) + self.conv1x1(x)
        for branch in self.filter_branches():
            out = out + branch(x)
        return out + x if self.with_idt else out

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The one 3x3 kernel and bias the branches amount to (upstream's ``switch_to_deploy``)."""
        weight = self.rep_conv.weight + F.pad(self.conv1x1.weight, (1, 1, 1, 1))
        bias = cast(torch.Tensor, self.rep_conv.bias) + cast(torch.Tensor, self.conv1x1.bias)
        for branch in self.filter_branches():
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
        return EDBBDeploy(conv_from_kernel(*self.folded()), copy.deepcopy(self.act))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.branches(x))


def edbb(channels: int, deploy: bool, with_idt: bool, with_13: bool) -> nn.Module:
    """An EDBB, or directly its fused form (``deploy``) for the released weights."""
    if deploy:
        return EDBBDeploy(nn.Conv2d(channels, channels, 3, padding=1), nn.PReLU(channels))
    return EDBB(channels, channels, with_idt=with_idt, with_13=with_13)


class PointwisePReLU(nn.Module):
    """A 1x1 convolution and PReLU (upstream's ``conv``: ``conv1x1``, ``act``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1x1 = nn.Conv2d(channels, channels, 1)
        self.act = nn.PReLU(num_parameters=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv1x1(x))


class Cell(nn.Module):
    """EFDN's cell (see the module docstring)."""

    def __init__(self, channels: int, deploy: bool, with_idt: bool, with_13: bool):
        super().__init__()
        self.conv1 = PointwisePReLU(channels)
        self.conv2 = edbb(channels, deploy, with_idt, with_13)
        self.conv3 = edbb(channels, deploy, with_idt, with_13)
        self.fuse = nn.Conv2d(channels * 2, channels, 1)
        self.att = ESA(channels)
        self.branch = nn.ModuleList(nn.Conv2d(channels, channels // 2, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(x)
        out2 = self.conv2(out1)
        out3 = self.conv3(out2)
        features = (x, out1, out2, out3)
        reduced = [reduce(feature) for reduce, feature in zip(self.branch, features, strict=True)]
        return self.att(self.fuse(torch.cat(reduced, 1))) + x


class EFDN(SRNetwork):
    """EFDN; upstream's network with its names (see the module docstring)."""

    traits = NetworkTraits(scales=None)

    def __init__(
        self,
        scale: int,
        num_features: int = 48,
        num_channels: int = 3,
        with_idt: bool = False,
        with_13: bool = False,
        deploy: bool = False,
    ):
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(num_channels, num_features, 3, padding=1)
        self.cells = nn.ModuleList(
            Cell(num_features, deploy, with_idt, with_13) for _ in range(NUM_CELLS)
        )
        self.local_fuse = nn.ModuleList(
            nn.Conv2d(num_features * 2, num_features, 1) for _ in range(NUM_CELLS - 1)
        )
        self.tail = nn.Sequential(
            nn.Conv2d(num_features, num_channels * scale**2, 3, padding=1), nn.PixelShuffle(scale)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.head(x)
        out1 = self.cells[0](shallow)
        out2 = self.cells[1](out1)
        out3 = self.cells[2](self.local_fuse[0](torch.cat([out1, out2], 1)))
        out4 = self.cells[3](self.local_fuse[1](torch.cat([out2, out3], 1)))
        return self.tail(self.local_fuse[2](torch.cat([out2, out4], 1)) + shallow)
