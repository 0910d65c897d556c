"""The convolutional part of AlexNet (Krizhevsky et al., 2012) in torchvision's single-tower
form, for LPIPS.

Upstream: https://github.com/pytorch/vision (torchvision/models/alexnet.py, ``features``; no
commit pinned), BSD-3-Clause, Copyright (c) Soumith Chintala 2016. LPIPS, which compares these
layers: https://github.com/richzhang/PerceptualSimilarity (commit 082bb24), BSD-2-Clause,
Copyright (c) 2018, Richard Zhang, Phillip Isola, Alexei A. Efros, Eli Shechtman, Oliver Wang.
SR Lab's code is its own; layer indices follow torchvision's so its weights load.

Laid out as torchvision lays it out (``features.<index>``), so its ImageNet file
(``alexnet-owt-7be5be79.pth``) loads by key name without torchvision. :meth:`forward` returns the
outputs of the five ReLUs (``relu1`` ... ``relu5``, 64, 192, 384, 256 and 256 channels), the
layers LPIPS compares.
"""

from __future__ import annotations

import torch
from torch import nn

# Index in ``features`` of each ReLU whose output LPIPS uses.
TAPS = {"relu1": 1, "relu2": 4, "relu3": 7, "relu4": 9, "relu5": 11}
CHANNELS = (64, 192, 384, 256, 256)


class AlexNetFeatures(nn.Module):
    """AlexNet's ``features`` up to its fifth ReLU; returns the five ReLU outputs in order."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
        )

    def load_torchvision(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load torchvision's ``alexnet`` file: its ``features`` entries, strictly."""
        own = {k: v for k, v in state_dict.items() if k.startswith("features.")}
        self.load_state_dict(own, strict=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in TAPS.values():
                outputs.append(x)
        return outputs
