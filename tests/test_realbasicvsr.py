"""RealBasicVSR (issue 25, point 1): the cleaning loop's stopping rule as upstream's (strictly under
the threshold, in 0..255 units, over the whole batch, at most three passes), the cleaned frames
it hands to the training module, sequential cleaning, shapes, propagation across frames, frozen
SPyNet, input checks, parameter counts against the paper, the state-dict layout against the
authors' code and strict loading of a file in that layout, one training step.

The authors' forward pass itself is pinned by the parity fixture ``realbasicvsr``
(tests/fixtures/parity, tests/test_arch_parity.py): mmagic's code, its cleaning stopping after
the second of three possible passes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from src.archs.realbasicvsr import RealBasicVSR
from src.utils.choices import SEQUENCE
from tests.arch_checks import (
    assert_frames_reach,
    assert_near_published,
    assert_official_file_loads_strictly,
    layout_fingerprint,
    parameter_count,
    parameters_without_gradient,
)
from tests.parity_fixtures import FIXTURE_DIR, build_own_network, read_fixture, seed_network

# Counted by running mmagic's RealBasicVSRNet (commit 0a560bb) with its released configuration
# (64 features, 20 cleaning and 20 propagation blocks); the same for SR Lab's.
PARAMETERS = 6_294_834
SPYNET_PARAMETERS = 1_440_300
CLEANING_PARAMETERS = 1_480_643
# The paper (Chan et al., CVPR 2022, its comparison of real-world VSR methods): 6.3M.
PAPER_PARAMETERS = 6_300_000
# layout_fingerprint of that network's state dict (buffers included: SPyNet's mean and std),
# taken from the authors' code in the scratch folder.
AUTHORS_LAYOUT = (
    320,
    6_294_840,
    "dea47ee2ff6b0964240930b237633a0e242119f5721df310b58f7250527ead8f",
)
# Mean |residual| x 255 of the cleaning passes the authors' network ran with the parity
# fixture's weights and input (threshold 70: it stopped after the second).
FIXTURE_RESIDUALS = (83.547, 58.372)


def small_net(**options: object) -> RealBasicVSR:
    torch.manual_seed(0)
    return RealBasicVSR(num_features=8, num_propagation_blocks=1, num_cleaning_blocks=1, **options)


class ScriptedResiduals(nn.Module):
    """Stands in for the cleaning module: the k-th call returns ``values[k]`` everywhere (or, for
    a pair, ``values[k][i]`` for the i-th image of the batch)."""

    def __init__(self, values: list[float | tuple[float, ...]]):
        super().__init__()
        self.values = values
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = self.values[self.calls]
        self.calls += 1
        if isinstance(value, tuple):
            per_image = torch.tensor(value).repeat_interleave(x.shape[0] // len(value))
            return per_image.view(-1, 1, 1, 1).expand_as(x).clone()
        return torch.full_like(x, value)


def passes(net: RealBasicVSR, values: list[float | tuple[float, ...]], clips: int = 1) -> int:
    """Cleaning passes ``net.clean`` runs on a clip batch when the residuals are ``values``."""
    scripted = ScriptedResiduals(values)
    net.image_cleaning = scripted
    net.clean(torch.rand(clips, 2, 3, 4, 5))
    return scripted.calls


# -- the cleaning loop -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.01, 0.5, 0.5], 1),  # 2.55 in 0..255 units: under 5, stop
        ([0.5, 0.01, 0.5], 2),
        ([0.5, 0.5, 0.5], 3),  # never under: upstream's cap of three
        ([-0.5, -0.01, 0.5], 2),  # the magnitude counts
    ],
)
def test_cleaning_stops_once_the_mean_residual_is_under_the_threshold(
    values: list[float | tuple[float, ...]], expected: int
) -> None:
    assert passes(small_net(dynamic_refine_thres=5.0), values) == expected


def test_a_residual_equal_to_the_threshold_cleans_again() -> None:
    """Upstream stops on ``mean < dynamic_refine_thres / 255``: 63.75 / 255 is 0.25 exactly."""
    assert passes(small_net(dynamic_refine_thres=63.75), [0.25, 0.25, 0.25]) == 3
    assert passes(small_net(dynamic_refine_thres=63.76), [0.25, 0.25, 0.25]) == 1


def test_the_threshold_is_in_0_to_255_units() -> None:
    """The training configs' 255 stops after one pass whenever residuals stay under 1."""
    assert small_net(dynamic_refine_thres=255.0).cleaning_threshold == 1.0
    assert passes(small_net(dynamic_refine_thres=255.0), [0.99, 0.99, 0.99]) == 1
    assert passes(small_net(dynamic_refine_thres=5.0), [0.019, 0.99]) == 1
    assert passes(small_net(dynamic_refine_thres=5.0), [0.02, 0.019]) == 2


def test_the_mean_is_over_the_whole_batch() -> None:
    """Two clips, one whose residuals would stop it and one whose would not: the batch's mean
    decides for both, as upstream (a clip's result can depend on its batch companions)."""
    assert passes(small_net(), [(0.0, 0.5), (0.0, 0.001)], clips=2) == 2
    assert passes(small_net(), [(0.0, 0.03), (0.0, 0.5)], clips=2) == 1


def test_the_fixture_network_cleans_twice_as_the_authors_did() -> None:
    """With the parity fixture's weights and input, the residuals of each pass and the number
    of passes are the authors' (measured in scratch with their code)."""
    fixture = read_fixture(FIXTURE_DIR / "realbasicvsr.npz")
    net = build_own_network(fixture.meta)
    assert isinstance(net, RealBasicVSR)
    seed_network(net, fixture.name_map, int(fixture.meta["seed"]))
    residuals: list[float] = []
    net.image_cleaning.register_forward_hook(
        lambda _m, _args, out: residuals.append(float(out.abs().mean()) * 255)
    )
    with torch.no_grad():
        net(fixture.input.clone())
    assert residuals == pytest.approx(FIXTURE_RESIDUALS, abs=1e-3)


def test_forward_with_cleaned_returns_the_frames_basicvsr_saw() -> None:
    net = small_net().eval()
    clip = torch.rand(2, 3, 3, 6, 7)
    original = clip.clone()
    seen: list[torch.Tensor] = []
    net.basicvsr.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    with torch.no_grad():
        sr, cleaned = net.forward_with_cleaned(clip)
        assert torch.equal(net(clip), sr)
    assert cleaned.shape == clip.shape and sr.shape == (2, 3, 3, 24, 28)
    assert torch.equal(seen[0], cleaned)
    assert not torch.allclose(cleaned, clip)  # the cleaning changed it ...
    assert torch.equal(clip, original)  # ... without touching the caller's tensor


def test_sequential_cleaning_gives_the_same_clip() -> None:
    batched, sequential = small_net().eval(), small_net(sequential_cleaning=True).eval()
    clip = torch.rand(2, 3, 3, 6, 7)
    with torch.no_grad():
        expected, cleaned = batched.forward_with_cleaned(clip)
        actual, cleaned_sequentially = sequential.forward_with_cleaned(clip.clone())
    torch.testing.assert_close(cleaned_sequentially, cleaned, rtol=0, atol=1e-6)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


# -- the network -----------------------------------------------------------------------------


@pytest.mark.parametrize(("frames", "size"), [(3, (20, 28)), (1, (5, 7)), (2, (33, 17))])
def test_a_clip_gives_four_times_larger_finite_frames(frames: int, size: tuple[int, int]) -> None:
    net = small_net().eval()
    clip = torch.rand(2, frames, 3, *size)
    with torch.no_grad():
        out = net(clip)
    assert out.shape == (2, frames, 3, 4 * size[0], 4 * size[1])
    assert torch.isfinite(out).all()


def test_each_frame_sees_its_neighbours() -> None:
    """Changing the last frame changes the first frame's output (backward propagation) and
    changing the first changes the last's (forward propagation)."""
    assert_frames_reach(small_net(), torch.rand(1, 3, 3, 8, 6), [(2, 0), (0, 2)])


def test_traits() -> None:
    traits = RealBasicVSR.traits
    assert traits.scales == (4,) and traits.channels == (3,) and traits.frames == SEQUENCE
    assert not traits.tile_exact and not traits.bf16_safe


def test_settings_and_input_are_checked() -> None:
    with pytest.raises(ValueError, match="x4 only"):
        RealBasicVSR(scale=2)
    with pytest.raises(ValueError, match=r"\(N, T, 3, H, W\)"):
        small_net()(torch.rand(1, 3, 12, 10))


def test_spynet_is_frozen_as_upstream_and_the_cleaning_module_on_request() -> None:
    net = small_net()
    assert not any(p.requires_grad for p in net.basicvsr.spynet.parameters())
    assert all(p.requires_grad for p in net.image_cleaning.parameters())
    assert all(p.requires_grad for p in small_net(fix_spynet=False).basicvsr.spynet.parameters())
    frozen = small_net(fix_cleaning=True)
    assert not any(p.requires_grad for p in frozen.image_cleaning.parameters())


def test_one_training_step_reaches_every_trainable_parameter_without_nan() -> None:
    net = small_net().train()
    optimizer = torch.optim.Adam((p for p in net.parameters() if p.requires_grad), lr=1e-4)
    clip, target = torch.rand(2, 2, 3, 6, 8), torch.rand(2, 2, 3, 24, 32)
    sr, cleaned = net.forward_with_cleaned(clip)
    loss = (sr - target).abs().mean() + (cleaned - clip).abs().mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert sorted(parameters_without_gradient(net)) == sorted(
        f"basicvsr.spynet.{name}" for name, _ in net.basicvsr.spynet.named_parameters()
    )
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_parameter_count_matches_the_paper() -> None:
    with torch.device("meta"):
        net = RealBasicVSR()
    assert parameter_count(net) == PARAMETERS
    assert parameter_count(net.basicvsr.spynet) == SPYNET_PARAMETERS
    assert parameter_count(net.image_cleaning) == CLEANING_PARAMETERS
    assert_near_published(parameter_count(net), PAPER_PARAMETERS, tolerance=0.001)


def test_state_dict_matches_the_authors_layout() -> None:
    with torch.device("meta"):
        net = RealBasicVSR()
    assert layout_fingerprint(net.state_dict()) == AUTHORS_LAYOUT


def test_a_file_in_the_authors_layout_loads_strictly(tmp_path: Path) -> None:
    """mmediting's generator keys, their ``generator.`` prefix removed."""
    source = small_net().eval()
    clip = torch.rand(1, 3, 3, 6, 7)
    assert_official_file_loads_strictly(
        tmp_path / "realbasicvsr.pth", dict(source.state_dict()), source, small_net, clip
    )
