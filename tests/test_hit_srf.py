"""HiT-SRF: shapes on odd and sub-window inputs, parameter counts against the paper, the official
state-dict layout, the pooled position bias against its direct definition, and strict import of
a file in the authors' layout."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from src.archs.hit_srf import HiTSRF, SpatialChannelCorrelation
from tests.arch_checks import (
    assert_near_published,
    assert_official_file_loads_strictly,
    assert_scaled_finite_output,
    layout_fingerprint,
    parameter_count,
    parameters_without_gradient,
)

# The paper's parameter counts (847K, 855K, 866K; the README gives 866K at x4) and the exact
# counts of the authors' network (XiangZ-0/HiT-SR, basicsr/archs/hit_srf_arch.py @ 5c35e68)
# at the released configuration, which builds no buffers.
PAPER_PARAMETERS = {2: 847_000, 3: 855_000, 4: 866_000}
OFFICIAL_PARAMETERS = {2: 846_944, 3: 855_059, 4: 866_420}

# Fingerprint of the official x4 state dict: key count, elements, sha256 of the sorted
# "key:shape" lines (shape as a Python tuple), taken by running the authors' code.
OFFICIAL_X4_KEYS = 882
OFFICIAL_X4_SHA256 = "1adbaa504f35944e50d54ac33a9de0b2d11ef3aa261656811de3a799341fa9e7"
OFFICIAL_X4_SAMPLES = {
    "conv_first.weight": (60, 3, 3, 3),
    "patch_embed.norm.weight": (60,),
    "layers.0.residual_group.blocks.0.correlation.qv.conv.2.weight": (12, 12, 3, 3),
    "layers.0.residual_group.blocks.0.correlation.spatial_linear.weight": (1, 1),
    "layers.3.residual_group.blocks.5.correlation.spatial_linear.weight": (1, 64),
    "layers.1.residual_group.blocks.2.correlation.pos.pos3.2.weight": (6, 3),
    "layers.2.residual_group.blocks.4.mlp.dwconv.depthwise_conv.0.weight": (120, 1, 5, 5),
    "layers.3.conv.weight": (60, 60, 3, 3),
    "upsample.0.weight": (48, 60, 3, 3),
}


def tiny(scale: int) -> HiTSRF:
    """Windows 2 and 8 on a base of 4: both the ungrouped and the grouped (2 x 2) paths."""
    return HiTSRF(
        scale, embed_dim=48, depths=(2,), num_heads=(2,), base_win_size=4, hier_win_ratios=(0.5, 2)
    )


@functools.cache
def real(scale: int) -> HiTSRF:
    """The released configuration, built once per scale (on the CPU: faster than the meta
    device's first use)."""
    return HiTSRF(scale)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(13, 11), (37, 53), (3, 5), (1, 1)])
def test_output_is_input_times_scale_at_any_size(scale: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = tiny(scale)
    assert_scaled_finite_output(net, torch.rand(1, 3, *size), scale)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_parameter_count_matches_paper(scale: int) -> None:
    count = parameter_count(real(scale))
    assert count == OFFICIAL_PARAMETERS[scale]
    assert_near_published(count, PAPER_PARAMETERS[scale])


def test_state_dict_has_the_official_keys_and_shapes() -> None:
    net = real(4)
    official = (OFFICIAL_X4_KEYS, OFFICIAL_PARAMETERS[4], OFFICIAL_X4_SHA256)
    assert layout_fingerprint(net.state_dict()) == official
    shapes = {key: tuple(value.shape) for key, value in net.state_dict().items()}
    for key, shape in OFFICIAL_X4_SAMPLES.items():
        assert shapes[key] == shape, key


def test_windows_grow_through_each_group() -> None:
    assert real(2).window_sizes == [4, 8, 16, 32, 48, 64]


def test_pooled_position_bias_is_the_mean_over_each_key_group() -> None:
    """The box-filtered table equals the authors' formulation: the full token-to-token bias,
    averaged over the tokens of each key group."""
    torch.manual_seed(0)
    window, base, heads = 8, 4, 2
    scc = SpatialChannelCorrelation(48, window, base, heads)
    table = scc.pos(scc.relative_offsets)  # ((2w-1)^2, heads)
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    index = (rows[:, None] - rows[None, :] + window - 1) * (2 * window - 1) + (
        cols[:, None] - cols[None, :] + window - 1
    )
    full = table[index]  # (query, key, heads), keys row-major in the window
    group = window // base
    grouped = full.view(window**2, base, group, base, group, heads)
    expected = grouped.mean(dim=(2, 4)).reshape(window**2, base * base, heads).permute(2, 0, 1)
    torch.testing.assert_close(scc._position_bias(), expected, rtol=1e-5, atol=1e-6)


def test_a_file_in_the_authors_layout_loads_strictly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = tiny(2).eval()
    assert_official_file_loads_strictly(
        tmp_path / "HiT-SRF-2x.pth",
        {"params": source.state_dict()},  # BasicSR's save_network layout
        source,
        lambda: tiny(2).eval(),
        x=torch.rand(1, 3, 9, 7),
    )


def test_one_training_step_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    net = tiny(2).train()
    net(torch.rand(2, 3, 12, 12)).abs().mean().backward()
    dead = parameters_without_gradient(net)
    assert not dead, f"no gradient: {dead}"


def test_a_position_mlp_too_narrow_to_learn_is_refused() -> None:
    with pytest.raises(ValueError, match="embed_dim must be at least 48"):
        HiTSRF(2, embed_dim=32, num_heads=(2, 2, 2, 2))
