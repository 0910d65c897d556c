"""BasicVSR: Chan et al., "BasicVSR: The Search for Essential Components in Video
Super-Resolution and Beyond", CVPR 2021.

Upstream: https://github.com/XPixelGroup/BasicSR (commit 8d56e3a, basicsr/archs/basicvsr_arch.py,
``BasicVSR`` and ``ConvResidualBlocks``), Apache-2.0 (no NOTICE file upstream).
SR Lab's code is its own; parameter names follow the upstream file (``spynet.``,
``backward_trunk.main.N``, ``forward_trunk.main.N``, ``fusion``, ``upconv1``, ``upconv2``,
``conv_hr``, ``conv_last``), so BasicSR's released Vimeo-90K BI file loads strictly, SPyNet's
weights and its ImageNet mean and deviation included (tested; its BD and REDS files are made by
the same configuration, 64 features and 30 blocks, and were not checked here).

A clip (N, T, 3, H, W) in [0, 1] gives (N, T, 3, 4H, 4W). SPyNet (:mod:`src.archs.spynet`)
estimates the flow between each pair of neighbouring frames, both ways; it always runs (a clip of
one frame has no pair to align). A backward pass over the clip, from the last frame to the first,
warps the running features by the flow to the current frame (:func:`src.archs.flow.flow_warp`,
zeros outside the frame), concatenates the frame and runs a trunk (a 3x3 convolution and
LeakyReLU 0.1, then ``num_blocks`` residual blocks conv-ReLU-conv without batch norm); a forward
pass does the same from the first frame to the last, and at each frame a 1x1 convolution fuses both
directions' features, two pixel-shuffle x2 stages and two convolutions reconstruct the residual,
and the frame bilinearly upsampled x4 (``align_corners=False``) is added back.

Variant: the paper's and the released files' 64 features and 30 blocks per direction
(upstream's constructor defaults to 15; its configs use 30): 6,291,311 parameters, of which
SPyNet's 1,440,300 (paper: 6.3M). Only x4 exists upstream; the width before the last two
convolutions is fixed at 64 whatever ``num_features`` is, as upstream fixes it.

Declared not bf16-safe: under bf16 autocast (SPyNet's flows in bf16 too; the warp samples in
float32) the released file on seven real Vid4 LR frames gave outputs 53 dB PSNR from fp32 after
rounding to uint8, 1.6x faster on this CPU, but a largest error of 2.7% of the output's range,
above the 2% that ``bf16_safe`` promises.

Every frame's backward features are kept until the forward pass reaches it: memory grows with the
clip's length (64 x H x W floats a frame), so a long video has to go through in chunks of frames.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork
from src.archs.flow import flow_warp
from src.archs.spynet import SPyNet
from src.utils.choices import SEQUENCE

# The width of the layers after the second pixel shuffle (fixed upstream).
RECONSTRUCTION_WIDTH = 64
LRELU_SLOPE = 0.1


class ResidualBlockNoBN(nn.Module):
    """conv-ReLU-conv with an identity skip; starts from a He init scaled by 0.1 (upstream's
    ``default_init_weights(..., 0.1)``)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.conv2 = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight)
            with torch.no_grad():
                conv.weight.mul_(0.1)
                if conv.bias is not None:
                    conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


class ConvResidualBlocks(nn.Module):
    """A propagation trunk: conv 3x3 + LeakyReLU, then residual blocks (``main.0``, ``main.2``)."""

    def __init__(self, in_channels: int, num_features: int, num_blocks: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(in_channels, num_features, 3, padding=1),
            nn.LeakyReLU(LRELU_SLOPE, inplace=True),
            nn.Sequential(*(ResidualBlockNoBN(num_features) for _ in range(num_blocks))),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def neighbour_flows(spynet: SPyNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(forward, backward) flows of a clip (N, T, 3, H, W), each (N, T - 1, 2, H, W):
    ``forward[:, i]`` warps frame i's features onto frame i + 1, ``backward[:, i]`` frame
    i + 1's onto frame i (BasicVSR's and IconVSR's ``get_flow`` upstream)."""
    n, t, c, h, w = x.shape
    earlier = x[:, :-1].reshape(-1, c, h, w)
    later = x[:, 1:].reshape(-1, c, h, w)
    backward = spynet(earlier, later).view(n, t - 1, 2, h, w)
    forward = spynet(later, earlier).view(n, t - 1, 2, h, w)
    return forward, backward


class PixelShufflePack(nn.Module):
    """An up-convolution under mmagic's name (``upsample_conv``; the pixel shuffle is the tail's),
    He-initialised with a zero bias as mmagic's ``PixelShufflePack``."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.upsample_conv = conv
        nn.init.kaiming_normal_(conv.weight)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample_conv(x)


def add_upsampling_tail(net: nn.Module, num_features: int, mmagic_names: bool = False) -> None:
    """Register the reconstruction tail BasicVSR, IconVSR, BasicVSR++ and RealBasicVSR share,
    under the authors' names: ``upconv1`` and ``upconv2`` (each before a pixel shuffle x2),
    ``conv_hr``, ``conv_last``, with LeakyReLU between them; with ``mmagic_names`` the two
    up-convolutions are ``upsample1.upsample_conv`` and ``upsample2.upsample_conv`` instead
    (mmagic's ``BasicVSRNet``)."""
    width = RECONSTRUCTION_WIDTH
    upconv1 = nn.Conv2d(num_features, 4 * num_features, 3, padding=1)
    upconv2 = nn.Conv2d(num_features, 4 * width, 3, padding=1)
    if mmagic_names:
        net.add_module("upsample1", PixelShufflePack(upconv1))
        net.add_module("upsample2", PixelShufflePack(upconv2))
    else:
        net.add_module("upconv1", upconv1)
        net.add_module("upconv2", upconv2)
    net.add_module("conv_hr", nn.Conv2d(width, width, 3, padding=1))
    net.add_module("conv_last", nn.Conv2d(width, 3, 3, padding=1))
    net.add_module("pixel_shuffle", nn.PixelShuffle(2))
    net.add_module("lrelu", nn.LeakyReLU(LRELU_SLOPE, inplace=True))


def up_convolutions(net: Any) -> tuple[nn.Module, nn.Module]:
    """The two up-convolutions :func:`add_upsampling_tail` registered on ``net``."""
    if hasattr(net, "upconv1"):
        return net.upconv1, net.upconv2
    return net.upsample1, net.upsample2


def upsample_and_add(
    net: Any, features: torch.Tensor, frame: torch.Tensor, upsampled: bool = True
) -> torch.Tensor:
    """The tail of :func:`add_upsampling_tail` on ``features``, plus the input frame: upsampled
    x4 bilinearly (``align_corners=False``), or as it is for a same-size variant."""
    first, second = up_convolutions(net)
    out = net.lrelu(net.pixel_shuffle(first(features)))
    out = net.lrelu(net.pixel_shuffle(second(out)))
    out = net.conv_last(net.lrelu(net.conv_hr(out)))
    if not upsampled:
        return out + frame
    return out + F.interpolate(frame, scale_factor=4, mode="bilinear", align_corners=False)


def fused_reconstruction(net: Any, features: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """One BasicVSR output frame: both directions' features (2F channels) fused by
    ``net.fusion`` (a 1x1 convolution) and LeakyReLU, then :func:`upsample_and_add`."""
    fused = F.leaky_relu(net.fusion(features), LRELU_SLOPE)
    return upsample_and_add(net, fused, frame)


def propagate_both_ways(
    x: torch.Tensor,
    flows: tuple[torch.Tensor, torch.Tensor] | None,
    backward_trunk: nn.Module,
    forward_trunk: nn.Module,
    reconstruct: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    num_features: int,
) -> torch.Tensor:
    """BasicVSR's two passes over a clip ``x`` (N, T, 3, H, W): ``flows`` as
    :func:`neighbour_flows` gives them (None for a clip of one frame), ``reconstruct(features,
    frame)`` makes output frame i from both directions' features at i (2 * ``num_features``
    channels) and frame i. Returns the output frames stacked on dim 1."""
    n, t, _, h, w = x.shape
    backward_features: list[torch.Tensor] = []  # last frame first
    propagated = x.new_zeros(n, num_features, h, w)
    for i in range(t - 1, -1, -1):
        if i < t - 1:
            assert flows is not None
            propagated = flow_warp(propagated, flows[1][:, i])
        propagated = backward_trunk(torch.cat((x[:, i], propagated), dim=1))
        backward_features.append(propagated)

    outputs: list[torch.Tensor] = []
    propagated = x.new_zeros(n, num_features, h, w)
    for i in range(t):
        if i > 0:
            assert flows is not None
            propagated = flow_warp(propagated, flows[0][:, i - 1])
        propagated = forward_trunk(torch.cat((x[:, i], propagated), dim=1))
        # Frame i's backward features, released once used.
        features = torch.cat((backward_features.pop(), propagated), dim=1)
        outputs.append(reconstruct(features, x[:, i]))
    return torch.stack(outputs, dim=1)


class BasicVSR(SRNetwork):
    """BasicVSR; a clip (N, T, 3, H, W) in [0, 1] to (N, T, 3, 4H, 4W)."""

    # RGB frames in (its first convolution is SPyNet's, which takes two frames' channels).
    image_channels = 3
    traits = NetworkTraits(
        scales=(4,), channels=(3,), bf16_safe=False, tile_exact=False, frames=SEQUENCE
    )

    def __init__(self, scale: int = 4, num_features: int = 64, num_blocks: int = 30):
        super().__init__()
        if scale != 4:
            raise ValueError(f"BasicVSR upsamples x4 only, got scale {scale}")
        self.scale = scale
        self.num_features = num_features
        self.spynet = SPyNet()
        self.backward_trunk = ConvResidualBlocks(num_features + 3, num_features, num_blocks)
        self.forward_trunk = ConvResidualBlocks(num_features + 3, num_features, num_blocks)
        self.fusion = nn.Conv2d(2 * num_features, num_features, 1)
        add_upsampling_tail(self, num_features)

    def flows(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(forward, backward) flows of a clip: :func:`neighbour_flows`."""
        return neighbour_flows(self.spynet, x)

    def reconstruct(self, features: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """One output frame from both directions' features (2F channels) and its LR frame."""
        return fused_reconstruction(self, features, frame)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[2] != 3:
            raise ValueError(f"BasicVSR takes a clip (N, T, 3, H, W), got {tuple(x.shape)}")
        flows = self.flows(x) if x.shape[1] > 1 else None
        return propagate_both_ways(
            x, flows, self.backward_trunk, self.forward_trunk, self.reconstruct, self.num_features
        )
