"""BasicVSR++ (issue 25, point 1): the flow-guided deformable alignment against a flow warp
followed by a plain convolution, its offsets at initialisation, shapes at x4 and x1, the alignment
running on CPU at every frame of every branch, second-order propagation, the mirror-extended
shortcut, parameter counts against the paper, the state-dict layout pinned against the authors'
code, strict loading of a file in BasicSR's layout, and one training step.

The authors' forward pass itself is pinned by the parity fixtures (``basicvsrpp``,
``basicvsrpp_x1`` in tests/fixtures/parity, tests/test_arch_parity.py): BasicSR's code, the
deformable convolution operator standing in for torchvision's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import src.archs.basicvsrpp as basicvsrpp
from src.archs.basicvsrpp import BasicVSRPlusPlus, SecondOrderDeformableAlignment
from src.archs.flow import flow_warp
from tests.arch_checks import (
    assert_frames_reach,
    assert_near_published,
    assert_official_file_loads_strictly,
    layout_fingerprint,
    parameter_count,
    parameters_without_gradient,
)

# Measured exactly; the paper (Chan et al., CVPR 2022, Table 1) gives 7.3M, issue 25 7.32M.
PARAMETERS = 7_322_927
PARAMETERS_X1 = 7_396_783
SPYNET_PARAMETERS = 1_440_300
PAPER_PARAMETERS = 7_320_000
# (keys, elements, sha256 of the sorted "key:shape" lines) of BasicSR 8d56e3a's
# BasicVSRPlusPlus(mid_channels=64, num_blocks=7) state dict, buffers included, taken from the
# authors' code in the scratch folder: is_low_res_input=True (x4) and False (x1).
AUTHORS_LAYOUT = {
    4: (274, 7_322_933, "ce8277fe1bab0e32e2026d0b6f7a2c0b8d811731520695881b196552f933f12e"),
    1: (278, 7_396_789, "a850064ce3e28d99f243b4a567cd356998f822d2d7cb60344de0546bddf22056"),
}


def small_net(scale: int = 4) -> BasicVSRPlusPlus:
    torch.manual_seed(0)
    return BasicVSRPlusPlus(scale=scale, num_features=8, num_blocks=1)


def with_offset_residuals(net: BasicVSRPlusPlus) -> BasicVSRPlusPlus:
    """The last offset convolutions start at zero; give them weights so that the residual
    offsets and masks vary, as after training."""
    torch.manual_seed(1)
    with torch.no_grad():
        for align in net.deform_align.values():
            last = align.conv_offset[-1]
            last.weight.normal_(0.0, 0.05)
            last.bias.normal_(0.0, 0.1)
    return net


# -- the second-order flow-guided deformable alignment ---------------------------------------


def alignment(channels: int = 8) -> SecondOrderDeformableAlignment:
    torch.manual_seed(0)
    return SecondOrderDeformableAlignment(2 * channels, channels, 3, padding=1)


def test_offsets_start_as_the_flows_flipped_to_dy_dx() -> None:
    """At initialisation the residual is zero: each tap of the first half of the 16 offset
    groups moves by the first flow, of the second half by the second, (dy, dx) per tap; the
    mask is 1/2."""
    align = alignment()
    condition = torch.rand(2, 24, 5, 6)
    flow_1, flow_2 = torch.randn(2, 2, 5, 6), torch.randn(2, 2, 5, 6)
    offset, mask = align.flow_guided_offset_and_mask(condition, flow_1, flow_2)
    assert offset.shape == (2, 2 * 16 * 9, 5, 6) and mask.shape == (2, 16 * 9, 5, 6)
    pairs = offset.view(2, 16 * 9, 2, 5, 6)  # (dy, dx) per tap, groups outermost
    half = 8 * 9
    assert torch.equal(pairs[:, :half, 0], flow_1[:, 1:].expand(-1, half, -1, -1))
    assert torch.equal(pairs[:, :half, 1], flow_1[:, :1].expand(-1, half, -1, -1))
    assert torch.equal(pairs[:, half:, 0], flow_2[:, 1:].expand(-1, half, -1, -1))
    assert torch.equal(pairs[:, half:, 1], flow_2[:, :1].expand(-1, half, -1, -1))
    assert torch.equal(mask, torch.full_like(mask, 0.5))


def test_the_learned_residual_is_bounded_by_max_residue_magnitude() -> None:
    align = alignment()
    align.max_residue_magnitude = 3.0
    with torch.no_grad():
        align.conv_offset[-1].bias.fill_(100.0)  # saturates tanh
    flow = torch.zeros(1, 2, 4, 4)
    offset, mask = align.flow_guided_offset_and_mask(torch.rand(1, 24, 4, 4), flow, flow)
    torch.testing.assert_close(offset, torch.full_like(offset, 3.0))
    assert torch.equal(mask, torch.ones_like(mask))


@pytest.mark.parametrize(
    ("flow_1", "flow_2"), [((1.0, -2.0), (0.0, 3.0)), ((0.5, -1.25), (-2.75, 0.25))]
)
def test_alignment_is_a_flow_warp_then_a_convolution(
    flow_1: tuple[float, float], flow_2: tuple[float, float]
) -> None:
    """With no learned residual and a uniform flow, sampling each tap at the flow is the same
    as warping by it first: the aligned features equal a 3x3 convolution of both earlier
    features warped by their flows (first half of the channels by ``flow_1``, second by
    ``flow_2``), the mask's 1/2 applied before the bias. Compared away from the border, where
    the convolution's zero padding and the taps' own sampling differ."""
    align = alignment()
    previous, before = torch.rand(1, 8, 12, 13), torch.rand(1, 8, 12, 13)
    f1 = torch.tensor(flow_1).view(1, 2, 1, 1).expand(1, 2, 12, 13)
    f2 = torch.tensor(flow_2).view(1, 2, 1, 1).expand(1, 2, 12, 13)
    with torch.no_grad():
        out = align(torch.cat((previous, before), 1), torch.rand(1, 24, 12, 13), f1, f2)
        warped = torch.cat((flow_warp(previous, f1), flow_warp(before, f2)), dim=1)
        assert align.bias is not None
        expected = 0.5 * F.conv2d(warped, align.weight, padding=1) + align.bias.view(1, -1, 1, 1)
    margin = 1 + 3  # the kernel's reach plus the largest flow
    inner = (..., slice(margin, -margin), slice(margin, -margin))
    torch.testing.assert_close(out[inner], expected[inner], rtol=0, atol=1e-5)


def test_alignment_keeps_upstream_names_and_initialisation() -> None:
    align = alignment()
    names = sorted(name for name, _ in align.named_parameters())
    assert names == sorted(
        ["weight", "bias"]
        + [f"conv_offset.{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")]
    )
    assert align.conv_offset[0].in_channels == 3 * 8 + 4
    assert align.conv_offset[-1].out_channels == 27 * 16
    assert not align.conv_offset[-1].weight.any() and not align.conv_offset[-1].bias.any()
    assert align.bias is not None and not align.bias.any()
    assert align.weight.abs().max() <= 1.0 / (16 * 9) ** 0.5
    align.reset_parameters()
    assert not align.conv_offset[-1].weight.any() and align.conv_offset[0].weight.any()


# -- the network -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frames", "size"), [(4, (12, 10)), (1, (5, 7)), (2, (9, 17)), (3, (7, 6))]
)
def test_x4_gives_four_times_larger_finite_frames(frames: int, size: tuple[int, int]) -> None:
    net = small_net().eval()
    with torch.no_grad():
        out = net(torch.rand(2, frames, 3, *size))
    assert out.shape == (2, frames, 3, 4 * size[0], 4 * size[1])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("frames", "size"), [(3, (16, 12)), (1, (8, 8))])
def test_x1_gives_frames_of_the_same_size(frames: int, size: tuple[int, int]) -> None:
    net = small_net(scale=1).eval()
    assert net.size_multiple == 4 and small_net().size_multiple == 1
    with torch.no_grad():
        out = net(torch.rand(1, frames, 3, *size))
    assert out.shape == (1, frames, 3, *size) and torch.isfinite(out).all()


def test_the_alignment_runs_on_cpu_at_every_frame_of_every_branch() -> None:
    """Upstream skips the alignment (with a warning) where CUDA is absent; here each branch
    aligns at every frame after its first, with second-order flows from its third frame on."""
    net = small_net().eval()
    calls: dict[str, list[bool]] = {branch: [] for branch in net.deform_align}
    for branch, align in net.deform_align.items():
        align.register_forward_hook(
            lambda _m, args, _out, b=branch: calls[b].append(bool(args[3].any()))
        )
    with torch.no_grad():
        net(torch.rand(2, 4, 3, 12, 10))
    # Clips of 2: one flow_1-only step, then two second-order steps, per branch.
    assert calls == {branch: [False, True, True] for branch in basicvsrpp.BRANCHES}


def test_each_frame_sees_frames_two_steps_away_both_ways() -> None:
    net = with_offset_residuals(small_net())
    assert_frames_reach(net, torch.rand(1, 3, 3, 12, 10), [(2, 0), (0, 2)])


def test_a_mirror_extended_clip_reuses_its_backward_flows() -> None:
    """Frame i equal to frame T - 1 - i: SPyNet runs one way only, with the same output as
    running both ways; the decision is made per clip (BasicSR's flag stays set once seen)."""
    net = with_offset_residuals(small_net()).eval()
    half = torch.rand(1, 2, 3, 12, 10)
    mirrored = torch.cat((half, half.flip(1)), dim=1)
    batches: list[int] = []
    net.spynet.register_forward_hook(lambda _m, args, _out: batches.append(args[0].shape[0]))
    with torch.no_grad():
        out = net(mirrored)
        assert batches == [3]
        plain = torch.rand(1, 4, 3, 12, 10)
        net(plain)
        assert batches == [3, 3, 3]
        original = basicvsrpp.is_mirror_extended
        basicvsrpp.is_mirror_extended = lambda _x: False
        try:
            both_ways = net(mirrored)
        finally:
            basicvsrpp.is_mirror_extended = original
    torch.testing.assert_close(out, both_ways, rtol=0, atol=1e-5)


def test_scale_width_and_input_are_checked() -> None:
    with pytest.raises(ValueError, match="scale=4"):
        BasicVSRPlusPlus(scale=2)
    with pytest.raises(ValueError, match="multiple of 8"):
        BasicVSRPlusPlus(num_features=12)
    with pytest.raises(ValueError, match=r"\(N, T, 3, H, W\)"):
        small_net()(torch.rand(1, 3, 12, 10))
    with pytest.raises(ValueError, match="multiples of 4"):
        small_net(scale=1)(torch.rand(1, 2, 3, 12, 10))


def test_one_training_step_reaches_every_parameter_without_nan() -> None:
    """The offset network's first layers get no gradient while its last layer is zero, as
    upstream starts: after one Adam step every parameter gets one."""
    net = small_net().train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    clip, target = torch.rand(1, 3, 3, 8, 12), torch.rand(1, 3, 3, 32, 48)
    for step in range(2):
        optimizer.zero_grad()
        loss = (net(clip) - target).abs().mean()
        loss.backward()
        assert torch.isfinite(loss)
        if step == 0:
            assert all(
                name.split(".")[-2] in {"0", "2", "4"} for name in parameters_without_gradient(net)
            ), parameters_without_gradient(net)
        optimizer.step()
    assert not parameters_without_gradient(net)
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_parameter_count_matches_the_paper() -> None:
    with torch.device("meta"):
        net = BasicVSRPlusPlus()
        restoration = BasicVSRPlusPlus(scale=1)
    assert parameter_count(net) == PARAMETERS
    assert parameter_count(net.spynet) == SPYNET_PARAMETERS
    assert parameter_count(restoration) == PARAMETERS_X1
    assert_near_published(parameter_count(net), PAPER_PARAMETERS, tolerance=0.001)


@pytest.mark.parametrize("scale", [4, 1])
def test_state_dict_matches_the_authors_layout(scale: int) -> None:
    with torch.device("meta"):
        net = BasicVSRPlusPlus(scale=scale)
    assert layout_fingerprint(net.state_dict()) == AUTHORS_LAYOUT[scale]


def test_a_file_in_basicsr_layout_loads_strictly(tmp_path: Path) -> None:
    """BasicSR saves ``{"params": state_dict}`` (its inference script loads ``["params"]``)."""
    source = with_offset_residuals(small_net()).eval()
    assert_official_file_loads_strictly(
        tmp_path / "BasicVSRPP_small.pth",
        {"params": source.state_dict()},
        source,
        lambda: BasicVSRPlusPlus(num_features=8, num_blocks=1).eval(),
        torch.rand(1, 3, 3, 8, 12),
    )
