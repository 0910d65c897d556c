"""HiT-SRF: Zhang, Zhang, Yu, "HiT-SR: Hierarchical Transformer for Efficient Image
Super-Resolution", ECCV 2024 (SRFormer-Light turned into a hierarchical transformer).

Upstream: https://github.com/XiangZ-0/HiT-SR (commit 8f59218, basicsr/archs/hit_srf_arch.py),
Apache-2.0 (no NOTICE file upstream).
SR Lab's code is its own; parameter names follow the upstream file so its weights load.

SwinIR-light's layout (a 3x3 conv, residual groups of transformer blocks each closed by a 3x3
conv, layer norm, a 3x3 conv with a long skip, one conv + pixel shuffle to the output) with
blocks that differ in two ways:

* hierarchical windows: block ``i`` of every group uses a window of
  ``base_win_size * hier_win_ratios[i]`` pixels (4, 8, 16, 32, 48, 64 for the paper's model);
* spatial-channel correlation (SCC) instead of softmax attention. Dual feature extraction (a
  1x1-3x3-1x1 conv bottleneck times a 1x1 conv) gives ``q`` and ``v`` (half the channels
  each). The spatial half correlates every token with the window's values pooled, by a learned
  linear map, into at most ``base_win_size**2`` groups, plus a position bias that a small MLP
  (dynamic position bias) computes from the relative offsets and that is averaged over each
  group; the channel half correlates channels over the window (one head). Neither uses a
  softmax. Norms come after the correlation and after the feed-forward (a linear layer, GELU,
  a residual 5x5 depthwise conv with GELU, a linear layer).

Each block reflect-pads its features to a multiple of its own window and crops the result
back, as the authors' code does, so any input size works and the output equals the official
network's at every size that network accepts (with the released windows it fails when a
side is 16 pixels or fewer; this one reflects repeatedly instead). The DIV2K mean is removed
from RGB in [0, 1] and added back (``img_range=1``, as the released models). Only the released
models' upsampler (``pixelshuffledirect``) is built. Parameter names are the authors', so
their files load key for key; their files hold no buffers (the index and offset buffers here
are rebuilt from the settings and left out of the state dict).

Parameters at the released configuration: 846,944 (x2), 855,059 (x3), 866,420 (x4), the
paper's 847K, 855K, 866K.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import NetworkTraits
from src.archs.swin_skeleton import (
    BlockSequence,
    ResidualGroup,
    SwinSkeleton,
    block_groups,
    check_depths,
)
from src.archs.window import (
    ConvFFN,
    DynamicPositionBias,
    drop_path,
    init_linear,
    pad_to_multiple,
    relative_offsets,
    tokens_to_image,
    window_partition,
    window_reverse,
)

DEFAULT_WINDOW_RATIOS = (0.5, 1.0, 2.0, 4.0, 6.0, 8.0)
DFE_REDUCTION = 5
POSITION_DIM_DIVISOR = 16
MIN_POSITION_DIM = 3
FFN_KERNEL = 5
DFE_SLOPE = 0.2


def hierarchical_windows(base_win_size: int, ratios: Sequence[float]) -> list[int]:
    """Window side of each block in a group; larger windows must be whole multiples of the
    base window, since the spatial correlation pools them onto it."""
    windows = [int(base_win_size * ratio) for ratio in ratios]
    for window in windows:
        if window < 1 or (window > base_win_size and window % base_win_size):
            raise ValueError(
                f"window {window} (base {base_win_size}) must be positive and, when larger "
                "than the base window, a multiple of it"
            )
    return windows


def pooled_position_index(window_size: int, group_size: int) -> torch.Tensor:
    """(w^2, groups^2) index into the offset table box-averaged over ``group_size`` x
    ``group_size`` blocks (side ``2w - group_size``): the mean bias between each query token
    and the tokens of each key group."""
    groups = window_size // group_size
    tokens = torch.arange(window_size)
    group_starts = torch.arange(groups) * group_size
    # A box filter's output index u covers offsets u .. u + group_size - 1.
    rows = tokens[:, None] - group_starts[None, :] + window_size - group_size
    side = 2 * window_size - group_size
    index = rows[:, None, :, None] * side + rows[None, :, None, :]
    return index.reshape(window_size * window_size, groups * groups)


class DualFeatureExtraction(nn.Module):
    """conv bottleneck (1x1, 3x3, 1x1 with LeakyReLU) times a 1x1 conv, on (B, C, H, W)."""

    def __init__(self, dim: int):
        super().__init__()
        hidden = dim // DFE_REDUCTION
        self.conv = nn.Sequential(
            nn.Conv2d(dim, hidden, 1),
            nn.LeakyReLU(DFE_SLOPE, inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.LeakyReLU(DFE_SLOPE, inplace=True),
            nn.Conv2d(hidden, dim, 1),
        )
        self.linear = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.linear(x)


class SpatialChannelCorrelation(nn.Module):
    """SCC over non-overlapping windows of an image padded to a window multiple."""

    relative_offsets: torch.Tensor
    relative_position_index: torch.Tensor

    def __init__(self, dim: int, window_size: int, base_win_size: int, num_heads: int):
        super().__init__()
        self.window_size = window_size
        self.group_size = window_size // min(window_size, base_win_size)
        self.num_heads = num_heads
        self.head_dim = dim // (2 * num_heads)
        self.qv = DualFeatureExtraction(dim)
        self.proj = nn.Linear(dim, dim)
        self.spatial_linear = nn.Linear(self.group_size**2, 1)
        self.pos = DynamicPositionBias(dim // POSITION_DIM_DIVISOR, num_heads)
        self.register_buffer(
            "relative_offsets", relative_offsets(window_size, window_size), persistent=False
        )
        self.register_buffer(
            "relative_position_index",
            pooled_position_index(window_size, self.group_size),
            persistent=False,
        )

    def _position_bias(self) -> torch.Tensor:
        """(heads, w^2, groups): the dynamic bias averaged over each key group."""
        side = 2 * self.window_size - 1
        table = self.pos(self.relative_offsets).transpose(0, 1).reshape(1, -1, side, side)
        pooled = F.avg_pool2d(table, self.group_size, stride=1).flatten(2)[0]
        return pooled[:, self.relative_position_index]

    def _pooled_values(self, v: torch.Tensor) -> torch.Tensor:
        """(..., w^2, c) values -> (..., groups, c), each group of g x g tokens mapped to one."""
        *lead, _, c = v.shape
        w, g = self.window_size, self.group_size
        v = v.reshape(*lead, w // g, g, w // g, g, c).transpose(-4, -3)
        v = v.reshape(*lead, (w // g) ** 2, g * g, c).transpose(-1, -2)
        return self.spatial_linear(v).squeeze(-1)

    def _spatial(self, q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, v: (B, windows, heads, w^2, c) -> (B, windows, w^2, heads * c)."""
        pooled = self._pooled_values(v)
        correlation = q @ pooled.transpose(-1, -2) / self.head_dim + self._position_bias()
        out = correlation @ pooled
        return out.transpose(2, 3).flatten(3)

    @staticmethod
    def _channel(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, v: (B, windows, w^2, C/2) -> the same shape, channels correlated over a window."""
        correlation = q.transpose(-1, -2) @ v / q.shape[-2]
        return v @ correlation.transpose(-1, -2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W), H and W multiples of the window -> (B, H, W, C)."""
        c, h, w = image.shape[1:]
        features = self.qv(image).permute(0, 2, 3, 1)
        windows = window_partition(features, self.window_size)
        half = c // 2
        q, v = windows[..., :half], windows[..., half:]
        heads = windows.reshape(*windows.shape[:3], 2, self.num_heads, self.head_dim)
        q_heads, v_heads = heads.permute(3, 0, 1, 4, 2, 5).unbind(0)
        out = torch.cat([self._spatial(q_heads, v_heads), self._channel(q, v)], dim=-1)
        return self.proj(window_reverse(out, self.window_size, h, w))


class HierarchicalTransformerBlock(nn.Module):
    """SCC in this block's window, then the conv feed-forward; post-norm residuals."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        base_win_size: int,
        mlp_ratio: float,
        drop_path_rate: float,
    ):
        super().__init__()
        self.window_size = window_size
        self.drop_path_rate = drop_path_rate
        self.norm1 = nn.LayerNorm(dim)
        self.correlation = SpatialChannelCorrelation(dim, window_size, base_win_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio), FFN_KERNEL)

    def forward(self, tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = size
        padded = pad_to_multiple(tokens_to_image(tokens, size), self.window_size)
        correlated = self.correlation(padded)[:, :h, :w].reshape(tokens.shape)
        rate, training = self.drop_path_rate, self.training
        tokens = tokens + drop_path(self.norm1(correlated), rate, training)
        return tokens + drop_path(self.norm2(self.mlp(tokens, size)), rate, training)


class HiTSRF(SwinSkeleton):
    """HiT-SRF for lightweight SR; RGB in [0, 1] in and out (the DIV2K mean is subtracted
    inside, as the authors trained it)."""

    traits = NetworkTraits(scales=None)

    # Rebuilt from the window sizes; kept out of the state dict (see import_weights).
    recomputed_buffers = ("relative_position_index", "relative_offsets")

    def __init__(
        self,
        scale: int,
        embed_dim: int = 60,
        depths: Sequence[int] = (6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6),
        base_win_size: int = 8,
        hier_win_ratios: Sequence[float] = DEFAULT_WINDOW_RATIOS,
        mlp_ratio: float = 2.0,
        drop_path_rate: float = 0.0,
        in_chans: int = 3,
    ):
        """``base_win_size`` is one side: the authors' code takes an (h, w) pair, but all
        released models use 8 x 8 and only square windows are built here."""
        check_depths(depths, num_heads)
        if any(embed_dim % (2 * heads) for heads in num_heads):
            raise ValueError(f"embed_dim {embed_dim} must split into 2 x num_heads equal parts")
        if embed_dim // POSITION_DIM_DIVISOR < MIN_POSITION_DIM:
            # The position MLP layer-normalises embed_dim // 16 features: one normalises to a
            # constant, two to +-1, and the MLP's first layers would get no useful gradient.
            raise ValueError(
                f"embed_dim must be at least {POSITION_DIM_DIVISOR * MIN_POSITION_DIM}, "
                f"got {embed_dim}"
            )
        windows = hierarchical_windows(base_win_size, hier_win_ratios)
        if max(depths) > len(windows):
            raise ValueError(f"depth {max(depths)} exceeds the {len(windows)} hier_win_ratios")
        super().__init__(scale, in_chans=in_chans)
        self.window_sizes = windows[: max(depths)]
        self._build_head(embed_dim)

        def make_block(heads: int, index: int, rate: float) -> HierarchicalTransformerBlock:
            return HierarchicalTransformerBlock(
                embed_dim, heads, windows[index], base_win_size, mlp_ratio, rate
            )

        groups = block_groups(depths, num_heads, drop_path_rate, make_block)
        self.layers = nn.ModuleList(
            ResidualGroup(embed_dim, BlockSequence(blocks)) for blocks in groups
        )
        self._build_tail(embed_dim, upsampler="pixelshuffledirect")
        self.apply(init_linear)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """No padding here: each block pads to its own window and crops back."""
        return x
