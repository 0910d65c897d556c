"""RealBasicVSR's per-clip degradations (src/data/clip_degradation.py), the video codec round trip
they use (src/io/video.py ``compress_frames``) and the clip data module's hook that applies them
(src/data/clip_datamodule.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from src.data.clip_datamodule import ClipDataModule
from src.data.clip_degradation import (
    ClipRealESRGANDegradation,
    VideoDraw,
    VideoSettings,
    compress_clips,
    draw_video,
)
from src.io.video import compress_frames, is_video_encoder
from tests.helpers import compose_config, run_in_process

KEEP = {"probs": {"keep": 1.0}}
NO_VIDEO = {"first": None, "second": None, "final": None}
SHARPENED = "+data.sharpen_target={weight: 0.5}"


def configured(tmp_path: Path, *overrides: str) -> Any:
    """degradation=realbasicvsr as the configs compose it, with ``overrides``."""
    cfg = compose_config(
        "train", ["data=synthetic_clips", "degradation=realbasicvsr", *overrides], tmp_path
    )
    return hydra.utils.instantiate(cfg.data.degradation)


def still_clips(count: int, frames: int, size: int = 32) -> torch.Tensor:
    """``count`` clips of one smooth random image each, repeated over ``frames`` frames."""
    generator = torch.Generator().manual_seed(0)
    images = F.avg_pool2d(torch.rand(count, 3, size, size, generator=generator), 3, 1, 1)
    return images[:, None].repeat(1, frames, 1, 1, 1)


def moving_frames(count: int = 6, height: int = 48, width: int = 64) -> np.ndarray:
    """uint8 RGB frames of a smooth pattern moving one pixel a frame."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for t in range(count):
        r = 128 + 100 * np.sin((x + t) / 5.0) * np.cos(y / 7.0)
        g = 128 + 80 * np.cos((x - y + 2 * t) / 9.0)
        b = 128 + 60 * np.sin((x + y) / 4.0 + t)
        frames.append(np.stack([r, g, b], axis=-1))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


# --- one draw per clip --------------------------------------------------------------------------
def test_every_frame_of_a_clip_gets_the_same_degradation(tmp_path: Path):
    """Noise and video compression off: identical HR frames give identical LR frames (one
    kernel, resize, JPEG and sinc per clip), and clips of identical frames degrade differently
    by their seeds."""
    degradation = configured(
        tmp_path,
        "data.degradation.first.noise.prob=0",
        "data.degradation.second.noise.prob=0",
        "data.degradation.video=null",
    )
    hr = still_clips(1, 4).repeat(3, 1, 1, 1, 1)  # three copies of one clip
    lr = degradation.degrade_clips(hr, [11, 11, 12], 4)
    assert lr.shape == (3, 4, 3, 8, 8)
    for clip in lr:
        assert all(torch.equal(frame, clip[0]) for frame in clip[1:])
    assert torch.equal(lr[0], lr[1])  # the same seed, the same draws
    assert not torch.equal(lr[0], lr[2])
    assert torch.equal(lr, torch.round(lr * 255) / 255)  # on 8-bit levels


def test_noise_level_is_one_per_clip_its_values_one_per_frame():
    """Gaussian noise alone on a flat gray clip: every frame has the clip's strength (within
    sampling error), no two frames the same noise, and the other clip another strength."""
    only_noise = {
        "blur_prob": 0.0,
        "resize": KEEP,
        "noise": {"prob": 1.0, "gaussian_prob": 1.0, "sigma": [5.0, 40.0], "gray_prob": 0.0},
        "jpeg": None,
    }
    degradation = ClipRealESRGANDegradation(
        first=only_noise,
        second={**only_noise, "noise": {"prob": 0.0}},
        final={"sinc_prob": 0.0, "jpeg": {"prob": 0.0}},
        video=NO_VIDEO,
    )
    hr = torch.full((2, 5, 3, 64, 64), 0.5)
    lr = degradation.degrade_clips(hr, [3, 4], 1)
    spread = (lr - 0.5).flatten(2).std(dim=2)  # (clip, frame)
    for clip in spread:
        assert float(clip.max() / clip.min()) < 1.1
    assert abs(float(spread[0].mean() / spread[1].mean()) - 1) > 0.1
    assert not torch.equal(lr[0, 0], lr[0, 1])


def test_degradation_is_a_function_of_the_seeds(tmp_path: Path):
    degradation = configured(tmp_path)
    hr = still_clips(2, 3)
    first = degradation.degrade_clips(hr, [5, 6], 4)
    assert torch.equal(first, degradation.degrade_clips(hr, [5, 6], 4))
    assert not torch.equal(first, degradation.degrade_clips(hr, [7, 8], 4))


def test_realbasicvsr_settings_are_mmagics(tmp_path: Path):
    degradation = configured(tmp_path)
    assert degradation.from_sharpened
    assert degradation.second.resize.relative_to == "input"
    assert degradation.second.jpeg.quality == (30.0, 95.0) and degradation.final.jpeg.prob == 0
    video = degradation.video
    assert video["second"] is None and video["first"] == video["final"]
    assert video["first"].bitrate == (10_000, 100_000) and set(video["first"].codecs) == {
        "libx264",
        "mpeg4",
    }


# --- the codec --------------------------------------------------------------------------------
@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_compression_changes_pixels_reproducibly(codec: str):
    frames = moving_frames()
    out = compress_frames(frames, codec, 10_000)
    assert out.shape == frames.shape and out.dtype == np.uint8
    error = np.abs(out.astype(np.float64) - frames).mean()
    assert 0.5 < error < 20  # changed, still the same picture
    assert np.array_equal(out, compress_frames(frames, codec, 10_000))


def test_a_lower_bitrate_loses_more():
    frames = moving_frames(4, 128, 128)
    low, high = (
        np.abs(compress_frames(frames, "libx264", rate).astype(np.float64) - frames).mean()
        for rate in (10_000, 100_000)
    )
    assert low > high


def test_odd_sides_come_back_at_their_size():
    frames = moving_frames(3, 31, 45)
    assert compress_frames(frames, "libx264", 50_000).shape == (3, 31, 45, 3)


def test_video_draws_follow_the_settings():
    settings = VideoSettings(codecs={"libx264": 0.5, "mpeg4": 0.5}, bitrate=(10_000, 10_010))
    draws = [draw_video(np.random.default_rng(seed), settings) for seed in range(40)]
    assert {d.codec for d in draws if d} == {"libx264", "mpeg4"}
    assert all(d is not None and 10_000 <= d.bitrate <= 10_010 for d in draws)
    assert draw_video(np.random.default_rng(0), settings) == draws[0]
    assert draw_video(np.random.default_rng(0), VideoSettings(prob=0.0)) is None


def test_only_clips_drawn_with_a_codec_are_compressed():
    image = still_clips(2, 3, 48).flatten(0, 1)
    out = compress_clips(image, 3, [None, VideoDraw("mpeg4", 10_000)])
    assert torch.equal(out[:3], image[:3])
    assert not torch.equal(out[3:], image[3:])


def test_unknown_codecs_and_bad_ranges_are_refused():
    assert is_video_encoder("h264") and not is_video_encoder("no-such-codec")
    with pytest.raises(ValueError, match="no-such-codec"):
        VideoSettings(codecs={"no-such-codec": 1.0})
    with pytest.raises(ValueError, match="bitrate"):
        VideoSettings(bitrate=(100, 10))
    with pytest.raises(ValueError, match="slot"):
        ClipRealESRGANDegradation(video={"third": None})


# --- the clip data module's hook ---------------------------------------------------------------
def clip_module(tmp_path: Path, *overrides: str) -> ClipDataModule:
    cfg = compose_config(
        "train",
        ["data=synthetic_clips", "scale=4", "degradation=realbasicvsr", *overrides],
        tmp_path,
    )
    return hydra.utils.instantiate(cfg.data)


def test_training_batches_are_sharpened_then_degraded_per_clip(tmp_path: Path):
    module = clip_module(tmp_path, SHARPENED)
    hr = still_clips(2, 3)
    batch = {"lr": hr[..., ::4, ::4], "hr": hr, "seed": torch.tensor([1, 2])}
    out = module.on_after_batch_transfer(dict(batch), 0)
    assert torch.equal(out["hr_plain"], hr) and not torch.equal(out["hr"], hr)
    degradation = module.degradation
    assert torch.equal(out["lr"], degradation.degrade_clips(out["hr"], [1, 2], 4))
    validation = {"lr": hr[:1], "hr": hr[:1], "set": ["v"], "index": torch.tensor([0])}
    assert module.on_after_batch_transfer(validation, 0) is validation


BAD_SETTINGS = {
    "from_sharpened without a sharpened target": (["degradation=realbasicvsr"], "sharpen_target"),
    "an image degradation": (["degradation=realesrgan_batch"], "degradation=BatchRealESRGAN"),
    "a codec FFmpeg lacks": (
        [
            "degradation=realbasicvsr",
            SHARPENED,
            "+data.degradation.video.first.codecs.no-such-codec=1.0",
        ],
        "data.degradation.*no-such-codec",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_bad_clip_degradation_settings_are_one_error_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    overrides, expected = BAD_SETTINGS[case]
    outcome = run_in_process("train", ["data=synthetic_clips", *overrides], tmp_path, capsys)
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
    assert outcome.returncode == 2 and len(errors) == 1, outcome.stderr[-2000:]
    assert re.search(expected, errors[0]), errors[0]
