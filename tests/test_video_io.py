"""Videos in and out through PyAV (src/io/video.py): frame count, frame rate (variable too),
sound and subtitles copied packet for packet, 10 bits kept, colour tags and rotation kept,
broken files as one-line errors, no finished-looking output after a SIGKILL, frame folders;
and ``python -m src.predict`` keeping a clip's sound. Every clip is made here with PyAV."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from src.io.images import write_image
from src.io.media import remove_stale_partials
from src.io.video import (
    FrameFolderWriter,
    VideoError,
    VideoWriter,
    probe_video,
    read_frame_folder,
    read_video_frames,
)
from src.utils.files import is_temporary
from tests.helpers import REPO_ROOT, run_module

SAMPLE_RATE = 16000
SIZE = (32, 24)  # width, height


def picture(index: int, size: tuple[int, int] = SIZE, deep: bool = False) -> np.ndarray:
    """A smooth RGB frame that moves with ``index``; uint16 (all 16 bits used) when ``deep``."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    phase = index * 0.4
    unit = np.stack(
        [
            0.5 + 0.4 * np.sin(x / 5 + phase),
            0.5 + 0.4 * np.cos(y / 4 - phase),
            0.3 + 0.5 * (x + y) / (width + height),
        ],
        axis=2,
    )
    peak = 65535 if deep else 255
    return np.rint(unit * peak).astype(np.uint16 if deep else np.uint8)


def sine(seconds: float) -> np.ndarray:
    """A 440 Hz tone, (1, samples) float32 planar mono."""
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]


def make_clip(
    path: Path,
    frames: int = 8,
    fps: Fraction = Fraction(25),
    audio: bool = True,
    subtitle: bool = False,
    pix_fmt: str = "yuv420p",
    stamps: list[int] | None = None,
    tags: dict[str, int] | None = None,
    rotation: int = 0,
) -> Path:
    """An H.264 clip of ``frames`` moving frames; with a sine track (AAC) and a subtitle
    (SubRip, .mkv only) if asked; ``stamps`` (in ms) make a variable frame rate; ``tags`` set
    the colour tags (colorspace, color_range, color_primaries, color_trc)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), "w")
    video = container.add_stream("libx264", rate=fps)
    video.width, video.height = SIZE
    video.pix_fmt = pix_fmt
    time_base = Fraction(1, 1000) if stamps else 1 / fps
    video.codec_context.time_base = time_base
    for name, value in (tags or {}).items():
        setattr(video.codec_context, name, value)
    if rotation:
        video.set_display_rotation(rotation)
    sound = container.add_stream("aac", rate=SAMPLE_RATE) if audio else None
    if sound is not None:
        sound.layout = "mono"
        sound.metadata["language"] = "fra"
    text = container.add_mux_stream("subrip") if subtitle else None
    if text is not None:
        text.metadata["language"] = "eng"
    container.metadata["title"] = "A sine"
    deep = pix_fmt.endswith("10le")
    for index in range(frames):
        frame = av.VideoFrame.from_ndarray(
            picture(index, deep=deep), format="rgb48le" if deep else "rgb24"
        )
        frame = frame.reformat(format=pix_fmt)
        for name, value in (tags or {}).items():
            setattr(frame, name, value)
        frame.pts = stamps[index] if stamps else index
        frame.time_base = time_base
        container.mux(video.encode(frame))
    container.mux(video.encode(None))
    if sound is not None:
        samples = sine(frames / fps)
        for start in range(0, samples.shape[1], 1024):
            chunk = av.AudioFrame.from_ndarray(samples[:, start : start + 1024], "fltp", "mono")
            chunk.sample_rate, chunk.pts = SAMPLE_RATE, start
            chunk.time_base = Fraction(1, SAMPLE_RATE)
            container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))
    if text is not None:
        line = av.Packet(b"an upscaled line")
        line.stream, line.pts, line.dts, line.duration = text, 40, 40, 200
        line.time_base = Fraction(1, 1000)
        container.mux(line)
    container.close()
    return path


def twice(pixels: np.ndarray) -> np.ndarray:
    """A trivial x2 'network': nearest-neighbour pixel repetition."""
    return np.repeat(np.repeat(pixels, 2, axis=0), 2, axis=1)


def upscale_clip(source: Path, target: Path, **options: object) -> VideoWriter:
    """Read ``source``, repeat its pixels x2, write ``target`` with its sound; the writer."""
    info = probe_video(source)
    with VideoWriter(
        target, info.width * 2, info.height * 2, like=info, source=source, **options
    ) as writer:  # type: ignore[arg-type]
        for frame in read_video_frames(source):
            writer.write(twice(frame.pixels), frame.pts, frame.duration)
    return writer


def packets(path: Path, kind: str) -> list[tuple[bytes, float | None]]:
    """The bytes and times (s) of the first ``kind`` stream's packets."""
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        return [
            (bytes(p), None if p.pts is None else float(p.pts * p.time_base))
            for p in container.demux(stream)
            if p.size
        ]


def decoded_audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)


def frame_times(path: Path) -> list[float]:
    return [frame.time for frame in read_video_frames(path) if frame.time is not None]


# --- a clip with sound through read, x2, write ---------------------------------------------------
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_sound_and_subtitles_are_copied_and_frames_kept(tmp_path: Path, suffix: str):
    source = make_clip(tmp_path / f"clip{suffix}", frames=10, subtitle=suffix == ".mkv")
    target = tmp_path / "out" / source.name
    writer = upscale_clip(source, target)
    assert writer.notes == []
    before, after = probe_video(source), probe_video(target)
    assert (after.frames, after.fps, after.variable_fps) == (10, before.fps, False)
    assert (after.width, after.height) == (64, 48)
    assert [(a.codec, a.language) for a in after.audio] == [("aac", "fra")]
    with av.open(str(target)) as container:
        assert container.metadata["title"] == "A sine"
    assert packets(target, "audio") == packets(source, "audio")
    assert np.array_equal(decoded_audio(target), decoded_audio(source))
    if suffix == ".mkv":
        assert packets(target, "subtitles") == [(b"an upscaled line", 0.04)]
        assert [(t.codec, t.language) for t in after.subtitles] == [("srt", "eng")]
    assert frame_times(target) == frame_times(source)
    for got, lr in zip(read_video_frames(target), read_video_frames(source), strict=True):
        # 4:2:0 chroma filtered twice and x264 at CRF 18 on a tiny frame: a few levels.
        assert np.abs(got.pixels.astype(int) - twice(lr.pixels)).mean() < 5.0
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_colour_round_trip_and_tags_and_rotation_are_kept(tmp_path: Path):
    tags = {"colorspace": 1, "color_range": 2, "color_primaries": 1, "color_trc": 1}
    source = make_clip(
        tmp_path / "hd.mkv", frames=3, audio=False, pix_fmt="yuv444p", tags=tags, rotation=90
    )
    info = probe_video(source)
    assert (info.colorspace, info.color_range, info.color_primaries, info.color_trc) == (1, 2, 1, 1)
    assert info.rotation == 90
    target = tmp_path / "out.mkv"
    upscale_clip(source, target, codec="ffv1")  # lossless, 4:4:4: only the conversions differ
    out = probe_video(target)
    assert (out.colorspace, out.color_range, out.color_primaries, out.color_trc) == (1, 2, 1, 1)
    assert out.rotation == 90
    for got, lr in zip(read_video_frames(target), read_video_frames(source), strict=True):
        assert np.abs(got.pixels.astype(int) - twice(lr.pixels)).max() <= 2  # 8-bit YUV levels


def test_untagged_source_is_written_with_the_matrix_it_was_converted_with(tmp_path: Path):
    source = make_clip(tmp_path / "plain.mp4", frames=2, audio=False)
    assert probe_video(source).colorspace == 2  # unspecified
    target = tmp_path / "out.mp4"
    upscale_clip(source, target)
    out = probe_video(target)
    assert (out.colorspace, out.color_range) == (6, 1)  # BT.601 (swscale's default), limited


def test_ten_bits_in_ten_bits_out(tmp_path: Path):
    source = make_clip(tmp_path / "deep.mkv", frames=3, audio=False, pix_fmt="yuv420p10le")
    assert probe_video(source).bit_depth == 10
    assert next(read_video_frames(source)).pixels.dtype == np.uint16
    target = tmp_path / "out.mkv"
    assert upscale_clip(source, target).notes == []
    out = probe_video(target)
    assert (out.pix_fmt, out.bit_depth) == ("yuv420p10le", 10)
    with av.open(str(target)) as container:
        luma = next(container.decode(video=0)).to_ndarray(format="yuv420p10le")
    assert np.any(luma % 4 != 0)  # levels an 8-bit picture shifted to 10 bits cannot have


def test_an_eight_bit_codec_says_it_drops_bits(tmp_path: Path):
    source = make_clip(tmp_path / "deep.mkv", frames=2, audio=False, pix_fmt="yuv420p10le")
    writer = upscale_clip(source, tmp_path / "out.mkv", codec="mpeg4")
    assert any("10-bit source written with 8 bits" in note for note in writer.notes)
    assert probe_video(tmp_path / "out.mkv").bit_depth == 8


# --- variable frame rate -----------------------------------------------------------------------
STAMPS = [0, 40, 80, 200, 240, 250, 400, 440]  # ms: irregular on purpose


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_variable_frame_rate_timestamps_are_kept(tmp_path: Path, suffix: str):
    source = make_clip(tmp_path / "vfr.mkv", frames=len(STAMPS), stamps=STAMPS)
    assert probe_video(source).variable_fps
    assert frame_times(source) == pytest.approx([s / 1000 for s in STAMPS])
    target = tmp_path / f"out{suffix}"
    assert upscale_clip(source, target).notes == []
    assert probe_video(target).variable_fps
    assert frame_times(target) == pytest.approx([s / 1000 for s in STAMPS], abs=1e-3)


def test_avi_says_it_cannot_keep_a_variable_frame_rate(tmp_path: Path):
    source = make_clip(tmp_path / "vfr.mkv", frames=len(STAMPS), stamps=STAMPS, audio=False)
    writer = upscale_clip(source, tmp_path / "out.avi")
    assert any("holds one rate" in note for note in writer.notes)
    times = frame_times(tmp_path / "out.avi")  # one after the other at the average rate
    assert len(times) == len(STAMPS) and np.allclose(np.diff(times), 1 / 25)
    assert probe_video(tmp_path / "out.avi").header_frames == len(STAMPS)


# --- broken inputs -----------------------------------------------------------------------------
def broken_inputs(folder: Path) -> dict[str, str]:
    """Files that are not usable videos -> the words their error says."""
    folder.mkdir()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    whole = make_clip(folder / "whole.mp4", frames=10).read_bytes()
    (folder / "cut.mp4").write_bytes(whole[: len(whole) // 2])
    with av.open(str(folder / "sound.mp4"), "w") as container:  # sound only
        stream = container.add_stream("aac", rate=SAMPLE_RATE)
        frame = av.AudioFrame.from_ndarray(sine(0.1), "fltp", "mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return {
        "missing.mp4": "no such file",
        "empty.mp4": "empty",
        "noise.mp4": "not a readable video",
        "cut.mp4": "not a readable video",
        "sound.mp4": "no video stream",
    }


def test_broken_videos_are_one_line_errors_naming_the_file(tmp_path: Path):
    for name, words in broken_inputs(tmp_path / "in").items():
        path = tmp_path / "in" / name
        with pytest.raises(VideoError) as caught:
            probe_video(path)
        message = str(caught.value)
        assert str(path) in message and words in message and "\n" not in message, message
        with pytest.raises(VideoError, match=words):
            next(read_video_frames(path))


def test_a_failed_write_leaves_nothing(tmp_path: Path):
    target = tmp_path / "out" / "clip.mp4"
    with pytest.raises(RuntimeError), VideoWriter(target, 32, 24, fps=Fraction(10)) as writer:
        writer.write(picture(0))
        raise RuntimeError("the network failed")
    assert list(target.parent.iterdir()) == []
    with pytest.raises(VideoError, match="no frame was written"), VideoWriter(target, 32, 24):
        pass
    with pytest.raises(VideoError, match="expected"), VideoWriter(target, 32, 24) as writer:
        writer.write(picture(0, size=(30, 24)))
    with pytest.raises(VideoError, match="no nope encoder"):
        VideoWriter(target, 32, 24, codec="nope")
    assert list(target.parent.iterdir()) == []


# --- a writer killed outright ------------------------------------------------------------------
SLOW_WRITER = """
import sys, time
from fractions import Fraction
from pathlib import Path
import numpy as np
from src.io.video import VideoWriter

noise = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
with VideoWriter(Path(sys.argv[1]), 128, 96, fps=Fraction(25)) as writer:
    for index in range(10_000):
        writer.write(np.roll(noise, index, axis=1))  # hard to compress: the buffers fill
        if index == 80:  # past x264's look-ahead: packets have reached the muxer
            print("writing", flush=True)
        if index >= 80:
            time.sleep(0.01)
"""


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_sigkill_mid_write_leaves_no_finished_looking_file(tmp_path: Path, suffix: str):
    target = tmp_path / "out" / f"clip{suffix}"
    script = tmp_path / "slow_writer.py"
    script.write_text(SLOW_WRITER)
    process = subprocess.Popen(
        [sys.executable, str(script), str(target)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "writing\n"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    left = list(target.parent.iterdir())
    assert not target.exists()
    assert len(left) == 1 and is_temporary(left[0]), left
    if suffix == ".mp4":  # (Matroska holds a whole cluster, x264's 250-frame GOP, in memory)
        assert left[0].stat().st_size > 0
    assert remove_stale_partials(target.parent) == left  # its writer is gone: the next run cleans
    assert list(target.parent.iterdir()) == []


# --- frame folders -----------------------------------------------------------------------------
def frame_folder(folder: Path, names: list[str], sizes: dict[str, tuple[int, int]] | None = None):
    for index, name in enumerate(names):
        write_image(folder / name, picture(index, (sizes or {}).get(name, SIZE)))
    return folder


def test_a_frame_folder_is_read_in_natural_order(tmp_path: Path):
    names = [f"frame{i}.png" for i in range(1, 12)]  # frame10 after frame9, not after frame1
    folder = frame_folder(tmp_path / "clip", names[::-1])
    (folder / "notes.txt").write_text("not a frame")
    assert [p.name for p in read_frame_folder(folder)] == names
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="no frames"):
        read_frame_folder(tmp_path / "empty")


@pytest.mark.parametrize(
    ("names", "sizes", "named", "words"),
    [
        (["f_001.png", "f_002.png", "f_004.png"], None, "f_004.png", "frame 3 missing"),
        (["f_001.png", "f_002.png", "f_003.png"], {"f_002.png": (30, 24)}, "f_002.png", "30x24"),
    ],
)
def test_frame_folder_gaps_and_mixed_sizes_are_refused(tmp_path, names, sizes, named, words):
    folder = frame_folder(tmp_path / "clip", names, sizes)
    with pytest.raises(VideoError) as caught:
        read_frame_folder(folder)
    assert str(folder / named) in str(caught.value) and words in str(caught.value)


def test_frame_folder_writer_keeps_names_and_appears_whole(tmp_path: Path):
    frames = read_frame_folder(frame_folder(tmp_path / "clip", ["a_1.png", "a_2.png"]))
    target = tmp_path / "out" / "clip"
    names = [p.name for p in frames]
    with pytest.raises(RuntimeError), FrameFolderWriter(target, names) as writer:
        writer.write(twice(picture(0)))
        raise RuntimeError("the network failed")
    assert not target.exists() and list(target.parent.iterdir()) == []
    for attempt in range(2):  # the second replaces the first
        with FrameFolderWriter(target, names) as writer:
            for index in range(2):
                writer.write(twice(picture(index + attempt)))
    assert sorted(p.name for p in target.iterdir()) == names
    assert [p.name for p in target.parent.iterdir()] == ["clip"]
    assert probe_size(target / "a_2.png") == (64, 48)


def probe_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


# --- src.predict keeps the sound -----------------------------------------------------------
def test_predict_keeps_frames_rate_and_sound(tmp_path: Path):
    source = make_clip(tmp_path / "in" / "clip.mp4", frames=6, fps=Fraction(30000, 1001))
    out = tmp_path / "out"
    result = run_module(
        "src.predict",
        [
            "model=bicubic",
            "scale=2",
            f"input={source}",
            f"output={out}",
            "progress=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    target = out / "clip.mp4"
    before, after = probe_video(source), probe_video(target)
    assert (after.frames, after.fps, after.width) == (6, Fraction(30000, 1001), 64)
    assert packets(target, "audio") == packets(source, "audio")
    assert np.array_equal(decoded_audio(target), decoded_audio(source))
    assert frame_times(target) == frame_times(source)
    assert before.frames == 6 and sorted(p.name for p in out.iterdir()) == ["clip.mp4"]
