"""RealBasicVSR: Chan, Zhou, Xu and Loy, "Investigating Tradeoffs in Real-World Video
Super-Resolution", CVPR 2022.

Upstream: https://github.com/open-mmlab/mmagic (commit 0a560bb,
mmagic/models/editors/real_basicvsr/real_basicvsr_net.py ``RealBasicVSRNet`` and
mmagic/models/editors/basicvsr/basicvsr_net.py ``BasicVSRNet``, ``SPyNet``), Apache-2.0; the
network first appeared in mmediting (the same repository, commit 0dda55f) and in
https://github.com/ckkelvinchan/RealBasicVSR (Apache-2.0), which builds it from mmediting.
SR Lab's code is its own and reuses BasicVSR's pieces (:mod:`src.archs.basicvsr`), SPyNet
(:mod:`src.archs.spynet`) and the flow warp (:mod:`src.archs.flow`). Parameter names follow
mmagic's (``image_cleaning.0.main.N``, ``image_cleaning.1``, ``basicvsr.spynet.basic_module.L.
basic_module.K.conv``, ``basicvsr.backward_resblocks``, ``basicvsr.forward_resblocks``,
``basicvsr.fusion``, ``basicvsr.upsample1.upsample_conv``, ``basicvsr.upsample2.upsample_conv``,
``basicvsr.conv_hr``, ``basicvsr.conv_last``), so the generator in mmediting's released file
(``realbasicvsr_c64b20_1x30x8_lr5e-5_150k_reds_20211104-52f77c2c.pth``: keys under
``state_dict`` prefixed ``generator.``, and ``generator_ema.`` for the EMA copy mmediting tests
with) would load strictly once the prefix is removed; the layout is pinned in
tests/test_realbasicvsr.py against the authors' code, the file itself was not available here.

A clip (N, T, 3, H, W) in [0, 1] gives (N, T, 3, 4H, 4W). The image cleaning module (a 3x3
convolution and LeakyReLU 0.1, ``num_cleaning_blocks`` residual blocks conv-ReLU-conv, a 3x3
convolution back to RGB) adds a residual to every frame; it runs again on the cleaned frames while
the mean absolute residual, over every pixel of every frame of the whole batch, is at least
``dynamic_refine_thres / 255``, and at most three times. BasicVSR then super-resolves the cleaned
clip (:func:`src.archs.basicvsr.propagate_both_ways`: SPyNet flows both ways, backward and
forward recurrent trunks of ``num_propagation_blocks`` blocks, fusion, two pixel-shuffle x2
stages, the cleaned frame upsampled bilinearly x4 added back). :meth:`RealBasicVSR.
forward_with_cleaned` also returns the cleaned LR frames, for the cleaning loss of the authors'
training.

Variant: the released configuration, 64 features, 20 cleaning and 20 propagation blocks:
6,294,834 parameters, of which SPyNet's 1,440,300 and the cleaning module's 1,480,643 (paper:
6.3M). ``dynamic_refine_thres`` is in the authors' 0..255 units: 5 (the default here) is their
test setting ("change to 5 for test" in their configs); their training configs, and the demo
config of the RealBasicVSR repository, leave their constructor's 255, under which cleaning
stops after one pass unless its residuals average the whole [0, 1] range. As upstream, SPyNet is
frozen (``fix_spynet``) and the cleaning module can be (``fix_cleaning``). The cleaning runs on
all N x T frames at once, with 64 x H x W floats of features each; ``sequential_cleaning`` (the
authors' demo setting ``is_sequential_cleaning``) runs one frame index at a time, the same values
to float rounding, for long clips. Only x4 exists. mmagic's shortcut of reusing the backward flows
for a mirror-extended clip is not taken (the same flows, computed).

Declared not bf16-safe: not measured (no released file here; BasicVSR, whose propagation and
SPyNet this network shares, is not).
"""

from __future__ import annotations

import torch
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork
from src.archs.basicvsr import (
    ConvResidualBlocks,
    add_upsampling_tail,
    fused_reconstruction,
    neighbour_flows,
    propagate_both_ways,
)
from src.archs.spynet import SPyNet
from src.utils.choices import SEQUENCE

# Upstream's cap on cleaning passes ("determined empirically").
MAX_CLEANING_PASSES = 3
# dynamic_refine_thres is given on this scale (upstream divides by it).
THRESHOLD_SCALE = 255.0


class ConvModule(nn.Module):
    """A convolution under mmcv ``ConvModule``'s name (``conv``), then its ReLU if any."""

    def __init__(self, conv: nn.Conv2d, relu: bool):
        super().__init__()
        self.conv = conv
        self.activate: nn.Module = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.conv(x))


class MMagicSPyNet(SPyNet):
    """SR Lab's SPyNet with mmagic's names: each level's five convolutions are
    ``basic_module.K.conv`` (K = 0..4, mmcv ConvModules) instead of ``basic_module.2K``."""

    def __init__(self) -> None:
        super().__init__()
        for level in self.basic_module:
            convs = [m for m in level.modules() if isinstance(m, nn.Conv2d)]
            last = len(convs) - 1
            level.basic_module = nn.Sequential(
                *(ConvModule(conv, relu=k < last) for k, conv in enumerate(convs))
            )


class BasicVSRNet(nn.Module):
    """BasicVSR (:class:`src.archs.basicvsr.BasicVSR`'s computation) under mmagic's names
    (``backward_resblocks``, ``forward_resblocks``, ``upsample1.upsample_conv``, ...)."""

    def __init__(self, num_features: int, num_blocks: int):
        super().__init__()
        self.num_features = num_features
        self.spynet = MMagicSPyNet()
        self.backward_resblocks = ConvResidualBlocks(num_features + 3, num_features, num_blocks)
        self.forward_resblocks = ConvResidualBlocks(num_features + 3, num_features, num_blocks)
        self.fusion = nn.Conv2d(2 * num_features, num_features, 1)
        add_upsampling_tail(self, num_features, mmagic_names=True)

    def reconstruct(self, features: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        return fused_reconstruction(self, features, frame)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flows = neighbour_flows(self.spynet, x) if x.shape[1] > 1 else None
        return propagate_both_ways(
            x,
            flows,
            self.backward_resblocks,
            self.forward_resblocks,
            self.reconstruct,
            self.num_features,
        )


class RealBasicVSR(SRNetwork):
    """RealBasicVSR; a clip (N, T, 3, H, W) in [0, 1] to (N, T, 3, 4H, 4W)."""

    # RGB frames in (its first convolution is SPyNet's, which takes two frames' channels).
    image_channels = 3
    traits = NetworkTraits(
        scales=(4,), channels=(3,), bf16_safe=False, tile_exact=False, frames=SEQUENCE
    )

    def __init__(
        self,
        scale: int = 4,
        num_features: int = 64,
        num_propagation_blocks: int = 20,
        num_cleaning_blocks: int = 20,
        dynamic_refine_thres: float = 5.0,
        sequential_cleaning: bool = False,
        fix_spynet: bool = True,
        fix_cleaning: bool = False,
    ):
        super().__init__()
        if scale != 4:
            raise ValueError(f"RealBasicVSR upsamples x4 only, got scale {scale}")
        self.scale = scale
        self.dynamic_refine_thres = dynamic_refine_thres
        self.sequential_cleaning = sequential_cleaning
        self.image_cleaning = nn.Sequential(
            ConvResidualBlocks(3, num_features, num_cleaning_blocks),
            nn.Conv2d(num_features, 3, 3, padding=1),
        )
        self.basicvsr = BasicVSRNet(num_features, num_propagation_blocks)
        if fix_cleaning:
            self.image_cleaning.requires_grad_(False)
        if fix_spynet:
            self.basicvsr.spynet.requires_grad_(False)

    @property
    def cleaning_threshold(self) -> float:
        """The mean absolute residual, in [0, 1] units, under which cleaning stops."""
        return self.dynamic_refine_thres / THRESHOLD_SCALE

    def residuals(self, x: torch.Tensor) -> torch.Tensor:
        """One pass of the cleaning module over every frame of ``x`` (N, T, 3, H, W)."""
        if self.sequential_cleaning:
            return torch.stack([self.image_cleaning(frame) for frame in x.unbind(1)], dim=1)
        n, t, c, h, w = x.shape
        return self.image_cleaning(x.reshape(n * t, c, h, w)).view(n, t, c, h, w)

    def clean(self, x: torch.Tensor) -> torch.Tensor:
        """The cleaned clip: residuals added until their mean magnitude falls under
        :attr:`cleaning_threshold`, or :data:`MAX_CLEANING_PASSES` times."""
        if torch.compiler.is_exporting():
            return self.clean_as_graph(x, MAX_CLEANING_PASSES)
        for _ in range(MAX_CLEANING_PASSES):
            residual = self.residuals(x)
            x = x + residual
            if residual.abs().mean() < self.cleaning_threshold:
                break
        return x

    def clean_as_graph(self, x: torch.Tensor, passes: int) -> torch.Tensor:
        """:meth:`clean` with at most ``passes`` passes, each further pass under ``torch.cond``
        on the mean residual: the stop depends on pixel values, which an exported graph keeps
        as a branch (ONNX ``If``) rather than fixing it at the traced clip's."""
        residual = self.residuals(x)
        x = x + residual
        if passes == 1:
            return x
        return torch.cond(
            residual.abs().mean() < self.cleaning_threshold,
            lambda cleaned: cleaned.clone(),
            lambda cleaned: self.clean_as_graph(cleaned, passes - 1),
            (x,),
        )

    def forward_with_cleaned(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(SR clip (N, T, 3, 4H, 4W), cleaned LR clip (N, T, 3, H, W)): upstream's
        ``return_lqs=True``, for a cleaning loss."""
        if x.dim() != 5 or x.shape[2] != 3:
            raise ValueError(f"RealBasicVSR takes a clip (N, T, 3, H, W), got {tuple(x.shape)}")
        cleaned = self.clean(x)
        return self.basicvsr(cleaned), cleaned

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_cleaned(x)[0]
