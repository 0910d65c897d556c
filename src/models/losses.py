"""Pixel losses beyond torch's own L1/MSE."""

from __future__ import annotations

import torch
from torch import nn


class CharbonnierLoss(nn.Module):
    """sqrt((x - y)^2 + eps^2), averaged: a smooth L1 (Lai et al., LapSRN, CVPR 2017)."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((preds - target).pow(2) + self.eps**2).mean()
