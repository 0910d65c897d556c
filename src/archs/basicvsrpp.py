"""BasicVSR++: Chan, Zhou, Xu and Loy, "BasicVSR++: Improving Video Super-Resolution with Enhanced
Propagation and Alignment", CVPR 2022.

Upstream: https://github.com/XPixelGroup/BasicSR (commit 8d56e3a, basicsr/archs/basicvsrpp_arch.py,
``BasicVSRPlusPlus`` and ``SecondOrderDeformableAlignment``), Apache-2.0 (no NOTICE file upstream).
The authors' own release is mmagic's ``BasicVSRPlusPlusNet`` (https://github.com/open-mmlab/mmagic,
read at commit 58380b2, mmagic/models/editors/basicvsr_plusplus_net/basicvsr_plusplus_net.py),
Apache-2.0: the same computation, other names for three layers (below).
SR Lab's code is its own; parameter names follow the BasicSR file (``spynet.``,
``feat_extract.main.N``, ``deform_align.<branch>.weight`` / ``.bias`` / ``.conv_offset.{0,2,4,6}``,
``backbone.<branch>.main.N``, ``reconstruction.main.N``, ``upconv1``, ``upconv2``, ``conv_hr``,
``conv_last``; branches ``backward_1``, ``forward_1``, ``backward_2``, ``forward_2``).

A clip (N, T, 3, H, W) in [0, 1] gives (N, T, 3, 4H, 4W). Each frame's features come from a 3x3
convolution, LeakyReLU 0.1 and five residual blocks. SPyNet (:mod:`src.archs.spynet`) estimates
the flow between neighbouring frames both ways. Four propagation branches run in turn over the
clip: backward, forward, backward, forward (the grid). Each branch walks the frames and, at every
frame after its first, aligns its running feature (from the previous frame in its direction) and
the one before that (second order) to the current frame with a flow-guided deformable
convolution (:class:`SecondOrderDeformableAlignment`); a residual trunk then takes the frame's
features, the features the earlier branches left at that frame, and the aligned feature, and adds
its output to the aligned feature. At each frame the five features (spatial and four branches) go
through a reconstruction trunk (a convolution to ``num_features`` and five residual blocks), two
pixel-shuffle x2 stages, two convolutions, and the frame bilinearly upsampled x4
(``align_corners=False``) is added back. Every warp is :func:`src.archs.flow.flow_warp` (zeros
outside the frame); the second-order flow is the composition ``f1 + warp(f2, f1)``.

Flow-guided deformable alignment (the paper's Eq. 6): the offset network reads the warped
features of both earlier frames, the current frame's features and both flows; its offsets are a
residual bounded by ``max_residue_magnitude * tanh`` (10 px, as upstream) added to the flow
(flipped to the convolution's (dy, dx) order), the first half of the 16 offset groups following
the first-order flow and the second half the second-order one; the modulation mask is a sigmoid.
The deformable convolution is SR Lab's (:class:`src.archs.deform_conv.ModulatedDeformConv2d`,
plain torch): it runs on every device. Upstream BasicSR builds the alignment only when CUDA is
present and otherwise skips it with a warning; here it is never skipped.

Variants: ``scale=4`` is the paper's super-resolution network (upstream's
``is_low_res_input=True``); ``scale=1`` is upstream's ``is_low_res_input=False``, the same-size
restoration variant (mmagic's NTIRE 2021 compressed-video checkpoints, 128 features and 25 blocks,
are of this kind): two stride-2 convolutions (``feat_extract.0``, ``feat_extract.2``, LeakyReLU
after each) before the five residual blocks (``feat_extract.4.main.N``), flows from the clip shrunk
by PyTorch's bicubic ``interpolate(scale_factor=0.25)`` as upstream, and the input itself added back
at the end; H and W must be multiples of 4 (``size_multiple``). The paper's network, 64 features and
7 blocks per branch: 7,322,927 parameters, of which SPyNet's 1,440,300 (paper: 7.3M, issue 25:
7.32M; 7,396,783 at ``scale=1``). The width after the second pixel shuffle is fixed at 64, as
upstream; ``num_features`` must be a multiple of 8 (the 16 offset groups divide the 2 x
``num_features`` aligned channels).

Where SR Lab differs from upstream, outputs unchanged: upstream asserts LR frames of at least 64 px
a side (SR Lab's SPyNet takes any size); upstream's ``cpu_cache`` (features parked in host memory
past 100 frames on a GPU) is left out; a mirror-extended clip (frame i equal to frame T - 1 - i, as
mmagic's Vimeo-90K pipelines extend the 7-frame clips) reuses the backward flows for the forward
branches as upstream does (the same flows, computed once), but decided per call: BasicSR 8d56e3a
keeps the flag set for every later clip once one mirrored clip was seen (mmagic resets it per call,
as here).

Released weights: BasicSR releases none for this network; the authors' files are mmagic's (REDS4,
Vimeo-90K BI and BD, NTIRE 2021), in mmagic's layout: keys under ``generator.``, SPyNet's
convolutions as ``basic_module.L.basic_module.i.conv.*`` (BasicSR: ``basic_module.(2i).*``) and the
upsampling convolutions as ``upsample1.upsample_conv`` / ``upsample2.upsample_conv`` (BasicSR:
``upconv1`` / ``upconv2``). By mmagic's code, they load here after that renaming of keys alone; no
such file was at hand to check it.

Declared not bf16-safe: not measured with released weights (none are in ../shared); BasicVSR,
whose SPyNet and warps this network shares, exceeded the 2% bound with its released file.
Every branch keeps ``num_features x H x W`` floats per frame until reconstruction (four branches
plus the spatial features): memory grows with the clip's length, so a long video goes through
in chunks of frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.archs.base import NetworkTraits, SRNetwork
from src.archs.basicvsr import (
    LRELU_SLOPE,
    ConvResidualBlocks,
    add_upsampling_tail,
    upsample_and_add,
)
from src.archs.deform_conv import ModulatedDeformConv2d
from src.archs.flow import flow_warp
from src.archs.spynet import SPyNet
from src.utils.choices import SEQUENCE

# The propagation branches in the order they run; their names are upstream's module keys.
BRANCHES = ("backward_1", "forward_1", "backward_2", "forward_2")
# Residual blocks of the feature extraction and of the reconstruction trunk (fixed upstream).
EXTRACTION_BLOCKS = 5
RECONSTRUCTION_BLOCKS = 5
DEFORMABLE_GROUPS = 16
# Upstream's bound on the learned offset residual, in pixels (the paper's Eq. 6).
MAX_RESIDUE_MAGNITUDE = 10.0
# scale=1: features and flows at a quarter of the input size (two stride-2 convolutions).
RESTORATION_DOWNSCALE = 4


class SecondOrderDeformableAlignment(ModulatedDeformConv2d):
    """Flow-guided deformable alignment of two earlier frames' features.

    ``forward(x, condition, flow_1, flow_2)``: ``x`` is the first- and second-order features
    concatenated (2C channels, unwarped), ``condition`` the warped first-order features, the
    current frame's features and the warped second-order features (3C), ``flow_1`` / ``flow_2``
    the flows (N, 2, H, W; x then y, pixels) to the current frame from the previous frame and
    from the one before it. ``conv_offset`` is four 3x3 convolutions (LeakyReLU 0.1 between,
    the last starting at zero) from ``condition`` and both flows to ``3 * groups * k * k``
    channels; ``weight`` and ``bias`` are the deformable convolution's, as in
    :class:`ModulatedDeformConv2d`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        deformable_groups: int = DEFORMABLE_GROUPS,
        max_residue_magnitude: float = MAX_RESIDUE_MAGNITUDE,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            padding=padding,
            deformable_groups=deformable_groups,
        )
        if deformable_groups % 2:
            raise ValueError(
                f"deformable_groups={deformable_groups} must be even: half the groups follow "
                "each of the two flows"
            )
        self.max_residue_magnitude = max_residue_magnitude
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset = nn.Sequential(
            nn.Conv2d(3 * out_channels + 4, out_channels, 3, padding=1),
            nn.LeakyReLU(LRELU_SLOPE, inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.LeakyReLU(LRELU_SLOPE, inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.LeakyReLU(LRELU_SLOPE, inplace=True),
            nn.Conv2d(out_channels, 3 * deformable_groups * taps, 3, padding=1),
        )
        self._zero_last_offset_layer()

    def _zero_last_offset_layer(self) -> None:
        """No residual at the start: offsets equal the flows, the mask is 1/2 (upstream)."""
        last = list(self.conv_offset.children())[-1]
        if isinstance(last, nn.Conv2d):
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)

    def reset_parameters(self) -> None:
        """Upstream's initialisation: the deformable weight uniform and its bias zero (the
        parent's), the offset network's convolutions PyTorch's default, the last one zero."""
        super().reset_parameters()
        if isinstance(self.conv_offset, nn.Sequential):  # not yet during the parent's __init__
            for layer in self.conv_offset:
                if isinstance(layer, nn.Conv2d):
                    layer.reset_parameters()
            self._zero_last_offset_layer()

    def flow_guided_offset_and_mask(
        self, condition: Tensor, flow_1: Tensor, flow_2: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(offset, mask) for :meth:`deform`: each tap's (dy, dx) is the flow of its half of the
        offset groups (``flow_1`` for the first, ``flow_2`` for the second) plus a learned
        residual bounded by ``max_residue_magnitude``."""
        out = self.conv_offset(torch.cat((condition, flow_1, flow_2), dim=1))
        o1, o2, mask = torch.chunk(out, 3, dim=1)
        residue = self.max_residue_magnitude * torch.tanh(torch.cat((o1, o2), dim=1))
        residue_1, residue_2 = torch.chunk(residue, 2, dim=1)
        pairs = residue_1.shape[1] // 2  # (dy, dx) pairs per half: groups / 2 * taps
        offset_1 = residue_1 + flow_1.flip(1).repeat(1, pairs, 1, 1)
        offset_2 = residue_2 + flow_2.flip(1).repeat(1, pairs, 1, 1)
        return torch.cat((offset_1, offset_2), dim=1), torch.sigmoid(mask)

    def forward(  # type: ignore[override]  # upstream's signature: two flows, not one feature
        self, x: Tensor, condition: Tensor, flow_1: Tensor, flow_2: Tensor
    ) -> Tensor:
        offset, mask = self.flow_guided_offset_and_mask(condition, flow_1, flow_2)
        return self.deform(x, offset, mask)


class BasicVSRPlusPlus(SRNetwork):
    """BasicVSR++; a clip (N, T, 3, H, W) in [0, 1] to (N, T, 3, 4H, 4W) (``scale=4``) or to the
    same size (``scale=1``, H and W multiples of 4)."""

    # RGB frames in (its first convolution is SPyNet's, which takes two frames' channels).
    image_channels = 3
    traits = NetworkTraits(
        scales=(1, 4), channels=(3,), bf16_safe=False, tile_exact=False, frames=SEQUENCE
    )

    def __init__(
        self,
        scale: int = 4,
        num_features: int = 64,
        num_blocks: int = 7,
        max_residue_magnitude: float = MAX_RESIDUE_MAGNITUDE,
    ):
        super().__init__()
        if scale not in (1, 4):
            raise ValueError(
                f"BasicVSR++ upsamples x4 (scale=4) or restores at the same size (scale=1), "
                f"got scale {scale}"
            )
        if num_features % (DEFORMABLE_GROUPS // 2):
            raise ValueError(
                f"num_features must be a multiple of {DEFORMABLE_GROUPS // 2} (the "
                f"{DEFORMABLE_GROUPS} offset groups split 2 x num_features channels), "
                f"got {num_features}"
            )
        self.scale = scale
        self.num_features = num_features
        self.spynet = SPyNet()
        self.feat_extract: nn.Module
        if scale == 4:
            self.feat_extract = ConvResidualBlocks(3, num_features, EXTRACTION_BLOCKS)
        else:
            self.feat_extract = nn.Sequential(
                nn.Conv2d(3, num_features, 3, stride=2, padding=1),
                nn.LeakyReLU(LRELU_SLOPE, inplace=True),
                nn.Conv2d(num_features, num_features, 3, stride=2, padding=1),
                nn.LeakyReLU(LRELU_SLOPE, inplace=True),
                ConvResidualBlocks(num_features, num_features, EXTRACTION_BLOCKS),
            )
        self.deform_align = nn.ModuleDict()
        self.backbone = nn.ModuleDict()
        for index, branch in enumerate(BRANCHES):
            self.deform_align[branch] = SecondOrderDeformableAlignment(
                2 * num_features,
                num_features,
                3,
                padding=1,
                deformable_groups=DEFORMABLE_GROUPS,
                max_residue_magnitude=max_residue_magnitude,
            )
            # The frame's features, each earlier branch's, and this branch's aligned feature.
            self.backbone[branch] = ConvResidualBlocks(
                (2 + index) * num_features, num_features, num_blocks
            )
        self.reconstruction = ConvResidualBlocks(
            (1 + len(BRANCHES)) * num_features, num_features, RECONSTRUCTION_BLOCKS
        )
        add_upsampling_tail(self, num_features)

    @property
    def size_multiple(self) -> int:
        """1 at x4; 4 at x1 (two stride-2 convolutions, then x4 back)."""
        return 1 if self.scale == 4 else RESTORATION_DOWNSCALE

    def flows(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(forward, backward) flows of a clip (at least two frames), each (N, T - 1, 2, H, W):
        ``forward[:, i]`` warps frame i's features onto frame i + 1, ``backward[:, i]`` frame
        i + 1's onto frame i. A mirror-extended clip reuses the backward flows, reversed."""
        n, t, c, h, w = x.shape
        earlier = x[:, :-1].reshape(-1, c, h, w)
        later = x[:, 1:].reshape(-1, c, h, w)
        backward = self.spynet(earlier, later).view(n, t - 1, 2, h, w)
        # The test reads pixel values, which an exported graph cannot branch on; computing the
        # forward flows instead gives the same flows.
        if not torch.compiler.is_exporting() and is_mirror_extended(x):
            return backward.flip(1), backward
        forward = self.spynet(later, earlier).view(n, t - 1, 2, h, w)
        return forward, backward

    def propagate(
        self,
        branch: str,
        spatial: list[Tensor],
        earlier: dict[str, list[Tensor]],
        flows: Tensor | None,
    ) -> list[Tensor]:
        """One branch over the clip: its feature at every frame, in frame order. ``earlier``
        holds the branches already run (in :data:`BRANCHES` order), ``flows`` the flows of this
        branch's direction (None for a clip of one frame)."""
        backward = branch.startswith("backward")
        frames = len(spatial)
        order = range(frames - 1, -1, -1) if backward else range(frames)
        align = self.deform_align[branch]
        outputs: list[Tensor] = []
        propagated = spatial[0].new_zeros(
            spatial[0].shape[0], self.num_features, *spatial[0].shape[-2:]
        )
        for step, index in enumerate(order):
            current = spatial[index]
            if step > 0:
                assert flows is not None
                # Flow from the previous frame in this branch's direction to this one.
                flow_1 = flows[:, index] if backward else flows[:, index - 1]
                condition_1 = flow_warp(propagated, flow_1)
                if step > 1:
                    feature_2 = outputs[-2]
                    flow_2 = flows[:, index + 1] if backward else flows[:, index - 2]
                    flow_2 = flow_1 + flow_warp(flow_2, flow_1)
                    condition_2 = flow_warp(feature_2, flow_2)
                else:
                    feature_2 = torch.zeros_like(propagated)
                    flow_2 = torch.zeros_like(flow_1)
                    condition_2 = torch.zeros_like(condition_1)
                condition = torch.cat((condition_1, current, condition_2), dim=1)
                propagated = align(
                    torch.cat((propagated, feature_2), dim=1), condition, flow_1, flow_2
                )
            trunk_input = [current, *(features[index] for features in earlier.values()), propagated]
            propagated = propagated + self.backbone[branch](torch.cat(trunk_input, dim=1))
            outputs.append(propagated)
        return outputs[::-1] if backward else outputs

    def reconstruct(self, features: Tensor, frame: Tensor) -> Tensor:
        """One output frame from its five features (5C channels) and its input frame."""
        return upsample_and_add(self, self.reconstruction(features), frame, self.scale == 4)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5 or x.shape[2] != 3:
            raise ValueError(f"BasicVSR++ takes a clip (N, T, 3, H, W), got {tuple(x.shape)}")
        n, t, c, h, w = x.shape
        multiple = self.size_multiple
        if h % multiple or w % multiple:
            raise ValueError(
                f"BasicVSR++ at scale {self.scale} needs H and W multiples of {multiple}, "
                f"got {h}x{w}"
            )
        frames = x.reshape(n * t, c, h, w)
        features = self.feat_extract(frames)
        spatial = list(features.view(n, t, *features.shape[1:]).unbind(1))
        if self.scale == 4:
            flow_frames = x
        else:  # upstream's shrink for the flows: PyTorch's bicubic, not MATLAB's
            small = F.interpolate(frames, scale_factor=1 / RESTORATION_DOWNSCALE, mode="bicubic")
            flow_frames = small.view(n, t, c, *small.shape[-2:])
        flows_forward, flows_backward = self.flows(flow_frames) if t > 1 else (None, None)

        branches: dict[str, list[Tensor]] = {}
        for branch in BRANCHES:
            flows = flows_backward if branch.startswith("backward") else flows_forward
            branches[branch] = self.propagate(branch, spatial, branches, flows)

        outputs = [
            self.reconstruct(
                torch.cat([spatial[i], *(branches[b][i] for b in BRANCHES)], dim=1), x[:, i]
            )
            for i in range(t)
        ]
        return torch.stack(outputs, dim=1)


def is_mirror_extended(x: Tensor) -> bool:
    """Whether clip ``x`` (N, T, ...) reads the same backwards (frame i equals frame T - 1 - i)
    with an even T: upstream's test for reusing the backward flows."""
    t = x.shape[1]
    if t % 2:
        return False
    first, second = torch.chunk(x, 2, dim=1)
    return bool(torch.equal(first, second.flip(1)))
