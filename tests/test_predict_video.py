"""``src.predict`` with a video network: a video, or a folder of frames, is one clip through the
module's clip path (chunks of ``clip_length`` with ``clip_overlap`` of context, tiles inside),
the sound and timing kept, frames written under their names into a folder that appears whole;
``video_codec``/``video_quality``; the progress line; broken frame folders spare other inputs.

A tiny BasicVSR (8 features, 1 block: its SPyNet is full size) on 32x24 frames, a few of them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pytest
import torch
from tqdm import tqdm

from src.io import predict_io
from src.io.images import write_image
from src.io.media import read_image
from src.io.predict_io import quantize
from src.io.video import probe_video, read_video_frames
from src.models.sr_module import SRModule
from src.utils.files import is_temporary
from tests.helpers import REPO_ROOT, compose_config, one_error_line, run_in_process
from tests.predict_helpers import write_checkpoint
from tests.test_video_io import decoded_audio, frame_times, make_clip, packets, picture

TINY_BASICVSR = ["model=basicvsr", "scale=4", "model.net.num_features=8", "model.net.num_blocks=1"]


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> SRModule:
    """A seeded tiny BasicVSR module (whole clips, no tiles: the reference runs)."""
    folder = tmp_path_factory.mktemp("basicvsr")
    cfg = compose_config("predict", [*TINY_BASICVSR, "tile=null"], folder / "cfg")
    torch.manual_seed(0)
    built: SRModule = hydra.utils.instantiate(cfg.model)
    built.clip_length = None
    # Freshly initialised, the frames' propagated features move the output by about one level
    # over the bicubic skip; a 20x last layer makes what other frames bring visible in 8 bits.
    with torch.no_grad():
        built.net.conv_last.weight.mul_(20)
        built.net.conv_last.bias.mul_(20)
    return built.eval()


@pytest.fixture(scope="module")
def checkpoint(module: SRModule, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "basicvsr.ckpt", module)


def reference(module: SRModule, frames: list[np.ndarray], **clip: object) -> list[np.ndarray]:
    """The module's own forward on the whole clip (with ``clip`` options set on it), in
    8-bit levels as predict writes them."""
    saved = {key: getattr(module, key) for key in clip}
    for key, value in clip.items():
        setattr(module, key, value)
    lr = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames])
    try:
        with torch.no_grad():
            sr = module(lr[None])[0].clamp(0, 1)
    finally:
        for key, value in saved.items():
            setattr(module, key, value)
    return [quantize(f.permute(1, 2, 0).numpy(), np.dtype(np.uint8)) for f in sr]


def predict(tmp_path: Path, capsys, checkpoint: Path, *overrides: str):
    return run_in_process(
        "predict",
        [f"ckpt_path={checkpoint}", "progress=false", f"output={tmp_path / 'out'}", *overrides],
        tmp_path,
        capsys,
    )


def frame_folder(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True)
    for index, name in enumerate(names):
        write_image(folder / name, picture(index))
    return folder


# --- a video file ------------------------------------------------------------------------------
def test_a_video_is_one_clip_and_keeps_its_frames_rate_and_sound(
    tmp_path: Path, capsys, module: SRModule, checkpoint: Path
):
    source = make_clip(
        tmp_path / "in" / "clip.mkv", frames=6, fps=Fraction(30000, 1001), pix_fmt="yuv444p"
    )
    outcome = predict(tmp_path, capsys, checkpoint, f"input={source}", "video_codec=ffv1")
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    assert "chunks of 30 frames with 4 of context" in outcome.stdout
    target = tmp_path / "out" / "clip.mkv"
    before, after = probe_video(source), probe_video(target)
    assert (after.frames, after.fps, after.width, after.height) == (6, before.fps, 128, 96)
    assert after.codec == "ffv1"
    assert packets(target, "audio") == packets(source, "audio")
    assert np.array_equal(decoded_audio(target), decoded_audio(source))
    assert frame_times(target) == frame_times(source)
    lr = [frame.pixels for frame in read_video_frames(source)]
    got = [frame.pixels.astype(int) for frame in read_video_frames(target)]
    # ffv1 is lossless; the RGB -> 4:4:4 YUV -> RGB round trip moves a level or two.
    clip = reference(module, lr)
    assert max(np.abs(g - e).max() for g, e in zip(got, clip, strict=True)) <= 2
    by_frame = [reference(module, [frame])[0] for frame in lr]  # what a one-frame clip gives
    assert max(np.abs(g - e).max() for g, e in zip(got, by_frame, strict=True)) > 10


def test_video_codec_and_quality_reach_the_encoder(tmp_path: Path, capsys, checkpoint: Path):
    source = make_clip(tmp_path / "in" / "clip.mp4", frames=3, audio=False)
    low, high = tmp_path / "low", tmp_path / "high"
    for out, quality in ((low, 45), (high, 5)):
        outcome = run_in_process(
            "predict",
            [
                f"ckpt_path={checkpoint}",
                f"input={source}",
                f"output={out}",
                "progress=false",
                f"video_quality={quality}",
            ],
            tmp_path,
            capsys,
        )
        assert outcome.returncode == 0, outcome.stderr[-2000:]
        assert probe_video(out / "clip.mp4").codec == "h264"
    assert (low / "clip.mp4").stat().st_size < (high / "clip.mp4").stat().st_size


def test_an_unknown_video_codec_stops_before_any_work(tmp_path: Path, capsys, checkpoint: Path):
    source = make_clip(tmp_path / "in" / "clip.mp4", frames=2, audio=False)
    for codec, words in (("nope", "no such video encoder"), ("aac", "no such video encoder")):
        outcome = predict(tmp_path, capsys, checkpoint, f"input={source}", f"video_codec={codec}")
        line = one_error_line(outcome)  # type: ignore[arg-type]
        assert f"video_codec={codec}" in line and words in line
    outcome = predict(tmp_path, capsys, checkpoint, f"input={source}", "video_quality=99")
    assert "video_quality" in one_error_line(outcome)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


class EagerBar(tqdm):
    """tqdm redrawing on every update: a short run finishes within its 0.1 s refresh interval."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, mininterval=0, **kwargs)


def test_the_progress_line_shows_frames_rate_and_time_left(
    tmp_path: Path, capsys, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(predict_io, "tqdm", EagerBar)
    source = make_clip(tmp_path / "in" / "clip.mp4", frames=5, audio=False)
    shown = run_in_process(
        "predict",
        [f"ckpt_path={checkpoint}", f"input={source}", f"output={tmp_path / 'a'}"],
        tmp_path,
        capsys,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    lines = [line for line in shown.stderr.split("\r") if line.startswith("clip.mp4")]
    # e.g. "clip.mp4:  60%|######    | 3/5 [00:01<00:00,  2.51frame/s]": done/total, time
    # elapsed<left, frames/s (under 1 frame/s, tqdm says "1.25s/frame").
    speed = r"[\d.]+(frame/s|s/frame)"
    done = [re.search(rf"\b(\d)/5 \[[\d:]+<[\d:]+, +{speed}\]", line) for line in lines]
    assert [found.group(1) for found in done if found] == ["1", "2", "3", "4", "5"], lines
    hidden = predict(tmp_path, capsys, checkpoint, f"input={source}")
    assert hidden.returncode == 0 and "frame/s" not in hidden.stderr


# --- a folder of frames --------------------------------------------------------------------------
# In natural order (im10 after im9; by characters it would come first); a recurrent network's
# output depends on the order.
NAMES = [f"im{i}.png" for i in range(6, 12)]


@pytest.mark.parametrize(
    ("options", "clip"),
    [
        ([], {}),
        (
            ["clip_length=3", "clip_overlap=1", "tile=16", "tile_overlap=4"],
            {"clip_length": 3, "clip_overlap": 1, "tile": 16, "tile_overlap": 4},
        ),
    ],
    ids=["whole", "chunks-and-tiles"],
)
def test_a_frame_folder_is_one_clip_written_under_the_same_names(
    tmp_path: Path, capsys, module: SRModule, checkpoint: Path, options, clip
):
    folder = frame_folder(tmp_path / "walk", NAMES)
    outcome = predict(tmp_path, capsys, checkpoint, f"input={folder}", *options)
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    assert "1 frame folder (6 frames)" in outcome.stdout
    target = tmp_path / "out" / "walk"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["walk"]
    assert sorted(p.name for p in target.iterdir()) == sorted(NAMES)
    expected = reference(module, [read_image(folder / name) for name in NAMES], **clip)
    for name, frame in zip(NAMES, expected, strict=True):
        got = read_image(target / name)
        assert got.shape == (96, 128, 3)
        assert np.array_equal(got, frame), name


def test_chunks_differ_from_the_whole_clip_where_context_runs_out(
    tmp_path: Path, capsys, module: SRModule, checkpoint: Path
):
    """The chunked run of the test above is not the whole clip's by accident."""
    frames = [picture(i) for i in range(6)]
    whole = reference(module, frames)
    chunked = reference(module, frames, clip_length=3, clip_overlap=1)
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(whole, chunked, strict=True)) > 0


def test_an_image_network_keeps_a_frame_folder_a_folder_of_images(tmp_path: Path, capsys):
    folder = frame_folder(tmp_path / "walk", NAMES[:3])
    outcome = run_in_process(
        "predict",
        ["model=bicubic", "scale=2", f"input={folder}", f"output={tmp_path / 'out'}"],
        tmp_path,
        capsys,
    )
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == NAMES[:3]


def test_a_frame_folder_with_a_gap_is_one_error_and_the_others_go_on(
    tmp_path: Path, capsys, checkpoint: Path
):
    clips = tmp_path / "clips"
    frame_folder(clips / "good", ["f_001.png", "f_002.png", "f_003.png"])
    frame_folder(clips / "gappy", ["f_001.png", "f_002.png", "f_004.png"])
    make_clip(clips / "shot.mp4", frames=3)
    outcome = predict(tmp_path, capsys, checkpoint, f"input={clips}")
    assert outcome.returncode == 1, outcome.stderr[-2000:]
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
    named = [line for line in errors if str(clips / "gappy" / "f_004.png") in line]
    assert len(named) == 1 and "frame 3 missing" in named[0], errors
    assert "Traceback" not in outcome.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["good", "shot.mp4"]
    assert sorted(p.name for p in (out / "good").iterdir()) == [
        "f_001.png",
        "f_002.png",
        "f_003.png",
    ]
    assert probe_video(out / "shot.mp4").frames == 3


# --- a run killed outright -----------------------------------------------------------------------
KILLED_RUN = """
import runpy, sys, time
import src.io.video as video

write = video.FrameFolderWriter.write


def slow_write(self, pixels):
    path = write(self, pixels)
    if self.written == 2:
        print("writing", flush=True)
        time.sleep(60)  # killed here, two frames in its folder
    return path


video.FrameFolderWriter.write = slow_write
sys.argv = ["src.predict", *sys.argv[1:]]
runpy.run_module("src.predict", run_name="__main__", alter_sys=True)
"""


def test_sigkill_mid_folder_leaves_no_complete_looking_folder(tmp_path: Path, checkpoint: Path):
    folder = frame_folder(tmp_path / "walk", NAMES[:4])
    out = tmp_path / "out"
    args = [
        f"ckpt_path={checkpoint}",
        f"input={folder}",
        f"output={out}",
        "progress=false",
        "clip_length=1",
        "clip_overlap=0",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, *args],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert "writing\n" in iter(process.stdout.readline, ""), "the run never wrote a frame"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    left = list(out.iterdir())
    assert len(left) == 1 and is_temporary(left[0]) and left[0].is_dir(), left
    assert len(list(left[0].iterdir())) == 2
    assert not (out / "walk").exists()
    # The next run removes it and writes the whole folder.
    rerun = subprocess.run(
        [sys.executable, "-m", "src.predict", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "removed 1 unfinished" in rerun.stdout
    assert [p.name for p in out.iterdir()] == ["walk"]
    assert sorted(p.name for p in (out / "walk").iterdir()) == NAMES[:4]
