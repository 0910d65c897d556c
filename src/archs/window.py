"""Window-attention building blocks shared by the Swin-style networks (SwinIR, HAT, DRCT,
SRFormer, ...): window partitioning and its inverse, the relative position index, the shifted-window
mask, Swin's window attention and MLP, stochastic depth, token/image reshapes, and the padding to a
window multiple that lets these networks take any input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The authors' mask value for pairs of tokens from different regions of a shifted window.
_MASKED = -100.0


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


def relative_position_index(window_size: int) -> torch.Tensor:
    """(n, n) index into the (2w-1)^2 bias table for every pair of tokens in a window."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    ).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]) + (window_size - 1)
    return relative[0] * (2 * window_size - 1) + relative[1]


def shifted_window_mask(
    h: int, w: int, window_size: int, shift: int, device: torch.device
) -> torch.Tensor:
    """(num_windows, n, n) additive mask keeping attention within the regions that a cyclic
    shift glued together."""
    regions = torch.zeros(1, h, w, 1, device=device)
    bounds = (slice(0, -window_size), slice(-window_size, -shift), slice(-shift, None))
    label = 0
    for rows in bounds:
        for cols in bounds:
            regions[:, rows, cols, :] = label
            label += 1
    labels = window_partition(regions, window_size).squeeze(0).squeeze(-1)
    different = labels[:, None, :] != labels[:, :, None]
    return torch.zeros_like(different, dtype=torch.float32).masked_fill(different, _MASKED)


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
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias.to(query.dtype))
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
