"""DRCT and DRCT-L: shapes on odd and sub-window inputs, parameter counts against the authors'
README, the authors' state-dict layout (key names and shapes), and strict loading of a file saved
in that layout, recomputed buffers included."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.archs.drct import DRCT, dense_layer_heads
from src.archs.window import relative_position_index, shifted_window_mask
from tests.arch_checks import (
    assert_near_published,
    assert_official_file_loads_strictly,
    assert_scaled_finite_output,
    layout_fingerprint,
    parameter_count,
)

# conf/model name -> the network's group count (options/test/DRCT_SRx4.yml, DRCT-L_SRx4_*.yml).
GROUPS = {"drct": 6, "drct_l": 12}

# x4 parameter counts of the authors' README table ("Benchmark results on SRx4"): 14.13M and
# 27.58M: the full counts (relative position bias tables included) cut to two decimals.
README_X4_PARAMETERS = {"drct": 14_130_000, "drct_l": 27_580_000}

# The authors' state dict (ming053l/DRCT, drct/archs/DRCT_arch.py at b550523, built with the
# options/test settings), less its relative_position_index and attn_mask buffers: number of keys,
# number of elements, sha256 of the sorted "key:shape" lines joined by newlines.
OFFICIAL_FINGERPRINTS = {
    ("drct", 2): (
        464,
        13_991_867,
        "b3ed1b85c6de3de1c5cc95f237dcbe1401610a6861da8d1299582c816fd7e112",
    ),
    ("drct", 3): (
        464,
        14_176_507,
        "df7af4e097254baab5700e5293d8959c2b1af4f6dddf837071198d972ecc8c21",
    ),
    ("drct", 4): (
        466,
        14_139_579,
        "f65d21b770f8c855268e991a6fc2d251b2c39803f4bc864425b86908bba005af",
    ),
    ("drct_l", 2): (
        914,
        27_433_007,
        "223111ae7a6f7bfa2fed13d6bb1b004fef08bd2b3dc8d2c13d204cd8c5d79827",
    ),
    ("drct_l", 3): (
        914,
        27_617_647,
        "3b89618972cf9b44ae0f77881c4277e974a1cb672a41ab500a257098f423d224",
    ),
    ("drct_l", 4): (
        916,
        27_580_719,
        "57e29b554bd6b6c50b13feecd40545c73f3ba6228719de80bd36c56e849d2d37",
    ),
}

# A few of the authors' keys at x4: dense widths 180 + k * 32, heads 6, 4, 2, 6, 4, window 16.
OFFICIAL_X4_KEYS = {
    "patch_embed.norm.weight": (180,),
    "layers.0.adjust1.weight": (32, 180, 1, 1),
    "layers.0.swin2.attn.relative_position_bias_table": (961, 4),
    "layers.0.swin3.attn.relative_position_bias_table": (961, 2),
    "layers.0.swin4.mlp.fc1.weight": (276, 276),
    "layers.0.swin5.attn.qkv.weight": (924, 308),
    "layers.5.adjust5.weight": (180, 308, 1, 1),
    "upsample.2.weight": (256, 64, 3, 3),
    "conv_last.weight": (3, 64, 3, 3),
}

# The authors build their attention masks for img_size 64 (the training patch size).
OFFICIAL_IMG_SIZE = 64


def tiny(scale: int, window_size: int = 4) -> DRCT:
    # 3 heads over widths 12..28 exercise the authors' head rule: 3, 2, 1, 3, 2 heads.
    sizes = {"embed_dim": 12, "depths": (2,), "num_heads": (3,), "gc": 4, "num_features": 8}
    return DRCT(scale, window_size=window_size, **sizes)


def real(model: str, scale: int) -> DRCT:
    groups = GROUPS[model]
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return DRCT(scale, depths=(6,) * groups, num_heads=(6,) * groups)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(13, 11), (37, 53), (3, 2)])
def test_any_input_size_gives_scaled_finite_output(scale: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = tiny(scale)
    assert_scaled_finite_output(net, torch.rand(1, 3, *size), scale)


def test_head_rule_follows_the_authors() -> None:
    widths = [180 + index * 32 for index in range(5)]
    assert [dense_layer_heads(width, 6) for width in widths] == [6, 4, 2, 6, 4]
    with pytest.raises(ValueError, match="do not divide"):
        dense_layer_heads(13, 6)  # 13 % 6 = 1 -> 5 heads for 13 channels


@pytest.mark.parametrize("model", list(GROUPS))
def test_x4_parameter_count_matches_readme(model: str) -> None:
    count = parameter_count(real(model, 4))
    assert_near_published(count, README_X4_PARAMETERS[model])
    assert count == OFFICIAL_FINGERPRINTS[(model, 4)][1]


@pytest.mark.parametrize(("model", "scale"), list(OFFICIAL_FINGERPRINTS))
def test_state_dict_layout_is_the_authors(model: str, scale: int) -> None:
    state = real(model, scale).state_dict()
    assert layout_fingerprint(state) == OFFICIAL_FINGERPRINTS[(model, scale)]
    if scale == 4:
        for key, shape in OFFICIAL_X4_KEYS.items():
            assert tuple(state[key].shape) == shape, key


def official_layout(net: DRCT, window_size: int) -> dict[str, torch.Tensor]:
    """``net``'s state dict plus the buffers the authors also save: every attention's
    relative position index and the shifted layers' (swin2, swin4) masks at img_size 64."""
    state = dict(net.state_dict())
    mask = shifted_window_mask(
        OFFICIAL_IMG_SIZE, OFFICIAL_IMG_SIZE, window_size, window_size // 2, torch.device("cpu")
    )
    for key in list(state):
        if key.endswith(".attn.qkv.weight"):
            block = key.removesuffix(".attn.qkv.weight")
            state[f"{block}.attn.relative_position_index"] = relative_position_index(window_size)
            if block.endswith(("swin2", "swin4")):
                state[f"{block}.attn_mask"] = mask
    return state


def test_file_in_the_authors_layout_loads_strictly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = tiny(2)
    state = official_layout(source, window_size=4)
    assert len(state) == len(source.state_dict()) + 5 + 2  # one group: 5 indices, 2 masks
    assert_official_file_loads_strictly(
        tmp_path / "DRCT_SRx2.pth", {"params_ema": state}, source, lambda: tiny(2)
    )
