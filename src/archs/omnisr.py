"""Omni-SR: Wang, Chen, Ni, Liu and Liu, "Omni Aggregation Networks for Lightweight Image
Super-Resolution", CVPR 2023.

Upstream: https://github.com/Francis0625/Omni-SR (commit cd9901e, components/OmniSR.py and
ops/), Apache-2.0 as its README states (no LICENSE or NOTICE file in the repository; the file
header reads "Copyright (c) 2020 Shanghai Jiao Tong University").
SR Lab's code is its own; parameter names follow the upstream file so its weights load.

A 3x3 convolution lifts the image to ``num_feat`` features; ``res_num`` omni-scale aggregation
groups (OSAG) follow, then a 3x3 convolution with a long skip and a 3x3 convolution to
``3 * scale**2`` channels with a pixel shuffle. An OSAG is ``block_num`` omni self-attention (OSA)
blocks and a 1x1 convolution with a skip, then RLFN's enhanced spatial attention (16 channels).
An OSA block chains, each stage with a pre-norm residual:

* an MBConv (1x1, GELU, depthwise 3x3, GELU, squeeze-excitation, 1x1) with a skip;
* spatial attention inside contiguous ``window_size`` x ``window_size`` windows, with a learned
  relative position bias; a gated depthwise feed-forward;
* channel attention inside the same windows (per window and head, attention among the head's
  channels, with L2-normalised queries and keys and a learned temperature); a feed-forward;
* the same two attentions on a grid: spatial attention among the ``window_size**2`` pixels spread
  evenly over the image (stride ``size / window_size``), channel attention among all pixels at
  one offset within the windows (stride ``window_size``), each followed by a feed-forward.

Default sizes (``num_feat=64, res_num=5, block_num=1, window_size=8``) are the released models'.
784,604 parameters at x2, 793,259 at x3, 805,376 at x4; the paper's 772K / 780K / 792K are these
less the relative position tables (9,000), channel LayerNorms (3,840) and temperatures (40).

The authors trained on RGB mapped to [-1, 1]; this network takes and returns RGB in [0, 1] and
does the mapping itself. Like the official code it zero-pads (in [-1, 1], so mid-grey) the bottom
and right of the input to a window multiple and crops the output back. The grid attentions
reach across the whole (padded) image, so tiled outputs differ from whole-image ones; the
authors trained on 64 px LR patches and scored their benchmarks on 64 px tiles with 24 px of
overlap, averaged (test_scripts/tester_Matlab.py). Module and parameter names are the official
ones, so the authors' files load key for key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork
from src.archs.rlfn import SlimESA
from src.archs.safmn import ChannelLayerNorm
from src.archs.window import attention, relative_position_index

HEADS = 4
SQUEEZE_RATIO = 0.25
MIN_ESA_CHANNELS = 16


class PreNormResidual(nn.Module):
    """``x + fn(norm(x))``."""

    def __init__(self, norm: nn.Module, fn: nn.Module):
        super().__init__()
        self.norm = norm
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x)) + x


class ChannelMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class SqueezeExcitation(nn.Module):
    def __init__(self, dim: int, ratio: float = SQUEEZE_RATIO):
        super().__init__()
        hidden = int(dim * ratio)
        self.gate = nn.Sequential(
            ChannelMean(),
            nn.Linear(dim, hidden, bias=False),
            nn.SiLU(),
            nn.Linear(hidden, dim, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)[:, :, None, None]


class MBConv(nn.Module):
    """Inverted bottleneck of expansion 1 with squeeze-excitation, and a skip."""

    def __init__(self, dim: int):
        super().__init__()
        self.fn = nn.Sequential(
            nn.Conv2d(dim, dim, 1),
            nn.GELU(),
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim),
            nn.GELU(),
            SqueezeExcitation(dim),
            nn.Conv2d(dim, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


# Windows are cut from the channels-last (B, H, W, C) view of the features: for SR Lab's
# channels-last tensors it is free, and torch.export then keeps the batch size dynamic (a view
# of the (B, C, H, W) layout fixes it at the traced batch of one).


class ToWindows(nn.Module):
    """(B, C, H, W) -> (B, X, Y, w, w, C): contiguous w x w windows, or with ``grid`` the w x w
    pixels at stride (H/w, W/w), for each of the X x Y window positions or grid offsets."""

    def __init__(self, window_size: int, grid: bool):
        super().__init__()
        self.window_size = window_size
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        size, pixels = self.window_size, x.permute(0, 2, 3, 1)
        if self.grid:
            pixels = pixels.reshape(-1, size, h // size, size, w // size, c)
            return pixels.permute(0, 2, 4, 1, 3, 5)
        pixels = pixels.reshape(-1, h // size, size, w // size, size, c)
        return pixels.permute(0, 1, 3, 2, 4, 5)


class FromWindows(nn.Module):
    """The inverse of :class:`ToWindows`."""

    def __init__(self, grid: bool):
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, rows, cols, size, _, c = x.shape
        order = (0, 3, 1, 4, 2, 5) if self.grid else (0, 1, 3, 2, 4, 5)
        pixels = x.permute(*order).reshape(-1, rows * size, cols * size, c)
        return pixels.permute(0, 3, 1, 2)


class Attention(nn.Module):
    """Multi-head self-attention among the w x w pixels of each window (or grid offset), with
    a learned relative position bias when ``with_pe``; input and output (B, X, Y, w, w, C)."""

    rel_pos_indices: torch.Tensor

    def __init__(self, dim: int, window_size: int, with_pe: bool, heads: int = HEADS):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim, bias=False))
        self.rel_pos_bias: nn.Embedding | None = None
        if with_pe:
            self.rel_pos_bias = nn.Embedding((2 * window_size - 1) ** 2, heads)
            self.register_buffer(
                "rel_pos_indices", relative_position_index(window_size), persistent=False
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        n = x.shape[-2] * x.shape[-3]
        # (windows, heads, n, head dim): 4-D, the one layout ONNX's attention export takes.
        qkv = self.to_qkv(x.reshape(-1, n, c)).view(-1, n, 3, self.heads, c // self.heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        bias = None
        if self.rel_pos_bias is not None:
            bias = self.rel_pos_bias(self.rel_pos_indices).permute(2, 0, 1).to(query.dtype)
        out = attention(query, key, value, bias)
        return self.to_out(out.transpose(1, 2).reshape(-1, *x.shape[1:]))


class ChannelAttention(nn.Module):
    """Per head, attention among the head's channels, each channel a vector of the pixels of
    one window (or, with ``grid``, of all pixels at one offset within the windows)."""

    def __init__(self, dim: int, window_size: int, grid: bool, heads: int = HEADS):
        super().__init__()
        self.heads = heads
        self.window_size = window_size
        self.grid = grid
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        size, heads = self.window_size, self.heads
        rows, cols = h // size, w // size
        qkv = self.qkv_dwconv(self.qkv(x)).permute(0, 2, 3, 1)
        # (B, rows, row in window, cols, col in window, q/k/v, heads, head channels)
        qkv = qkv.reshape(-1, rows, size, cols, size, 3, heads, c // heads)
        if self.grid:  # groups: offsets within a window; vectors: the windows
            order, groups, length = (5, 0, 2, 4, 6, 7, 1, 3), size * size, rows * cols
        else:  # groups: the windows; vectors: the pixels of each
            order, groups, length = (5, 0, 1, 3, 6, 7, 2, 4), rows * cols, size * size
        parted = qkv.permute(*order).reshape(3, -1, groups, heads, c // heads, length)
        query, key, value = parted.unbind(0)
        query, key = F.normalize(query, dim=-1), F.normalize(key, dim=-1)
        attention = (query @ key.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        out = attention @ value
        if self.grid:
            out = out.view(-1, size, size, heads, c // heads, rows, cols)
            out = out.permute(0, 5, 1, 6, 2, 3, 4)
        else:
            out = out.view(-1, rows, cols, heads, c // heads, size, size)
            out = out.permute(0, 1, 5, 2, 6, 3, 4)
        return self.project_out(out.reshape(-1, h, w, c).permute(0, 3, 1, 2))


class GatedConvFeedForward(nn.Module):
    """1x1 to twice the width, depthwise 3x3, GELU(one half) * other half, 1x1 back."""

    def __init__(self, dim: int):
        super().__init__()
        self.project_in = nn.Conv2d(dim, dim * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(dim * 2, dim * 2, 3, padding=1, groups=dim * 2, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class OSABlock(nn.Module):
    """Omni self-attention block: MBConv, then window and grid stages of spatial attention,
    channel attention and feed-forwards (see the module docstring)."""

    def __init__(self, dim: int, window_size: int, with_pe: bool):
        super().__init__()

        def feed_forward() -> PreNormResidual:
            return PreNormResidual(ChannelLayerNorm(dim), GatedConvFeedForward(dim))

        def spatial() -> PreNormResidual:
            return PreNormResidual(nn.LayerNorm(dim), Attention(dim, window_size, with_pe))

        def channel(grid: bool) -> PreNormResidual:
            return PreNormResidual(ChannelLayerNorm(dim), ChannelAttention(dim, window_size, grid))

        self.layer = nn.Sequential(
            MBConv(dim),
            ToWindows(window_size, grid=False),
            spatial(),
            FromWindows(grid=False),
            feed_forward(),
            channel(grid=False),
            feed_forward(),
            ToWindows(window_size, grid=True),
            spatial(),
            FromWindows(grid=True),
            feed_forward(),
            channel(grid=True),
            feed_forward(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class OSAG(nn.Module):
    """Omni-scale aggregation group: OSA blocks and a 1x1 convolution with a skip, then
    enhanced spatial attention."""

    def __init__(self, dim: int, block_num: int, window_size: int, with_pe: bool, bias: bool):
        super().__init__()
        blocks: list[nn.Module] = [OSABlock(dim, window_size, with_pe) for _ in range(block_num)]
        self.residual_layer = nn.Sequential(*blocks, nn.Conv2d(dim, dim, 1, bias=bias))
        self.esa = SlimESA(dim, max(dim // 4, MIN_ESA_CHANNELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.esa(self.residual_layer(x) + x)


class OmniSR(SRNetwork):
    """Omni-SR on RGB in [0, 1] (mapped to the authors' [-1, 1] inside).

    ``pe`` turns the relative position bias on (the released models) or off. The official
    ``ffn_bias`` option is not taken: the official blocks ignore it (their feed-forwards have
    no bias either way).
    """

    traits = NetworkTraits(scales=None)

    # Rebuilt from the window size; the official code does not save it, other copies may.
    recomputed_buffers = ("rel_pos_indices",)

    def __init__(
        self,
        scale: int,
        num_feat: int = 64,
        res_num: int = 5,
        block_num: int = 1,
        window_size: int = 8,
        pe: bool = True,
        bias: bool = True,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
    ):
        super().__init__()
        if num_feat % HEADS:
            raise ValueError(f"num_feat must be a multiple of {HEADS} (the heads), got {num_feat}")
        self.scale = scale
        self.window_size = window_size
        # First registered: SR Lab reads a network's input channels off its first convolution.
        self.input = nn.Conv2d(num_in_ch, num_feat, 3, padding=1, bias=bias)
        groups = [OSAG(num_feat, block_num, window_size, pe, bias) for _ in range(res_num)]
        self.residual_layer = nn.Sequential(*groups)
        self.output = nn.Conv2d(num_feat, num_feat, 3, padding=1, bias=bias)
        self.up = nn.Sequential(
            nn.Conv2d(num_feat, num_out_ch * scale**2, 3, padding=1, bias=bias),
            nn.PixelShuffle(scale),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h, pad_w = -x.shape[-2] % self.window_size, -x.shape[-1] % self.window_size
        shallow = self.input(F.pad(x * 2.0 - 1.0, (0, pad_w, 0, pad_h)))
        out = self.up(self.output(self.residual_layer(shallow)) + shallow)
        # Cropped by a negative pad, not a slice: torch.export specialises a slice of the padded
        # output to the traced size's padding (none, at a window multiple).
        out = F.pad(out, (0, -pad_w * self.scale, 0, -pad_h * self.scale))
        return (out + 1.0) / 2.0
