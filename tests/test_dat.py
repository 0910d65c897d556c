"""DAT and DAT-light: shapes on odd and tiny inputs, parameter counts against the paper, the
authors' state-dict layout, their shifted-window schedule, and strict loading of a file in their
layout (recomputed buffers included)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch

from src.archs.dat import (
    DAT,
    AdaptiveSpatialAttention,
    rectangle_position_index,
    rectangle_shift_mask,
)
from src.archs.window import relative_position_index, shifted_window_mask
from tests.arch_checks import (
    assert_checkpointing_keeps_gradients,
    assert_near_published,
    assert_official_file_loads_strictly,
    assert_scaled_finite_output,
    layout_fingerprint,
    parameter_count,
    parameters_without_gradient,
)

# conf/model name -> the released network's settings (official options/Test/test_DAT*_x4.yml).
VARIANTS: dict[str, dict] = {
    "dat": {},
    "dat_light": {
        "embed_dim": 60,
        "depth": (18,),
        "num_heads": (6,),
        "expansion_factor": 2.0,
        "resi_connection": "3conv",
        "upsampler": "pixelshuffledirect",
    },
}

# The README's Models table of zhengchen1999/DAT (x4): DAT 14.80M, DAT-light 573K.
PAPER_X4_PARAMETERS = {"dat": 14_800_000, "dat_light": 573_000}
# Counted here, equal to the authors' DAT class at the same settings (x2, x3, x4).
EXACT_PARAMETERS = {
    "dat": {2: 14_654_339, 3: 14_838_979, 4: 14_802_051},
    "dat_light": {2: 553_290, 3: 561_405, 4: 572_766},
}

# The authors' state dict at x4 (zhengchen1999/DAT basicsr/archs/dat_arch.py @ 6846c87, run in
# a scratch folder), less the recomputed buffers: key count, elements (BatchNorm statistics
# included) and sha256 of the sorted "key:shape" lines.
OFFICIAL_X4 = {
    "dat": (
        2026,
        14_817_495,
        "936979c563586c0a2d1fc69d648df44f913818648c752bcd48921291ecbdd82e",
    ),
    "dat_light": (
        1019,
        575_340,
        "09c708dabc5c5d755cf39dfc398736f4383d2815df8c1b68e5097dced43f2d8e",
    ),
}
OFFICIAL_X4_KEYS = {
    "dat": {
        "before_RG.1.weight": (180,),
        "layers.0.blocks.0.attn.attns.0.pos.pos_proj.weight": (5, 2),
        "layers.0.blocks.0.attn.attns.1.pos.pos3.2.weight": (3, 5),
        "layers.0.blocks.1.attn.temperature": (6, 1, 1),
        "layers.0.blocks.0.attn.channel_interaction.2.running_var": (22,),
        "layers.0.blocks.0.attn.spatial_interaction.3.weight": (1, 11, 1, 1),
        "layers.5.blocks.5.ffn.sg.conv.weight": (360, 1, 3, 3),
        "layers.5.blocks.5.ffn.fc2.weight": (180, 360),
        "upsample.2.weight": (256, 64, 3, 3),
        "conv_last.weight": (3, 64, 3, 3),
    },
    "dat_light": {
        "layers.0.blocks.0.attn.attns.0.pos.pos_proj.weight": (1, 2),
        "layers.0.blocks.17.ffn.fc1.weight": (120, 60),
        "layers.0.conv.4.weight": (60, 15, 3, 3),
        "conv_after_body.0.weight": (15, 60, 3, 3),
        "upsample.0.weight": (48, 60, 3, 3),
    },
}
# Blocks whose official modules hold attn_mask_0/1, i.e. the shifted ones (group.block).
OFFICIAL_SHIFTED = {
    "dat": {"0.2", "1.0", "1.4", "2.2", "3.0", "3.4", "4.2", "5.0", "5.4"},
    "dat_light": {"0.2", "0.6", "0.10", "0.14"},
}
RECOMPUTED = frozenset(DAT.recomputed_buffers)

# Small widths with every kind of block (unshifted and shifted spatial, channel) and 4x8
# windows; 96 channels give the position-bias MLP 3 features (at 2 or fewer its LayerNorms leave
# almost no gradient).
TINY = {
    "embed_dim": 96,
    "depth": (2, 2),
    "num_heads": (4, 4),
    "split_size": (4, 8),
    "expansion_factor": 2.0,
    "num_features": 16,
}
# Parameters with no gradient in exact arithmetic, in the authors' design too (only rounding
# noise reaches them): the last bias of each position-bias MLP adds one constant to all of a
# head's logits, which the softmax cancels, and the bias of a convolution followed by
# BatchNorm (in training mode) is cancelled by the mean subtraction.
GRADIENT_FREE = (
    "pos.pos3.2.bias",
    "dwconv.0.bias",
    "channel_interaction.1.bias",
    "spatial_interaction.0.bias",
)


def tiny(scale: int, **overrides: object) -> DAT:
    return DAT(scale, **{**TINY, **overrides})  # type: ignore[arg-type]


@cache
def build_on_meta(model: str, scale: int) -> DAT:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return DAT(scale, **VARIANTS[model])


def fingerprint(state: dict[str, torch.Tensor]) -> tuple[int, int, str]:
    """The layout fingerprint, less the recomputed buffers (as the authors' values are)."""
    kept = {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] not in RECOMPUTED}
    return layout_fingerprint(kept)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(13, 11), (37, 53), (5, 3)], ids=str)
def test_output_is_input_times_scale_and_finite(scale: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = tiny(scale)
    assert_scaled_finite_output(net, torch.rand(1, 3, *size), scale)


@pytest.mark.parametrize("size", [(1, 1), (2, 40), (8, 8)], ids=str)
def test_lightweight_upsampler_takes_any_size(size: tuple[int, int]) -> None:
    net = tiny(2, upsampler="pixelshuffledirect", resi_connection="3conv")
    assert_scaled_finite_output(net, torch.rand(2, 3, *size), 2)


def test_one_training_step_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    net = tiny(2, drop_path_rate=0.0).train()
    net(torch.rand(2, 3, 12, 10)).abs().mean().backward()
    missing = parameters_without_gradient(net)
    assert [k for k in missing if not k.endswith(GRADIENT_FREE)] == []


def test_activation_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    plain = tiny(2, drop_path_rate=0.0)
    checkpointed = tiny(2, drop_path_rate=0.0, checkpoint_layers=True)
    assert_checkpointing_keeps_gradients(plain, checkpointed, torch.rand(2, 3, 6, 5))


@pytest.mark.parametrize("model", list(VARIANTS))
def test_x4_parameter_count_matches_paper(model: str) -> None:
    assert_near_published(parameter_count(build_on_meta(model, 4)), PAPER_X4_PARAMETERS[model])


@pytest.mark.parametrize("model", list(VARIANTS))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_parameter_count_equals_official_network(model: str, scale: int) -> None:
    assert parameter_count(build_on_meta(model, scale)) == EXACT_PARAMETERS[model][scale]


@pytest.mark.parametrize("model", list(VARIANTS))
def test_state_dict_has_the_official_keys_and_shapes(model: str) -> None:
    state = build_on_meta(model, 4).state_dict()
    assert fingerprint(state) == OFFICIAL_X4[model]
    for key, shape in OFFICIAL_X4_KEYS[model].items():
        assert tuple(state[key].shape) == shape, key
    assert not any(key.rsplit(".", 1)[-1] in RECOMPUTED for key in state)


@pytest.mark.parametrize("model", list(VARIANTS))
def test_shifted_windows_follow_the_official_schedule(model: str) -> None:
    net = build_on_meta(model, 4)
    shifted = {
        name.removeprefix("layers.").replace(".blocks.", ".").removesuffix(".attn")
        for name, module in net.named_modules()
        if isinstance(module, AdaptiveSpatialAttention) and module.shifted
    }
    assert shifted == OFFICIAL_SHIFTED[model]


def test_square_windows_reduce_to_swin() -> None:
    torch.testing.assert_close(rectangle_position_index(8, 8), relative_position_index(8))
    ours = rectangle_shift_mask((16, 24), (8, 8), (4, 4), torch.device("cpu"))
    torch.testing.assert_close(ours, shifted_window_mask(16, 24, 8, 4, torch.device("cpu")))


def official_layout(net: DAT, image_size: int = 64) -> dict[str, torch.Tensor]:
    """``net``'s weights as the authors' files hold them: with the position offsets and indices
    and, in shifted blocks, the masks their ``img_size`` implies."""
    state = dict(net.state_dict())
    state.update(
        {key: value for key, value in net.named_buffers() if key.endswith(DAT.recomputed_buffers)}
    )
    for name, module in net.named_modules():
        if isinstance(module, AdaptiveSpatialAttention) and module.shifted:
            for index, (height, width) in enumerate(module.windows):
                windows = image_size // height * (image_size // width)
                state[f"{name}.attn_mask_{index}"] = torch.zeros(
                    windows, height * width, height * width
                )
    return state


def test_a_file_in_the_official_layout_loads_strictly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = tiny(3)
    state = official_layout(source)
    assert any(key.endswith("attn_mask_1") for key in state)
    assert any(key.endswith("attns.0.rpe_biases") for key in state)
    assert_official_file_loads_strictly(
        tmp_path / "DAT_tiny_x3.pth", {"params": state}, source, lambda: tiny(3)
    )
