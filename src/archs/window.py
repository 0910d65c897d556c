"""Window-attention building blocks shared by the Swin-style networks (SwinIR, HAT, DRCT,
SRFormer, ATD, DAT, HiT-SRF): window partitioning and its inverse, attention within (shifted)
windows, relative position indices and offsets, the dynamic position bias, the shifted-window
masks, Swin's window attention, the MLP and the convolutional FFN, stochastic depth, token/image
reshapes, the padding to a window multiple that lets these networks take any input size, and
one scaled dot-product attention over any leading dimensions (:func:`attention`) for them and
OmniSR.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

# The authors' mask value for pairs of tokens from different regions of a shifted window.
_MASKED = -100.0


# torch 2.13 sends a 5-D query or a 3-D mask to its unfused math path on the CPU: it writes out
# the attention matrix and masks it again, about 6x slower than the fused flash kernel on 256
# tokens of 12 channels. Folding the windows into the batch and giving the bias four dimensions
# (a view where the bias has no window dimension or the batch one image; else a copy the size of
# the matrix the math path writes anyway) lets the fused kernel run wherever torch has one. It
# sums in another order (about 1e-6 apart in fp32); a bias that requires a gradient (training)
# keeps torch's math path.
def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Softmax(query key^T * scale + bias) value for query (..., heads, n, d), key (..., heads,
    s, d), value (..., heads, s, e) and a bias that broadcasts to (..., heads, n, s); returns
    (..., heads, n, e). ``scale`` defaults to 1 / sqrt(d)."""
    *leading, heads, n, d = query.shape
    s, e = key.shape[-2], value.shape[-1]
    mask = None
    if bias is not None:
        # Dimensions the bias lacks broadcast with stride 0: folding only those is a view.
        mask = bias.expand(*leading, heads, n, s).reshape(-1, heads, n, s)
    out = F.scaled_dot_product_attention(
        query.reshape(-1, heads, n, d),
        key.reshape(-1, heads, s, d),
        value.reshape(-1, heads, s, e),
        attn_mask=mask,
        scale=scale,
    )
    return out.view(*leading, heads, n, e)


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch for a random subset of samples."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, num_windows, window_size^2, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, -1, window_size * window_size, c)


def window_reverse(windows: torch.Tensor, window_size: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B, num_windows, window_size^2, C) -> (B, H, W, C)."""
    b, _, _, c = windows.shape
    x = windows.view(b, h // window_size, w // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def rectangle_position_index(height: int, width: int) -> torch.Tensor:
    """(n, n) index into the (2h-1)(2w-1) offsets of an h x w window (row-major, as
    :func:`relative_offsets`) for every pair of its tokens."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ).flatten(1)
    relative = coords[:, :, None] - coords[:, None, :]
    return (relative[0] + height - 1) * (2 * width - 1) + relative[1] + width - 1


def relative_position_index(window_size: int) -> torch.Tensor:
    """(n, n) index into the (2w-1)^2 bias table for every pair of tokens in a window."""
    return rectangle_position_index(window_size, window_size)


def relative_offsets(height: int, width: int) -> torch.Tensor:
    """((2h-1)(2w-1), 2) float (dy, dx) offsets between two tokens of an h x w window, row-major;
    the input of the dynamic position bias."""
    dy, dx = torch.meshgrid(
        torch.arange(1 - height, height), torch.arange(1 - width, width), indexing="ij"
    )
    return torch.stack((dy, dx), dim=-1).reshape(-1, 2).float()


def shifted_region_labels(
    size: tuple[int, int], window: tuple[int, int], shift: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """(num_windows, n) labels of the 3 x 3 regions that a cyclic shift of (h, w)-sized windows
    by ``shift`` glues together, read window by window (row-major)."""
    (h, w), (window_h, window_w), (shift_h, shift_w) = size, window, shift
    rows = (slice(0, -window_h), slice(-window_h, -shift_h), slice(-shift_h, None))
    cols = (slice(0, -window_w), slice(-window_w, -shift_w), slice(-shift_w, None))
    regions = torch.zeros(h, w, device=device)
    for label, (row, col) in enumerate(itertools.product(rows, cols)):
        regions[row, col] = label
    labels = regions.view(h // window_h, window_h, w // window_w, window_w)
    return labels.permute(0, 2, 1, 3).reshape(-1, window_h * window_w)


def region_mask(query_labels: torch.Tensor, key_labels: torch.Tensor) -> torch.Tensor:
    """(num_windows, n_query, n_key) additive mask between tokens of different regions."""
    different = query_labels[:, :, None] != key_labels[:, None, :]
    return torch.zeros_like(different, dtype=torch.float32).masked_fill(different, _MASKED)


def rectangle_shift_mask(
    size: tuple[int, int], window: tuple[int, int], shift: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """(num_windows, n, n) additive mask keeping attention within the regions that a cyclic
    shift of (h, w)-sized windows by ``shift`` glued together."""
    labels = shifted_region_labels(size, window, shift, device)
    return region_mask(labels, labels)


def shifted_window_mask(
    h: int, w: int, window_size: int, shift: int, device: torch.device
) -> torch.Tensor:
    """(num_windows, n, n) additive mask keeping attention within the regions that a cyclic
    shift glued together."""
    return rectangle_shift_mask((h, w), (window_size, window_size), (shift, shift), device)


def attend_in_windows(
    image: torch.Tensor,
    window_size: int,
    shift: int,
    attend: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """(B, H, W, C) -> (B, H, W, C'): ``attend`` maps the (B, num_windows, n, C) windows to
    (B, num_windows, n, C'); with a ``shift`` the image is cyclically shifted first and back
    after (Swin's SW-MSA)."""
    h, w = image.shape[1:3]
    if shift:
        image = torch.roll(image, shifts=(-shift, -shift), dims=(1, 2))
    image = window_reverse(attend(window_partition(image, window_size)), window_size, h, w)
    if shift:
        image = torch.roll(image, shifts=(shift, shift), dims=(1, 2))
    return image


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned relative position bias."""

    relative_position_index: torch.Tensor

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer(
            "relative_position_index", relative_position_index(window_size), persistent=False
        )
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, windows: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """windows: (B, num_windows, n, C); mask: (num_windows, n, n) or None."""
        b, num_windows, n, c = windows.shape
        qkv = self.qkv(windows).view(b, num_windows, n, 3, self.num_heads, c // self.num_heads)
        query, key, value = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.num_heads).permute(2, 0, 1)
        if mask is not None:
            bias = bias + mask.to(bias.dtype).unsqueeze(1)
        out = attention(query, key, value, bias.to(query.dtype))
        return self.proj(out.transpose(2, 3).reshape(b, num_windows, n, c))


class Mlp(nn.Module):
    """Two-layer feed-forward network with GELU."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ShiftedWindowBlock(nn.Module):
    """Pre-norm (shifted) window attention and a feed-forward network, each with a residual;
    ``attn`` maps (B, num_windows, n, C) windows and a mask (or None) to windows."""

    def __init__(
        self,
        dim: int,
        window_size: int,
        shift: int,
        drop_path_rate: float,
        attn: nn.Module,
        mlp: nn.Module,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift = shift
        self.drop_path_rate = drop_path_rate
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = mlp

    def _attention(
        self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None
    ) -> torch.Tensor:
        image = x.view(x.shape[0], *size, x.shape[-1])
        attend = partial(self.attn, mask=mask if self.shift else None)
        return attend_in_windows(image, self.window_size, self.shift, attend).reshape(x.shape)

    def feed_forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.mlp(x)

    def forward(
        self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None
    ) -> torch.Tensor:
        rate, training = self.drop_path_rate, self.training
        x = x + drop_path(self._attention(self.norm1(x), size, mask), rate, training)
        return x + drop_path(self.feed_forward(self.norm2(x), size), rate, training)


class DepthwiseConv(nn.Module):
    """Depthwise conv + GELU applied to a token sequence on its image grid."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.depthwise_conv = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels),
            nn.GELU(),
        )

    def forward(self, tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return image_to_tokens(self.depthwise_conv(tokens_to_image(tokens, size)))


class ConvFFN(nn.Module):
    """Linear, GELU, a residual depthwise conv + GELU on the image grid, linear."""

    def __init__(self, dim: int, hidden_dim: int, kernel_size: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.dwconv = DepthwiseConv(hidden_dim, kernel_size)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        hidden = self.act(self.fc1(x))
        return self.fc2(hidden + self.dwconv(hidden, size))


def _norm_relu_linear(in_features: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(in_features), nn.ReLU(), nn.Linear(in_features, out_features))


class DynamicPositionBias(nn.Module):
    """MLP from a (dy, dx) offset to one bias per head (CrossFormer's dynamic position bias)."""

    def __init__(self, hidden: int, num_heads: int):
        super().__init__()
        self.pos_proj = nn.Linear(2, hidden)
        self.pos1 = _norm_relu_linear(hidden, hidden)
        self.pos2 = _norm_relu_linear(hidden, hidden)
        self.pos3 = _norm_relu_linear(hidden, num_heads)

    def forward(self, offsets: torch.Tensor) -> torch.Tensor:
        return self.pos3(self.pos2(self.pos1(self.pos_proj(offsets))))


def image_to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


def tokens_to_image(tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[-1], *size)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad bottom and right up to a multiple; images too small to reflect that far are
    reflected repeatedly (and replicated when a side is a single pixel)."""
    while True:
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % multiple, -w % multiple
        if pad_h == 0 and pad_w == 0:
            return x
        if min(h, w) == 1:
            return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        x = F.pad(x, (0, min(pad_w, w - 1), 0, min(pad_h, h - 1)), mode="reflect")


def drop_path_rates(max_rate: float, count: int) -> list[float]:
    """Stochastic depth rising linearly from 0 to ``max_rate`` over all blocks."""
    if count < 2:
        return [0.0] * count
    return [max_rate * index / (count - 1) for index in range(count)]


def init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
