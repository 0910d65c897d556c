"""SwinIR: Liang et al., "SwinIR: Image Restoration Using Swin Transformer", ICCV Workshops 2021.

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
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from src.archs.common import MeanShift, PixelShuffleUpsampler

UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect")
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


class SwinTransformerBlock(nn.Module):
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
        super().__init__()
        self.window_size = window_size
        self.shift = shift
        self.drop_path_rate = drop_path_rate
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _attention(
        self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None
    ) -> torch.Tensor:
        h, w = size
        image = x.view(x.shape[0], h, w, x.shape[-1])
        if self.shift:
            image = torch.roll(image, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = window_partition(image, self.window_size)
        windows = self.attn(windows, mask if self.shift else None)
        image = window_reverse(windows, self.window_size, h, w)
        if self.shift:
            image = torch.roll(image, shifts=(self.shift, self.shift), dims=(1, 2))
        return image.reshape(x.shape)

    def forward(
        self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None
    ) -> torch.Tensor:
        rate, training = self.drop_path_rate, self.training
        x = x + drop_path(self._attention(self.norm1(x), size, mask), rate, training)
        return x + drop_path(self.mlp(self.norm2(x)), rate, training)


class SwinLayer(nn.Module):
    """A run of Swin blocks alternating regular and shifted windows."""

    def __init__(self, blocks: Sequence[SwinTransformerBlock]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(
        self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None
    ) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, size, mask)
        return x


class RSTB(nn.Module):
    """Residual Swin transformer block: a Swin layer, a 3x3 conv on the image grid, a skip."""

    def __init__(self, dim: int, blocks: Sequence[SwinTransformerBlock]):
        super().__init__()
        self.residual_group = SwinLayer(blocks)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(
        self, tokens: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None
    ) -> torch.Tensor:
        out = self.residual_group(tokens, size, mask)
        out = self.conv(_tokens_to_image(out, size))
        return tokens + _image_to_tokens(out)


class PatchEmbed(nn.Module):
    """Image grid to a token sequence (patch size 1), with layer norm."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(_image_to_tokens(x))


def _image_to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


def _tokens_to_image(tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
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


class SwinIR(nn.Module):
    """SwinIR for classical and lightweight SR; RGB in [0, 1] in and out."""

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
    ):
        """``checkpoint_layers`` recomputes each residual Swin group in the backward pass
        instead of storing its activations (activation checkpointing): slower steps, far less
        memory."""
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"{len(depths)} depths but {len(num_heads)} num_heads entries")
        if any(embed_dim % heads for heads in num_heads):
            raise ValueError(f"embed_dim {embed_dim} is not divisible by every num_heads entry")
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"upsampler must be one of {UPSAMPLERS}, got {upsampler!r}")
        self.scale = scale
        self.checkpoint_layers = checkpoint_layers
        self.window_size = window_size
        self.shift = window_size // 2
        self.upsampler = upsampler
        self.sub_mean = MeanShift(sign=-1)
        self.add_mean = MeanShift(sign=+1)

        self.conv_first = nn.Conv2d(3, embed_dim, 3, padding=1)
        self.patch_embed = PatchEmbed(embed_dim)
        rates = iter(_drop_path_rates(drop_path_rate, sum(depths)))
        self.layers = nn.ModuleList()
        for depth, heads in zip(depths, num_heads, strict=True):
            blocks = [
                SwinTransformerBlock(
                    embed_dim,
                    heads,
                    window_size,
                    shift=0 if index % 2 == 0 else self.shift,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop_path_rate=next(rates),
                )
                for index in range(depth)
            ]
            self.layers.append(RSTB(embed_dim, blocks))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)

        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(
                nn.Conv2d(embed_dim, num_features, 3, padding=1), nn.LeakyReLU(inplace=True)
            )
            self.upsample: nn.Sequential = PixelShuffleUpsampler(scale, num_features)
            self.conv_last = nn.Conv2d(num_features, 3, 3, padding=1)
        else:
            self.upsample = nn.Sequential(
                nn.Conv2d(embed_dim, 3 * scale**2, 3, padding=1), nn.PixelShuffle(scale)
            )
        self.apply(_init_linear)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2], x.shape[-1])
        mask = (
            shifted_window_mask(*size, self.window_size, self.shift, x.device)
            if self.shift
            else None
        )
        tokens = self.patch_embed(x)
        for layer in self.layers:
            if self.checkpoint_layers and torch.is_grad_enabled():
                tokens = checkpoint(layer, tokens, size, mask, use_reentrant=False)
            else:
                tokens = layer(tokens, size, mask)
        return _tokens_to_image(self.norm(tokens), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = self.sub_mean(pad_to_multiple(x, self.window_size))
        features = self.conv_first(x)
        features = features + self.conv_after_body(self.forward_features(features))
        if self.upsampler == "pixelshuffle":
            out = self.conv_last(self.upsample(self.conv_before_upsample(features)))
        else:
            out = self.upsample(features)
        return self.add_mean(out)[..., : h * self.scale, : w * self.scale]


def _drop_path_rates(max_rate: float, count: int) -> list[float]:
    """Stochastic depth rising linearly from 0 to ``max_rate`` over all blocks."""
    if count < 2:
        return [0.0] * count
    return [max_rate * index / (count - 1) for index in range(count)]


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
