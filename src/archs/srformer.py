"""SRFormer: Zhou, Li, Guo, Bai, Cheng, Hou, "SRFormer: Permuted Self-Attention for Single Image
Super-Resolution", ICCV 2023.

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
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from src.archs.common import MeanShift, PixelShuffleUpsampler
from src.archs.window import (
    drop_path,
    drop_path_rates,
    image_to_tokens,
    init_linear,
    pad_to_multiple,
    relative_position_index,
    tokens_to_image,
    window_partition,
    window_reverse,
)

UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect")
# The authors' mask value between a query and a key from different regions of a shifted window.
_MASKED = -100.0


def aligned_relative_position_index(window_size: int) -> torch.Tensor:
    """(n, n / 4) index into the bias table of the half-size grid: a query at (row, col) of the
    window takes the entries of the permuted token (row // 2, col // 2)."""
    half = window_size // 2
    rows, cols = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    permuted_token = (rows // 2 * half + cols // 2).flatten()
    return relative_position_index(half)[permuted_token]


def _region_labels(h: int, w: int, window_size: int, shift: int) -> torch.Tensor:
    """(num_windows, window_size^2) labels of the 3 x 3 regions that a cyclic shift glues
    together, read window by window."""
    regions = torch.zeros(1, h, w, 1)
    bounds = (slice(0, -window_size), slice(-window_size, -shift), slice(-shift, None))
    label = 0
    for rows in bounds:
        for cols in bounds:
            regions[:, rows, cols, :] = label
            label += 1
    return window_partition(regions, window_size)[0, ..., 0]


def permuted_window_mask(
    h: int, w: int, window_size: int, shift: int, device: torch.device
) -> torch.Tensor:
    """(num_windows, n, n / 4) additive mask between the queries of each shifted window and its
    permuted keys. On the half-size key grid the region boundary sits at ``ceil(shift / 2)``
    from the edge, as the authors round it for odd shifts (window 22)."""
    queries = _region_labels(h, w, window_size, shift)
    keys = _region_labels(h // 2, w // 2, window_size // 2, -(-shift // 2))
    different = queries[:, :, None] != keys[:, None, :]
    mask = torch.zeros(different.shape).masked_fill(different, _MASKED)
    return mask.to(device)


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
        out = F.scaled_dot_product_attention(
            query.transpose(2, 3), key, value, attn_mask=bias.to(query.dtype)
        )
        return self.proj(out.transpose(2, 3).reshape(b, num_windows, n, c))


class DepthwiseConv(nn.Module):
    """5x5 depthwise conv + GELU on the token grid."""

    def __init__(self, channels: int):
        super().__init__()
        self.depthwise_conv = nn.Sequential(
            nn.Conv2d(channels, channels, 5, padding=2, groups=channels), nn.GELU()
        )

    def forward(self, tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return image_to_tokens(self.depthwise_conv(tokens_to_image(tokens, size)))


class ConvFFN(nn.Module):
    """Linear, GELU, a depthwise-conv residual on the image grid, linear."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.dwconv = DepthwiseConv(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        hidden = self.act(self.fc1(x))
        return self.fc2(hidden + self.dwconv(hidden, size))


class PSABlock(nn.Module):
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
        super().__init__()
        self.window_size = window_size
        self.shift = shift
        self.drop_path_rate = drop_path_rate
        self.norm1 = nn.LayerNorm(dim)
        self.attn = PSA(dim, window_size, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio))

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
        return x + drop_path(self.mlp(self.norm2(x), size), rate, training)


class PSALayer(nn.Module):
    """A run of PSA blocks alternating regular and shifted windows."""

    def __init__(self, blocks: Sequence[PSABlock]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(
        self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None
    ) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, size, mask)
        return x


class PSAGroup(nn.Module):
    """A PSA layer, a 3x3 conv on the image grid, and a skip (the authors' ``PSA_Group``)."""

    def __init__(self, dim: int, blocks: Sequence[PSABlock]):
        super().__init__()
        self.residual_group = PSALayer(blocks)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(
        self, tokens: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None
    ) -> torch.Tensor:
        out = self.residual_group(tokens, size, mask)
        return tokens + image_to_tokens(self.conv(tokens_to_image(out, size)))


class PatchEmbed(nn.Module):
    """Image grid to a token sequence (patch size 1), with layer norm."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(image_to_tokens(x))


def _check_settings(
    embed_dim: int,
    depths: Sequence[int],
    num_heads: Sequence[int],
    window_size: int,
    upsampler: str,
) -> None:
    if len(depths) != len(num_heads):
        raise ValueError(f"{len(depths)} depths but {len(num_heads)} num_heads entries")
    if any(embed_dim % heads for heads in num_heads):
        raise ValueError(f"embed_dim {embed_dim} is not divisible by every num_heads entry")
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be a multiple of 4 for permuted keys, got {embed_dim}")
    if window_size < 2 or window_size % 2:
        raise ValueError(f"window_size must be even for 2x2 permuted keys, got {window_size}")
    if upsampler not in UPSAMPLERS:
        raise ValueError(f"upsampler must be one of {UPSAMPLERS}, got {upsampler!r}")


class SRFormer(nn.Module):
    """SRFormer for classical and lightweight SR; RGB in [0, 1] in and out."""

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
    ):
        """``checkpoint_layers`` recomputes each PSA group in the backward pass instead of
        storing its activations (activation checkpointing): slower steps, far less memory."""
        super().__init__()
        _check_settings(embed_dim, depths, num_heads, window_size, upsampler)
        self.scale = scale
        self.checkpoint_layers = checkpoint_layers
        self.window_size = window_size
        self.shift = window_size // 2
        self.upsampler = upsampler
        self.sub_mean = MeanShift(sign=-1)
        self.add_mean = MeanShift(sign=+1)

        self.conv_first = nn.Conv2d(3, embed_dim, 3, padding=1)
        self.patch_embed = PatchEmbed(embed_dim)
        rates = iter(drop_path_rates(drop_path_rate, sum(depths)))
        self.layers = nn.ModuleList()
        for depth, heads in zip(depths, num_heads, strict=True):
            blocks = [
                PSABlock(
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
            self.layers.append(PSAGroup(embed_dim, blocks))
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
        self.apply(init_linear)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2], x.shape[-1])
        mask = permuted_window_mask(*size, self.window_size, self.shift, x.device)
        tokens = self.patch_embed(x)
        for layer in self.layers:
            if self.checkpoint_layers and torch.is_grad_enabled():
                tokens = checkpoint(layer, tokens, size, mask, use_reentrant=False)
            else:
                tokens = layer(tokens, size, mask)
        return tokens_to_image(self.norm(tokens), size)

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
