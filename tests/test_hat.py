"""HAT and HAT-L: shapes on odd and sub-window inputs, parameter counts against the paper, the
authors' state-dict layout (key fingerprint) and strict loading of a file in that layout."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from src.archs.hat import HAT, overlapping_relative_position_index
from src.archs.window import pad_to_multiple, relative_position_index
from tests.arch_checks import (
    assert_checkpointing_keeps_gradients,
    assert_near_published,
    assert_official_file_loads_strictly,
    assert_scaled_finite_output,
    layout_fingerprint,
    parameter_count,
    parameters_without_gradient,
)

TINY_WINDOW = 4
TINY = {
    "embed_dim": 12,
    "depths": (2,),
    "num_heads": (2,),
    "window_size": TINY_WINDOW,
    "squeeze_factor": 4,
    "num_features": 8,
}

# conf/model name -> groups of 6 blocks (everything else is the default configuration).
GROUPS = {"hat": 6, "hat_l": 12}

# x4 parameters: HAT 20.8M (the authors' README table, "Params(M)"), HAT-L 40.8M (the paper's
# table of model sizes); both count every parameter, relative position bias tables included.
PAPER_X4_PARAMETERS = {"hat": 20_800_000, "hat_l": 40_800_000}
EXACT_PARAMETERS = {
    ("hat", 2): 20_624_795,
    ("hat", 3): 20_809_435,
    ("hat", 4): 20_772_507,
    ("hat_l", 4): 40_846_575,
}

# Fingerprint of the authors' x4 state dicts (XPixelGroup/HAT hat/archs/hat_arch.py at commit
# a9ec39d, options/test/HAT*_SRx4_ImageNet-pretrain.yml), taken by running their code: the
# number of keys, their total elements and the sha256 of the sorted "key:[shape]" lines, less
# the relative_position_index_SA/_OCA buffers rebuilt here.
OFFICIAL_X4 = {
    "hat": (862, 20_772_507, "fd7e6ca75184c1b1335f64fdc6cb4b21feeb173159399317873d915976d1ccf5"),
    "hat_l": (
        1708,
        40_846_575,
        "c704f90c1ac0cdd3af45e59ef6d0085aa26ed84c758a282512596fa4c55cbbc5",
    ),
}
OFFICIAL_X4_KEYS = {
    "layers.0.residual_group.blocks.0.attn.relative_position_bias_table": (961, 6),
    "layers.0.residual_group.overlap_attn.relative_position_bias_table": (1521, 6),
    "layers.0.residual_group.blocks.1.conv_block.cab.3.attention.1.weight": (6, 180, 1, 1),
    "layers.0.residual_group.blocks.0.conv_block.cab.0.weight": (60, 180, 3, 3),
    "layers.5.residual_group.overlap_attn.qkv.weight": (540, 180),
    "layers.5.conv.weight": (180, 180, 3, 3),
    "patch_embed.norm.weight": (180,),
    "upsample.2.weight": (256, 64, 3, 3),
    "conv_last.weight": (3, 64, 3, 3),
}


def tiny(scale: int, **overrides: object) -> HAT:
    return HAT(scale, **{**TINY, **overrides})  # type: ignore[arg-type]


@functools.cache
def real(model: str, scale: int) -> HAT:
    groups = GROUPS[model]
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return HAT(scale, depths=(6,) * groups, num_heads=(6,) * groups)


def official_buffers(window_size: int, overlap_size: int) -> dict[str, torch.Tensor]:
    """The index buffers the authors' files carry at the top level, by name and shape (import
    drops them, so their values do not matter)."""
    return {
        "relative_position_index_SA": relative_position_index(window_size),
        "relative_position_index_OCA": overlapping_relative_position_index(
            window_size, overlap_size
        ),
    }


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(13, 11), (37, 53), (3, 5), (1, 6)])
def test_any_input_size_gives_scaled_finite_output(scale: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = tiny(scale)
    assert_scaled_finite_output(net, torch.rand(1, 3, *size), scale)


def test_padding_goes_bottom_right_and_is_cropped_off() -> None:
    torch.manual_seed(0)
    net = tiny(3).eval()
    x = torch.rand(1, 3, 6, 9)
    with torch.no_grad():
        out, padded = net(x), net(pad_to_multiple(x, TINY_WINDOW))
    assert padded.shape == (1, 3, 24, 36)
    torch.testing.assert_close(out, padded[..., :18, :27], rtol=0, atol=1e-6)


def test_overlapping_index_gives_each_offset_its_own_table_entry() -> None:
    window, overlap = TINY_WINDOW, TINY_WINDOW + TINY_WINDOW // 2
    index = overlapping_relative_position_index(window, overlap)
    side = window + overlap - 1
    assert index.shape == (window**2, overlap**2)
    assert index.min() >= 0 and index.max() < side**2
    assert index.unique().numel() == side**2


def test_one_training_step_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    net = tiny(2)
    net(torch.rand(2, 3, 12, 12)).abs().mean().backward()
    assert not parameters_without_gradient(net)


def test_checkpointed_layers_give_the_same_gradients() -> None:
    torch.manual_seed(0)
    plain = tiny(2, drop_path_rate=0.0)
    checkpointed = tiny(2, drop_path_rate=0.0, checkpoint_layers=True)
    assert_checkpointing_keeps_gradients(plain, checkpointed, torch.rand(1, 3, 5, 6))


@pytest.mark.parametrize(
    "overrides",
    [{"overlap_ratio": 0.25}, {"squeeze_factor": 30}, {"num_heads": (5,)}, {"depths": (2, 2)}],
)
def test_unusable_settings_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        tiny(2, **overrides)


@pytest.mark.parametrize("model", list(GROUPS))
def test_x4_parameter_count_matches_paper(model: str) -> None:
    assert_near_published(parameter_count(real(model, 4)), PAPER_X4_PARAMETERS[model])


@pytest.mark.parametrize(("model", "scale"), list(EXACT_PARAMETERS))
def test_exact_parameter_count(model: str, scale: int) -> None:
    assert parameter_count(real(model, scale)) == EXACT_PARAMETERS[model, scale]


@pytest.mark.parametrize("model", list(OFFICIAL_X4))
def test_state_dict_matches_the_official_layout(model: str) -> None:
    state = real(model, 4).state_dict()
    assert layout_fingerprint(state, shape=list) == OFFICIAL_X4[model]
    for key, shape in OFFICIAL_X4_KEYS.items():
        assert tuple(state[key].shape) == shape, key


@pytest.mark.parametrize(
    ("container", "with_index_buffers"), [("params_ema", True), ("params", False)]
)
def test_a_file_in_the_official_layout_loads_strictly(
    container: str, with_index_buffers: bool, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    source = tiny(4).eval()
    state = dict(source.state_dict())
    if with_index_buffers:
        state |= official_buffers(TINY_WINDOW, TINY_WINDOW + TINY_WINDOW // 2)
    assert_official_file_loads_strictly(
        tmp_path / "HAT_SRx4_official.pth",
        {container: state},
        source,
        lambda: tiny(4).eval(),
        x=torch.rand(1, 3, 7, 9),
    )
