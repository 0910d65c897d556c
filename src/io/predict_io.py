"""Upscaling image and video files: colour handling around the shared inference path, and the
loop of ``src.predict`` (skip existing outputs, keep going past bad files, report).

An :data:`Upscaler` maps a (1, C, h, w) tensor in [0, 1] to (1, C, h*s, w*s), C = 3 (RGB) or 1
for a single-channel network (``data.channels=1``); it is
``SRModule.forward`` or :func:`src.ops.inference.upscale` around an onnxruntime session, so
tiling and self-ensemble are the shared path's. Around it:

* grayscale runs as three equal channels and comes back as BT.601 luma (0.299 R + 0.587 G +
  0.114 B), one channel again; through a single-channel network it runs as it is, and a colour
  image is refused there;
* alpha is upscaled separately with the MATLAB-exact bicubic (:func:`src.ops.imresize.imresize`)
  and re-attached;
* 16-bit images run in float (value / 65535) and are written back as 16-bit (PNG, TIFF); a
  format that holds 8 bits only (JPEG, WebP) gets 8 bits, and the run says so for that file;
* videos run frame by frame through :mod:`src.io.video`: timestamps, colour tags and bit depth
  (where the codec has it) are kept, and the sound and subtitles are copied, not re-encoded.

With a video network (a :data:`ClipUpscaler`: the module's clip path over frames as they are
decoded, :func:`src.ops.video_inference.stream_upscale`), a video file is one clip, and so is a
folder of frames (:func:`find_clip_inputs`): read in name order, written under the same names
into ``output/<folder name>/``, which appears only when every frame is in it. Each video or
frame folder has a progress bar of frames done, frames/s and time left.

Before an image is decoded its header says how large it is: one whose upscaling would need more
memory than ``memory_mb`` (by default 80% of what the system has available) is refused with a
line naming it, and the other files go on. A multi-frame GIF or TIFF is upscaled from its first
frame, with a note saying so.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch
from tqdm import tqdm

from src.io.dicom import is_dicom, write_dicom
from src.io.images import SIXTEEN_BIT_SUFFIXES, ImageReadError, list_images, write_image
from src.io.media import (
    GLOB_CHARS,
    ImageHeader,
    MediaError,
    find_inputs,
    is_video,
    output_path,
    read_header,
    read_image,
    same_file,
    usable_input,
)
from src.io.video import (
    FrameFolderWriter,
    VideoError,
    VideoFrame,
    VideoInfo,
    VideoWriter,
    is_video_encoder,
    probe_video,
    read_frame_folder,
    read_video_frames,
)
from src.ops.imresize import imresize
from src.ops.video_inference import ShortClipError
from src.utils.errors import UserError

Upscaler = Callable[[torch.Tensor], torch.Tensor]
# A video network's clip path: frames (1, C, h, w) in [0, 1], in order, to their upscaled frames
# (1, C, h*s, w*s), in order, holding only a bounded number of frames at a time.
ClipUpscaler = Callable[[Iterable[torch.Tensor]], Iterator[torch.Tensor]]
Tag = TypeVar("Tag")
# In float64: in float32 three equal channels come back up to one 16-bit level off.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float64)
MAX_LISTED = 10
# Per-file problems: reported, and the run goes on with the next file.
FILE_ERRORS = (ImageReadError, ShortClipError, OSError, cv2.error)


# --- one image -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Restore:
    """What an image's trip through the network leaves out, to give the result its kind back:
    its sample type, whether it was gray run as RGB, its alpha plane, the network's channels."""

    dtype: np.dtype
    gray: bool
    alpha: np.ndarray | None
    channels: int


def network_input(pixels: np.ndarray, channels: int = 3) -> tuple[np.ndarray, Restore]:
    """An (H, W) gray or (H, W, 3|4) RGB(A) uint8/uint16 image as the (H, W, ``channels``)
    float32 [0, 1] input of a network of ``channels`` (3 or 1) channels, and its
    :class:`Restore`."""
    unit = pixels.astype(np.float32) / float(np.iinfo(pixels.dtype).max)
    gray = unit.ndim == 2
    if channels == 1:
        if not gray:
            raise ImageReadError(
                f"a {unit.shape[2]}-channel image, and the network takes one channel "
                f"(a single-channel model); convert it to grayscale first"
            )
        return unit[:, :, None], Restore(pixels.dtype, False, None, 1)
    rgb = np.repeat(unit[:, :, None], 3, axis=2) if gray else unit[:, :, :3]
    alpha = unit[:, :, 3] if not gray and unit.shape[2] == 4 else None
    return rgb, Restore(pixels.dtype, gray, alpha, 3)


def restore(sr: np.ndarray, kind: Restore) -> np.ndarray:
    """The network's (H*s, W*s, C) float output as an image of the input's kind."""
    if kind.channels == 1:
        return quantize(sr[:, :, 0], kind.dtype)
    if kind.gray:
        sr = sr @ LUMA_WEIGHTS
    elif kind.alpha is not None:
        alpha = upscale_alpha(kind.alpha, sr.shape[:2])
        sr = np.concatenate([sr, alpha[:, :, None]], axis=2)
    return quantize(sr, kind.dtype)


def to_tensor(unit: np.ndarray) -> torch.Tensor:
    """(H, W, C) float32 -> (1, C, H, W), sharing memory."""
    return torch.from_numpy(np.ascontiguousarray(unit)).permute(2, 0, 1)[None]


def from_tensor(sr: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) -> (H, W, C) float32 in [0, 1] on the CPU."""
    return sr[0].float().clamp(0.0, 1.0).permute(1, 2, 0).cpu().numpy()


def run_rgb(upscaler: Upscaler, rgb: np.ndarray) -> np.ndarray:
    """(H, W, C) float32 in [0, 1] -> (H*s, W*s, C) float32 in [0, 1] through ``upscaler``."""
    with torch.no_grad():
        return from_tensor(upscaler(to_tensor(rgb)))


def upscale_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float alpha plane resized to ``size`` (H, W) by bicubic, clipped to [0, 1]."""
    resized = imresize(torch.from_numpy(np.ascontiguousarray(alpha)), size=size)
    return resized.clamp(0.0, 1.0).numpy()


def upscale_pixels(upscaler: Upscaler, pixels: np.ndarray, channels: int = 3) -> np.ndarray:
    """Upscale an (H, W) gray or (H, W, 3|4) RGB(A) uint8/uint16 image, keeping its kind, by a
    network of ``channels`` (3 or 1) channels."""
    unit, kind = network_input(pixels, channels)
    return restore(run_rgb(upscaler, unit), kind)


def upscale_stream(
    clip: ClipUpscaler, frames: Iterable[tuple[Tag, np.ndarray]], channels: int = 3
) -> Iterator[tuple[Tag, np.ndarray]]:
    """Each ``(tag, pixels)`` of a clip as ``(tag, upscaled pixels)``, in order, through a video
    network: the frames are converted as :func:`upscale_pixels` converts an image, and only
    what restoring them needs (alpha planes) waits for their outputs."""
    waiting: deque[tuple[Tag, Restore]] = deque()

    def inputs() -> Iterator[torch.Tensor]:
        for tag, pixels in frames:
            unit, kind = network_input(pixels, channels)
            waiting.append((tag, kind))
            yield to_tensor(unit)

    for sr in clip(inputs()):
        tag, kind = waiting.popleft()
        yield tag, restore(from_tensor(sr), kind)


def quantize(unit: np.ndarray, dtype: np.dtype, rows: int = 256) -> np.ndarray:
    """[0, 1] floats to integer levels of ``dtype``, rounded as the metric path rounds
    (:func:`src.metrics.paper.to_uint8_levels`): the product with the peak is taken in float64,
    where it is exact. In float32 it is not, and a value just under a half level can round up,
    so a written PNG would score differently from the same output scored in memory."""
    peak = float(np.iinfo(dtype).max)
    levels = np.empty(unit.shape, dtype)
    for start in range(0, unit.shape[0], rows):  # in row bands: float64 only for one band
        band = np.clip(unit[start : start + rows].astype(np.float64), 0.0, 1.0) * peak
        levels[start : start + rows] = np.rint(band)
    return levels


# --- files -----------------------------------------------------------------------------------
@dataclass
class Report:
    """What a run did, for the closing summary and the exit status."""

    scale: int
    images: int = 0
    videos: int = 0
    folders: int = 0  # frame folders run as clips
    frames: int = 0
    pixels_in: int = 0
    pixels_out: int = 0
    skipped: list[Path] = field(default_factory=list)
    failed: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, lr_pixels: int) -> None:
        self.pixels_in += lr_pixels
        self.pixels_out += lr_pixels * self.scale**2

    def summary(self) -> str:
        done = f"{self.images} image{'s' * (self.images != 1)}"
        clips = [
            f"{count} {noun}{'s' * (count != 1)}"
            for count, noun in ((self.videos, "video"), (self.folders, "frame folder"))
            if count
        ]
        if clips:
            done += f" and {' and '.join(clips)} ({self.frames} frames)"
        line = (
            f"upscaled {done} x{self.scale} in {self.seconds:.1f} s: "
            f"{self.pixels_in / 1e6:.3g} MP in, {self.pixels_out / 1e6:.3g} MP out"
        )
        return f"{line}; {len(self.skipped)} skipped, {len(self.failed)} failed"


def say_note(report: Report, note: str) -> None:
    """Record ``note`` for the summary and print it now."""
    report.notes.append(note)
    tqdm.write(f"note: {note}", file=sys.stderr)


def listing(paths: list[Path]) -> str:
    names = ", ".join(p.name for p in paths[:MAX_LISTED])
    return names + (f" and {len(paths) - MAX_LISTED} more" if len(paths) > MAX_LISTED else "")


def target_of(source: Path, output_dir: Path, output_format: str | None) -> Path:
    """Where ``source``'s result goes: a frame folder to ``output_dir/<its name>``, a file as
    :func:`src.io.media.output_path` says."""
    if source.is_dir():
        return output_dir / source.name
    return output_path(source, output_dir, output_format)


def plan(inputs: list[Path], output_dir: Path, output_format: str | None) -> list[Path]:
    """The output path of each input; refuses two inputs sharing one, or writing over an input."""
    targets = [target_of(source, output_dir, output_format) for source in inputs]
    seen: dict[Path, Path] = {}
    for source, target in zip(inputs, targets, strict=True):
        if same_file(target, source):
            raise UserError(f"{source}: the output would replace the input; choose another output")
        if target in seen:
            raise UserError(f"{seen[target]} and {source} would both be written to {target}")
        seen[target] = source
    return targets


def upscale_bytes(header: ImageHeader, scale: int) -> int:
    """About the most memory upscaling this image takes: the decoded input and its float32
    copies (3 per channel in the worst case), and at the output size the network's float32
    result, the copy it is taken out in and two float temporaries of the rounding, all RGB."""
    inputs = header.pixels * header.channels * (header.sample_bytes + 3 * 4)
    outputs = header.pixels * scale**2 * 3 * 4 * 4
    return inputs + outputs


def readable_bytes(size: float) -> str:
    return f"{size / 2**30:.1f} GB" if size >= 2**30 else f"{size / 2**20:.0f} MB"


def check_image_fits(
    source: Path, header: ImageHeader | None, scale: int, budget: int | None
) -> None:
    """Refuse, naming it, an image whose upscaling would not fit ``budget`` bytes."""
    if header is None or budget is None:
        return
    needed = upscale_bytes(header, scale)
    if needed > budget:
        raise MediaError(
            f"{source}: {header.width}x{header.height} ({header.pixels / 1e6:.0f} MP) needs "
            f"about {readable_bytes(needed)} to upscale x{scale} (the decoded image, its float "
            f"copies and the x{scale} output), over the budget of {readable_bytes(budget)} "
            f"(memory_mb); skipped"
        )


def upscale_image_file(
    upscaler: Upscaler,
    source: Path,
    target: Path,
    report: Report,
    budget: int | None = None,
    channels: int = 3,
) -> None:
    header = read_header(source)
    check_image_fits(source, header, report.scale, budget)
    if header is not None and header.frames > 1:
        say_note(report, f"{source}: {header.frames} frames; only the first is upscaled")
    pixels = read_image(source)
    if pixels.dtype == np.uint16 and target.suffix.lower() not in SIXTEEN_BIT_SUFFIXES:
        say_note(
            report,
            f"{target}: 16-bit result written with 8 bits ({target.suffix} holds no more); "
            f"output_format=png or tiff keeps 16",
        )
    upscaled = upscale_pixels(upscaler, pixels, channels)
    if is_dicom(target):
        if not is_dicom(source):
            raise MediaError(f"{source}: DICOM output needs a DICOM input (its tags are kept)")
        write_dicom(target, upscaled, source, report.scale)
    else:
        write_image(target, upscaled)
    report.images += 1
    report.count(pixels.shape[0] * pixels.shape[1])


@dataclass(frozen=True)
class VideoSettings:
    """How upscaled videos are encoded: ``codec`` (None: the container's default,
    :data:`src.io.video.DEFAULT_CODECS`) and ``quality`` (its CRF; None: the codec's default)."""

    codec: str | None = None
    quality: int | None = None


def check_frame_count(source: Path, decoded: int, info: VideoInfo, report: Report) -> None:
    """Refuse a video that decoded to fewer frames than it holds (a damaged or cut one); say so
    when its header announces more frames than it holds (dropped frames in a capture, an edit
    list, or a file cut cleanly between two frames)."""
    if decoded == 0:
        raise VideoError(f"{source}: no frame could be decoded")
    if decoded < info.frames:
        raise VideoError(
            f"{source}: only {decoded} of the {info.frames} frames it holds could be decoded "
            f"(truncated or damaged); nothing written for it"
        )
    if info.header_frames > info.frames:
        say_note(
            report,
            f"{source}: its header announces {info.header_frames} frames and it holds "
            f"{info.frames} (dropped frames, an edit list, or a truncated file); "
            f"{decoded} upscaled",
        )


def check_video_settings(settings: VideoSettings) -> None:
    """Refuse, before any work, a codec this FFmpeg cannot encode video with."""
    if settings.codec is None:
        return
    if not is_video_encoder(settings.codec):
        raise UserError(
            f"video_codec={settings.codec}: this FFmpeg has no such video encoder "
            f"(e.g. libx264, libx265, libvpx-vp9, ffv1; null: the container's default)"
        )


def frame_bar(total: int | None, name: str, progress: bool) -> tqdm:
    """One clip's progress line: frames done of ``total``, frames/s and time left."""
    return tqdm(total=total, unit="frame", leave=False, disable=not progress, desc=name)


def upscaled_video_frames(
    upscaler: Upscaler, clip: ClipUpscaler | None, frames: Iterable[VideoFrame], channels: int
) -> Iterator[tuple[VideoFrame, np.ndarray]]:
    """Each decoded frame with its upscaled pixels: the video as one clip through a video
    network's ``clip``, else frame by frame through ``upscaler``."""
    if clip is not None:
        yield from upscale_stream(clip, ((frame, frame.pixels) for frame in frames), channels)
        return
    for frame in frames:
        yield frame, upscale_pixels(upscaler, frame.pixels, channels)


def upscale_video_file(
    upscaler: Upscaler,
    source: Path,
    target: Path,
    report: Report,
    progress: bool,
    channels: int = 3,
    settings: VideoSettings | None = None,
    clip: ClipUpscaler | None = None,
) -> None:
    """Upscale every frame (as one clip through ``clip``, a video network's, when given),
    keeping timestamps, colour tags, bit depth where the codec allows, and the source's audio
    and subtitle packets; the output appears only when complete, and not at all for a video
    with frames that cannot be decoded (:func:`check_frame_count`)."""
    settings = settings or VideoSettings()
    info = probe_video(source)
    frames = 0
    size = (info.width * report.scale, info.height * report.scale)
    with VideoWriter(
        target, *size, like=info, source=source, codec=settings.codec, quality=settings.quality
    ) as writer:
        for note in writer.notes:
            say_note(report, note)
        stream = read_video_frames(source)
        bar = frame_bar(info.frames or None, source.name, progress)
        with contextlib.closing(stream), bar:
            for frame, pixels in upscaled_video_frames(upscaler, clip, stream, channels):
                writer.write(pixels, frame.pts, frame.duration)
                frames += 1
                bar.update()
        check_frame_count(source, frames, info, report)
    report.videos += 1
    report.frames += frames
    report.count(frames * info.width * info.height)


def upscale_frame_folder(
    clip: ClipUpscaler,
    source: Path,
    target: Path,
    report: Report,
    progress: bool,
    channels: int = 3,
    output_format: str | None = None,
) -> None:
    """A folder of frames as one clip through a video network: frames in name order
    (:func:`src.io.video.read_frame_folder` refuses gaps and mixed sizes), written under the
    same names (the suffix of ``output_format`` where given) into ``target``, which appears
    only when every frame is in it."""
    paths = read_frame_folder(source)
    names = [output_path(path, target, output_format).name for path in paths]
    frames = ((path, read_image(path)) for path in paths)
    bar = frame_bar(len(paths), source.name, progress)
    with FrameFolderWriter(target, names) as writer, bar:
        for _, pixels in upscale_stream(clip, frames, channels):
            writer.write(pixels)
            bar.update()
    height, width = pixels.shape[:2]
    report.folders += 1
    report.frames += len(paths)
    report.count(len(paths) * (height // report.scale) * (width // report.scale))


def explain(error: BaseException, source: Path) -> str:
    """``error``'s message, led by the file it concerns."""
    message = str(error).strip() or type(error).__name__
    return message if str(source) in message else f"{source}: {message}"


def upscale_files(
    upscaler: Upscaler,
    inputs: list[Path],
    output_dir: Path,
    scale: int,
    output_format: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    budget: int | None = None,
    channels: int = 3,
    video: VideoSettings | None = None,
    clip: ClipUpscaler | None = None,
) -> Report:
    """Upscale each input into ``output_dir`` by a network of ``channels`` channels, videos
    encoded as ``video`` says; with ``clip`` (a video network's), videos and frame folders run
    as clips. Bad files (and images over ``budget`` bytes to upscale) are reported and the rest
    go on."""
    report = Report(scale)
    targets = plan(inputs, output_dir, output_format)
    started = time.perf_counter()
    for source, target in tqdm(
        list(zip(inputs, targets, strict=True)), unit="file", disable=not progress
    ):
        if target.exists() and not overwrite:
            report.skipped.append(target)
            continue
        try:
            if source.is_dir() and clip is not None:
                upscale_frame_folder(
                    clip, source, target, report, progress, channels, output_format
                )
            elif is_video(source):
                upscale_video_file(
                    upscaler, source, target, report, progress, channels, video, clip
                )
            else:
                upscale_image_file(upscaler, source, target, report, budget, channels)
        except FILE_ERRORS as error:
            report.failed.append(source)
            tqdm.write(f"error: {explain(error, source)}", file=sys.stderr)
    report.seconds = time.perf_counter() - started
    return report


# --- inputs of a video network ---------------------------------------------------------------
def is_frame_folder(path: Path) -> bool:
    """A folder holding images and no video: one clip for a video network."""
    if not path.is_dir() or path.name.startswith("."):  # hidden, or an unfinished output's
        return False
    return bool(list_images(path)) and not any(is_video(p) for p in path.iterdir())


def find_clip_inputs(spec: str) -> list[Path]:
    """The inputs ``spec`` names for a video network, where a folder of frames is one clip:
    such a folder itself; a glob's files and frame folders; another folder's images, videos and
    frame folders (a set of clips: Vid4/BIx4 holds calendar/, city/, ...)."""
    path = Path(spec).expanduser()
    if is_frame_folder(path):
        return [path]
    if path.is_dir():
        entries = list(path.iterdir())
    elif any(char in spec for char in GLOB_CHARS) and not path.is_file():
        entries = [Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True)]
    else:
        return find_inputs(spec)
    found = sorted(p for p in entries if usable_input(p) or is_frame_folder(p))
    return found or find_inputs(spec)  # none: find_inputs says what was looked for
