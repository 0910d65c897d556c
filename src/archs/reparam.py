"""Structural re-parameterisation: training-time branches folded into the plain layers that run.

A re-parameterisable block (SPAN's ``Conv3XC``, ECBSR's ``ECB``, a RepVGG-style convolution)
trains several linear branches side by side (a 3x3 convolution, a 1x1 expansion followed by a
3x3, fixed Sobel or Laplacian filters scaled per channel, an identity) and sums them. Every branch
is linear in its input, and so is their sum: after training the block equals one convolution
whose kernel and bias are computed from the branches' weights (Ding et al., "RepVGG: Making
VGG-style ConvNets Great Again", CVPR 2021; Zhang, Zeng and Zhang, ECBSR, ACM MM 2021). An
activation after the sum stays an activation after the one convolution.

The protocol SR Lab's code relies on:

* a block declares how it folds with ``fuse(self) -> nn.Module``: a new plain module (an
  ``nn.Conv2d``, or a small module with its activation) computing the same function as the block
  in eval mode, built from the block's current weights and detached from them;
* :func:`fuse_network` returns a copy of a network with every such block replaced by its
  ``fuse()``, outermost first (a fusable block is folded whole; the blocks inside it are its own
  business), leaving the network it was given untouched;
* :func:`is_fusable` says whether a network holds any such block, and
  :func:`fused_parameter_count` how large its fused form is (parameters and persistent buffers:
  what an inference file holds).

``src.eval``, ``src.predict`` and ``src.export`` run the fused form of every fusable network
(:meth:`src.models.sr_module.SRModule.fuse_for_inference`), the efficiency report measures it,
and ``model.fused=true`` trains, saves and loads a network already in that form.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Protocol, cast, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Fusable(Protocol):
    """A block with training-time branches that folds into a plain module."""

    def fuse(self) -> nn.Module: ...


def is_fusable_block(module: nn.Module) -> bool:
    """Whether ``module`` itself declares how it folds (a ``fuse`` method; a submodule of that
    name, as EFDN's 1x1 ``fuse`` convolution, is not a declaration)."""
    fuse = getattr(module, "fuse", None)
    return callable(fuse) and not isinstance(fuse, nn.Module)


def is_fusable(net: nn.Module) -> bool:
    """Whether ``net`` is, or holds, a block that folds for inference."""
    return any(is_fusable_block(module) for module in net.modules())


def fusable_blocks(net: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The outermost fusable blocks of ``net`` by name (those :func:`fuse_network` replaces)."""
    for name, child in net.named_children():
        if is_fusable_block(child):
            yield name, child
        else:
            yield from ((f"{name}.{inner}", block) for inner, block in fusable_blocks(child))


def _fused_block(block: nn.Module) -> nn.Module:
    """``block.fuse()`` in the block's train/eval mode, with its own children fused too."""
    fused = cast(Fusable, block).fuse()
    _fuse_children(fused)
    return fused.train(block.training)


def _fuse_children(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if is_fusable_block(child):
            setattr(module, name, _fused_block(child))
        else:
            _fuse_children(child)


@torch.no_grad()
def fuse_network(net: nn.Module) -> nn.Module:
    """A copy of ``net`` with every fusable block, outermost first, replaced by its ``fuse()``;
    ``net`` itself is left as it was. A network with nothing to fuse comes back as a plain copy.
    The copy keeps the class, recorded constructor arguments and declarations of ``net``."""
    copied = copy.deepcopy(net)
    if is_fusable_block(copied):
        return _fused_block(copied)
    _fuse_children(copied)
    return copied


def persistent_buffers(net: nn.Module) -> Iterator[torch.Tensor]:
    """The buffers a state dict of ``net`` holds (not the ones it recomputes)."""
    for module in net.modules():
        skipped = module._non_persistent_buffers_set
        for name, buffer in module.named_buffers(recurse=False):
            if name not in skipped:
                yield buffer


def fused_parameter_count(net: nn.Module) -> int:
    """Parameters and persistent buffers of the fused form of ``net``: the numbers an inference
    file of it holds (``net`` itself where it has nothing to fuse)."""
    fused = fuse_network(net) if is_fusable(net) else net
    parameters = sum(p.numel() for p in fused.parameters())
    return parameters + sum(b.numel() for b in persistent_buffers(fused))


def conv_from_kernel(weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A 'same'-padded convolution (odd square kernel, zero padding) holding copies of
    ``weight`` (out, in, k, k) and ``bias`` (out,), on their device and in their dtype."""
    out_channels, in_channels, size, _ = weight.shape
    conv = nn.Conv2d(
        in_channels,
        out_channels,
        size,
        padding=size // 2,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)  # type: ignore[union-attr]
    return conv
