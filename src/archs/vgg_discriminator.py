"""The VGG-style discriminator of SRGAN and ESRGAN (Ledig et al., CVPR 2017; Wang et al., ECCVW
2018), with BasicSR's parameter names (``conv0_0``, ``conv0_1``, ``bn0_1``, ..., ``linear2``).

Upstream: https://github.com/XPixelGroup/BasicSR (commit 8d56e3a,
basicsr/archs/discriminator_arch.py, ``VGGStyleDiscriminator``), Apache-2.0.
SR Lab's code is its own; parameter names follow the upstream file so its weights load.

Stages of a 3x3 convolution and a 4x4 stride-2 one (batch norm after all but the first
convolution, LeakyReLU 0.2), widths 64, 128, 256, 512, 512; then a 100-unit linear layer on the
512 x 4 x 4 features and one logit. As in BasicSR, the input side (``input_size``) is 128
(ESRGAN's 128 px HR patches: five stages) or 256 (a sixth 512-wide stage, ``conv5_*``/``bn5_*``,
so the linear layer still sees 4 x 4 positions); no other size. Parameters at the default width:
14,499,401 at 128 px, 21,055,049 at 256 px.
"""

from __future__ import annotations

import torch
from torch import nn

from src.utils.construction import RecordsArguments

# BasicSR's input sizes, and the stages each needs to reach 4 x 4 positions.
STAGES = {128: 5, 256: 6}


class VGGStyleDiscriminator(RecordsArguments, nn.Module):
    """One realness logit per image."""

    def __init__(self, in_channels: int = 3, num_feat: int = 64, input_size: int = 128):
        super().__init__()
        if input_size not in STAGES:
            allowed = " or ".join(str(size) for size in STAGES)
            raise ValueError(
                f"input_size must be {allowed} (BasicSR's VGG-style discriminator), "
                f"got {input_size}"
            )
        self.input_size = input_size
        self.stages = STAGES[input_size]
        widths = [num_feat, num_feat * 2, num_feat * 4] + [num_feat * 8] * (self.stages - 3)
        channels = in_channels
        for stage, width in enumerate(widths):
            first = nn.Conv2d(channels, width, 3, 1, 1, bias=stage == 0)
            self.add_module(f"conv{stage}_0", first)
            if stage > 0:
                self.add_module(f"bn{stage}_0", nn.BatchNorm2d(width, affine=True))
            self.add_module(f"conv{stage}_1", nn.Conv2d(width, width, 4, 2, 1, bias=False))
            self.add_module(f"bn{stage}_1", nn.BatchNorm2d(width, affine=True))
            channels = width
        self.linear1 = nn.Linear(widths[-1] * 4 * 4, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"the VGG discriminator takes {self.input_size}x{self.input_size} images (its "
                f"input_size), got {x.shape[-1]}x{x.shape[-2]}: set the HR patch size "
                f"(data.lr_patch_size x scale) to it"
            )
        for stage in range(self.stages):
            x = getattr(self, f"conv{stage}_0")(x)
            if stage > 0:
                x = getattr(self, f"bn{stage}_0")(x)
            x = self.lrelu(x)
            x = self.lrelu(getattr(self, f"bn{stage}_1")(getattr(self, f"conv{stage}_1")(x)))
        return self.linear2(self.lrelu(self.linear1(x.flatten(1))))
