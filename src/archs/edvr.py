"""EDVR: Wang, Chan, Yu, Dong and Loy, "EDVR: Video Restoration with Enhanced Deformable
Convolutional Networks", CVPR Workshops (NTIRE) 2019.

Upstream: https://github.com/XPixelGroup/BasicSR (commit 8d56e3a, basicsr/archs/edvr_arch.py,
``EDVR``, ``PCDAlignment`` and ``TSAFusion``; the paper names https://github.com/xinntao/EDVR,
by the same authors, and this file follows BasicSR's version), Apache-2.0 (no NOTICE file
upstream).
SR Lab's code is its own; parameter names follow the upstream file (``conv_first``,
``feature_extraction.N``, ``conv_l2_1`` .. ``conv_l3_2``, ``pcd_align.*``, ``fusion.*``,
``reconstruction.N``, ``upconv1``, ``upconv2``, ``conv_hr``, ``conv_last``; the deformable layers'
``weight``, ``bias`` and ``conv_offset.*`` as BasicSR's ``DCNv2Pack``), so BasicSR's released
files (``EDVR_M_x4_SR_REDS_official-32075921.pth`` and the L ones, configs with
``strict_load_g: true``) load strictly; their layout is pinned in tests/test_edvr.py against the
authors' code, the files themselves were not available here.

A sliding window: a clip (N, T, 3, H, W) in [0, 1] of exactly ``num_frames`` frames (T = 5 for
EDVR-M) gives one frame, the centre one's (frame ``num_frames // 2`` unless ``center_frame`` is
given), (N, 3, 4H, 4W). A video is upscaled frame by frame, each with its own window around it;
near the clip's ends the caller fills the window (BasicSR's EDVR-M REDS4 test:
``padding: reflection_circle`` in basicsr/data/data_util.py ``generate_frame_indices``).
H and W must be multiples of 4 (the feature pyramid halves twice; ``traits.size_multiple``).

Each frame's features (a 3x3 convolution, LeakyReLU 0.1, ``num_extract_blocks`` residual blocks)
form a three-level pyramid (two stride-2 convolution pairs). PCD alignment (Pyramid, Cascading
and Deformable convolution) aligns every frame's features to the centre frame's, coarse to fine:
at each level, offsets and masks come from both frames' features and the upsampled (x2, doubled)
offsets of the level below, and a modulated deformable convolution (DCNv2,
:class:`src.archs.deform_conv.ModulatedDeformConv2d`, ``deformable_groups`` offset groups) samples
the neighbour's features; a last, cascaded deformable convolution refines the full-resolution
result. TSA fusion (Temporal and Spatial Attention) weights each aligned frame by the sigmoid of
its per-pixel correlation with the centre frame's embedding, fuses them with a 1x1 convolution
and modulates the result by a spatial attention made on a two-level pyramid (max and average
pooling); without TSA (``with_tsa=False``) a 1x1 convolution fuses them. ``num_reconstruct_blocks``
residual blocks, two pixel-shuffle x2 stages and two convolutions then give the residual of the
centre frame bilinearly upsampled x4 (``align_corners=False``). The deformable convolution runs on
every device, never skipped on CPU.

:class:`EDVRFeatureExtractor` is the part up to and including the fusion; IconVSR
(:mod:`src.archs.iconvsr`) uses it, as upstream, for its keyframes.

Variants: EDVR-M (the defaults: 64 features, 5 extraction and 10 reconstruction blocks, TSA):
3,300,131 parameters (issue 25: 3.30M); EDVR-L (``num_features=128, num_reconstruct_blocks=40``):
20,633,827 (BasicVSR's paper, CVPR 2021, gives 3.3M and 20.6M). Only x4 exists upstream; the
width after the second pixel shuffle is fixed at 64, as upstream. Upstream's pre-deblurring
module and HR input (``with_predeblur``, ``hr_in``: its deblurring models, x1) are not built
here.

Declared not bf16-safe: not measured (no released file here to measure it with).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork
from src.archs.basicvsr import LRELU_SLOPE, RECONSTRUCTION_WIDTH, ResidualBlockNoBN
from src.archs.deform_conv import ModulatedDeformConv2d
from src.utils.choices import WINDOW

# Pyramid levels: 1 is full resolution, 3 a quarter; the coarsest is aligned first.
LEVELS = (3, 2, 1)
SIZE_MULTIPLE = 2 ** (len(LEVELS) - 1)


def _upsample2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class PCDAlignment(nn.Module):
    """Aligns a neighbour's feature pyramid to the reference's: ``forward(neighbour,
    reference)``, each a list of the three levels (full, 1/2, 1/4 resolution), gives the
    aligned full-resolution features."""

    def __init__(self, num_features: int = 64, deformable_groups: int = 8):
        super().__init__()
        self.offset_conv1 = nn.ModuleDict()
        self.offset_conv2 = nn.ModuleDict()
        self.offset_conv3 = nn.ModuleDict()
        self.dcn_pack = nn.ModuleDict()
        self.feat_conv = nn.ModuleDict()
        f = num_features
        for level in LEVELS:
            name = f"l{level}"
            self.offset_conv1[name] = nn.Conv2d(2 * f, f, 3, padding=1)
            if level == LEVELS[0]:
                self.offset_conv2[name] = nn.Conv2d(f, f, 3, padding=1)
            else:
                self.offset_conv2[name] = nn.Conv2d(2 * f, f, 3, padding=1)
                self.offset_conv3[name] = nn.Conv2d(f, f, 3, padding=1)
            self.dcn_pack[name] = ModulatedDeformConv2d(
                f, f, 3, padding=1, deformable_groups=deformable_groups
            )
            if level != LEVELS[0]:
                self.feat_conv[name] = nn.Conv2d(2 * f, f, 3, padding=1)
        self.cas_offset_conv1 = nn.Conv2d(2 * f, f, 3, padding=1)
        self.cas_offset_conv2 = nn.Conv2d(f, f, 3, padding=1)
        self.cas_dcnpack = ModulatedDeformConv2d(
            f, f, 3, padding=1, deformable_groups=deformable_groups
        )
        self.lrelu = nn.LeakyReLU(LRELU_SLOPE, inplace=True)

    def forward(self, neighbour: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
        offset_below: torch.Tensor | None = None
        feat_below: torch.Tensor | None = None
        feat = neighbour[0]
        for level in LEVELS:
            name = f"l{level}"
            nbr, ref = neighbour[level - 1], reference[level - 1]
            offset = self.lrelu(self.offset_conv1[name](torch.cat((nbr, ref), dim=1)))
            if offset_below is None:
                offset = self.lrelu(self.offset_conv2[name](offset))
            else:
                offset = torch.cat((offset, offset_below), dim=1)
                offset = self.lrelu(self.offset_conv2[name](offset))
                offset = self.lrelu(self.offset_conv3[name](offset))
            feat = self.dcn_pack[name](nbr, offset)
            if feat_below is not None:
                feat = self.feat_conv[name](torch.cat((feat, feat_below), dim=1))
            if level > 1:
                feat = self.lrelu(feat)
                # Offsets are in pixels of their level: twice as many one level up.
                offset_below = _upsample2(offset) * 2
                feat_below = _upsample2(feat)
        offset = self.lrelu(self.cas_offset_conv1(torch.cat((feat, reference[0]), dim=1)))
        offset = self.lrelu(self.cas_offset_conv2(offset))
        return self.lrelu(self.cas_dcnpack(feat, offset))


class TSAFusion(nn.Module):
    """Temporal and spatial attention fusion: aligned features (N, T, F, H, W) to (N, F, H, W);
    H and W even (the spatial attention halves them twice, rounding up, and upsamples back)."""

    def __init__(self, num_features: int = 64, num_frames: int = 5, center_frame: int = 2):
        super().__init__()
        f = num_features
        self.center_frame = center_frame
        self.temporal_attn1 = nn.Conv2d(f, f, 3, padding=1)
        self.temporal_attn2 = nn.Conv2d(f, f, 3, padding=1)
        self.feat_fusion = nn.Conv2d(num_frames * f, f, 1)
        self.max_pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.avg_pool = nn.AvgPool2d(3, stride=2, padding=1)  # zero padding counts, as upstream
        self.spatial_attn1 = nn.Conv2d(num_frames * f, f, 1)
        self.spatial_attn2 = nn.Conv2d(2 * f, f, 1)
        self.spatial_attn3 = nn.Conv2d(f, f, 3, padding=1)
        self.spatial_attn4 = nn.Conv2d(f, f, 1)
        self.spatial_attn5 = nn.Conv2d(f, f, 3, padding=1)
        self.spatial_attn_l1 = nn.Conv2d(f, f, 1)
        self.spatial_attn_l2 = nn.Conv2d(2 * f, f, 3, padding=1)
        self.spatial_attn_l3 = nn.Conv2d(f, f, 3, padding=1)
        self.spatial_attn_add1 = nn.Conv2d(f, f, 1)
        self.spatial_attn_add2 = nn.Conv2d(f, f, 1)
        self.lrelu = nn.LeakyReLU(LRELU_SLOPE, inplace=True)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Max and average pooling (3x3, stride 2) side by side."""
        return torch.cat((self.max_pool(x), self.avg_pool(x)), dim=1)

    def forward(self, aligned: torch.Tensor) -> torch.Tensor:
        n, t, c, h, w = aligned.shape
        # Temporal attention: each frame's per-pixel correlation with the centre frame.
        reference = self.temporal_attn1(aligned[:, self.center_frame])
        embedding = self.temporal_attn2(aligned.reshape(-1, c, h, w)).view(n, t, -1, h, w)
        correlation = (embedding * reference.unsqueeze(1)).sum(dim=2, keepdim=True)
        weighted = (aligned * torch.sigmoid(correlation)).view(n, t * c, h, w)

        feat = self.lrelu(self.feat_fusion(weighted))

        # Spatial attention on a pyramid of two levels.
        attn = self.lrelu(self.spatial_attn1(weighted))
        attn = self.lrelu(self.spatial_attn2(self.pool(attn)))
        attn_level = self.lrelu(self.spatial_attn_l1(attn))
        attn_level = self.lrelu(self.spatial_attn_l2(self.pool(attn_level)))
        attn_level = _upsample2(self.lrelu(self.spatial_attn_l3(attn_level)))
        attn = self.lrelu(self.spatial_attn3(attn)) + attn_level
        attn = _upsample2(self.lrelu(self.spatial_attn4(attn)))
        attn = self.spatial_attn5(attn)
        attn_add = self.spatial_attn_add2(self.lrelu(self.spatial_attn_add1(attn)))
        # Sigmoid attention times 2: close to 1 at initialisation.
        return feat * torch.sigmoid(attn) * 2 + attn_add


class EDVRFeatureExtractor(nn.Module):
    """EDVR up to its fusion: a window (N, T, 3, H, W), T = ``num_frames``, H and W multiples of
    4, to the centre frame's fused features (N, ``num_features``, H, W). Upstream's IconVSR
    builds it with 5 extraction blocks, 8 deformable groups and TSA."""

    def __init__(
        self,
        num_frames: int = 5,
        num_features: int = 64,
        deformable_groups: int = 8,
        num_extract_blocks: int = 5,
        center_frame: int | None = None,
        with_tsa: bool = True,
    ):
        super().__init__()
        center = num_frames // 2 if center_frame is None else center_frame
        if not 0 <= center < num_frames:
            raise ValueError(f"center_frame {center_frame} is not one of {num_frames} frames")
        self.num_frames = num_frames
        self.center_frame = center
        self.with_tsa = with_tsa
        f = num_features
        self.conv_first = nn.Conv2d(3, f, 3, padding=1)
        self.feature_extraction = nn.Sequential(
            *(ResidualBlockNoBN(f) for _ in range(num_extract_blocks))
        )
        self.conv_l2_1 = nn.Conv2d(f, f, 3, stride=2, padding=1)
        self.conv_l2_2 = nn.Conv2d(f, f, 3, padding=1)
        self.conv_l3_1 = nn.Conv2d(f, f, 3, stride=2, padding=1)
        self.conv_l3_2 = nn.Conv2d(f, f, 3, padding=1)
        self.pcd_align = PCDAlignment(f, deformable_groups)
        self.fusion: nn.Module = (
            TSAFusion(f, num_frames, center) if with_tsa else nn.Conv2d(num_frames * f, f, 1)
        )
        self.lrelu = nn.LeakyReLU(LRELU_SLOPE, inplace=True)

    def check_window(self, x: torch.Tensor) -> None:
        name = type(self).__name__
        if x.dim() != 5 or x.shape[1] != self.num_frames or x.shape[2] != 3:
            raise ValueError(
                f"{name} takes a window (N, {self.num_frames}, 3, H, W), got {tuple(x.shape)}"
            )
        if x.shape[-2] % SIZE_MULTIPLE or x.shape[-1] % SIZE_MULTIPLE:
            raise ValueError(
                f"{name}'s frame sides must be multiples of {SIZE_MULTIPLE} (its feature "
                f"pyramid halves them twice), got {x.shape[-2]}x{x.shape[-1]}"
            )

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every frame's features at full, half and quarter resolution, each (N, T, F, h, w)."""
        n, t, c, h, w = x.shape
        l1 = self.feature_extraction(self.lrelu(self.conv_first(x.reshape(-1, c, h, w))))
        l2 = self.lrelu(self.conv_l2_2(self.lrelu(self.conv_l2_1(l1))))
        l3 = self.lrelu(self.conv_l3_2(self.lrelu(self.conv_l3_1(l2))))
        return [level.view(n, t, *level.shape[1:]) for level in (l1, l2, l3)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_window(x)
        n, t, _, h, w = x.shape
        levels = self.pyramid(x)
        reference = [level[:, self.center_frame] for level in levels]
        aligned = torch.stack(
            [self.pcd_align([level[:, i] for level in levels], reference) for i in range(t)],
            dim=1,
        )
        if self.with_tsa:
            return self.fusion(aligned)
        return self.fusion(aligned.view(n, -1, h, w))


class EDVR(EDVRFeatureExtractor, SRNetwork):
    """EDVR; a window (N, T, 3, H, W) in [0, 1], T = ``num_frames``, H and W multiples of 4, to
    its centre frame (N, 3, 4H, 4W)."""

    # RGB frames in (its first convolution is SPyNet's, which takes two frames' channels).
    image_channels = 3
    traits = NetworkTraits(
        scales=(4,),
        size_multiple=SIZE_MULTIPLE,
        channels=(3,),
        bf16_safe=False,
        tile_exact=False,
        frames=WINDOW,
        window=5,
    )

    def __init__(
        self,
        scale: int = 4,
        num_features: int = 64,
        num_frames: int = 5,
        deformable_groups: int = 8,
        num_extract_blocks: int = 5,
        num_reconstruct_blocks: int = 10,
        center_frame: int | None = None,
        with_tsa: bool = True,
    ):
        if scale != 4:
            raise ValueError(f"EDVR upsamples x4 only, got scale {scale}")
        super().__init__(
            num_frames, num_features, deformable_groups, num_extract_blocks, center_frame, with_tsa
        )
        self.scale = scale
        f = num_features
        self.reconstruction = nn.Sequential(
            *(ResidualBlockNoBN(f) for _ in range(num_reconstruct_blocks))
        )
        self.upconv1 = nn.Conv2d(f, 4 * f, 3, padding=1)
        self.upconv2 = nn.Conv2d(f, 4 * RECONSTRUCTION_WIDTH, 3, padding=1)
        self.conv_hr = nn.Conv2d(RECONSTRUCTION_WIDTH, RECONSTRUCTION_WIDTH, 3, padding=1)
        self.conv_last = nn.Conv2d(RECONSTRUCTION_WIDTH, 3, 3, padding=1)
        self.pixel_shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.reconstruction(super().forward(x))
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
        out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        centre = x[:, self.center_frame]
        return out + F.interpolate(centre, scale_factor=4, mode="bilinear", align_corners=False)
