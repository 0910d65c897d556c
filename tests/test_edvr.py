"""EDVR (issue 25, point 1): a window of frames in, its centre frame out; the PCD alignment's
deformable convolutions running on CPU; input checks; parameter counts against the paper; the
state-dict layout against the authors' code and strict loading of a file in BasicSR's form; one
training step.

The authors' forward pass itself is pinned by the parity fixtures ``edvr`` and ``edvr_notsa``
(tests/fixtures/parity, tests/test_arch_parity.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.archs.deform_conv import ModulatedDeformConv2d
from src.archs.edvr import EDVR, EDVRFeatureExtractor
from tests.arch_checks import (
    assert_near_published,
    assert_official_file_loads_strictly,
    assert_offsets_gate_then_train,
    layout_fingerprint,
    parameter_count,
    with_random_offsets,
)

# Counted by running BasicSR's EDVR (commit 8d56e3a) with options/train/EDVR/
# train_EDVR_M_x4_SR_REDS.yml's and train_EDVR_L_x4_SR_REDS.yml's settings; the same for SR Lab's.
PARAMETERS = {"M": 3_300_131, "L": 20_633_827}
# Issue 25 and BasicVSR's paper (Chan et al., CVPR 2021, its comparison table): EDVR-M 3.3M,
# EDVR 20.6M.
PAPER_PARAMETERS = {"M": 3_300_000, "L": 20_600_000}
VARIANTS = {
    "M": {},
    "L": {"num_features": 128, "num_reconstruct_blocks": 40},
    "M_woTSA": {"with_tsa": False},
}
# layout_fingerprint (keys, elements, sha256 of the sorted "key:shape" lines) of the authors'
# EDVR state dicts, BasicSR 8d56e3a, for the variants above (EDVR-M without TSA:
# train_EDVR_M_x4_SR_REDS_woTSA.yml).
AUTHORS_LAYOUT = {
    "M": (144, 3_300_131, "f42782e2c4da80f90167bd0c04eb8d80c48fd92876c8e923c68b02c7b4d6939e"),
    "L": (264, 20_633_827, "09ad911038d2d7f7f3f54b52e8f793c01e40fa4957cb76e73bf5bb4f58c7d211"),
    "M_woTSA": (120, 2_996_259, "f843851adc8489be7e45e0f41c04ecef5f4c44dbe53d1bfd705a22c1e46361bc"),
}


def small_net(**kwargs: object) -> EDVR:
    torch.manual_seed(0)
    settings: dict = {"num_features": 8, "num_extract_blocks": 1, "num_reconstruct_blocks": 1}
    return EDVR(**{**settings, **kwargs})


@pytest.mark.parametrize(
    ("frames", "size", "batch"), [(5, (8, 12), 2), (3, (4, 4), 1), (7, (16, 8), 1)]
)
def test_a_window_gives_its_centre_frame_four_times_larger(
    frames: int, size: tuple[int, int], batch: int
) -> None:
    net = small_net(num_frames=frames).eval()
    with torch.no_grad():
        out = net(torch.rand(batch, frames, 3, *size))
    assert out.shape == (batch, 3, 4 * size[0], 4 * size[1])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("with_tsa", [True, False])
def test_every_frame_of_the_window_reaches_the_output(with_tsa: bool) -> None:
    net = small_net(with_tsa=with_tsa).eval()
    with_random_offsets(net)
    window = torch.rand(1, 5, 3, 8, 8)
    with torch.no_grad():
        out = net(window)
        for frame in range(5):
            other = window.clone()
            other[:, frame] = torch.rand(1, 3, 8, 8)
            assert not torch.allclose(net(other), out), f"frame {frame} is ignored"


@pytest.mark.parametrize("center", [None, 0, 3])
def test_the_output_adds_to_the_centre_frame(center: int | None) -> None:
    """With the last convolution zeroed, the output is the reference frame, upsampled."""
    net = small_net(center_frame=center).eval()
    index = 2 if center is None else center
    assert net.center_frame == index and net.fusion.center_frame == index
    with torch.no_grad():
        net.conv_last.weight.zero_()
        net.conv_last.bias.zero_()
        window = torch.rand(1, 5, 3, 4, 8)
        expected = torch.nn.functional.interpolate(
            window[:, index], scale_factor=4, mode="bilinear", align_corners=False
        )
        torch.testing.assert_close(net(window), expected)


def test_the_deformable_alignment_runs_on_cpu_for_every_frame() -> None:
    """Three pyramid levels and the cascade: four deformable convolutions per frame, the centre
    frame included, on CPU."""
    net = small_net().eval()
    calls: list[torch.device] = []
    for module in net.modules():
        if isinstance(module, ModulatedDeformConv2d):
            module.register_forward_hook(lambda _m, args, _out: calls.append(args[0].device))
    with torch.no_grad():
        net(torch.rand(1, 5, 3, 8, 8))
    assert calls == [torch.device("cpu")] * 4 * 5


def test_the_feature_extractor_is_edvr_up_to_its_fusion() -> None:
    """IconVSR's keyframe branch: EDVR's own parameters, and the features EDVR reconstructs from."""
    net = small_net().eval()
    with_random_offsets(net)
    extractor = EDVRFeatureExtractor(num_frames=5, num_features=8, num_extract_blocks=1)
    own = net.state_dict()
    extractor.load_state_dict({key: own[key] for key in extractor.state_dict()}, strict=True)
    fused: list[torch.Tensor] = []
    net.reconstruction.register_forward_hook(lambda _m, args, _out: fused.append(args[0]))
    window = torch.rand(1, 5, 3, 8, 8)
    with torch.no_grad():
        net(window)
        features = extractor(window)
    assert features.shape == (1, 8, 8, 8)
    assert torch.equal(features, fused[0])


def test_traits_declare_the_window_network() -> None:
    assert EDVR.traits.scales == (4,)
    assert EDVR.traits.size_multiple == 4 and small_net().size_multiple == 4
    assert EDVR.traits.channels == (3,)
    assert not EDVR.traits.tile_exact and not EDVR.traits.bf16_safe


def test_scale_and_input_are_checked() -> None:
    with pytest.raises(ValueError, match="x4 only"):
        EDVR(scale=2)
    with pytest.raises(ValueError, match="center_frame 5"):
        EDVR(num_frames=5, center_frame=5)
    net = small_net().eval()
    with pytest.raises(ValueError, match=r"\(N, 5, 3, H, W\)"):
        net(torch.rand(1, 3, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(N, 5, 3, H, W\)"):
        net(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.rand(1, 5, 3, 8, 10))


def test_one_training_step_reaches_every_parameter_without_nan() -> None:
    """The offsets gate the layers feeding them at first, then every parameter learns."""
    window, target = torch.rand(1, 3, 3, 4, 8), torch.rand(1, 3, 16, 32)
    assert_offsets_gate_then_train(small_net(num_frames=3), window, target)


@pytest.mark.parametrize("variant", ["M", "L"])
def test_parameter_count_matches_the_paper(variant: str) -> None:
    with torch.device("meta"):
        net = EDVR(**VARIANTS[variant])
    assert parameter_count(net) == PARAMETERS[variant]
    assert_near_published(parameter_count(net), PAPER_PARAMETERS[variant], tolerance=0.002)


@pytest.mark.parametrize("variant", sorted(AUTHORS_LAYOUT))
def test_state_dict_matches_the_authors_layout(variant: str) -> None:
    with torch.device("meta"):
        net = EDVR(**VARIANTS[variant])
    assert layout_fingerprint(net.state_dict()) == AUTHORS_LAYOUT[variant]


def test_a_file_in_basicsr_form_loads_strictly(tmp_path: Path) -> None:
    """BasicSR saves ``{"params": state_dict}``."""
    source = small_net().eval()
    with_random_offsets(source)
    assert_official_file_loads_strictly(
        tmp_path / "EDVR_M_x4_SR_REDS_official.pth",
        {"params": source.state_dict()},
        source,
        small_net,
        torch.rand(1, 5, 3, 8, 8),
    )
