"""The layout SwinIR set and its successors (HAT, SRFormer, ATD, DRCT, DAT, HiT-SRF) keep: the
DIV2K mean removed, a 3x3 conv (``conv_first``), residual groups over a token sequence
(``patch_embed``, ``layers``, ``norm``), a conv with a long skip (``conv_after_body``), and an
upsampler (``conv_before_upsample``, ``upsample``, ``conv_last`` for ``"pixelshuffle"``; one conv
and a pixel shuffle in ``upsample`` for ``"pixelshuffledirect"``), then the mean added back.

:class:`SwinSkeleton` registers these parts on the network itself under the authors' names, so
their checkpoints keep loading key for key; each network builds its own ``layers`` and says what
its layers need besides the tokens (masks, indices) and how it pads the input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from src.archs.base import SRNetwork
from src.archs.common import MeanShift, PixelShuffleUpsampler
from src.archs.window import drop_path_rates, image_to_tokens, pad_to_multiple, tokens_to_image
from src.utils.choices import UPSAMPLERS

Block = TypeVar("Block", bound=nn.Module)


def check_depths(depths: Sequence[int], num_heads: Sequence[int]) -> None:
    if len(depths) != len(num_heads):
        raise ValueError(f"{len(depths)} depths but {len(num_heads)} num_heads entries")


def check_upsampler(upsampler: str) -> None:
    if upsampler not in UPSAMPLERS:
        raise ValueError(f"upsampler must be one of {UPSAMPLERS}, got {upsampler!r}")


def check_settings(
    embed_dim: int,
    depths: Sequence[int],
    num_heads: Sequence[int],
    upsampler: str = "pixelshuffle",
) -> None:
    """One head count per group, each dividing ``embed_dim``, and a known upsampler."""
    check_depths(depths, num_heads)
    if any(embed_dim % heads for heads in num_heads):
        raise ValueError(f"embed_dim {embed_dim} is not divisible by every num_heads entry")
    check_upsampler(upsampler)


def block_groups(
    depths: Sequence[int],
    num_heads: Sequence[int],
    drop_path_rate: float,
    make_block: Callable[[int, int, float], Block],
) -> Iterator[list[Block]]:
    """The blocks of each group, ``make_block(heads, index in the group, drop path rate)``, with
    stochastic depth rising linearly over all blocks. A group is built only when it is reached,
    so what a network builds between groups (HAT's OCAB) draws its initial weights in between,
    as in the authors' code."""
    rates = iter(drop_path_rates(drop_path_rate, sum(depths)))
    for depth, heads in zip(depths, num_heads, strict=True):
        yield [make_block(heads, index, next(rates)) for index in range(depth)]


class PatchEmbed(nn.Module):
    """Image grid to a token sequence (patch size 1), with layer norm."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(image_to_tokens(x))


class BlockSequence(nn.Module):
    """A run of blocks, each given the tokens, the image size and what the network adds."""

    def __init__(self, blocks: Sequence[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, size: tuple[int, int], *context: Any) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, size, *context)
        return x


class ResidualGroup(nn.Module):
    """A group of blocks on the token sequence, a 3x3 conv on the image grid, and a skip around
    both (SwinIR's RSTB, HAT's RHAG, SRFormer's PSA_Group, ATD's ATDB, HiT-SR's RHTB)."""

    def __init__(self, dim: int, residual_group: nn.Module):
        super().__init__()
        self.residual_group = residual_group
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, tokens: torch.Tensor, size: tuple[int, int], *context: Any) -> torch.Tensor:
        out = self.residual_group(tokens, size, *context)
        return tokens + image_to_tokens(self.conv(tokens_to_image(out, size)))


class SwinSkeleton(SRNetwork):
    """Mean shift, ``conv_first``, the token body with a long skip, the upsampler, the crop.

    A network calls :meth:`_build_head`, sets ``self.layers``, calls :meth:`_build_tail` (in this
    order, which is the order the authors' networks draw their initial weights in), and
    overrides :meth:`layer_context` when its layers take more than the tokens and the size."""

    window_size: int
    conv_first: nn.Conv2d
    patch_embed: nn.Module
    layers: nn.ModuleList
    norm: nn.LayerNorm
    conv_after_body: nn.Module
    conv_before_upsample: nn.Sequential
    upsample: nn.Sequential
    conv_last: nn.Conv2d

    def __init__(self, scale: int, checkpoint_layers: bool = False, in_chans: int = 3):
        """``checkpoint_layers`` recomputes each residual group in the backward pass instead of
        storing its activations (activation checkpointing): slower steps, far less memory.
        ``in_chans`` (the authors' name): 3 for RGB, 1 for single-channel images, in and out."""
        super().__init__()
        self.scale = scale
        self.checkpoint_layers = checkpoint_layers
        self.in_chans = in_chans
        self.sub_mean = MeanShift(sign=-1, channels=in_chans)
        self.add_mean = MeanShift(sign=+1, channels=in_chans)

    def _build_head(self, embed_dim: int) -> None:
        self.conv_first = nn.Conv2d(self.in_chans, embed_dim, 3, padding=1)
        self.patch_embed = PatchEmbed(embed_dim)

    def _build_tail(
        self,
        embed_dim: int,
        upsampler: str = "pixelshuffle",
        num_features: int = 64,
        conv_after_body: nn.Module | None = None,
    ) -> None:
        """``conv_after_body`` defaults to one 3x3 conv."""
        self.upsampler = upsampler
        self.norm = nn.LayerNorm(embed_dim)
        if conv_after_body is None:
            conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)
        self.conv_after_body = conv_after_body
        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(
                nn.Conv2d(embed_dim, num_features, 3, padding=1), nn.LeakyReLU(inplace=True)
            )
            self.upsample = PixelShuffleUpsampler(scale=self.scale, num_features=num_features)
            self.conv_last = nn.Conv2d(num_features, self.in_chans, 3, padding=1)
        else:
            self.upsample = nn.Sequential(
                nn.Conv2d(embed_dim, self.in_chans * self.scale**2, 3, padding=1),
                nn.PixelShuffle(self.scale),
            )

    def layer_context(self, size: tuple[int, int], device: torch.device) -> tuple[Any, ...]:
        """What every layer takes after the tokens and the size (shift masks, indices)."""
        return ()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(x)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Reflect-pad bottom and right to a multiple of the window (cropped after the tail)."""
        return pad_to_multiple(x, self.window_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2], x.shape[-1])
        context = self.layer_context(size, x.device)
        tokens = self.embed(x)
        for layer in self.layers:
            if self.checkpoint_layers and torch.is_grad_enabled():
                tokens = checkpoint(layer, tokens, size, *context, use_reentrant=False)
            else:
                tokens = layer(tokens, size, *context)
        return tokens_to_image(self.norm(tokens), size)

    def reconstruct(self, features: torch.Tensor) -> torch.Tensor:
        if self.upsampler == "pixelshuffle":
            return self.conv_last(self.upsample(self.conv_before_upsample(features)))
        return self.upsample(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        features = self.conv_first(self.sub_mean(self.pad(x)))
        features = features + self.conv_after_body(self.forward_features(features))
        return self.add_mean(self.reconstruct(features))[..., : h * self.scale, : w * self.scale]
