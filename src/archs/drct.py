"""DRCT: Hsu et al., "DRCT: Saving Image Super-resolution away from Information Bottleneck",
CVPR Workshops 2024.

Upstream: https://github.com/ming053l/DRCT (commit c0a8b51, drct/archs/DRCT_arch.py), MIT,
Copyright (c) 2024 Chia-Ming Lee.
SR Lab's code is its own; parameter names follow the upstream file so its weights load.

SwinIR with dense connections: shallow conv features, then residual dense groups (RDG). Each group
holds five Swin layers (window, shifted window, window, shifted window, window attention); layer k
reads the concatenation of the group input and the k-1 earlier outputs, and a 1x1 "adjust" conv
brings its output down to ``gc`` growth channels (LeakyReLU 0.2), the last one back to the group
width, added to the group input with weight 0.2. Then layer norm, a conv with a long skip, and the
SwinIR pixel-shuffle upsampler (conv to 64 features + LeakyReLU, pixel-shuffle stages, conv).

As in the authors' code, the wider layers use fewer heads (``num_heads`` less the width modulo
``num_heads``), the last two layers of each group an MLP ratio of 1, and every layer of group g
the stochastic depth rate of that group's first entry in a linear schedule over ``sum(depths)``:
``depths`` sets only that schedule; a group always has five layers.

* DRCT (the defaults): embed 180, 6 groups, 6 heads, window 16, gc 32, MLP ratio 2.
  Parameters: 13,991,867 (x2), 14,176,507 (x3), 14,139,579 (x4; the authors' README: 14.13M).
* DRCT-L: ``depths`` and ``num_heads`` of 12 groups. Parameters: 27,433,007 (x2),
  27,617,647 (x3), 27,580,719 (x4; README: 27.58M).

RGB in [0, 1] in and out (the authors' ``img_range=1.``); the DIV2K mean is removed and added
back. Inputs of any size are reflect-padded to a multiple of the window and the output cropped.
Parameter names follow the authors' code (ming053l/DRCT, drct/archs/DRCT_arch.py), so their files
load key for key, less the ``relative_position_index`` and ``attn_mask`` buffers they also store
(recomputed here, not saved).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import PIXEL_SHUFFLE_SCALES, NetworkTraits
from src.archs.swin_skeleton import SwinSkeleton, check_depths
from src.archs.swinir import SwinTransformerBlock
from src.archs.window import (
    drop_path_rates,
    image_to_tokens,
    init_linear,
    shifted_window_mask,
    tokens_to_image,
)

LAYERS_PER_GROUP = 5
# The authors' fixed MLP ratio for the two widest layers of a group (the 4th and 5th).
WIDE_LAYER_MLP_RATIO = 1.0
ADJUST_SLOPE = 0.2
GROUP_RESIDUAL_SCALE = 0.2


def dense_layer_heads(width: int, num_heads: int) -> int:
    """The authors' head count for a dense layer of ``width`` channels."""
    heads = num_heads - width % num_heads
    if width % heads:
        raise ValueError(
            f"a dense layer of {width} channels gets {heads} heads (num_heads {num_heads}), "
            "which do not divide it; choose embed_dim, gc and num_heads that fit"
        )
    return heads


class RDG(nn.Module):
    """Residual dense group: five densely connected Swin layers (``swin1``..``swin5``), each
    followed by a 1x1 ``adjust`` conv, with a scaled residual."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        gc: int,
        qkv_bias: bool,
        drop_path_rate: float,
    ):
        super().__init__()
        for index in range(LAYERS_PER_GROUP):
            width = dim + index * gc
            swin = SwinTransformerBlock(
                width,
                dense_layer_heads(width, num_heads),
                window_size,
                shift=window_size // 2 if index % 2 else 0,
                mlp_ratio=mlp_ratio if index < 3 else WIDE_LAYER_MLP_RATIO,
                qkv_bias=qkv_bias,
                drop_path_rate=drop_path_rate,
            )
            out_channels = dim if index == LAYERS_PER_GROUP - 1 else gc
            self.add_module(f"swin{index + 1}", swin)
            self.add_module(f"adjust{index + 1}", nn.Conv2d(width, out_channels, 1))

    def forward(
        self, tokens: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None
    ) -> torch.Tensor:
        features = [tokens]
        for index in range(1, LAYERS_PER_GROUP + 1):
            swin, adjust = getattr(self, f"swin{index}"), getattr(self, f"adjust{index}")
            out = swin(torch.cat(features, dim=-1), size, mask)
            out = adjust(tokens_to_image(out, size))
            if index < LAYERS_PER_GROUP:
                out = F.leaky_relu(out, ADJUST_SLOPE)
            features.append(image_to_tokens(out))
        return features[-1] * GROUP_RESIDUAL_SCALE + tokens


class DRCT(SwinSkeleton):
    """DRCT for classical SR; RGB in [0, 1] in and out."""

    traits = NetworkTraits(scales=PIXEL_SHUFFLE_SCALES)

    # Stored in the authors' files, rebuilt here from the window size (see import_weights).
    recomputed_buffers = ("relative_position_index", "attn_mask")

    def __init__(
        self,
        scale: int,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 16,
        mlp_ratio: float = 2.0,
        gc: int = 32,
        num_features: int = 64,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.1,
        checkpoint_layers: bool = False,
        in_chans: int = 3,
    ):
        """``gc``: growth channels each dense layer adds. ``checkpoint_layers`` recomputes each
        group in the backward pass instead of storing its activations (slower, far less
        memory)."""
        check_depths(depths, num_heads)
        super().__init__(scale, checkpoint_layers, in_chans)
        self.window_size = window_size
        self.shift = window_size // 2
        self._build_head(embed_dim)
        rates = drop_path_rates(drop_path_rate, sum(depths))
        group_starts = [sum(depths[:index]) for index in range(len(depths))]
        self.layers = nn.ModuleList(
            RDG(embed_dim, heads, window_size, mlp_ratio, gc, qkv_bias, rates[start])
            for heads, start in zip(num_heads, group_starts, strict=True)
        )
        self._build_tail(embed_dim, num_features=num_features)
        self.apply(init_linear)

    def layer_context(
        self, size: tuple[int, int], device: torch.device
    ) -> tuple[torch.Tensor | None]:
        """The shifted-window mask, when the window is large enough to shift."""
        if not self.shift:
            return (None,)
        return (shifted_window_mask(*size, self.window_size, self.shift, device),)
