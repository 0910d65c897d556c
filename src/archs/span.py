"""SPAN: Wan, Yu, Li, Chen, Zou, Liu, Yin and Zuo, "Swift Parameter-free Attention Network for
Efficient Super-Resolution", CVPR Workshops 2024 (winner of the NTIRE 2024 efficient SR track).

Upstream: https://github.com/hongyuanyu/SPAN (commit c77a591, basicsr/archs/span_arch.py),
Apache-2.0 (LICENSE.txt; no NOTICE file upstream).
SR Lab's code is its own; parameter names follow the upstream file so its weights load.

Every convolution is a re-parameterisable ``Conv3XC``: in training a 1x1 expansion (x2), a 3x3
and a 1x1 reduction on the zero-padded input, plus a 1x1 skip; for inference the four fold into
one 3x3 convolution. Each of six SPAB blocks is three such convolutions with SiLU between them and
a parameter-free attention: ``(out + x) * (sigmoid(out) - 0.5)``. The first features, the last
block's output (through one more Conv3XC), the first block's output and the last block's first
activation are concatenated, fused by a 1x1 convolution and pixel-shuffled.

As the official network: the input is mean-shifted (DIV2K's RGB mean) and multiplied by
``img_range`` (255), and the output is not shifted back; it is what the released weights were
trained to produce. Module names are the official ones, including each Conv3XC's ``eval_conv``,
which here holds the folded kernel as buffers (not trained; rewritten by :meth:`Conv3XC.fold`).

Training and inference forms: ``net.train()`` runs the branches, ``net.eval()`` the folded 3x3
kernels computed from them (``deploy=True`` uses the stored ``eval_conv`` instead, for a file
saved after :meth:`SPAN.fold`). :meth:`Conv3XC.fuse` gives the plain module eval mode computes
(:mod:`src.archs.reparam`): ``src.eval``, ``src.predict`` and ``src.export`` run SPAN with
every Conv3XC replaced by it. The two forms are the same function up to float rounding, at
the border too: the branches pad the input before the 1x1 expansion, so the padding carries the
expansion's bias, which the folded bias counts at every tap.

48 features: 426,288 parameters in the folded form at x4 (410,700 at x2), the size that runs;
the training form trains 1,840,488 at x4 (1,824,900 at x2).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork
from src.archs.common import same_conv
from src.archs.reparam import conv_from_kernel, fused_parameter_count

NUM_BLOCKS = 6
GAIN = 2
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


class FoldedKernel(nn.Module):
    """The folded 3x3 kernel of a Conv3XC, as buffers named like a convolution's parameters."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(c_out, c_in, 3, 3))
        self.register_buffer("bias", torch.zeros(c_out))


class Conv3XC(nn.Module):
    """A 3x3 convolution trained as 1x1 -> 3x3 -> 1x1 plus a 1x1 skip; optional LeakyReLU."""

    def __init__(self, c_in: int, c_out: int, gain: int = GAIN, relu: bool = False):
        super().__init__()
        self.has_relu = relu
        self.deploy = False
        self.sk = nn.Conv2d(c_in, c_out, 1)
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, c_in * gain, 1),
            nn.Conv2d(c_in * gain, c_out * gain, 3),
            nn.Conv2d(c_out * gain, c_out, 1),
        )
        self.eval_conv = FoldedKernel(c_in, c_out)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel and bias the four branches amount to."""
        expand, spatial, reduce = (cast(nn.Conv2d, layer) for layer in self.conv)
        skip_bias, biases = cast(torch.Tensor, self.sk.bias), (expand.bias, spatial.bias)
        expand_bias, spatial_bias = (cast(torch.Tensor, b) for b in biases)
        w1, w3 = expand.weight[:, :, 0, 0], reduce.weight[:, :, 0, 0]
        weight = torch.einsum("om,mnhw,ni->oihw", w3, spatial.weight, w1)
        middle_bias = torch.einsum("mnhw,n->m", spatial.weight, expand_bias) + spatial_bias
        bias = w3 @ middle_bias + cast(torch.Tensor, reduce.bias) + skip_bias
        return weight + F.pad(self.sk.weight, (1, 1, 1, 1)), bias

    @torch.no_grad()
    def fold(self) -> None:
        """Store the folded kernel in ``eval_conv`` (what the official ``update_params`` does)."""
        weight, bias = self.folded()
        self.eval_conv.weight.copy_(weight)  # type: ignore[operator]
        self.eval_conv.bias.copy_(bias)  # type: ignore[operator]

    def inference_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The kernel and bias eval mode runs: the stored ``eval_conv`` with ``deploy``, else
        the one folded from the branches."""
        if not self.deploy:
            return self.folded()
        stored = self.eval_conv
        return cast(torch.Tensor, stored.weight), cast(torch.Tensor, stored.bias)

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """The plain inference module (:mod:`src.archs.reparam`): one 3x3 convolution, then
        LeakyReLU(0.05) where the block has it."""
        conv = conv_from_kernel(*self.inference_kernel())
        return nn.Sequential(conv, nn.LeakyReLU(0.05)) if self.has_relu else conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            out = self.conv(F.pad(x, (1, 1, 1, 1))) + self.sk(x)
        else:
            out = F.conv2d(x, *self.inference_kernel(), padding=1)
        return F.leaky_relu(out, 0.05) if self.has_relu else out


class SPAB(nn.Module):
    """Swift parameter-free attention block; returns the output, the first convolution's output
    after its activation, and the attention map. (Upstream's first SiLU is in-place, so the
    ``out1`` it returns beside the output is the activated one; the released weights expect it.)"""

    def __init__(self, channels: int):
        super().__init__()
        self.c1_r = Conv3XC(channels, channels)
        self.c2_r = Conv3XC(channels, channels)
        self.c3_r = Conv3XC(channels, channels)
        self.act1 = nn.SiLU()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out1 = self.act1(self.c1_r(x))
        out3 = self.c3_r(self.act1(self.c2_r(out1)))
        attention = torch.sigmoid(out3) - 0.5
        return (out3 + x) * attention, out1, attention


class SPAN(SRNetwork):
    """SPAN; computes what the official network computes (see the module docstring)."""

    traits = NetworkTraits(scales=None, channels=(3,), tile_exact=True)

    def __init__(
        self,
        scale: int,
        num_features: int = 48,
        num_channels: int = 3,
        img_range: float = 255.0,
        deploy: bool = False,
    ):
        super().__init__()
        self.scale = scale
        self.img_range = img_range
        self.register_buffer("mean", torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_1 = Conv3XC(num_channels, num_features)
        for index in range(1, NUM_BLOCKS + 1):
            self.add_module(f"block_{index}", SPAB(num_features))
        self.conv_cat = nn.Conv2d(num_features * 4, num_features, 1)
        self.conv_2 = Conv3XC(num_features, num_features)
        self.upsampler = nn.Sequential(
            same_conv(num_features, num_channels * scale**2, 3), nn.PixelShuffle(scale)
        )
        for module in self.modules():
            if isinstance(module, Conv3XC):
                module.deploy = deploy

    def folded_parameter_count(self) -> int:
        """Parameters of the folded inference form: each Conv3XC as one 3x3 convolution
        (:func:`src.archs.reparam.fused_parameter_count`)."""
        return fused_parameter_count(self)

    @torch.no_grad()
    def fold(self) -> None:
        """Store every Conv3XC's folded kernel (before saving a deploy-form file)."""
        for module in self.modules():
            if isinstance(module, Conv3XC):
                module.fold()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.conv_1((x - self.mean.to(x.dtype)) * self.img_range)  # type: ignore[operator]
        out, first_block = shallow, shallow
        last_inner = shallow
        for index in range(1, NUM_BLOCKS + 1):
            out, inner, _ = getattr(self, f"block_{index}")(out)
            if index == 1:
                first_block = out
            last_inner = inner
        fused = self.conv_cat(torch.cat([shallow, self.conv_2(out), first_block, last_inner], 1))
        return self.upsampler(fused)
