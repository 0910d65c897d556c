"""HAT: Chen, Wang, Zhou, Qiao, Dong, "Activating More Pixels in Image Super-Resolution
Transformer", CVPR 2023.

Upstream: https://github.com/XPixelGroup/HAT (commit 1638a9a, hat/archs/hat_arch.py), Apache-2.0
(no NOTICE file upstream).
SR Lab's code is its own; parameter names follow the upstream file so its weights load.

SwinIR's layout (a 3x3 conv, residual groups over a token sequence, layer norm, a conv with a
long skip, a pixel-shuffle upsampler) with two changes inside each residual hybrid attention group
(RHAG):

* every hybrid attention block (HAB) adds, beside its (shifted) window self-attention, a channel
  attention block (CAB: 3x3 conv squeezing by ``compress_ratio``, GELU, 3x3 conv back, RCAN's
  channel attention squeezing by ``squeeze_factor``) on the normalised input, scaled by
  ``conv_scale``;
* after the blocks, an overlapping cross-attention block (OCAB): queries from each window,
  keys and values from a window enlarged by ``overlap_ratio`` (zero-padded at the border),
  with its own relative position bias, then an MLP.

The defaults are the paper's HAT (embed 180, 6 groups of 6 blocks, 6 heads, window 16, MLP
ratio 2): 20,624,795 parameters at x2, 20,809,435 at x3, 20,772,507 at x4 (the paper: 20.8M).
HAT-L has 12 groups: 40,846,575 parameters at x4 (the paper: 40.8M).

Input: RGB in [0, 1]; the DIV2K mean is removed and added back, as in the authors' code
(``img_range=1``). Inputs of any size are reflect-padded to a multiple of the window and the
output cropped back, as the authors' test code does. Parameter names are the authors', so their
files load key for key, less the ``relative_position_index_SA``/``_OCA`` buffers they store,
which are rebuilt here from the window size.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from src.archs.base import PIXEL_SHUFFLE_SCALES, NetworkTraits
from src.archs.swin_skeleton import (
    BlockSequence,
    ResidualGroup,
    SwinSkeleton,
    block_groups,
    check_settings,
)
from src.archs.window import (
    Mlp,
    WindowAttention,
    attend_in_windows,
    attention,
    drop_path,
    image_to_tokens,
    init_linear,
    shifted_window_mask,
    window_partition,
    window_reverse,
)


def _grid_coords(size: int) -> torch.Tensor:
    """(2, size^2): row and column of every position of a size x size window, row-major."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.stack((rows, cols)).flatten(1)


def overlapping_relative_position_index(window_size: int, overlap_size: int) -> torch.Tensor:
    """(window^2, overlap^2) index into the (window + overlap - 1)^2 bias table of OCAB.

    The authors shift the offsets by ``window - overlap + 1``, which leaves some negative; their
    table lookup wraps those around, and so does the modulo here, so their tables fit."""
    side = window_size + overlap_size - 1
    relative = _grid_coords(overlap_size)[:, None, :] - _grid_coords(window_size)[:, :, None]
    relative = relative + (window_size - overlap_size + 1)
    return (relative[0] * side + relative[1]) % (side * side)


class ChannelAttention(nn.Module):
    """RCAN's squeeze-and-excitation: global average, 1x1 squeeze, ReLU, 1x1 expand, sigmoid."""

    def __init__(self, num_features: int, squeeze_factor: int):
        super().__init__()
        squeezed = num_features // squeeze_factor
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(num_features, squeezed, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(squeezed, num_features, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class CAB(nn.Module):
    """Channel attention block: two 3x3 convs around a GELU, then channel attention."""

    def __init__(self, num_features: int, compress_ratio: int, squeeze_factor: int):
        super().__init__()
        compressed = num_features // compress_ratio
        self.cab = nn.Sequential(
            nn.Conv2d(num_features, compressed, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(compressed, num_features, 3, padding=1),
            ChannelAttention(num_features, squeeze_factor),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cab(x)


class HAB(nn.Module):
    """Hybrid attention block: (shifted) window attention plus a scaled CAB branch on the same
    normalised input, each with the block input as residual, then a pre-norm MLP."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift: int,
        compress_ratio: int,
        squeeze_factor: int,
        conv_scale: float,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path_rate: float,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift = shift
        self.conv_scale = conv_scale
        self.drop_path_rate = drop_path_rate
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias)
        self.conv_block = CAB(dim, compress_ratio, squeeze_factor)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        image = normed.view(x.shape[0], *size, x.shape[-1])
        attend = partial(self.attn, mask=mask if self.shift else None)
        attended = attend_in_windows(image, self.window_size, self.shift, attend).reshape(x.shape)
        convolved = image_to_tokens(self.conv_block(image.permute(0, 3, 1, 2)))
        rate, training = self.drop_path_rate, self.training
        x = x + drop_path(attended, rate, training) + self.conv_scale * convolved
        return x + drop_path(self.mlp(self.norm2(x)), rate, training)


class OCAB(nn.Module):
    """Overlapping cross-attention: each window's queries attend to the keys and values of a
    larger, overlapping window around it, with a relative position bias; then an MLP."""

    relative_position_index: torch.Tensor

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        overlap_ratio: float,
        mlp_ratio: float,
        qkv_bias: bool,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.overlap_size = window_size + int(window_size * overlap_ratio)
        if (self.overlap_size - window_size) % 2:
            raise ValueError(
                f"window_size * overlap_ratio must round down to an even number, got "
                f"{window_size} * {overlap_ratio}"
            )
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.unfold = nn.Unfold(
            kernel_size=self.overlap_size,
            stride=window_size,
            padding=(self.overlap_size - window_size) // 2,
        )
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((window_size + self.overlap_size - 1) ** 2, num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer(
            "relative_position_index",
            overlapping_relative_position_index(window_size, self.overlap_size),
            persistent=False,
        )
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _heads(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, nw, n, C) -> (B, nw, heads, n, C / heads)."""
        return windows.view(*windows.shape[:3], self.num_heads, -1).transpose(2, 3)

    def _key_value_windows(self, key_value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2C, H, W) -> keys and values, each (B, nw, overlap^2, C)."""
        b, two_c = key_value.shape[:2]
        patches = self.unfold(key_value)  # (B, 2C * overlap^2, nw)
        patches = patches.view(b, 2, two_c // 2, self.overlap_size**2, -1)
        key, value = patches.permute(1, 0, 4, 3, 2).unbind(0)
        return key, value

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        b, _, c = x.shape
        h, w = size
        qkv = self.qkv(self.norm1(x)).view(b, h, w, 3, c)
        query = window_partition(qkv[..., 0, :], self.window_size)
        key_value = torch.cat((qkv[..., 1, :], qkv[..., 2, :]), dim=-1).permute(0, 3, 1, 2)
        key, value = self._key_value_windows(key_value)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(self.window_size**2, self.overlap_size**2, self.num_heads)
        out = attention(
            self._heads(query),
            self._heads(key),
            self._heads(value),
            bias.permute(2, 0, 1).to(query.dtype),
        )
        out = out.transpose(2, 3).reshape(query.shape)
        x = x + self.proj(window_reverse(out, self.window_size, h, w).reshape(x.shape))
        return x + self.mlp(self.norm2(x))


class AttenBlocks(BlockSequence):
    """The blocks of one group: HABs alternating regular and shifted windows, then an OCAB."""

    def __init__(self, blocks: Sequence[HAB], overlap_attn: OCAB):
        super().__init__(blocks)
        self.overlap_attn = overlap_attn

    def forward(self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor) -> torch.Tensor:
        return self.overlap_attn(super().forward(x, size, mask), size)


class HAT(SwinSkeleton):
    """Hybrid attention transformer for classical SR; RGB in [0, 1] in and out."""

    traits = NetworkTraits(scales=PIXEL_SHUFFLE_SCALES)

    # Stored in the authors' files, rebuilt here from the window size (see import_weights).
    recomputed_buffers = ("relative_position_index_SA", "relative_position_index_OCA", "attn_mask")

    def __init__(
        self,
        scale: int,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 16,
        compress_ratio: int = 3,
        squeeze_factor: int = 30,
        conv_scale: float = 0.01,
        overlap_ratio: float = 0.5,
        mlp_ratio: float = 2.0,
        num_features: int = 64,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.1,
        checkpoint_layers: bool = False,
        in_chans: int = 3,
    ):
        """``checkpoint_layers`` recomputes each residual group in the backward pass instead of
        storing its activations (activation checkpointing): slower steps, far less memory."""
        check_settings(embed_dim, depths, num_heads)
        if embed_dim < max(compress_ratio, squeeze_factor):
            raise ValueError(
                f"embed_dim {embed_dim} leaves no channels after compress_ratio "
                f"{compress_ratio} or squeeze_factor {squeeze_factor}"
            )
        super().__init__(scale, checkpoint_layers, in_chans)
        self.window_size = window_size
        self.shift = window_size // 2
        self._build_head(embed_dim)

        def make_block(heads: int, index: int, rate: float) -> HAB:
            return HAB(
                embed_dim,
                heads,
                window_size,
                shift=self.shift if index % 2 else 0,
                compress_ratio=compress_ratio,
                squeeze_factor=squeeze_factor,
                conv_scale=conv_scale,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path_rate=rate,
            )

        groups = block_groups(depths, num_heads, drop_path_rate, make_block)
        self.layers = nn.ModuleList()
        for blocks, heads in zip(groups, num_heads, strict=True):
            overlap = OCAB(embed_dim, heads, window_size, overlap_ratio, mlp_ratio, qkv_bias)
            self.layers.append(ResidualGroup(embed_dim, AttenBlocks(blocks, overlap)))
        self._build_tail(embed_dim, num_features=num_features)
        self.apply(init_linear)

    def layer_context(self, size: tuple[int, int], device: torch.device) -> tuple[torch.Tensor]:
        """The shifted-window mask, always built."""
        return (shifted_window_mask(*size, self.window_size, self.shift, device),)
