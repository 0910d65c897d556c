"""LPIPS, the learned perceptual image patch similarity (Zhang et al., CVPR 2018), version 0.1:
lower means more alike.

Both images (RGB in [0, 1]) are mapped to [-1, 1], shifted and scaled by LPIPS's constants, and
passed through a frozen ImageNet backbone, AlexNet (``lpips``, the paper's default) or VGG16
(``lpips_vgg``). At each of five layers the features are normalised to unit length along the
channels, their squared difference is weighted per channel by LPIPS's learned 1x1 layer
(``lin<k>.model.1.weight``, the released v0.1 files' names) and averaged over the image; the
five averages are summed. Backbone and linear weights come from the published files, fetched by
sha256 (:mod:`src.io.weights`), given as a folder holding them, or random (tests only).
"""

from __future__ import annotations

from typing import Literal, cast

import torch
from torch import nn

from src.archs.alexnet_features import CHANNELS as ALEX_CHANNELS
from src.archs.alexnet_features import AlexNetFeatures
from src.archs.vgg_features import VGGFeatures
from src.io.weights import DEFAULT_CACHE, load_weights

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
VGG_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
VGG_CHANNELS = (64, 128, 256, 512, 512)
Backbone = Literal["alex", "vgg"]


class LinearLayer(nn.Module):
    """One layer's channel weights, as a 1x1 convolution; named as in the released files."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class VGGTaps(nn.Module):
    """VGG16 features at LPIPS's five layers, in order, without ImageNet normalisation (LPIPS
    applies its own scaling first)."""

    def __init__(self) -> None:
        super().__init__()
        self.vgg = VGGFeatures(VGG_TAPS, "vgg16", normalize=False)

    def load_torchvision(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.vgg.load_torchvision(state_dict)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = self.vgg(x)
        return [outputs[name] for name in VGG_TAPS]


def unit_length(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """Per-image LPIPS distance of (N, 3, H, W) images in [0, 1]."""

    def __init__(
        self,
        backbone: Backbone = "alex",
        weights: str = "download",
        cache_dir: str = str(DEFAULT_CACHE),
        key: str = "metric_weights",
    ):
        super().__init__()
        self.backbone_name = backbone
        self.net: nn.Module = AlexNetFeatures() if backbone == "alex" else VGGTaps()
        channels = ALEX_CHANNELS if backbone == "alex" else VGG_CHANNELS
        for index, width in enumerate(channels):
            self.add_module(f"lin{index}", LinearLayer(width))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), False)
        self.weights_spec, self.cache_dir, self.key = weights, cache_dir, key
        self.requires_grad_(False).eval()
        self._loaded = False

    def prepare(self) -> None:
        """Load the backbone's ImageNet weights and LPIPS's linear layers (once)."""
        if self._loaded:
            return
        trunk = "alexnet" if self.backbone_name == "alex" else "vgg16"
        backbone = load_weights(self.weights_spec, trunk, self.key, self.cache_dir)
        if backbone is not None:
            self.net.load_torchvision(backbone)  # type: ignore[operator]
        linear = load_weights(
            self.weights_spec, f"lpips_{self.backbone_name}", self.key, self.cache_dir
        )
        if linear is not None:
            own = {k: v for k, v in linear.items() if k.startswith("lin")}
            missing, unexpected = self.load_state_dict(own, strict=False)
            wrong = [k for k in missing if k.startswith("lin")] + list(unexpected)
            if wrong:
                raise ValueError(f"{self.key}: the LPIPS file's layers do not match: {wrong}")
        self._loaded = True

    @torch.no_grad()
    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        self.prepare()
        shift, scale = cast(torch.Tensor, self.shift), cast(torch.Tensor, self.scale)
        features = [self.net((image * 2 - 1 - shift) / scale) for image in (sr, hr)]
        total = sr.new_zeros(sr.shape[0])
        for index, (one, other) in enumerate(zip(*features, strict=True)):
            difference = (unit_length(one) - unit_length(other)) ** 2
            weighted = getattr(self, f"lin{index}").model(difference)
            total = total + weighted.mean(dim=(1, 2, 3))
        return total
