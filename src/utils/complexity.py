"""A network's size and cost: trainable parameters and GFLOPs of one forward pass. Read by the zoo
table, the efficiency protocol and the run config every logger gets."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(net: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def count_gflops(net: nn.Module, size: int, device: str = "meta") -> float:
    """GFLOPs (2 x multiply-adds) of one forward pass on a ``size`` x ``size`` RGB input."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, 3, size, size, device=device))
    return counter.get_total_flops() / 1e9
