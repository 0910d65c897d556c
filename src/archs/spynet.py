"""SPyNet: Ranjan and Black, "Optical Flow Estimation using a Spatial Pyramid Network", CVPR 2017;
the flow estimator of BasicVSR (and IconVSR, BasicVSR++).

Upstream: https://github.com/XPixelGroup/BasicSR (commit 8d56e3a, basicsr/archs/spynet_arch.py),
Apache-2.0 (no NOTICE file upstream).
SR Lab's code is its own; parameter and buffer names follow the upstream file
(``basic_module.N.basic_module.M.weight``, ``mean``, ``std``), so BasicSR's SPyNet files and the
``spynet.`` part of its BasicVSR files load directly.

The flow from ``ref`` to ``supp`` (for :func:`src.archs.flow.flow_warp`: warping ``supp`` by it
lines it up with ``ref``), coarse to fine over a six-level pyramid: both frames are normalised by
ImageNet's mean and standard deviation (buffers, stored in the released files), resized bilinearly
to the next multiples of 32 (so five 2x2 average poolings give exact halves), and at each level a
basic module (five 7x7 convolutions, 8 -> 32 -> 64 -> 32 -> 16 -> 2 channels, ReLU between) takes
the reference, the support warped by the upsampled coarser flow (border pixels repeated), and that
flow, and adds its residual to it. The finest flow is resized back to the input size and its
components scaled by the resize ratios. 1,440,300 parameters; no input size is refused (a frame
smaller than 32 px is enlarged first, as upstream does).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.flow import flow_warp
from src.archs.vgg_features import IMAGENET_MEAN, IMAGENET_STD

LEVELS = 6
# Frames are resized to multiples of this, 2 ** (LEVELS - 1).
SIZE_MULTIPLE = 2 ** (LEVELS - 1)


class BasicModule(nn.Module):
    """One pyramid level: the flow residual from (reference, warped support, flow)."""

    def __init__(self) -> None:
        super().__init__()
        widths = (8, 32, 64, 32, 16, 2)
        layers: list[nn.Module] = []
        for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
            if index:
                layers.append(nn.ReLU())
            layers.append(nn.Conv2d(width_in, width_out, 7, padding=3))
        self.basic_module = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basic_module(x)


class SPyNet(nn.Module):
    """Optical flow between two RGB frames in [0, 1]: ``net(ref, supp)`` with two (N, 3, H, W)
    tensors, or ``net(pair)`` with one (N, 2, 3, H, W) tensor (reference first); returns the
    flow (N, 2, H, W) in pixels, horizontal then vertical."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.basic_module = nn.ModuleList(BasicModule() for _ in range(LEVELS))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def pyramid_flow(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        """The flow of frames whose sides are multiples of :data:`SIZE_MULTIPLE`."""
        refs, supps = [self.normalise(ref)], [self.normalise(supp)]
        for _ in range(LEVELS - 1):
            refs.insert(0, F.avg_pool2d(refs[0], kernel_size=2, stride=2))
            supps.insert(0, F.avg_pool2d(supps[0], kernel_size=2, stride=2))
        # The coarsest level starts from no motion; from there sides double exactly from level
        # to level (upstream's replicate padding of the upsampled flow never applies).
        flow = refs[0].new_zeros(refs[0].shape[0], 2, *refs[0].shape[-2:])
        for level, (ref_level, supp_level) in enumerate(zip(refs, supps, strict=True)):
            if level:
                flow = 2.0 * F.interpolate(
                    flow, scale_factor=2, mode="bilinear", align_corners=True
                )
            warped = flow_warp(supp_level, flow, padding_mode="border")
            flow = flow + self.basic_module[level](torch.cat((ref_level, warped, flow), dim=1))
        return flow

    def forward(self, ref: torch.Tensor, supp: torch.Tensor | None = None) -> torch.Tensor:
        if supp is None:
            if ref.dim() != 5 or ref.shape[1] != 2:
                raise ValueError(
                    f"SPyNet takes two (N, 3, H, W) frames or one (N, 2, 3, H, W) pair, "
                    f"got {tuple(ref.shape)}"
                )
            ref, supp = ref[:, 0], ref[:, 1]
        if ref.shape != supp.shape or ref.dim() != 4:
            raise ValueError(
                f"SPyNet's frames must be (N, 3, H, W) of one shape: "
                f"{tuple(ref.shape)}, {tuple(supp.shape)}"
            )
        height, width = ref.shape[-2:]
        # Non-negative integer arithmetic (the ONNX exporter writes floor division as a truncating
        # Div) and one scalar per flow component (a tensor of the ratios would be frozen at the
        # traced size): an exported graph stays right at every H and W.
        padded_h = (height + SIZE_MULTIPLE - 1) // SIZE_MULTIPLE * SIZE_MULTIPLE
        padded_w = (width + SIZE_MULTIPLE - 1) // SIZE_MULTIPLE * SIZE_MULTIPLE
        size = (padded_h, padded_w)
        ref = F.interpolate(ref, size=size, mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=size, mode="bilinear", align_corners=False)
        flow = self.pyramid_flow(ref, supp)
        flow = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
        return torch.stack(
            (flow[:, 0] * (width / padded_w), flow[:, 1] * (height / padded_h)), dim=1
        )
