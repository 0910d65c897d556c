"""PLKSR: Lee, Yun and Ro, "Partial Large Kernel CNNs for Efficient Super-Resolution", arXiv
2404.11848, 2024.

Upstream: https://github.com/dslisleedh/PLKSR (commit f054868, plksr/archs/plksr_arch.py), MIT,
Copyright (c) 2024 Dongheon Lee.
SR Lab's code is its own; parameter names follow the upstream file so its weights load.

A purely convolutional network: a 3x3 convolution to ``dim`` features, ``n_blocks`` PLK blocks,
a 3x3 convolution to ``3 * scale**2`` channels and a pixel shuffle. The long skip is the input
itself, each channel repeated ``scale**2`` times before the shuffle (nearest-neighbour
upsampling), so the network learns a residual over it. Each block, with an identity skip:

* a channel mixer: 3x3 convolution to ``2 * dim`` features, GELU, back to ``dim`` with a 3x3
  (``DCCM``, the released models), a 1x1 (``CCM``), or 1x1 first and 3x3 second (``ICCM``);
* the partial large kernel: a ``kernel_size`` convolution over the first
  ``int(dim * split_ratio)`` channels only, the others passed through untouched;
* element-wise attention (``use_ea``): the features times the sigmoid of a 3x3 convolution of
  themselves;
* a 1x1 refinement convolution.

Released configurations (the authors' ``options/test`` files): PLKSR is ``dim=64, n_blocks=28,
kernel_size=17, split_ratio=0.25, ccm_type="DCCM", use_ea=True`` (the defaults), 7,365,324
parameters at x2, 7,373,979 at x3, 7,386,096 at x4; PLKSR-tiny is ``n_blocks=12,
kernel_size=13, use_ea=False``, 2,349,772 / 2,358,427 / 2,370,544.

RGB in [0, 1], no mean shift, as the authors trained. Module names are the official ones,
``channe_mixer`` spelling included, so their files load key for key. The official network
writes the large-kernel output into its input in place at inference; here it is always split
and concatenated (the same numbers, and a graph ONNX export can trace). Only ``lk_type="PLK"``
is built: the sparse and rectangular large kernels are the paper's ablations, with no released
weights.
"""

from __future__ import annotations

import torch
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork
from src.archs.common import same_conv

# Kernel sizes of the channel mixer's expanding and reducing convolutions.
CHANNEL_MIXER_KERNELS = {"CCM": (3, 1), "ICCM": (1, 3), "DCCM": (3, 3)}
MIXER_EXPANSION = 2
# The authors' initialisation of the weights that feed each residual (BasicSR's trunc_normal_).
INIT_STD = 0.02


def init_trunc_normal(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.trunc_normal_(conv.weight, std=INIT_STD)
    return conv


def channel_mixer(dim: int, ccm_type: str) -> nn.Sequential:
    if ccm_type not in CHANNEL_MIXER_KERNELS:
        raise ValueError(
            f"ccm_type must be one of {sorted(CHANNEL_MIXER_KERNELS)}, got {ccm_type!r}"
        )
    expand, reduce = CHANNEL_MIXER_KERNELS[ccm_type]
    hidden = dim * MIXER_EXPANSION
    return nn.Sequential(
        same_conv(dim, hidden, expand),
        nn.GELU(),
        init_trunc_normal(same_conv(hidden, dim, reduce)),
    )


class PLKConv2d(nn.Module):
    """A large-kernel convolution over the first ``dim`` channels; the rest pass through.
    ``with_idt`` adds those channels back to the convolution's output."""

    def __init__(self, dim: int, kernel_size: int, with_idt: bool = False):
        super().__init__()
        self.idx = dim
        self.with_idt = with_idt
        self.conv = init_trunc_normal(same_conv(dim, dim, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        partial, rest = x.split([self.idx, x.shape[1] - self.idx], dim=1)
        out = self.conv(partial)
        if self.with_idt:
            out = out + partial
        return torch.cat([out, rest], dim=1)


class EA(nn.Module):
    """Element-wise attention: ``x * sigmoid(conv3x3(x))``."""

    def __init__(self, dim: int):
        super().__init__()
        self.f = nn.Sequential(init_trunc_normal(same_conv(dim, dim, 3)), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.f(x)


class PLKBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        ccm_type: str,
        kernel_size: int,
        split_ratio: float,
        with_idt: bool,
        use_ea: bool,
    ):
        super().__init__()
        partial_dim = int(dim * split_ratio)
        if not 0 < partial_dim <= dim:
            raise ValueError(f"split_ratio {split_ratio} leaves {partial_dim} of {dim} channels")
        self.channe_mixer = channel_mixer(dim, ccm_type)
        self.lk = PLKConv2d(partial_dim, kernel_size, with_idt)
        self.attn: nn.Module = EA(dim) if use_ea else nn.Identity()
        self.refine = init_trunc_normal(same_conv(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.refine(self.attn(self.lk(self.channe_mixer(x)))) + x


class PLKSR(SRNetwork):
    """PLKSR on RGB in [0, 1]; the defaults are the paper's main model."""

    traits = NetworkTraits(scales=None, channels=(3,), tile_exact=True)

    def __init__(
        self,
        scale: int,
        dim: int = 64,
        n_blocks: int = 28,
        ccm_type: str = "DCCM",
        kernel_size: int = 17,
        split_ratio: float = 0.25,
        lk_type: str = "PLK",
        with_idt: bool = False,
        use_ea: bool = True,
    ):
        super().__init__()
        if lk_type != "PLK":
            raise ValueError(
                f"lk_type {lk_type!r} is one of the paper's ablations; only 'PLK' is built"
            )
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the size, got {kernel_size}")
        self.scale = scale
        blocks = [
            PLKBlock(dim, ccm_type, kernel_size, split_ratio, with_idt, use_ea)
            for _ in range(n_blocks)
        ]
        self.feats = nn.Sequential(
            init_trunc_normal(same_conv(3, dim, 3)),
            *blocks,
            init_trunc_normal(same_conv(dim, 3 * scale**2, 3)),
        )
        self.to_img = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x.repeat_interleave(self.scale**2, dim=1)
        return self.to_img(self.feats(x) + skip)
