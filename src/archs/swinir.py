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
from torch import nn
from torch.utils.checkpoint import checkpoint

from src.archs.common import MeanShift, PixelShuffleUpsampler
from src.archs.window import (
    Mlp,
    WindowAttention,
    drop_path,
    drop_path_rates,
    image_to_tokens,
    init_linear,
    pad_to_multiple,
    shifted_window_mask,
    tokens_to_image,
    window_partition,
    window_reverse,
)

UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect")


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
        out = self.conv(tokens_to_image(out, size))
        return tokens + image_to_tokens(out)


class PatchEmbed(nn.Module):
    """Image grid to a token sequence (patch size 1), with layer norm."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(image_to_tokens(x))


class SwinIR(nn.Module):
    """SwinIR for classical and lightweight SR; RGB in [0, 1] in and out."""

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
        rates = iter(drop_path_rates(drop_path_rate, sum(depths)))
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
        self.apply(init_linear)

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
