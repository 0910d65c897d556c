"""tOF and tLP (src/metrics/temporal.py) against TecoGAN's formulas written out here directly
(its metrics.py: crop_8x8, Farneback on gray frames, frames 2..T-3, |LPIPS change|), and the
rules around them: zero for equal clips, flicker ranked worse, NaN without a pair, bad shapes."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from src.metrics.lpips import LPIPS
from src.metrics.registry import TEMPORAL as TEMPORAL_METRICS
from src.metrics.temporal import (
    REPORT_SCALE,
    centre_window,
    flow_error_pairs,
    lpips_change_pairs,
    temporal_flow_error,
    temporal_lpips,
)
from src.utils.errors import UserError

FRAMES, HEIGHT, WIDTH = 8, 64, 80


def textured_canvas(seed: int, height: int, width: int) -> np.ndarray:
    """(height, width, 3) smooth random texture in 0..255, something optical flow can follow."""
    noise = np.random.default_rng(seed).uniform(0, 255, (height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    return (smooth - smooth.min()) / (smooth.max() - smooth.min()) * 255.0


def panning_clip(seed: int = 0, step: int = 1) -> torch.Tensor:
    """(FRAMES, 3, HEIGHT, WIDTH) clip in [0, 1] on 8-bit levels: a window moving ``step``
    pixels right and down each frame."""
    canvas = textured_canvas(seed, HEIGHT + FRAMES * step, WIDTH + FRAMES * step)
    frames = [
        canvas[t * step : t * step + HEIGHT, t * step : t * step + WIDTH] for t in range(FRAMES)
    ]
    clip = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).double()
    return clip.round().div(255.0)


def with_noise(clip: torch.Tensor, seed: int, fresh_each_frame: bool) -> torch.Tensor:
    """``clip`` plus Gaussian noise (6 levels), on 8-bit levels."""
    generator = torch.Generator().manual_seed(seed)
    shape = clip.shape if fresh_each_frame else clip.shape[1:]
    noise = torch.randn(shape, generator=generator, dtype=torch.float64) * (6 / 255)
    return (clip + noise).clamp(0, 1).mul(255).round().div(255)


@pytest.fixture(scope="module")
def network() -> LPIPS:
    """LPIPS with random weights (the explicit test switch), its channel weights made positive
    so that it is a distance."""
    torch.manual_seed(0)
    lpips = LPIPS("alex", "random")
    lpips.prepare()
    for index in range(5):
        getattr(lpips, f"lin{index}").model[1].weight.abs_()
    return lpips


def tecogan_crop(image: np.ndarray) -> np.ndarray:
    """TecoGAN's crop_8x8, loop as written there."""
    ori_h, ori_w = image.shape[:2]
    h, w = (ori_h // 32) * 32, (ori_w // 32) * 32
    while h > ori_h - 16:
        h -= 32
    while w > ori_w - 16:
        w -= 32
    y, x = (ori_h - h) // 2, (ori_w - w) // 2
    return image[y : y + h, x : x + w]


def rgb_frames(clip: torch.Tensor) -> list[np.ndarray]:
    return [np.round(f.permute(1, 2, 0).numpy() * 255).astype(np.uint8) for f in clip]


def tecogan_tof(sr: torch.Tensor, hr: torch.Tensor, cutfr: int = 2) -> dict[int, float]:
    """tOF per frame i, TecoGAN's loop: flows of gray frames, cropped, per-pixel vector length."""
    values, previous = {}, None
    sr_rgb, hr_rgb = rgb_frames(sr), rgb_frames(hr)
    for i in range(cutfr, len(sr_rgb) - cutfr):
        grays = [cv2.cvtColor(f[i], cv2.COLOR_RGB2GRAY) for f in (sr_rgb, hr_rgb)]
        if previous is not None:
            sr_flow, hr_flow = (
                tecogan_crop(cv2.calcOpticalFlowFarneback(p, g, None, 0.5, 3, 15, 3, 5, 1.2, 0))
                for p, g in zip(previous, grays, strict=True)
            )
            lengths = [
                math.hypot(*(sr_flow[y, x].astype(np.float64) - hr_flow[y, x]))
                for y in range(sr_flow.shape[0])
                for x in range(sr_flow.shape[1])
            ]
            values[i] = sum(lengths) / len(lengths)
        previous = grays
    return values


def test_centre_window_is_tecogans_crop():
    for height in range(48, 300, 7):
        width = height + 33
        rows, columns = centre_window(height, width)
        expected = tecogan_crop(np.arange(height * width).reshape(height, width))
        assert np.array_equal(
            np.arange(height * width).reshape(height, width)[rows, columns], expected
        )


def test_tof_is_tecogans_per_pixel_formula():
    hr = panning_clip()
    sr = with_noise(hr, seed=1, fresh_each_frame=True)
    ours, theirs = flow_error_pairs(sr, hr), tecogan_tof(sr, hr)
    assert list(ours) == list(theirs) == [3, 4, 5]  # 8 frames: frames 2..5, pairs ending 3..5
    # Their flow difference is float32, as in TecoGAN's script; the one here float64.
    assert list(ours.values()) == pytest.approx(list(theirs.values()), rel=1e-6)
    assert temporal_flow_error(sr, hr) == pytest.approx(np.mean(list(theirs.values())), rel=1e-6)
    assert min(theirs.values()) > 0.01
    every_pair = flow_error_pairs(sr, hr, trim=0)
    assert list(every_pair) == list(range(1, FRAMES))
    assert every_pair[4] == ours[4]


def test_tlp_is_the_change_of_lpips_between_consecutive_frames(network: LPIPS):
    hr = panning_clip()
    sr = with_noise(hr, seed=2, fresh_each_frame=True)
    rows, columns = centre_window(HEIGHT, WIDTH)
    window = (slice(None), slice(None), rows, columns)

    def distance(clip: torch.Tensor, t: int) -> float:
        return float(network(clip[t - 1 : t][window].float(), clip[t : t + 1][window].float()))

    expected = {t: abs(distance(sr, t) - distance(hr, t)) for t in range(3, FRAMES - 2)}
    ours = lpips_change_pairs(sr, hr, network)
    assert list(ours) == list(expected)
    assert list(ours.values()) == pytest.approx(list(expected.values()), rel=1e-5, abs=1e-9)
    # An absolute change: SR and HR swapped give the same values.
    assert lpips_change_pairs(hr, sr, network) == pytest.approx(ours, rel=1e-6)
    # Pairs batched two at a time give the same values.
    assert lpips_change_pairs(sr, hr, network, batch=2) == pytest.approx(ours, rel=1e-5)
    assert temporal_lpips(sr, hr, network) == pytest.approx(np.mean(list(expected.values())))


def test_equal_clips_score_zero(network: LPIPS):
    hr = panning_clip()
    assert temporal_flow_error(hr, hr.clone()) == 0.0
    assert temporal_lpips(hr, hr.clone(), network) == 0.0


def test_off_grid_values_score_as_their_8_bit_levels(network: LPIPS):
    hr = panning_clip()
    sr = with_noise(hr, seed=3, fresh_each_frame=True)
    nudged = (sr + 0.3 / 255 * torch.sign(torch.randn_like(sr))).clamp(0, 1)
    assert flow_error_pairs(nudged, hr) == flow_error_pairs(sr, hr)
    assert lpips_change_pairs(nudged, hr, network) == lpips_change_pairs(sr, hr, network)


def test_flicker_scores_worse_than_a_steady_output(network: LPIPS):
    still = panning_clip(step=0)  # a static scene
    steady = with_noise(still, seed=4, fresh_each_frame=False)  # one noise pattern throughout
    flicker = with_noise(still, seed=4, fresh_each_frame=True)
    assert temporal_flow_error(steady, still) < 1e-4  # Farneback: 3e-6 on equal frames
    assert temporal_lpips(steady, still, network) == pytest.approx(0.0, abs=1e-7)
    assert temporal_flow_error(flicker, still) > 0.01
    assert temporal_lpips(flicker, still, network) > 1e-4
    # On a moving scene: a blur that moves with the content against noise that does not.
    moving = panning_clip(seed=5)
    blurred = torch.stack(
        [
            torch.from_numpy(cv2.GaussianBlur(f.permute(1, 2, 0).numpy(), (0, 0), 1.0))
            for f in moving
        ]
    ).permute(0, 3, 1, 2)
    noisy = with_noise(moving, seed=5, fresh_each_frame=True)
    assert temporal_flow_error(blurred, moving) < temporal_flow_error(noisy, moving)
    assert temporal_lpips(blurred, moving, network) < temporal_lpips(noisy, moving, network)


def test_clips_without_a_pair_score_nan(network: LPIPS):
    hr = panning_clip()
    sr = with_noise(hr, seed=6, fresh_each_frame=True)
    assert math.isnan(temporal_flow_error(sr[:1], hr[:1], trim=0))
    assert math.isnan(temporal_lpips(sr[:1], hr[:1], network, trim=0))
    assert math.isnan(temporal_flow_error(sr[:5], hr[:5]))  # 5 frames, 2 cut at each end
    assert list(flow_error_pairs(sr[:6], hr[:6])) == [3]
    assert lpips_change_pairs(sr[:5], hr[:5], network) == {}


@pytest.mark.parametrize(
    ("sr_shape", "hr_shape", "message"),
    [
        ((4, 3, 64, 64), (4, 3, 64, 68), "differs from HR clip"),
        ((3, 64, 64), (3, 64, 64), r"\(T, 3, H, W\)"),
        ((4, 1, 64, 64), (4, 1, 64, 64), r"\(T, 3, H, W\)"),
        ((4, 3, 47, 64), (4, 3, 47, 64), "47x64 pixels are too small"),
    ],
)
def test_bad_shapes_are_user_errors(network: LPIPS, sr_shape, hr_shape, message):
    sr, hr = torch.zeros(sr_shape), torch.zeros(hr_shape)
    with pytest.raises(UserError, match=message):
        temporal_flow_error(sr, hr)
    with pytest.raises(UserError, match=message):
        temporal_lpips(sr, hr, network)


def test_negative_trim_is_a_user_error():
    hr = panning_clip()
    with pytest.raises(UserError, match="trim"):
        temporal_flow_error(hr, hr, trim=-1)


def test_info_table_marks_both_lower_is_better():
    assert {name: info.columns for name, info in TEMPORAL_METRICS.items()} == {
        "tof": ("tof",),
        "tlp": ("tlp",),
    }
    assert not any(info.higher_is_better for info in TEMPORAL_METRICS.values())
    assert REPORT_SCALE == {"tof": 10.0, "tlp": 100.0}
