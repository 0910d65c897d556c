"""SRFormer: Zhou, Li, Guo, Bai, Cheng, Hou, "SRFormer: Permuted Self-Attention for Single Image
Super-Resolution", ICCV 2023.

Upstream: https://github.com/HVision-NKU/SRFormer (commit d0c2da6,
basicsr/archs/srformer_arch.py), CC-BY-NC-4.0: non-commercial use only, per its LICENSE.txt
and README. SR Lab's code is its own; parameter names follow the upstream file so its weights
load (weights released under a non-commercial licence stay under it).

SwinIR's layout (shallow conv, residual groups of transformer blocks each closed by a 3x3 conv,
a conv after the body with a long skip, an upsampler) with two changes inside each block:

* permuted self-attention (PSA): queries keep all ``C`` channels of every token of a window, but
  keys and values are projected to ``C / 2`` channels (``C / 4`` each) and every 2x2 block of
  tokens is folded into one token of ``C`` channels, so a window of ``n`` queries attends to
  ``n / 4`` keys. The relative position bias lives on the half-size grid; a query uses the bias
  of the 2x2 block it falls in. Odd blocks shift the windows by half a window, as in Swin, and
  the mask compares the query's region with the region of the key's 2x2 block;
* ConvFFN: ``fc1``, GELU, plus a 5x5 depthwise conv + GELU on the image grid as a residual,
  ``fc2``.

One class covers the paper's two SR models (their ``options/test`` configurations):

* classical SRFormer (the defaults): embed 180, depths and heads 6 x [6], window 22, MLP ratio
  2, ``upsampler="pixelshuffle"``. Parameters: 10,376,783 (x2), 10,561,423 (x3), 10,524,495
  (x4); the authors give 10.40M at x2.
* SRFormer-light: ``embed_dim=60, depths=(6, 6, 6, 6), num_heads=(6, 6, 6, 6), window_size=16,
  upsampler="pixelshuffledirect"``. Parameters: 853,272 (x2), 861,387 (x3), 872,748 (x4); the
  paper: 853K, 861K, 873K (relative position bias tables included).

RGB in [0, 1], the DIV2K mean removed and added back (the authors' ``img_range=1.``). Inputs of
any size are padded (reflect) to a multiple of the window and the output is cropped back. The
parameter names are the authors', so their files load key for key, less the
``aligned_relative_position_index`` and ``attn_mask`` buffers they also store (here recomputed).
"""

from __future__ import annotations

from collections.abc import Sequence

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
    ConvFFN,
    ShiftedWindowBlock,
    attention,
    init_linear,
    region_mask,
    relative_position_index,
    shifted_region_labels,
)

FFN_KERNEL = 5


def aligned_relative_position_index(window_size: int) -> torch.Tensor:
    """(n, n / 4) index into the bias table of the half-size grid: a query at (row, col) of the
    window takes the entries of the permuted token (row // 2, col // 2)."""
    half = window_size // 2
    rows, cols = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    permuted_token = (rows // 2 * half + cols // 2).flatten()
    return relative_position_index(half)[permuted_token]


def permuted_window_mask(
    h: int, w: int, window_size: int, shift: int, device: torch.device
) -> torch.Tensor:
    """(num_windows, n, n / 4) additive mask between the queries of each shifted window and its
    permuted keys. On the half-size key grid the region boundary sits at ``ceil(shift / 2)``
    from the edge, as the authors round it for odd shifts (window 22)."""
    queries = shifted_region_labels((h, w), (window_size, window_size), (shift, shift), device)
    half, key_shift = window_size // 2, -(-shift // 2)
    keys = shifted_region_labels((h // 2, w // 2), (half, half), (key_shift, key_shift), device)
    return region_mask(queries, keys)


class PSA(nn.Module):
    """Permuted self-attention inside each window, with a relative position bias."""

    aligned_relative_position_index: torch.Tensor

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        half = window_size // 2
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * half - 1) ** 2, num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer(
            "aligned_relative_position_index",
            aligned_relative_position_index(window_size),
            persistent=False,
        )
        self.kv = nn.Linear(dim, dim // 2, bias=qkv_bias)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def _permuted_keys_values(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, num_windows, n, C) -> keys and values of shape (B, num_windows, heads, n / 4, d):
        each 2x2 block of tokens becomes one token whose channels are the block's four
        ``C / 4``-channel projections side by side."""
        b, num_windows, n, c = windows.shape
        side = int(n**0.5) // 2
        kv = self.kv(windows).view(b, num_windows, side, 2, side, 2, 2, c // 4)
        kv = kv.permute(0, 1, 2, 4, 6, 3, 5, 7)
        kv = kv.reshape(b, num_windows, side * side, 2, self.num_heads, c // self.num_heads)
        key, value = kv.permute(3, 0, 1, 4, 2, 5).unbind(0)
        return key, value

    def forward(self, windows: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """windows: (B, num_windows, n, C); mask: (num_windows, n, n / 4) or None."""
        b, num_windows, n, c = windows.shape
        query = self.q(windows).view(b, num_windows, n, self.num_heads, c // self.num_heads)
        key, value = self._permuted_keys_values(windows)
        bias = self.relative_position_bias_table[self.aligned_relative_position_index]
        bias = bias.permute(2, 0, 1)
        if mask is not None:
            bias = bias + mask.to(bias.dtype).unsqueeze(1)
        out = attention(query.transpose(2, 3), key, value, bias.to(query.dtype))
        return self.proj(out.transpose(2, 3).reshape(b, num_windows, n, c))


class PSABlock(ShiftedWindowBlock):
    """Pre-norm (shifted) permuted window attention and ConvFFN, each with a residual."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path_rate: float,
    ):
        attn = PSA(dim, window_size, num_heads, qkv_bias)
        mlp = ConvFFN(dim, int(dim * mlp_ratio), FFN_KERNEL)
        super().__init__(dim, window_size, shift, drop_path_rate, attn, mlp)

    def feed_forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.mlp(x, size)


def _check_settings(
    embed_dim: int,
    depths: Sequence[int],
    num_heads: Sequence[int],
    window_size: int,
    upsampler: str,
) -> None:
    check_settings(embed_dim, depths, num_heads, upsampler)
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be a multiple of 4 for permuted keys, got {embed_dim}")
    if window_size < 2 or window_size % 2:
        raise ValueError(f"window_size must be even for 2x2 permuted keys, got {window_size}")


class SRFormer(SwinSkeleton):
    """SRFormer for classical and lightweight SR; RGB in [0, 1] in and out."""

    traits = NetworkTraits(
        scales=PIXEL_SHUFFLE_SCALES, upsampler_scales={"pixelshuffledirect": None}
    )

    # Stored in the authors' files, rebuilt here from the window size (see import_weights).
    recomputed_buffers = ("aligned_relative_position_index", "attn_mask")

    def __init__(
        self,
        scale: int,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 22,
        mlp_ratio: float = 2.0,
        upsampler: str = "pixelshuffle",
        num_features: int = 64,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.1,
        checkpoint_layers: bool = False,
        in_chans: int = 3,
    ):
        """``checkpoint_layers`` recomputes each PSA group in the backward pass instead of
        storing its activations (activation checkpointing): slower steps, far less memory."""
        _check_settings(embed_dim, depths, num_heads, window_size, upsampler)
        super().__init__(scale, checkpoint_layers, in_chans)
        self.window_size = window_size
        self.shift = window_size // 2
        self._build_head(embed_dim)

        def make_block(heads: int, index: int, rate: float) -> PSABlock:
            shift = self.shift if index % 2 else 0
            return PSABlock(embed_dim, heads, window_size, shift, mlp_ratio, qkv_bias, rate)

        groups = block_groups(depths, num_heads, drop_path_rate, make_block)
        self.layers = nn.ModuleList(
            ResidualGroup(embed_dim, BlockSequence(blocks)) for blocks in groups
        )
        self._build_tail(embed_dim, upsampler, num_features)
        self.apply(init_linear)

    def layer_context(self, size: tuple[int, int], device: torch.device) -> tuple[torch.Tensor]:
        return (permuted_window_mask(*size, self.window_size, self.shift, device),)
