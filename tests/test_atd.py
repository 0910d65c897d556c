"""ATD and ATD-light: shapes on odd and sub-window inputs, parameter counts against the paper, the
official state-dict layout, the category grouping of AC-MSA, activation checkpointing, and strict
import of a file in the authors' layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from src.archs.atd import ATD, CategoryAttention, mirror_pad_to_multiple
from src.archs.window import relative_position_index
from tests.arch_checks import (
    assert_checkpointing_keeps_gradients,
    assert_near_published,
    assert_official_file_loads_strictly,
    assert_scaled_finite_output,
    layout_fingerprint,
    parameter_count,
)

# The released models' settings (LabShuHangGU/Adaptive-Token-Dictionary, options/test/*.yml).
CLASSICAL: dict[str, Any] = {}  # the constructor's defaults
LIGHT: dict[str, Any] = {
    "embed_dim": 48,
    "depths": (6, 6, 6, 6),
    "num_heads": (4, 4, 4, 4),
    "window_size": 16,
    "category_size": 128,
    "num_tokens": 64,
    "reducted_dim": 8,
    "convffn_kernel_size": 7,
    "mlp_ratio": 1.0,
    "upsampler": "pixelshuffledirect",
}
VARIANTS = {"atd": CLASSICAL, "atd_light": LIGHT}

# Paper (CVPR 2024) parameter counts at x4: ATD 20.26M, ATD-light 769K; ours (exact, equal to
# the official code's count at the same settings) is pinned beside them.
PAPER_X4 = {"atd": 20_260_000, "atd_light": 769_000}
EXACT = {
    ("atd", 2): 20_113_217,
    ("atd", 3): 20_297_857,
    ("atd", 4): 20_260_929,
    ("atd_light", 2): 753_204,
    ("atd_light", 3): 759_699,
    ("atd_light", 4): 768_792,
}

# Fingerprint of the official ATD's state dict (basicsr/archs/atd_arch.py at commit
# 6baf442969df87c1f6e1412c5c4753a437fca694, built at these settings) less the
# relative_position_index_SA buffer: number of keys, number of elements, sha256 of the sorted
# "key:shape" lines joined by newlines.
OFFICIAL_FINGERPRINTS = {
    ("atd", 2): (
        1022,
        20_113_217,
        "533ba1fb1719c4fd95f9857c6c3837926c8adfe6bd66e2899b9f1a6057402843",
    ),
    ("atd", 3): (
        1022,
        20_297_857,
        "2e52832ec1f0146d5e934f455d1a4f9cc6d83f839cd68347331e731253bba156",
    ),
    ("atd", 4): (
        1024,
        20_260_929,
        "b79221f341dd2e9aa971aa2f544b2e00642816283f609adce39b9e9a01bb4730",
    ),
    ("atd_light", 2): (
        682,
        753_204,
        "7ddb415877093aa85efee209fe54faee695c1893edee46c1eef830962fecc4ce",
    ),
    ("atd_light", 3): (
        682,
        759_699,
        "2e3f5b2882adfa5deb3e85c544221f6593c4f0be9084566c03a9b56c9cb19d14",
    ),
    ("atd_light", 4): (
        682,
        768_792,
        "e6b2bc2a42359eb2b39fa235a045ec03031e4c04617a95c3823b8e3f33d06bba",
    ),
}
OFFICIAL_X4_KEYS = {
    "layers.0.residual_group.td": (128, 210),
    "layers.0.residual_group.layers.0.sigma": (128, 1),
    "layers.0.residual_group.layers.0.norm3.weight": (128,),
    "layers.0.residual_group.layers.0.wqkv.weight": (630, 210),
    "layers.0.residual_group.layers.0.attn_win.relative_position_bias_table": (961, 6),
    "layers.0.residual_group.layers.0.attn_atd.scale": (128,),
    "layers.0.residual_group.layers.0.attn_atd.wq.weight": (20, 210),
    "layers.0.residual_group.layers.0.attn_aca.logit_scale": (1, 1),
    "layers.5.residual_group.layers.5.convffn.dwconv.depthwise_conv.0.weight": (420, 1, 5, 5),
    "patch_embed.norm.weight": (210,),
    "upsample.2.weight": (256, 64, 3, 3),
    "conv_last.weight": (3, 64, 3, 3),
}
# A group's last layer does not refine the dictionary, so it has no norm3 or sigma.
ABSENT_X4_KEYS = (
    "layers.0.residual_group.layers.5.sigma",
    "layers.0.residual_group.layers.5.norm3.weight",
)


def tiny(scale: int, upsampler: str = "pixelshuffle", window_size: int = 4) -> ATD:
    """The real code paths (several categories per image, shifted windows, refinement) at a
    width that runs in milliseconds."""
    return ATD(
        scale,
        embed_dim=12,
        depths=(2,),
        num_heads=(2,),
        window_size=window_size,
        category_size=8,
        num_tokens=4,
        reducted_dim=4,
        convffn_kernel_size=3,
        upsampler=upsampler,
        num_features=8,
    )


def real(model: str, scale: int) -> ATD:
    with torch.device("meta"):  # shapes only
        return ATD(scale, **VARIANTS[model])


def image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize(
    ("upsampler", "size"),
    [("pixelshuffle", (13, 11)), ("pixelshuffledirect", (13, 11)), ("pixelshuffle", (37, 53))],
)
def test_odd_sized_input_gives_scaled_finite_output(
    scale: int, upsampler: str, size: tuple[int, int]
) -> None:
    torch.manual_seed(0)
    assert_scaled_finite_output(tiny(scale, upsampler), image(*size), scale)


@pytest.mark.parametrize("size", [(5, 7), (1, 6), (3, 3), (16, 3)])
def test_inputs_under_one_window_work(size: tuple[int, int]) -> None:
    """The official network fails below half its 16-pixel window; this one mirrors again."""
    torch.manual_seed(0)
    assert_scaled_finite_output(tiny(2, window_size=16), image(*size), 2)


def test_padding_mirrors_with_the_edge_repeated() -> None:
    x = torch.arange(3.0).view(1, 1, 1, 3)
    padded = mirror_pad_to_multiple(x, 8)
    assert padded.shape == (1, 1, 8, 8)
    assert padded[0, 0, 0].tolist() == [0, 1, 2, 2, 1, 0, 0, 1]
    assert torch.equal(mirror_pad_to_multiple(padded, 8), padded)


@pytest.mark.parametrize("model", list(VARIANTS))
def test_x4_parameter_count_matches_paper(model: str) -> None:
    count = parameter_count(real(model, 4))
    assert_near_published(count, PAPER_X4[model])
    assert count == EXACT[(model, 4)]


@pytest.mark.parametrize(("model", "scale"), list(EXACT))
def test_state_dict_matches_the_official_layout(model: str, scale: int) -> None:
    state = real(model, scale).state_dict()
    assert layout_fingerprint(state) == OFFICIAL_FINGERPRINTS[(model, scale)]
    assert parameter_count(real(model, scale)) == EXACT[(model, scale)]


def test_literal_official_keys() -> None:
    state = real("atd", 4).state_dict()
    for key, shape in OFFICIAL_X4_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(key in state for key in ABSENT_X4_KEYS)
    assert "relative_position_index_SA" not in state


def test_tokens_of_one_category_are_grouped_in_raster_order() -> None:
    """With every token in one category, the stable sort keeps raster order: groups are
    consecutive runs of ``category_size`` tokens, the last one completed by mirroring."""
    torch.manual_seed(0)
    dim, heads, group, n = 8, 2, 4, 6
    attention = CategoryAttention(dim, heads, group, qkv_bias=True)
    qkv = torch.randn(1, n, 3 * dim)
    similarity = torch.zeros(1, n, 3)
    similarity[..., 1] = 1.0
    with torch.no_grad():
        out = attention(qkv, similarity)
        padded = torch.cat([qkv, qkv[:, 4:6].flip(1)], dim=1).view(1, 2, group, 3, heads, 4)
        query, key, value = padded.permute(3, 0, 1, 4, 2, 5).unbind(0)
        scale = attention.logit_scale.exp()
        expected = torch.softmax(query @ key.transpose(-2, -1) * scale, dim=-1) @ value
        expected = expected.permute(0, 1, 3, 2, 4).reshape(1, 2 * group, dim)[:, :n]
        torch.testing.assert_close(out, attention.proj(expected))


def test_category_attention_follows_the_tokens_when_they_move() -> None:
    """Tokens in distinct categories form their own groups, wherever they sit."""
    torch.manual_seed(0)
    attention = CategoryAttention(8, 2, category_size=2, qkv_bias=True)
    qkv = torch.randn(1, 4, 24)
    similarity = torch.eye(2).repeat_interleave(2, dim=0).unsqueeze(0)  # categories 0, 0, 1, 1
    order = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        out = attention(qkv, similarity)
        moved = attention(qkv[:, order], similarity[:, order])
    torch.testing.assert_close(moved, out[:, order])


def test_checkpointed_groups_give_the_same_gradients() -> None:
    torch.manual_seed(0)
    plain = tiny(2).train()
    checkpointed = tiny(2).train()
    checkpointed.checkpoint_layers = True
    hr = image(14, 16, seed=1)
    assert_checkpointing_keeps_gradients(
        plain, checkpointed, image(7, 8), loss=lambda sr: F.l1_loss(sr, hr)
    )


def test_file_in_the_official_layout_imports_strictly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = tiny(4).eval()
    official = dict(source.state_dict())
    official["relative_position_index_SA"] = relative_position_index(4)
    x = image(9, 10)
    torch.manual_seed(1)  # the weights the file is imported into, before the import
    with torch.no_grad():
        assert not torch.equal(tiny(4).eval()(x), source(x))
    assert_official_file_loads_strictly(
        tmp_path / "003_ATD_SRx4_finetune.pth",
        {"params_ema": official},
        source,
        lambda: tiny(4).eval(),
        x=x,
    )
