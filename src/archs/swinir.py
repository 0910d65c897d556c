"""SwinIR: Liang et al., "SwinIR: Image Restoration Using Swin Transformer", ICCV Workshops 2021.

Upstream: https://github.com/JingyunLiang/SwinIR (commit 6545850, models/network_swinir.py),
Apache-2.0 (no NOTICE file upstream).
SR Lab's code is its own; parameter names follow the upstream file so its weights load.

Shallow conv features, residual Swin transformer blocks (RSTB: Swin layers with window and shifted
window self-attention, relative position bias, then a 3x3 conv, with a residual), a conv after the
body with a long skip, and an upsampler. One class covers the paper's two SR models:

* classical SwinIR (the defaults): embed 180, depths and heads 6 x [6], window 8, MLP ratio 2,
  ``upsampler="pixelshuffle"`` (conv to 64 features + LeakyReLU, x2/x3 pixel-shuffle stages, conv).
  Parameters: 11,752,487 (x2), 11,937,127 (x3), 11,900,199 (x4), 12,047,911 (x8).
* lightweight SwinIR: ``embed_dim=60, depths=[6, 6, 6, 6], num_heads=[6, 6, 6, 6],
  upsampler="pixelshuffledirect"`` (one conv to 3 x scale^2 channels and a pixel shuffle).
  Parameters: 910,152 (x2), 918,267 (x3), 929,628 (x4). The paper's 878K (x2) leaves out the
  24 x 225 x 6 = 32,400 entries of the relative position bias tables.

Inputs of any size are padded (reflect) to a multiple of the window and the output is cropped
back. The DIV2K mean is removed and added back, as in the authors' code. Parameter names follow
the authors' code, so their checkpoints map key for key, less the ``relative_position_index`` and
``attn_mask`` buffers they also store (here recomputed, not saved).
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
    Mlp,
    ShiftedWindowBlock,
    WindowAttention,
    init_linear,
    shifted_window_mask,
)

# The residual Swin transformer block: a run of Swin blocks, a 3x3 conv, a skip.
RSTB = ResidualGroup


class SwinTransformerBlock(ShiftedWindowBlock):
    """Pre-norm (shifted) window attention and MLP, each with a residual."""

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
        attn = WindowAttention(dim, window_size, num_heads, qkv_bias)
        mlp = Mlp(dim, int(dim * mlp_ratio))
        super().__init__(dim, window_size, shift, drop_path_rate, attn, mlp)


class SwinIR(SwinSkeleton):
    """SwinIR for classical and lightweight SR; RGB in [0, 1] in and out."""

    traits = NetworkTraits(
        scales=PIXEL_SHUFFLE_SCALES, upsampler_scales={"pixelshuffledirect": None}
    )

    # Stored in the authors' files, rebuilt here from the window size (see import_weights).
    recomputed_buffers = ("relative_position_index", "attn_mask")

    def __init__(
        self,
        scale: int,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        upsampler: str = "pixelshuffle",
        num_features: int = 64,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.1,
        checkpoint_layers: bool = False,
        in_chans: int = 3,
    ):
        """``checkpoint_layers`` recomputes each residual Swin group in the backward pass
        instead of storing its activations (activation checkpointing): slower steps, far less
        memory."""
        check_settings(embed_dim, depths, num_heads, upsampler)
        super().__init__(scale, checkpoint_layers, in_chans)
        self.window_size = window_size
        self.shift = window_size // 2
        self._build_head(embed_dim)

        def make_block(heads: int, index: int, rate: float) -> SwinTransformerBlock:
            shift = self.shift if index % 2 else 0
            return SwinTransformerBlock(
                embed_dim, heads, window_size, shift, mlp_ratio, qkv_bias, rate
            )

        groups = block_groups(depths, num_heads, drop_path_rate, make_block)
        self.layers = nn.ModuleList(RSTB(embed_dim, BlockSequence(blocks)) for blocks in groups)
        self._build_tail(embed_dim, upsampler, num_features)
        self.apply(init_linear)

    def layer_context(
        self, size: tuple[int, int], device: torch.device
    ) -> tuple[torch.Tensor | None]:
        """The shifted-window mask, when the window is large enough to shift."""
        if not self.shift:
            return (None,)
        return (shifted_window_mask(*size, self.window_size, self.shift, device),)
