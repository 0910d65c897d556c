"""Omni-SR: shapes on odd and tiny inputs, parameter counts against the paper, the official
state-dict layout, and strict loading of a file saved in the authors' layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.archs.omnisr import OmniSR
from src.ops.inference import input_channels
from tests.arch_checks import (
    assert_near_published,
    assert_official_file_loads_strictly,
    assert_scaled_finite_output,
    layout_fingerprint,
    parameter_count,
)

# Parameters of the official network (Francis0625/Omni-SR, components/OmniSR.py at commit
# 1b11cda8, train_yamls/train_OmniSR_X*_DF2K.yaml), counted by running it.
OFFICIAL_PARAMETERS = {2: 784_604, 3: 793_259, 4: 805_376}
# The paper's Table (result.tex in the same repository): 772K, 780K, 792K. It leaves out the
# relative position tables (5 blocks x 2 x 225 x 4 heads), the channel LayerNorms (5 x 6 x 128)
# and the attention temperatures (5 x 2 x 4): the parameters a hook-based counter such as thop
# does not see.
PAPER_PARAMETERS = {2: 772_000, 3: 780_000, 4: 792_000}
UNCOUNTED_BY_PAPER = 5 * 2 * 225 * 4 + 5 * 6 * 128 + 5 * 2 * 4

# The official x2 state dict ("key:shape" lines, sorted, joined by newlines), from running the
# authors' code; rel_pos_indices is a non-persistent buffer there, so not part of it.
OFFICIAL_X2_KEYS = 316
OFFICIAL_X2_SHA256 = "bc61d8f4447554cdeba33c40d506d7efc97cd61f5c5a4f91d8167135e1fd6eb7"
OFFICIAL_X2_SAMPLE = {
    "input.weight": (64, 3, 3, 3),
    "up.0.weight": (12, 64, 3, 3),
    "residual_layer.4.esa.conv2.weight": (16, 16, 3, 3),
    "residual_layer.0.residual_layer.0.layer.0.fn.4.gate.1.weight": (16, 64),
    "residual_layer.0.residual_layer.0.layer.2.fn.rel_pos_bias.weight": (225, 4),
    "residual_layer.0.residual_layer.0.layer.8.fn.to_out.0.weight": (64, 64),
    "residual_layer.2.residual_layer.0.layer.11.fn.temperature": (4, 1, 1),
    "residual_layer.3.residual_layer.0.layer.12.fn.dwconv.weight": (128, 1, 3, 3),
    "residual_layer.1.residual_layer.1.weight": (64, 64, 1, 1),
}


def tiny(scale: int, window_size: int = 4) -> OmniSR:
    return OmniSR(scale, num_feat=8, res_num=1, block_num=1, window_size=window_size)


def real(scale: int) -> OmniSR:
    with torch.device("meta"):  # shapes only
        return OmniSR(scale)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(13, 11), (37, 53)])
def test_odd_sized_input_gives_scaled_finite_output(scale: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    assert_scaled_finite_output(tiny(scale), torch.rand(1, 3, *size), scale)


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (3, 20)])
def test_inputs_under_one_window_work(size: tuple[int, int]) -> None:
    """Padded to the window of 8; the official network fails under 9 px (its ESA pooling)."""
    assert_scaled_finite_output(tiny(2, window_size=8), torch.rand(2, 3, *size), 2)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_parameter_count_matches_official_and_paper(scale: int) -> None:
    count, paper = parameter_count(real(scale)), PAPER_PARAMETERS[scale]
    assert count == OFFICIAL_PARAMETERS[scale]
    assert_near_published(count, paper)
    assert round((count - UNCOUNTED_BY_PAPER) / 1000) * 1000 == paper


def test_state_dict_matches_the_official_layout() -> None:
    state = real(2).state_dict()
    official = (OFFICIAL_X2_KEYS, OFFICIAL_PARAMETERS[2], OFFICIAL_X2_SHA256)
    assert layout_fingerprint(state) == official
    for key, shape in OFFICIAL_X2_SAMPLE.items():
        assert tuple(state[key].shape) == shape, key


@pytest.mark.parametrize("with_buffers", [False, True], ids=["authors", "with_rel_pos_indices"])
def test_a_file_in_the_authors_layout_loads_strictly(tmp_path: Path, with_buffers: bool) -> None:
    """The authors save the bare state dict; a copy that kept the index buffers loads too."""
    torch.manual_seed(0)
    source = tiny(3)
    state = dict(source.state_dict())
    if with_buffers:
        for name, buffer in source.named_buffers():
            state[name] = buffer
        assert any(key.endswith("rel_pos_indices") for key in state)
    assert_official_file_loads_strictly(
        tmp_path / "epoch994_OmniSR.pth", state, source, lambda: tiny(3)
    )


def test_without_position_bias_has_no_tables() -> None:
    net = OmniSR(2, num_feat=8, res_num=1, window_size=4, pe=False)
    assert not any("rel_pos" in key for key in net.state_dict())
    with torch.no_grad():
        assert net(torch.rand(1, 3, 9, 6)).shape == (1, 3, 18, 12)


def test_first_convolution_is_the_input_one() -> None:
    """SR Lab's export and tiling read the input channels off the first convolution."""
    assert input_channels(tiny(2)) == 3
