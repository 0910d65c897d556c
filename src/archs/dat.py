"""DAT: Chen, Zhang, Gu, Kong, Yang, Yu, "Dual Aggregation Transformer for Image
Super-Resolution", ICCV 2023.

Upstream: https://github.com/zhengchen1999/DAT (commit 1645c64, basicsr/archs/dat_arch.py),
Apache-2.0 (no NOTICE file upstream).
SR Lab's code is its own; parameter names follow the upstream file so its weights load.

Shallow conv features, residual groups of transformer blocks (each group ends in a conv and a
skip), a conv after the body with a long skip, and an upsampler. Inside a group the blocks
alternate between two kinds of self-attention:

* spatial (even blocks): the channels split in two halves, one attends within ``split_size``
  rectangles (e.g. 8 x 32), the other within the transposed rectangles (32 x 8); every other
  spatial block cyclically shifts the windows by half their size. The position bias comes from
  a small MLP on the relative offsets (dynamic position bias) instead of a learned table;
* channel (odd blocks): attention between channels over the whole image (a head's channels
  attend to each other, with a learned temperature).

Each attention has a depthwise-conv branch on its values, and the adaptive interaction module
crosses them: the branch that lacks a dimension is gated by a map the other branch computes
over it (channel gate for the spatial attention, spatial gate for the channel attention). The
feed-forward network (SGFN) gates half of its hidden channels with a depthwise conv of the other
half.

One class covers the released classical-SR models:

* DAT (the defaults): embed 180, 6 groups of 6 blocks, 6 heads, ``split_size=(8, 32)``,
  expansion 4, ``upsampler="pixelshuffle"``. Parameters: 14,654,339 (x2), 14,838,979 (x3),
  14,802,051 (x4); the paper's 14.80M is x4.
* DAT-light: ``embed_dim=60, depth=(18,), num_heads=(6,), expansion_factor=2,
  resi_connection="3conv", upsampler="pixelshuffledirect"``. Parameters: 553,290 (x2),
  561,405 (x3), 572,766 (x4); the paper's 573K is x4.

Inputs are RGB in [0, 1]; the DIV2K mean is removed and added back, as in the authors' code
(``img_range=1``). Any size works without padding the image: the spatial attention pads its
queries, keys and values with zeros up to a multiple of the longer window side and crops its
output back, exactly as the authors' network does, so outputs match theirs at every size.
Parameter and buffer names follow the authors' code; their files also store the position
offsets and indices (``rpe_biases``, ``relative_position_index``) and the shifted-window masks
(``attn_mask_0``, ``attn_mask_1``), which are recomputed here, not saved.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import PIXEL_SHUFFLE_SCALES, NetworkTraits
from src.archs.swin_skeleton import SwinSkeleton, check_depths, check_upsampler
from src.archs.window import (
    DynamicPositionBias,
    attention,
    drop_path,
    drop_path_rates,
    image_to_tokens,
    init_linear,
    rectangle_position_index,
    rectangle_shift_mask,
    relative_offsets,
    tokens_to_image,
)
from src.utils.choices import RESIDUAL_CONVS

Size = tuple[int, int]
# The shifted-window masks of the two spatial branches (rectangles and their transposes).
ShiftMasks = tuple[torch.Tensor, torch.Tensor]


class RectangleWindowAttention(nn.Module):
    """Multi-head attention within (height, width) windows of a padded (B, H, W, 3, C) q/k/v
    grid, with the dynamic position bias; returns (B, H, W, C)."""

    rpe_biases: torch.Tensor
    relative_position_index: torch.Tensor

    def __init__(self, dim: int, window: Size, num_heads: int):
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        # The authors divide by four twice (once in the caller, once in the bias module).
        self.pos = DynamicPositionBias(dim // 4 // 4, num_heads)
        self.register_buffer("rpe_biases", relative_offsets(*window), persistent=False)
        self.register_buffer(
            "relative_position_index", rectangle_position_index(*window), persistent=False
        )

    def position_bias(self) -> torch.Tensor:
        n = self.window[0] * self.window[1]
        bias = self.pos(self.rpe_biases)[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, qkv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, h, w, _, c = qkv.shape
        (window_h, window_w), heads = self.window, self.num_heads
        grid = qkv.reshape(
            b, h // window_h, window_h, w // window_w, window_w, 3, heads, c // heads
        )
        windows = grid.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(
            3, b, -1, heads, window_h * window_w, c // heads
        )
        query, key, value = windows.unbind(0)
        bias = self.position_bias()
        if mask is not None:
            bias = bias + mask.to(bias.dtype).unsqueeze(1)
        out = attention(query, key, value, bias.to(query.dtype))
        out = out.reshape(b, h // window_h, w // window_w, heads, window_h, window_w, c // heads)
        return out.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, h, w, c)


class AdaptiveInteraction(nn.Module):
    """What both attentions share: the q/k/v and output projections, the depthwise-conv branch
    on the values, and the adaptive interaction module's channel and spatial maps."""

    def __init__(self, dim: int, qkv_bias: bool):
        super().__init__()
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dwconv = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim), nn.BatchNorm2d(dim), nn.GELU()
        )
        self.channel_interaction = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dim, dim // 8, 1),
            nn.BatchNorm2d(dim // 8),
            nn.GELU(),
            nn.Conv2d(dim // 8, dim, 1),
        )
        self.spatial_interaction = nn.Sequential(
            nn.Conv2d(dim, dim // 16, 1),
            nn.BatchNorm2d(dim // 16),
            nn.GELU(),
            nn.Conv2d(dim // 16, 1, 1),
        )

    def interact(
        self, attended: torch.Tensor, values: torch.Tensor, size: Size, spatial: bool
    ) -> torch.Tensor:
        """Cross-gate the attention output (tokens) and the conv of the values (image); each
        branch is gated by a map over the dimension its own operation does not mix."""
        conv = self.dwconv(values)
        attended_image = tokens_to_image(attended, size)
        if spatial:
            attention_gate = self.channel_interaction(conv)
            conv_gate = self.spatial_interaction(attended_image)
        else:
            attention_gate = self.spatial_interaction(conv)
            conv_gate = self.channel_interaction(attended_image)
        mixed = attended_image * torch.sigmoid(attention_gate) + conv * torch.sigmoid(conv_gate)
        return self.proj(image_to_tokens(mixed))


class AdaptiveSpatialAttention(AdaptiveInteraction):
    """Half the channels attend within (h, w) rectangles, half within (w, h) ones, optionally
    cyclically shifted by half a window; q/k/v are zero-padded to the longer window side."""

    def __init__(self, dim: int, num_heads: int, split_size: Size, shifted: bool, qkv_bias: bool):
        super().__init__(dim, qkv_bias)
        self.multiple = max(split_size)
        self.shifted = shifted
        self.windows: tuple[Size, Size] = (split_size, (split_size[1], split_size[0]))
        self.shifts = tuple((height // 2, width // 2) for height, width in self.windows)
        self.attns = nn.ModuleList(
            RectangleWindowAttention(dim // 2, window, num_heads // 2) for window in self.windows
        )

    def _branch(self, qkv: torch.Tensor, index: int, size: Size, masks: ShiftMasks) -> torch.Tensor:
        """One half's attention on the padded grid, cropped back to ``size``."""
        attention = self.attns[index]
        if not self.shifted:
            out = attention(qkv, None)
        else:
            shift = self.shifts[index]
            out = attention(torch.roll(qkv, (-shift[0], -shift[1]), dims=(1, 2)), masks[index])
            out = torch.roll(out, shift, dims=(1, 2))
        return out[:, : size[0], : size[1]]

    def forward(self, x: torch.Tensor, size: Size, masks: ShiftMasks) -> torch.Tensor:
        b, n, c = x.shape
        h, w = size
        qkv = self.qkv(x)
        values = tokens_to_image(qkv[..., 2 * c :], size)
        grid = F.pad(qkv.view(b, h, w, 3 * c), (0, 0, 0, -w % self.multiple, 0, -h % self.multiple))
        grid = grid.view(b, grid.shape[1], grid.shape[2], 3, c)
        halves = (grid[..., : c // 2], grid[..., c // 2 :])
        attended = torch.cat(
            [self._branch(half, index, size, masks) for index, half in enumerate(halves)], dim=-1
        )
        return self.interact(attended.reshape(b, n, c), values, size, spatial=True)


class AdaptiveChannelAttention(AdaptiveInteraction):
    """Each head's channels attend to each other across the whole image (XCiT-style: L2-
    normalised queries and keys, a learned temperature per head)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__(dim, qkv_bias)
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))

    def forward(self, x: torch.Tensor, size: Size, masks: ShiftMasks) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 4, 1).unbind(0)  # (B, heads, C/heads, N)
        values = value.reshape(b, c, *size)
        query, key = F.normalize(query, dim=-1), F.normalize(key, dim=-1)
        attention = (query @ key.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        attended = (attention @ value).permute(0, 3, 1, 2).reshape(b, n, c)
        return self.interact(attended, values, size, spatial=False)


class SpatialGate(nn.Module):
    """Second half of the channels, normalised and depthwise-convolved, gates the first half."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        kept, gate = x.chunk(2, dim=-1)
        return kept * image_to_tokens(self.conv(tokens_to_image(self.norm(gate), size)))


class SGFN(nn.Module):
    """Spatial-gate feed-forward network: fc, GELU, spatial gate (halves the width), fc."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.sg = SpatialGate(hidden_dim // 2)
        self.fc2 = nn.Linear(hidden_dim // 2, dim)

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        return self.fc2(self.sg(self.act(self.fc1(x)), size))


class DATBlock(nn.Module):
    """Pre-norm attention (spatial or channel) and SGFN, each with a residual."""

    def __init__(
        self,
        dim: int,
        attn: AdaptiveSpatialAttention | AdaptiveChannelAttention,
        expansion_factor: float,
        drop_path_rate: float,
    ):
        super().__init__()
        self.drop_path_rate = drop_path_rate
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = SGFN(dim, int(dim * expansion_factor))

    def forward(self, x: torch.Tensor, size: Size, masks: ShiftMasks) -> torch.Tensor:
        rate, training = self.drop_path_rate, self.training
        x = x + drop_path(self.attn(self.norm1(x), size, masks), rate, training)
        return x + drop_path(self.ffn(self.norm2(x), size), rate, training)


def residual_conv(dim: int, kind: str) -> nn.Module:
    """The conv closing a group and the body: one 3x3 conv, or a 3x3 / 1x1 / 3x3 bottleneck at
    a quarter of the width with LeakyReLU(0.2) (``"3conv"``, the lightweight model's)."""
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, padding=1)
    return nn.Sequential(
        nn.Conv2d(dim, dim // 4, 3, padding=1),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(dim // 4, dim // 4, 1),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(dim // 4, dim, 3, padding=1),
    )


class ResidualGroup(nn.Module):
    """A run of DAT blocks, then a conv on the image grid, with a skip around the group."""

    def __init__(self, dim: int, blocks: Sequence[DATBlock], resi_connection: str):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.conv = residual_conv(dim, resi_connection)

    def forward(self, tokens: torch.Tensor, size: Size, masks: ShiftMasks) -> torch.Tensor:
        out = tokens
        for block in self.blocks:
            out = block(out, size, masks)
        return tokens + image_to_tokens(self.conv(tokens_to_image(out, size)))


class ImageToTokens(nn.Module):
    """(B, C, H, W) -> (B, H*W, C); holds no weights (the authors' ``Rearrange``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return image_to_tokens(x)


def is_shifted(group: int, block: int) -> bool:
    """The authors' schedule: spatial blocks (even ``block``) shift their windows every other
    time, starting unshifted in even groups and shifted in odd ones."""
    return (block // 2 + group) % 2 == 1


class DAT(SwinSkeleton):
    """Dual Aggregation Transformer for classical and lightweight SR; RGB in [0, 1] in and out."""

    traits = NetworkTraits(
        scales=PIXEL_SHUFFLE_SCALES, upsampler_scales={"pixelshuffledirect": None}
    )

    # Stored in the authors' files, rebuilt here from the settings (see import_weights).
    recomputed_buffers = ("rpe_biases", "relative_position_index", "attn_mask_0", "attn_mask_1")

    def __init__(
        self,
        scale: int,
        embed_dim: int = 180,
        depth: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        split_size: Sequence[int] = (8, 32),
        expansion_factor: float = 4.0,
        resi_connection: str = "1conv",
        upsampler: str = "pixelshuffle",
        num_features: int = 64,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.1,
        checkpoint_layers: bool = False,
        in_chans: int = 3,
    ):
        """``checkpoint_layers`` recomputes each residual group in the backward pass instead of
        storing its activations (activation checkpointing): slower steps, far less memory."""
        check_depths(depth, num_heads)
        if any(heads % 2 or (embed_dim // 2) % (heads // 2) for heads in num_heads):
            raise ValueError(
                f"every num_heads entry must be even and split embed_dim {embed_dim} evenly "
                "in two halves"
            )
        if len(split_size) != 2 or min(split_size) < 2:
            raise ValueError(f"split_size must be (height, width), each 2 or more: {split_size}")
        check_upsampler(upsampler)
        if resi_connection not in RESIDUAL_CONVS:
            raise ValueError(f"resi_connection must be one of {RESIDUAL_CONVS}")
        super().__init__(scale, checkpoint_layers, in_chans)
        self.split_size: Size = (split_size[0], split_size[1])

        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, padding=1)
        self.before_RG = nn.Sequential(ImageToTokens(), nn.LayerNorm(embed_dim))
        rates = iter(drop_path_rates(drop_path_rate, sum(depth)))
        self.layers = nn.ModuleList()
        for group, (blocks, heads) in enumerate(zip(depth, num_heads, strict=True)):
            self.layers.append(
                ResidualGroup(
                    embed_dim,
                    [
                        DATBlock(
                            embed_dim,
                            self._attention(embed_dim, heads, group, block, qkv_bias),
                            expansion_factor,
                            next(rates),
                        )
                        for block in range(blocks)
                    ],
                    resi_connection,
                )
            )
        conv_after_body = residual_conv(embed_dim, resi_connection)
        self._build_tail(embed_dim, upsampler, num_features, conv_after_body)
        self.apply(init_linear)

    def _attention(
        self, dim: int, heads: int, group: int, block: int, qkv_bias: bool
    ) -> AdaptiveSpatialAttention | AdaptiveChannelAttention:
        if block % 2:
            return AdaptiveChannelAttention(dim, heads, qkv_bias)
        return AdaptiveSpatialAttention(
            dim, heads, self.split_size, is_shifted(group, block), qkv_bias
        )

    def shift_masks(self, size: Size, device: torch.device) -> ShiftMasks:
        """Masks of the shifted rectangles and of their transposes, at the padded size."""
        multiple = max(self.split_size)
        padded = (size[0] + -size[0] % multiple, size[1] + -size[1] % multiple)
        height, width = self.split_size
        return (
            rectangle_shift_mask(padded, (height, width), (height // 2, width // 2), device),
            rectangle_shift_mask(padded, (width, height), (width // 2, height // 2), device),
        )

    def layer_context(self, size: Size, device: torch.device) -> tuple[ShiftMasks]:
        return (self.shift_masks(size, device),)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.before_RG(x)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """No padding here: the spatial attention pads its q/k/v and crops back."""
        return x
