"""ATD: Zhang, Li, Zhou, Zhao, Gu, "Transcending the Limit of Local Window: Advanced
Super-Resolution Transformer with Adaptive Token Dictionary", CVPR 2024.

Upstream: https://github.com/LabShuHangGU/Adaptive-Token-Dictionary (commit d25fd84,
basicsr/archs/atd_arch.py), Apache-2.0 (no NOTICE file upstream).
SR Lab's code is its own; parameter names follow the upstream file so its weights load.

SwinIR's layout (3x3 conv, residual groups of transformer layers each closed by a 3x3 conv, a
conv after the body with a long skip, an upsampler) with a different transformer layer. Every
layer projects its normalised tokens once to query/key/value and adds three attentions to the
residual stream:

* shifted-window self-attention with a relative position bias (SW-MSA), windows of
  ``window_size`` alternating with windows shifted by half of that;
* token dictionary cross-attention (TDCA): low-dimensional (``reducted_dim``) cosine
  similarities between every token and a learned dictionary of ``num_tokens`` entries, with a
  learned per-entry temperature; the output mixes the dictionary's values;
* adaptive category-based self-attention (AC-MSA): each token joins the category of the
  dictionary entry it is most similar to; tokens are sorted by category, cut into groups of
  ``category_size`` (the last group completed with mirrored tokens) and attend within their
  group, wherever they are in the image. The sort here is stable (tokens of one category keep
  their raster order), so the grouping is deterministic on every device. The authors ask for an
  unstable sort, but CUDA sorts more than 32 values per row with stable algorithms anyway, so
  their GPU results are this grouping. Their code on a CPU orders ties differently (outputs up
  to 0.07-0.65 apart with random weights, measured) and matches this one to 1e-5 once made
  stable.

A convolutional FFN (linear, GELU, a residual depthwise ``convffn_kernel_size`` conv + GELU,
linear) follows. Between layers, adaptive token refinement updates the group's dictionary: a
learned gate blends each entry with the tokens most similar to it (softmax over the image of
the instance-normalised TDCA similarities). Each residual group starts from its own learned
dictionary.

One class covers the two released SR models (``options/test/*.yml`` of the official code):

* ATD (classical): embed 210, 6 groups of 6 layers, 6 heads, window 16, category size 256,
  128 tokens, reduced dim 20, FFN kernel 5, MLP ratio 2, ``upsampler="pixelshuffle"``.
  Parameters: 20,113,217 (x2), 20,297,857 (x3), 20,260,929 (x4; the paper: 20.26M).
* ATD-light: embed 48, 4 groups of 6 layers, 4 heads, window 16, category size 128, 64 tokens,
  reduced dim 8, FFN kernel 7, MLP ratio 1, ``upsampler="pixelshuffledirect"``.
  Parameters: 753,204 (x2), 759,699 (x3), 768,792 (x4; the paper: 769K).

Inputs are RGB in [0, 1]; the DIV2K mean is removed and added back (the authors' ``img_range``
is 1). Any size works: the network mirror-pads bottom and right to a multiple of the window
(symmetric padding, edge pixel repeated, as the official ``forward`` does; repeated for inputs
under half a window, where the official code fails) and crops the output back. AC-MSA and the
dictionary refinement see the whole padded image, so the output depends on the padding and on
tiling. Parameter names follow the authors' code, so their ``params_ema`` files load key for
key, less the ``relative_position_index_SA`` buffer they also store (rebuilt here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import PIXEL_SHUFFLE_SCALES, NetworkTraits
from src.archs.swin_skeleton import ResidualGroup, SwinSkeleton, check_settings
from src.archs.window import (
    ConvFFN,
    attend_in_windows,
    attention,
    init_linear,
    relative_position_index,
    shifted_window_mask,
)

# The authors' bound on AC-MSA's learned logit scale (exp of it at most 100).
MAX_LOGIT_SCALE = math.log(100.0)


def mirror_pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom and right up to a multiple with the image's mirror image (edge repeated),
    mirroring again as often as a small image needs."""
    for dim in (-2, -1):
        size = x.shape[dim]
        target = -(-size // multiple) * multiple
        while x.shape[dim] < target:
            x = torch.cat([x, x.flip(dim)], dim)
        x = x.narrow(dim, 0, target)
    return x


def split_heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, ...]:
    """(..., n, 3C) -> query, key and value, each (..., heads, n, C / heads)."""
    *batch, n, c3 = qkv.shape
    qkv = qkv.view(*batch, n, 3, num_heads, c3 // (3 * num_heads))
    return qkv.movedim(-3, 0).transpose(-2, -3).unbind(0)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(..., heads, n, d) -> (..., n, heads * d)."""
    return x.transpose(-2, -3).flatten(-2)


class SharedQKVWindowAttention(nn.Module):
    """Window self-attention with a relative position bias on projections made by the layer."""

    def __init__(self, dim: int, window_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, qkv_windows: torch.Tensor, index: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """qkv_windows: (B, num_windows, n, 3C); index: (n, n); mask: (num_windows, n, n)."""
        n = qkv_windows.shape[-2]
        query, key, value = split_heads(qkv_windows, self.num_heads)
        bias = self.relative_position_bias_table[index.view(-1)]
        bias = bias.view(n, n, self.num_heads).permute(2, 0, 1)
        if mask is not None:
            bias = bias + mask.to(bias.dtype).unsqueeze(1)
        out = attention(query, key, value, bias.to(query.dtype))
        return self.proj(merge_heads(out))


class TokenDictionaryCrossAttention(nn.Module):
    """TDCA: tokens attend to the dictionary through scaled cosine similarities."""

    def __init__(self, dim: int, num_tokens: int, reducted_dim: int, qkv_bias: bool):
        super().__init__()
        self.log_num_tokens = math.log(num_tokens)
        self.wq = nn.Linear(dim, reducted_dim, bias=qkv_bias)
        self.wk = nn.Linear(dim, reducted_dim, bias=qkv_bias)
        self.wv = nn.Linear(dim, dim, bias=qkv_bias)
        self.scale = nn.Parameter(torch.full((num_tokens,), 0.5))

    def forward(
        self, x: torch.Tensor, dictionary: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, n, C), dictionary: (B, m, C) -> output (B, n, C), similarity (B, n, m)."""
        query = F.normalize(self.wq(x), dim=-1)
        key = F.normalize(self.wk(dictionary), dim=-1)
        temperature = 1 + self.scale.clamp(0, 1) * self.log_num_tokens
        similarity = torch.softmax(query @ key.transpose(-2, -1) * temperature, dim=-1)
        return similarity @ self.wv(dictionary), similarity


class CategoryAttention(nn.Module):
    """AC-MSA: self-attention within groups of tokens sorted by their dictionary category."""

    def __init__(self, dim: int, num_heads: int, category_size: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.category_size = category_size
        self.proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.logit_scale = nn.Parameter(torch.full((1, 1), math.log(10.0)))

    def forward(self, qkv: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
        """qkv: (B, n, 3C); similarity: (B, n, m) from TDCA -> (B, n, C)."""
        b, n, c3 = qkv.shape
        group = min(n, self.category_size)
        num_groups = -(-n // group)
        filler = num_groups * group - n
        order = similarity.argmax(-1).sort(dim=-1, stable=True).indices
        order = order.unsqueeze(-1)
        ranked = qkv.gather(1, order.expand(-1, -1, c3))
        ranked = torch.cat([ranked, ranked[:, n - filler :].flip(1)], dim=1)
        query, key, value = split_heads(ranked.view(b, num_groups, group, c3), self.num_heads)
        logit_scale = self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
        out = attention(query * logit_scale.to(query.dtype), key, value, scale=1.0)
        out = merge_heads(out).reshape(b, num_groups * group, c3 // 3)[:, :n]
        restored = torch.empty_like(out).scatter_(1, order.expand_as(out), out)
        return self.proj(restored)


class ATDTransformerLayer(nn.Module):
    """Shared QKV projection, SW-MSA + TDCA + AC-MSA on one residual, then the ConvFFN; all but
    a group's last layer also refine the dictionary."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift: int,
        category_size: int,
        num_tokens: int,
        reducted_dim: int,
        convffn_kernel_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        refines_dictionary: bool,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift = shift
        self.refines_dictionary = refines_dictionary
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        if refines_dictionary:
            self.norm3 = nn.InstanceNorm1d(num_tokens, affine=True)
            self.sigma = nn.Parameter(torch.zeros(num_tokens, 1))
        self.wqkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_win = SharedQKVWindowAttention(dim, window_size, num_heads)
        self.attn_atd = TokenDictionaryCrossAttention(dim, num_tokens, reducted_dim, qkv_bias)
        self.attn_aca = CategoryAttention(dim, num_heads, category_size, qkv_bias)
        self.convffn = ConvFFN(dim, int(dim * mlp_ratio), convffn_kernel_size)

    def _window_attention(
        self,
        qkv: torch.Tensor,
        size: tuple[int, int],
        index: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        image = qkv.view(qkv.shape[0], *size, qkv.shape[-1])
        attend = partial(self.attn_win, index=index, mask=mask if self.shift else None)
        image = attend_in_windows(image, self.window_size, self.shift, attend)
        return image.reshape(qkv.shape[0], size[0] * size[1], -1)

    def forward(
        self,
        x: torch.Tensor,
        dictionary: torch.Tensor,
        size: tuple[int, int],
        index: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        normed = self.norm1(x)
        qkv = self.wqkv(normed)
        from_dictionary, similarity = self.attn_atd(normed, dictionary)
        from_category = self.attn_aca(qkv, similarity)
        from_window = self._window_attention(qkv, size, index, mask)
        x = x + from_window + from_dictionary + from_category
        x = x + self.convffn(self.norm2(x), size)
        if self.refines_dictionary:
            weights = torch.softmax(self.norm3(similarity.transpose(1, 2)), dim=-1)
            keep = torch.sigmoid(self.sigma)
            dictionary = keep * dictionary + (1 - keep) * (weights @ x)
        return x, dictionary


class ATDLayerGroup(nn.Module):
    """A run of ATD layers sharing one adaptive token dictionary (``td``)."""

    def __init__(self, num_tokens: int, dim: int, layers: Sequence[ATDTransformerLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.td = nn.Parameter(torch.randn(num_tokens, dim))

    def forward(
        self,
        x: torch.Tensor,
        size: tuple[int, int],
        index: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        dictionary = self.td.repeat(x.shape[0], 1, 1)
        for layer in self.layers:
            x, dictionary = layer(x, dictionary, size, index, mask)
        return x


class ATD(SwinSkeleton):
    """ATD for classical and lightweight SR; RGB in [0, 1] in and out."""

    traits = NetworkTraits(
        scales=PIXEL_SHUFFLE_SCALES, upsampler_scales={"pixelshuffledirect": None}
    )

    # Stored in the authors' files, rebuilt here from the window size (see import_weights).
    recomputed_buffers = ("relative_position_index_SA",)
    relative_position_index_SA: torch.Tensor

    def __init__(
        self,
        scale: int,
        embed_dim: int = 210,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 16,
        category_size: int = 256,
        num_tokens: int = 128,
        reducted_dim: int = 20,
        convffn_kernel_size: int = 5,
        mlp_ratio: float = 2.0,
        upsampler: str = "pixelshuffle",
        num_features: int = 64,
        qkv_bias: bool = True,
        checkpoint_layers: bool = False,
        in_chans: int = 3,
    ):
        """``checkpoint_layers`` recomputes each residual group in the backward pass instead
        of storing its activations (activation checkpointing): slower steps, far less memory."""
        check_settings(embed_dim, depths, num_heads, upsampler)
        super().__init__(scale, checkpoint_layers, in_chans)
        self.window_size = window_size
        self.shift = window_size // 2
        self.register_buffer(
            "relative_position_index_SA", relative_position_index(window_size), persistent=False
        )
        self._build_head(embed_dim)
        self.layers = nn.ModuleList()
        for depth, heads in zip(depths, num_heads, strict=True):
            layers = [
                ATDTransformerLayer(
                    embed_dim,
                    heads,
                    window_size,
                    shift=0 if index % 2 == 0 else self.shift,
                    category_size=category_size,
                    num_tokens=num_tokens,
                    reducted_dim=reducted_dim,
                    convffn_kernel_size=convffn_kernel_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    refines_dictionary=index < depth - 1,
                )
                for index in range(depth)
            ]
            group = ATDLayerGroup(num_tokens, embed_dim, layers)
            self.layers.append(ResidualGroup(embed_dim, group))
        self._build_tail(embed_dim, upsampler, num_features)
        self.apply(init_linear)

    def layer_context(
        self, size: tuple[int, int], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mask = shifted_window_mask(*size, self.window_size, self.shift, device)
        return self.relative_position_index_SA, mask

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Mirror-pad (edge repeated) to a window multiple, as the authors' ``forward`` does."""
        return mirror_pad_to_multiple(x, self.window_size)
