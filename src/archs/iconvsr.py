"""IconVSR: Chan, Wang, Yu, Dong and Loy, "BasicVSR: The Search for Essential Components in Video
Super-Resolution and Beyond", CVPR 2021 (BasicVSR's extension with information refill and
coupled propagation).

Upstream: https://github.com/XPixelGroup/BasicSR (commit 8d56e3a, basicsr/archs/basicvsr_arch.py,
``IconVSR``, ``EDVRFeatureExtractor`` and ``ConvResidualBlocks``), Apache-2.0 (no NOTICE file
upstream). SR Lab's code is its own and reuses BasicVSR's pieces (:mod:`src.archs.basicvsr`),
SPyNet (:mod:`src.archs.spynet`), the flow warp (:mod:`src.archs.flow`) and EDVR's feature
extractor with PCD alignment and TSA fusion (:mod:`src.archs.edvr`). Parameter names follow the
upstream file (``edvr.*``, ``spynet.*``, ``backward_fusion``, ``backward_trunk.main.N``,
``forward_fusion``, ``forward_trunk.main.N``, ``upconv1``, ``upconv2``, ``conv_hr``,
``conv_last``), so BasicSR's released files (``IconVSR_REDS-aaa5367f.pth``,
``IconVSR_Vimeo90K_BIx4-35fec07c.pth``, ``IconVSR_Vimeo90K_BDx4-cfcb7e00.pth``, loaded with
``strict_load_g: true`` upstream) load strictly; their layout is pinned in tests/test_iconvsr.py
against the authors' code, the files themselves were not available here.

A clip (N, T, 3, H, W) in [0, 1] gives (N, T, 3, 4H, 4W). Frames whose sides are not multiples of
4 are reflect-padded to them (EDVR's pyramid needs it) and the output cropped back, as upstream,
so any H and W of 3 or more work. SPyNet estimates the flows between neighbouring frames both
ways, on every device. Keyframes are every ``keyframe_stride``-th frame and the last; for each,
EDVR's feature extractor (:class:`src.archs.edvr.EDVRFeatureExtractor`: 5 residual blocks, PCD
alignment with 8 deformable groups, TSA fusion) fuses a window of ``2 * temporal_padding + 1``
frames around it, the clip extended at both ends by upstream's frame choice (``temporal_padding``
2: frames 4, 3 before and T-4, T-5 after; 3: frames 6, 5, 4 and T-5, T-6, T-7), so a clip needs at
least ``2 * temporal_padding + 1`` frames. Information refill: in the backward pass (last frame to
first), the warped running features of a keyframe are concatenated with its EDVR features and
fused by a 3x3 convolution (``backward_fusion``) before the trunk (BasicVSR's: conv + LeakyReLU,
then ``num_blocks`` residual blocks). Coupled propagation: the forward pass refills its keyframes
likewise (``forward_fusion``) and its trunk takes the frame, the backward features of that frame
and its own running features, so the backward pass's information reaches the forward one; the
forward trunk's output, two pixel-shuffle x2 stages and two convolutions give the residual of the
frame bilinearly upsampled x4 (``align_corners=False``).

Variants: the released files' 64 features and 30 blocks per direction (upstream's constructor
defaults to 15; its configs use 30), with ``temporal_padding`` 2 (REDS, 8,694,991 parameters,
issue 25: 8.69M; of them EDVR's 2,227,488 and SPyNet's 1,440,300) or 3 (Vimeo-90K,
8,711,375). Only x4 exists upstream; the width after the second pixel shuffle is fixed at 64.

Declared not bf16-safe: not measured (no released file here to measure it with; BasicVSR, whose
trunks and SPyNet this network shares, is not).

Every frame's backward features are kept until the forward pass reaches it, and every keyframe's
EDVR features until both passes have used them: memory grows with the clip's length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork
from src.archs.basicvsr import (
    ConvResidualBlocks,
    add_upsampling_tail,
    neighbour_flows,
    upsample_and_add,
)
from src.archs.edvr import SIZE_MULTIPLE, EDVRFeatureExtractor
from src.archs.flow import flow_warp
from src.archs.spynet import SPyNet
from src.utils.choices import SEQUENCE

# The frames upstream puts before and after the clip for the keyframes' windows, by temporal
# padding: indices into the clip (negative: from its end), in the order they are placed (the first
# list before frame 0, the second after the last frame).
TEMPORAL_PADDING_FRAMES = {2: ([4, 3], [-4, -5]), 3: ([6, 5, 4], [-5, -6, -7])}
# The smallest frame side: reflect padding must add fewer rows than the frame has (a 1 px side
# would get 3, a 2 px side 2).
MIN_SIDE = 3


class IconVSR(SRNetwork):
    """IconVSR; a clip (N, T, 3, H, W) in [0, 1], T >= 2 * temporal_padding + 1, to
    (N, T, 3, 4H, 4W)."""

    # RGB frames in (its first convolution is SPyNet's, which takes two frames' channels).
    image_channels = 3
    traits = NetworkTraits(
        scales=(4,), channels=(3,), bf16_safe=False, tile_exact=False, frames=SEQUENCE
    )

    def __init__(
        self,
        scale: int = 4,
        num_features: int = 64,
        num_blocks: int = 30,
        keyframe_stride: int = 5,
        temporal_padding: int = 2,
    ):
        super().__init__()
        if scale != 4:
            raise ValueError(f"IconVSR upsamples x4 only, got scale {scale}")
        if temporal_padding not in TEMPORAL_PADDING_FRAMES:
            raise ValueError(
                f"temporal_padding must be 2 or 3 (upstream's two), got {temporal_padding}"
            )
        if keyframe_stride < 1:
            raise ValueError(f"keyframe_stride must be 1 or more, got {keyframe_stride}")
        self.scale = scale
        self.num_features = num_features
        self.keyframe_stride = keyframe_stride
        self.temporal_padding = temporal_padding
        f = num_features
        self.edvr = EDVRFeatureExtractor(num_frames=2 * temporal_padding + 1, num_features=f)
        self.spynet = SPyNet()
        self.backward_fusion = nn.Conv2d(2 * f, f, 3, padding=1)
        self.backward_trunk = ConvResidualBlocks(f + 3, f, num_blocks)
        self.forward_fusion = nn.Conv2d(2 * f, f, 3, padding=1)
        self.forward_trunk = ConvResidualBlocks(2 * f + 3, f, num_blocks)
        add_upsampling_tail(self, f)

    @property
    def min_frames(self) -> int:
        """The shortest clip it takes: one keyframe window."""
        return 2 * self.temporal_padding + 1

    def keyframes(self, num_frames: int) -> list[int]:
        """Every ``keyframe_stride``-th frame from the first, and the last."""
        indices = list(range(0, num_frames, self.keyframe_stride))
        if indices[-1] != num_frames - 1:
            indices.append(num_frames - 1)
        return indices

    def keyframe_features(self, x: torch.Tensor, keyframes: list[int]) -> dict[int, torch.Tensor]:
        """EDVR's fused features of each keyframe's window in the temporally padded clip."""
        before, after = TEMPORAL_PADDING_FRAMES[self.temporal_padding]
        padded = torch.cat((x[:, before], x, x[:, after]), dim=1)
        window = self.min_frames
        return {i: self.edvr(padded[:, i : i + window]) for i in keyframes}

    def reconstruct(self, features: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """One output frame from the forward trunk's features and its LR frame."""
        return upsample_and_add(self, features, frame)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[2] != 3:
            raise ValueError(f"IconVSR takes a clip (N, T, 3, H, W), got {tuple(x.shape)}")
        n, t, c, height, width = x.shape
        if t < self.min_frames:
            raise ValueError(
                f"IconVSR with temporal_padding={self.temporal_padding} takes clips of at least "
                f"{self.min_frames} frames, got {t}"
            )
        if min(height, width) < MIN_SIDE:
            raise ValueError(
                f"IconVSR's frames must be {MIN_SIDE} px or more a side, got {height}x{width}"
            )
        # Reflect-pad to multiples of 4 for EDVR's pyramid; the output is cropped back. No branch
        # on the size (padding by 0 changes nothing): an exported graph pads at every size.
        pad_h, pad_w = -height % SIZE_MULTIPLE, -width % SIZE_MULTIPLE
        x = F.pad(x.reshape(-1, c, height, width), [0, pad_w, 0, pad_h], mode="reflect")
        x = x.view(n, t, c, height + pad_h, width + pad_w)
        h, w = x.shape[-2:]

        keyframes = self.keyframes(t)
        flows_forward, flows_backward = neighbour_flows(self.spynet, x)
        refill = self.keyframe_features(x, keyframes)

        backward_features: list[torch.Tensor] = []  # last frame first
        propagated = x.new_zeros(n, self.num_features, h, w)
        for i in range(t - 1, -1, -1):
            if i < t - 1:
                propagated = flow_warp(propagated, flows_backward[:, i])
            if i in refill:
                propagated = self.backward_fusion(torch.cat((propagated, refill[i]), dim=1))
            propagated = self.backward_trunk(torch.cat((x[:, i], propagated), dim=1))
            backward_features.append(propagated)

        outputs: list[torch.Tensor] = []
        propagated = x.new_zeros(n, self.num_features, h, w)
        for i in range(t):
            if i > 0:
                propagated = flow_warp(propagated, flows_forward[:, i - 1])
            if i in refill:
                # Each keyframe's features, released once both passes have used them.
                propagated = self.forward_fusion(torch.cat((propagated, refill.pop(i)), dim=1))
            features = torch.cat((x[:, i], backward_features.pop(), propagated), dim=1)
            propagated = self.forward_trunk(features)
            outputs.append(self.reconstruct(propagated, x[:, i]))
        return torch.stack(outputs, dim=1)[..., : 4 * height, : 4 * width]
