"""The convolutional part of VGG16/VGG19 (Simonyan & Zisserman, ICLR 2015), for feature losses.

Upstream: https://github.com/pytorch/vision (torchvision/models/vgg.py, ``features``; no commit
pinned), BSD-3-Clause, Copyright (c) Soumith Chintala 2016.
SR Lab's code is its own; layer indices follow torchvision's so its weights load.

Laid out as torchvision lays it out (``features.<index>``: 3x3 convolutions, ReLUs and 2x2 max
pools in one sequence), so torchvision's published ImageNet files load by key name; torchvision
itself is not needed (it cannot be imported beside this project's CPU torch build). The layers
have their usual names (``conv1_1``, ``relu1_1``, ``pool1``, ..., ``conv5_4``) and
:meth:`VGGFeatures.forward` returns the outputs of the ones asked for, stopping at the deepest.
Inputs are RGB in [0, 1]; they are normalised by ImageNet's mean and standard deviation first,
as the networks were trained. The pooling layers can be replaced (DISTS's L2 pooling) by a module
built from the width of the features they pool.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal, cast

import torch
from torch import nn


# Convolution widths per block; "M" closes a block with a pooling layer.
def blocks(*depths: int) -> list[int | str]:
    """Five blocks of 64, 128, 256, 512 and 512 channels with ``depths`` convolutions each."""
    layout: list[int | str] = []
    for width, depth in zip((64, 128, 256, 512, 512), depths, strict=True):
        layout += [width] * depth + ["M"]
    return layout


LAYOUTS: dict[str, list[int | str]] = {
    "vgg16": blocks(2, 2, 3, 3, 3),
    "vgg19": blocks(2, 2, 4, 4, 4),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Variant = Literal["vgg16", "vgg19"]
Pooling = Callable[[int], nn.Module]


def max_pool(channels: int) -> nn.Module:
    """torchvision's pooling layer: 2x2 max, stride 2 (the same for every width)."""
    return nn.MaxPool2d(kernel_size=2, stride=2)


def layer_names(variant: Variant) -> list[str]:
    """The name of each entry of ``features``: conv<b>_<i>, relu<b>_<i> and pool<b>."""
    names: list[str] = []
    block, index = 1, 1
    for entry in LAYOUTS[variant]:
        if entry == "M":
            names.append(f"pool{block}")
            block, index = block + 1, 1
        else:
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
            index += 1
    return names


class VGGFeatures(nn.Module):
    """``features`` of VGG up to the deepest of ``layers``; returns {name: output}."""

    def __init__(
        self,
        layers: Iterable[str],
        variant: Variant = "vgg19",
        normalize: bool = True,
        pool: Pooling = max_pool,
    ):
        super().__init__()
        names = layer_names(variant)
        wanted = list(dict.fromkeys(layers))
        unknown = [name for name in wanted if name not in names]
        if unknown:
            raise ValueError(f"{variant} has no layer(s) {unknown}; its layers are {names}")
        self.layers = wanted
        self.names = names[: max(names.index(name) for name in wanted) + 1]
        modules: list[nn.Module] = []
        channels = 3
        for entry in LAYOUTS[variant]:
            if entry == "M":
                modules.append(pool(channels))
            else:
                width = int(entry)
                modules += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=False)]
                channels = width
        self.features = nn.Sequential(*modules[: len(self.names)])
        self.normalize = normalize
        # Constants, not weights: kept out of the state dict, which then matches torchvision's.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    def load_torchvision(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load torchvision's ``vgg16``/``vgg19`` file: its ``features.<i>`` entries up to the
        layers kept here, strictly (the classifier and deeper layers are not used)."""
        kept = {f"features.{i}." for i in range(len(self.features))}
        own = {k: v for k, v in state_dict.items() if any(k.startswith(p) for p in kept)}
        self.load_state_dict(own, strict=True)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.normalize:
            mean, std = cast(torch.Tensor, self.mean), cast(torch.Tensor, self.std)
            x = (x - mean) / std
        outputs = {}
        for name, layer in zip(self.names, self.features, strict=True):
            x = layer(x)
            if name in self.layers:
                outputs[name] = x
        return outputs
