"""IconVSR (issue 25, point 1): shapes on odd and tiny clips (reflect padding, cropped back), the
keyframes and their temporally padded windows as upstream chooses them, the alignments (SPyNet
both ways, EDVR's deformable PCD for keyframes) running on CPU, information refill and coupled
propagation reaching the output, input checks, parameter counts against the paper, the state-dict
layout against the authors' code and strict loading of files in BasicSR's form, one training step.

The authors' forward pass itself is pinned by the parity fixtures ``iconvsr`` and
``iconvsr_vimeo`` (tests/fixtures/parity, tests/test_arch_parity.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.archs.deform_conv import ModulatedDeformConv2d
from src.archs.edvr import EDVRFeatureExtractor
from src.archs.iconvsr import IconVSR
from tests.arch_checks import (
    assert_frames_reach,
    assert_near_published,
    assert_official_file_loads_strictly,
    assert_offsets_gate_then_train,
    layout_fingerprint,
    parameter_count,
    with_random_offsets,
)

# Counted by running BasicSR's IconVSR (commit 8d56e3a) with its configs' settings (64 features,
# 30 blocks; temporal padding 2 for REDS, 3 for Vimeo-90K); the same for SR Lab's.
PARAMETERS = {2: 8_694_991, 3: 8_711_375}
EDVR_PARAMETERS = {2: 2_227_488, 3: 2_243_872}
SPYNET_PARAMETERS = 1_440_300
# Issue 25: 8.69M; BasicVSR's paper (Chan et al., CVPR 2021, its comparison table): 8.7M.
PAPER_PARAMETERS = 8_690_000
# layout_fingerprint of the authors' IconVSR state dicts (BasicSR 8d56e3a, buffers included:
# SPyNet's mean and std), by temporal padding.
AUTHORS_LAYOUT = {
    2: (414, 8_694_997, "6d178c252d1e3b38e371eb71b9b7163a300f03dbf73171c5fcbfc5484990cd23"),
    3: (414, 8_711_381, "112ff1eec9c4d1b75abd104537ed90ba2d1c7127758275bbb4d79993fc5fcf32"),
}


def small_net(**kwargs: object) -> IconVSR:
    torch.manual_seed(0)
    settings: dict = {"num_features": 8, "num_blocks": 1}
    return IconVSR(**{**settings, **kwargs})


@pytest.mark.parametrize(
    ("frames", "size", "padding"),
    [(5, (8, 12), 2), (6, (5, 7), 2), (7, (3, 9), 3), (9, (10, 6), 3)],
)
def test_a_clip_gives_four_times_larger_finite_frames(
    frames: int, size: tuple[int, int], padding: int
) -> None:
    """Sides that are not multiples of 4 are reflect-padded inside and cropped back."""
    net = small_net(temporal_padding=padding).eval()
    clip = torch.rand(2, frames, 3, *size)
    with torch.no_grad():
        out = net(clip)
    assert out.shape == (2, frames, 3, 4 * size[0], 4 * size[1])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("frames", "stride", "expected"),
    [(5, 5, [0, 4]), (6, 5, [0, 5]), (7, 5, [0, 5, 6]), (11, 5, [0, 5, 10]), (6, 2, [0, 2, 4, 5])],
)
def test_keyframes_are_every_stride_th_frame_and_the_last(
    frames: int, stride: int, expected: list[int]
) -> None:
    assert small_net(keyframe_stride=stride).keyframes(frames) == expected


@pytest.mark.parametrize(
    ("padding", "frames", "windows"),
    [
        # Upstream's choice: frames 4, 3 before the clip and T-4, T-5 after it (padding 2);
        # 6, 5, 4 and T-5, T-6, T-7 (padding 3).
        (2, 7, {0: [4, 3, 0, 1, 2], 5: [3, 4, 5, 6, 3], 6: [4, 5, 6, 3, 2]}),
        (3, 8, {0: [6, 5, 4, 0, 1, 2, 3], 5: [2, 3, 4, 5, 6, 7, 3], 7: [4, 5, 6, 7, 3, 2, 1]}),
    ],
)
def test_each_keyframe_window_is_upstreams(
    padding: int, frames: int, windows: dict[int, list[int]]
) -> None:
    """Frame i of the clip is filled with the value i, so each window EDVR's extractor gets
    names the frames it holds."""
    net = small_net(temporal_padding=padding).eval()
    clip = torch.arange(frames, dtype=torch.float32).view(1, frames, 1, 1, 1).expand(1, -1, 3, 4, 4)
    seen: list[list[int]] = []
    net.edvr.register_forward_hook(
        lambda _m, args, _out: seen.append([int(v) for v in args[0][0, :, 0, 0, 0]])
    )
    with torch.no_grad():
        net(clip)
    assert seen == [windows[i] for i in sorted(windows)]


def test_the_alignments_run_on_cpu() -> None:
    """SPyNet for every neighbouring pair both ways; EDVR's four deformable convolutions for
    every frame of every keyframe's window."""
    net = small_net().eval()
    pairs: list[int] = []
    deformable: list[torch.device] = []
    net.spynet.register_forward_hook(lambda _m, args, _out: pairs.append(args[0].shape[0]))
    for module in net.modules():
        if isinstance(module, ModulatedDeformConv2d):
            module.register_forward_hook(lambda _m, args, _out: deformable.append(args[0].device))
    with torch.no_grad():
        net(torch.rand(2, 7, 3, 8, 8))
    assert pairs == [2 * 6, 2 * 6]
    assert deformable == [torch.device("cpu")] * 3 * 5 * 4  # keyframes 0, 5, 6


def test_keyframe_features_refill_both_directions() -> None:
    """Changing only what EDVR gives for keyframe 5 changes every output frame: the backward
    pass carries it to frames 0-4, the forward pass to 6 (and frame 5 itself)."""
    net = small_net().eval()
    clip = torch.rand(1, 7, 3, 8, 8)
    with torch.no_grad():
        out = net(clip)
        original = net.keyframe_features

        def changed(x: torch.Tensor, keyframes: list[int]) -> dict[int, torch.Tensor]:
            features = original(x, keyframes)
            features[5] = features[5] + 1.0
            return features

        net.keyframe_features = changed  # type: ignore[method-assign]
        other = net(clip)
    assert all(not torch.allclose(other[:, i], out[:, i]) for i in range(7))


def test_each_frame_sees_its_neighbours_both_ways() -> None:
    """Coupled propagation: the last frame reaches the first frame's output, the first the
    last's."""
    assert_frames_reach(small_net(), torch.rand(1, 6, 3, 8, 8), [(5, 0), (0, 5)])


def test_the_keyframe_branch_is_edvrs_feature_extractor() -> None:
    net = small_net(temporal_padding=3)
    assert isinstance(net.edvr, EDVRFeatureExtractor)
    assert net.edvr.num_frames == 7 and net.edvr.center_frame == 3 and net.edvr.with_tsa
    assert net.edvr.pcd_align.dcn_pack["l1"].deformable_groups == 8
    assert len(net.edvr.feature_extraction) == 5


def test_traits() -> None:
    assert IconVSR.traits.scales == (4,) and IconVSR.traits.channels == (3,)
    assert IconVSR.traits.size_multiple == 1  # pads itself
    assert not IconVSR.traits.tile_exact and not IconVSR.traits.bf16_safe


def test_settings_and_input_are_checked() -> None:
    with pytest.raises(ValueError, match="x4 only"):
        IconVSR(scale=2)
    with pytest.raises(ValueError, match="temporal_padding must be 2 or 3"):
        IconVSR(temporal_padding=1)
    with pytest.raises(ValueError, match="keyframe_stride"):
        IconVSR(keyframe_stride=0)
    net = small_net().eval()
    with pytest.raises(ValueError, match=r"\(N, T, 3, H, W\)"):
        net(torch.rand(1, 3, 12, 10))
    with pytest.raises(ValueError, match="at least 5 frames"):
        net(torch.rand(1, 4, 3, 8, 8))
    with pytest.raises(ValueError, match="at least 7 frames"):
        small_net(temporal_padding=3)(torch.rand(1, 6, 3, 8, 8))
    with pytest.raises(ValueError, match="3 px or more"):
        net(torch.rand(1, 5, 3, 2, 8))


def test_one_training_step_reaches_every_parameter_without_nan() -> None:
    """The offsets gate the layers feeding them at first, then every parameter learns."""
    clip, target = torch.rand(1, 6, 3, 4, 4), torch.rand(1, 6, 3, 16, 16)
    assert_offsets_gate_then_train(small_net(keyframe_stride=3), clip, target)


@pytest.mark.parametrize("padding", [2, 3])
def test_parameter_count_matches_the_paper(padding: int) -> None:
    with torch.device("meta"):
        net = IconVSR(temporal_padding=padding)
    assert parameter_count(net) == PARAMETERS[padding]
    assert parameter_count(net.edvr) == EDVR_PARAMETERS[padding]
    assert parameter_count(net.spynet) == SPYNET_PARAMETERS
    assert_near_published(parameter_count(net), PAPER_PARAMETERS, tolerance=0.003)


@pytest.mark.parametrize("padding", [2, 3])
def test_state_dict_matches_the_authors_layout(padding: int) -> None:
    with torch.device("meta"):
        net = IconVSR(temporal_padding=padding)
    assert layout_fingerprint(net.state_dict()) == AUTHORS_LAYOUT[padding]


def test_files_in_basicsr_form_load_strictly(tmp_path: Path) -> None:
    """BasicSR saves ``{"params": state_dict}``: the whole network's, and the EDVR extractor's
    that IconVSR's training starts from (``EDVR_*_pretrained_for_IconVSR``), into ``net.edvr``."""
    source = small_net().eval()
    with_random_offsets(source)
    clip = torch.rand(1, 5, 3, 4, 4)
    assert_official_file_loads_strictly(
        tmp_path / "IconVSR_REDS.pth", {"params": source.state_dict()}, source, small_net, clip
    )
    assert_official_file_loads_strictly(
        tmp_path / "EDVR_REDS_pretrained_for_IconVSR.pth",
        {"params": source.edvr.state_dict()},
        source.edvr,
        lambda: small_net().edvr,
    )
