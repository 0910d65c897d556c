"""The clip inference path (src/ops/video_inference.py) and the module's clip scoring: frame
windows as BasicSR pads them, temporal chunks, tiles on clips, and the papers' average (per clip,
then across clips)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork, frames_of
from src.archs.basicvsr import BasicVSR
from src.archs.edvr import EDVR
from src.metrics.paper import score_batch
from src.metrics.report import clip_means, summarize
from src.models.sr_module import SRModule
from src.ops.video_inference import ClipInference, chunk_plan, upscale_clip, window_indices
from src.utils.choices import SEQUENCE, SINGLE, WINDOW
from src.utils.errors import UserError


class TemporalBlur(SRNetwork):
    """A clip network whose frame t depends on frames t-1..t+1 and a 3x3 neighbourhood: the
    exact answer of chunked and tiled inference with enough context is the whole-clip one."""

    traits = NetworkTraits(scales=(2,), channels=(3,), frames=SEQUENCE)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        n, t, c, h, w = clip.shape
        padded = torch.cat((clip[:, :1], clip, clip[:, -1:]), dim=1)
        mixed = (padded[:, :-2] + 2 * padded[:, 1:-1] + padded[:, 2:]) / 4
        out = self.conv(mixed.reshape(n * t, c, h, w))
        return F.interpolate(out, scale_factor=2, mode="nearest").view(n, t, c, 2 * h, 2 * w)


class WindowPicker(SRNetwork):
    """A window network that returns, upscaled, the frame at window position 0 plus 10 x the
    frame at the last position, so a test reads which frames it was given."""

    traits = NetworkTraits(scales=(2,), channels=(3,), frames=WINDOW, window=3)

    def __init__(self) -> None:
        super().__init__()
        self.num_frames = 3
        self.center_frame = 1

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        assert window.shape[1] == 3
        return F.interpolate(window[:, 0] + 10 * window[:, 2], scale_factor=2, mode="nearest")


def numbered_clip(frames: int, size: int = 4) -> torch.Tensor:
    """A clip whose frame t is filled with the value t."""
    values = torch.arange(frames, dtype=torch.float32).view(1, frames, 1, 1, 1)
    return values.expand(1, frames, 3, size, size).clone()


@pytest.mark.parametrize(
    ("padding", "expected"),
    [
        ("replicate", [0, 0, 0, 1, 2]),
        ("reflection", [2, 1, 0, 1, 2]),
        ("reflection_circle", [4, 3, 0, 1, 2]),
        ("circle", [3, 4, 0, 1, 2]),
    ],
)
def test_window_indices_at_the_start_follow_basicsr(padding: str, expected: list[int]) -> None:
    # BasicSR's generate_frame_indices documents these for frame 0, a window of 5.
    assert window_indices(0, 10, 5, 2, padding) == expected


@pytest.mark.parametrize(
    ("padding", "expected"),
    [
        ("replicate", [7, 8, 9, 9, 9]),
        ("reflection", [7, 8, 9, 8, 7]),
        ("reflection_circle", [7, 8, 9, 6, 5]),
        ("circle", [7, 8, 9, 5, 6]),
    ],
)
def test_window_indices_at_the_end(padding: str, expected: list[int]) -> None:
    # Worked by hand from BasicSR's rules for the last frame of 10 (max_frame_num 9).
    assert window_indices(9, 10, 5, 2, padding) == expected


def test_window_indices_inside_the_clip_are_the_neighbours() -> None:
    assert window_indices(4, 10, 5, 2, "replicate") == [2, 3, 4, 5, 6]
    assert window_indices(4, 10, 5, 0, "replicate") == [4, 5, 6, 7, 8]  # a non-centred position


def test_unknown_window_padding_is_a_user_error() -> None:
    with pytest.raises(UserError, match="window_padding"):
        window_indices(0, 10, 5, 2, "wrap")


@pytest.mark.parametrize(("total", "length", "overlap"), [(10, 3, 1), (10, 4, 0), (7, 10, 2)])
def test_chunk_plan_keeps_every_frame_once(total: int, length: int, overlap: int) -> None:
    chunks = chunk_plan(total, length, overlap)
    kept = [i for c in chunks for i in range(c.keep_start, c.keep_stop)]
    assert kept == list(range(total))
    for chunk in chunks:
        assert chunk.start == max(chunk.keep_start - overlap, 0)
        assert chunk.stop == min(chunk.keep_stop + overlap, total)


def test_chunk_plan_refuses_bad_settings() -> None:
    with pytest.raises(UserError, match="clip_length"):
        chunk_plan(10, 0, 1)
    with pytest.raises(UserError, match="clip_overlap"):
        chunk_plan(10, 2, -1)


def test_sequence_chunks_and_tiles_with_context_equal_the_whole_clip() -> None:
    torch.manual_seed(0)
    net = TemporalBlur().eval()
    clip = torch.rand(2, 9, 3, 12, 10)
    with torch.no_grad():
        whole = net(clip)
        chunked = upscale_clip(
            net, clip, 2, ClipInference(frames=SEQUENCE, clip_length=4, clip_overlap=1)
        )
        tiled = upscale_clip(
            net,
            clip,
            2,
            ClipInference(frames=SEQUENCE, clip_length=3, clip_overlap=1, tile=5, tile_overlap=1),
        )
        too_little = upscale_clip(
            net, clip, 2, ClipInference(frames=SEQUENCE, clip_length=4, clip_overlap=0)
        )
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(tiled, whole)
    assert not torch.allclose(too_little, whole)  # the test can tell missing context


def test_window_network_gets_each_frame_centred_window() -> None:
    net = WindowPicker()
    clip = numbered_clip(4)
    settings = ClipInference(frames=WINDOW, window=3, window_position=1, padding="replicate")
    out = upscale_clip(net, clip, 2, settings)
    # frame t: window [t-1, t, t+1] clamped to the clip -> value (t-1) + 10 (t+1).
    expected = [max(t - 1, 0) + 10 * min(t + 1, 3) for t in range(4)]
    assert out.shape == (1, 4, 3, 8, 8)
    assert [float(out[0, t, 0, 0, 0]) for t in range(4)] == expected


def test_image_network_runs_frame_by_frame() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2)).eval()
    clip = torch.rand(1, 3, 3, 8, 8)
    with torch.no_grad():
        out = upscale_clip(net, clip, 2, ClipInference(frames=SINGLE))
        for t in range(3):
            torch.testing.assert_close(out[:, t], net(clip[:, t]))


def test_declared_frames() -> None:
    assert frames_of(BasicVSR(num_features=8, num_blocks=1)) == (SEQUENCE, 1, 0)
    edvr = EDVR(num_features=8, num_frames=3, deformable_groups=1, num_extract_blocks=1)
    assert frames_of(edvr) == (WINDOW, 3, 1)
    assert frames_of(nn.Conv2d(3, 3, 1)) == (SINGLE, 1, 0)


def clip_module(net: nn.Module, crop_border: int | None = 0) -> SRModule:
    return SRModule(net, scale=2, crop_border=crop_border, channels_last=False)


def test_module_scores_clips_per_frame_and_averages_per_clip_first() -> None:
    torch.manual_seed(0)
    module = clip_module(TemporalBlur()).eval()
    module.on_validation_epoch_start()
    batches = [(torch.rand(1, frames, 3, 8, 8), f"clip{frames}") for frames in (2, 5)]
    expected_clip_means = []
    for index, (lr, clip) in enumerate(batches):
        hr = torch.rand(1, lr.shape[1], 3, 16, 16)
        frame_names = [(f"{t:03d}.png",) for t in range(lr.shape[1])]
        batch = {"lr": lr, "hr": hr, "set": ["Toy"], "name": [clip], "frames": frame_names}
        batch["index"] = torch.tensor([index])
        with torch.no_grad():
            module.validation_step(batch, index)
            sr = module(lr).clamp(0, 1)[0]
        frame_psnr = [s.psnr_y for s in score_batch(sr, hr[0], border=0)]
        expected_clip_means.append(sum(frame_psnr) / len(frame_psnr))
    records = module.val_scores
    assert [r["name"] for r in records[:2]] == ["clip2/000.png", "clip2/001.png"]
    assert {r["clip"] for r in records} == {"clip2", "clip5"}
    clips = clip_means(records)
    assert [c["frames"] for c in clips] == [2, 5]
    assert clips[0]["psnr_y"] == pytest.approx(expected_clip_means[0])
    (summary,) = summarize(records)
    assert (summary.clips, summary.images) == (2, 7)
    # The mean of clip means, not of the 7 frames.
    assert summary.psnr_y == pytest.approx(sum(expected_clip_means) / 2)
    frame_mean = sum(r["psnr_y"] for r in records) / len(records)
    assert not math.isclose(summary.psnr_y, frame_mean, rel_tol=1e-9)
    # The logged per-set metric weighs frames by 1 / clip length: the same mean.
    logged = module._metrics_for("Toy")["psnr_y"].compute()
    assert float(logged) == pytest.approx(summary.psnr_y)


def test_video_network_given_images_sees_clips_of_one_frame() -> None:
    torch.manual_seed(0)
    module = clip_module(TemporalBlur()).eval()
    image = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(module(image), module.net(image.unsqueeze(1)).squeeze(1))


def test_training_pairs_by_frames_kind() -> None:
    clip = {"lr": torch.rand(2, 3, 3, 4, 4), "hr": torch.rand(2, 3, 3, 8, 8)}
    lr, hr = clip_module(nn.Conv2d(3, 3, 1)).training_pair(clip)
    assert (lr.shape, hr.shape) == ((6, 3, 4, 4), (6, 3, 8, 8))  # an image network: frames
    lr, hr = clip_module(WindowPicker()).training_pair(clip)
    torch.testing.assert_close(hr, clip["hr"][:, 1])  # a window network: its centre frame
    lr, hr = clip_module(TemporalBlur()).training_pair(clip)
    assert hr.shape == clip["hr"].shape
    with pytest.raises(UserError, match="video network"):
        clip_module(TemporalBlur()).training_pair({"lr": clip["lr"][:, 0], "hr": clip["hr"][:, 0]})


def test_temporal_metric_rows_are_per_pair_and_average_per_clip() -> None:
    from src.metrics.temporal import flow_error_pairs

    torch.manual_seed(0)
    module = SRModule(
        TemporalBlur(), scale=2, crop_border=0, channels_last=False, metrics=["psnr", "tof"]
    ).eval()
    module.on_validation_epoch_start()
    lr, hr = torch.rand(1, 7, 3, 32, 32), torch.rand(1, 7, 3, 64, 64)
    batch = {"lr": lr, "hr": hr, "set": ["Toy"], "name": ["c"], "index": torch.tensor([0])}
    with torch.no_grad():
        module.validation_step(batch, 0)
        pairs = flow_error_pairs(module(lr).clamp(0, 1)[0], hr[0])
    rows = {r["frame"]: r for r in module.val_scores}
    assert sorted(pairs) == [3, 4]  # TecoGAN leaves two frames out at each end
    assert [int(f) for f, r in rows.items() if "tof" in r] == [3, 4]
    (summary,) = summarize(module.val_scores)
    assert summary.extra["tof"] == pytest.approx(sum(pairs.values()) / 2)
    assert float(module._metrics_for("Toy")["tof"].compute()) == pytest.approx(summary.extra["tof"])


class CountingNet(TemporalBlur):
    """TemporalBlur that records the clip length of each call."""

    def __init__(self) -> None:
        super().__init__()
        self.lengths: list[int] = []

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        self.lengths.append(clip.shape[1])
        return super().forward(clip)


@pytest.mark.parametrize(("frames", "length", "overlap"), [(11, 4, 1), (8, 4, 2), (3, 5, 1)])
def test_streamed_chunks_equal_the_whole_clip_and_bound_memory(
    frames: int, length: int, overlap: int
) -> None:
    from src.ops.video_inference import stream_upscale

    torch.manual_seed(0)
    net = CountingNet().eval()
    clip = torch.rand(1, frames, 3, 6, 6)
    settings = ClipInference(frames=SEQUENCE, clip_length=length, clip_overlap=overlap)
    with torch.no_grad():
        whole = net(clip)
        net.lengths.clear()
        streamed = list(stream_upscale((clip[:, t] for t in range(frames)), net, 2, settings))
    assert len(streamed) == frames
    torch.testing.assert_close(torch.stack(streamed, dim=1), whole)
    assert max(net.lengths) <= length + 2 * overlap


def test_streamed_window_network_pads_only_the_true_ends() -> None:
    from src.ops.video_inference import stream_upscale

    net = WindowPicker()
    clip = numbered_clip(9)
    settings = ClipInference(
        frames=WINDOW, window=3, window_position=1, padding="replicate", clip_length=2
    )
    streamed = list(stream_upscale((clip[:, t] for t in range(9)), net, 2, settings))
    whole = upscale_clip(net, clip, 2, replace(settings, clip_length=None))
    torch.testing.assert_close(torch.stack(streamed, dim=1), whole)


@pytest.mark.parametrize("streamed", [True, False])
def test_every_chunk_holds_the_networks_shortest_clip(streamed: bool) -> None:
    """IconVSR takes clips of at least one keyframe window (5 frames): with one-frame context
    and a one-frame last core (11 frames in chunks of 5), chunks still hold 5 frames."""
    from src.ops.video_inference import stream_upscale

    net = CountingNet().eval()
    clip = torch.rand(1, 11, 3, 6, 6)
    settings = ClipInference(frames=SEQUENCE, clip_length=5, clip_overlap=1, min_frames=5)
    with torch.no_grad():
        if streamed:
            out = torch.stack(list(stream_upscale(clip.unbind(1), net, 2, settings)), dim=1)
        else:
            out = upscale_clip(net, clip, 2, settings)
    assert out.shape[1] == 11 and min(net.lengths) >= 5


def test_iconvsr_streams_in_short_chunks() -> None:
    from src.archs.iconvsr import IconVSR

    torch.manual_seed(0)
    net = IconVSR(num_features=8, num_blocks=1, keyframe_stride=5).eval()
    module = SRModule(net, scale=4, clip_length=3, clip_overlap=0)
    frames = [torch.rand(1, 3, 16, 16) for _ in range(7)]
    out = list(module.stream(frames))
    assert len(out) == 7 and out[-1].shape == (1, 3, 64, 64)
