"""Video files and frame folders in and out, through PyAV (FFmpeg): the one module that uses it.

* :func:`probe_video` says what a video holds (:class:`VideoInfo`): size, frame count (the
  video packets counted, not the header's word), average frame rate and whether it varies, pixel
  format and bit depth, colour tags, display rotation, and the audio and subtitle streams.
* :func:`read_video_frames` decodes it to RGB arrays, uint8 for 8-bit sources and uint16 for
  deeper ones, converted with the source's own matrix and range; each frame keeps its timestamp.
* :class:`VideoWriter` encodes RGB frames at their timestamps (a variable frame rate survives),
  tags the colour matrix, range, primaries and transfer of the source, keeps its bit depth where
  the codec has such a pixel format, and copies the source's audio and subtitle packets as they
  are (remuxed, never re-encoded), interleaved with the video. The file is written under a
  temporary name (:func:`src.utils.files.temporary_beside`: hidden, ``.partial``, the writer's
  process id) and renamed only when complete; an exception deletes it, and a killed process
  leaves only the temporary, which the next run removes.
* :func:`compress_frames` passes a clip through a video codec and back in memory (the video
  compression of RealBasicVSR's training degradations).
* :func:`read_frame_folder` takes a folder of frames as one clip, in natural name order,
  refusing gaps in numbered names and mixed sizes; :class:`FrameFolderWriter` writes upscaled
  frames under the same names into a folder that appears whole.

Every problem with a file is a :class:`VideoError` (a :class:`~src.utils.errors.UserError`) whose
one line names it.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import sys
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation

from src.io.images import header_only_pil, list_images, write_image
from src.io.kinds import ImageReadError
from src.utils.files import publish, publish_folder, temporary_beside

# Container suffix -> the codec written into it unless another is asked for.
DEFAULT_CODECS = {
    ".mp4": "libx264",
    ".m4v": "libx264",
    ".mov": "libx264",
    ".mkv": "libx264",
    ".avi": "libx264",
    ".webm": "libvpx-vp9",
}
VIDEO_SUFFIXES = tuple(DEFAULT_CODECS)
# Codecs whose quality is a constant rate factor (lower is better), and the one used by default:
# 18 is about visually lossless for x264, the point of upscaling.
CRF_DEFAULTS = {"libx264": 18, "libx265": 20, "libvpx-vp9": 24, "libsvtav1": 28}
# Containers that hold one frame rate only: frames are written one after the other at it.
CONSTANT_RATE_SUFFIXES = (".avi",)
FALLBACK_FPS = Fraction(25)
# FFmpeg's AVColorSpace -> the swscale matrix that converts it; others (unspecified, RGB) use
# BT.601, swscale's default, and the output is tagged with it (AVCOL_SPC_SMPTE170M) so a player
# does not guess BT.709 for the larger upscaled frame.
SWS_MATRIX = {
    1: Colorspace.ITU709,
    4: Colorspace.FCC,
    5: Colorspace.ITU601,
    6: Colorspace.ITU601,
    7: Colorspace.SMPTE240M,
    9: Colorspace.BT2020,
    10: Colorspace.BT2020,
}
BT601_TAG = 6
# AVColorRange: 0 unspecified (limited for YUV), 1 limited ("tv"), 2 full ("pc").
LIMITED_RANGE, FULL_RANGE = 1, 2
CONVERSION = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
RGB48 = "rgb48le" if sys.byteorder == "little" else "rgb48be"
# Container tags that describe the old file's muxer, not its content.
MUXER_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder"}
NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<number>\d+)$")


class VideoError(ImageReadError):
    """A video file (or frame folder) that cannot be used; the one-line message names it."""


@dataclass(frozen=True)
class StreamInfo:
    """An audio or subtitle stream of a video file."""

    index: int
    kind: str
    codec: str
    language: str | None


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, as its first video stream says.

    ``frames`` counts the stream's packets (a demux, no decoding), so a header that lies does not
    matter; ``header_frames`` is what the header announces (0: it does not say). ``fps`` is the
    average frame rate; ``variable_fps`` says the frame durations differ by more than a tick of
    ``time_base``. Colour tags are FFmpeg's enum values (AVColorRange, AVColorSpace,
    AVColorPrimaries, AVColorTransferCharacteristic; 2 = unspecified, range 0 = unspecified).
    """

    path: Path
    width: int
    height: int
    frames: int
    header_frames: int
    fps: Fraction
    variable_fps: bool
    time_base: Fraction
    codec: str
    pix_fmt: str
    bit_depth: int
    color_range: int
    colorspace: int
    color_primaries: int
    color_trc: int
    rotation: int
    audio: tuple[StreamInfo, ...]
    subtitles: tuple[StreamInfo, ...]

    @property
    def duration(self) -> float:
        """Seconds of video, from the frame count and the average rate."""
        return float(self.frames / self.fps)


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: (H, W, 3) RGB ``pixels`` (uint8, or uint16 from a >8-bit source), its
    ``index`` in display order and its timestamp and duration in ticks of ``time_base``."""

    index: int
    pixels: np.ndarray
    pts: int | None
    duration: int | None
    time_base: Fraction

    @property
    def time(self) -> float | None:
        return None if self.pts is None else float(self.pts * self.time_base)


# --- reading ---------------------------------------------------------------------------------
def open_input(path: Path) -> Any:
    """``path`` opened by FFmpeg with its first video stream, or :class:`VideoError` naming it."""
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: the file is empty (0 bytes)")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise VideoError(
            f"{path}: not a readable video (corrupt, truncated or unknown format: {reason(error)})"
        ) from None
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
        container.close()
        raise VideoError(f"{path}: no video stream in it ({kinds})")
    return container


def reason(error: BaseException) -> str:
    """FFmpeg's words for an error, without the errno number PyAV puts in front."""
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def bit_depth_of_format(pix_fmt: str) -> int:
    """Bits per sample of an FFmpeg pixel format: 8, 10, 12 or 16."""
    return max(component.bits for component in av.VideoFormat(pix_fmt).components)


def stream_infos(container: Any, kind: str) -> tuple[StreamInfo, ...]:
    streams = container.streams.audio if kind == "audio" else container.streams.subtitles
    return tuple(StreamInfo(s.index, kind, s.codec_context.name, s.language) for s in streams)


def packet_timing(container: Any, stream: Any) -> tuple[int, list[int]]:
    """The number of video packets in ``stream`` and their timestamps, by demuxing only."""
    count, stamps = 0, []
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:  # flush, or outside an edit list
                continue
            count += 1
            if packet.pts is not None:
                stamps.append(packet.pts)
    except av.FFmpegError:
        pass  # a damaged tail: the packets before it are what the file holds
    return count, stamps


def is_variable_rate(stamps: list[int]) -> bool:
    """Whether frame durations differ by more than one tick (rounding to the time base)."""
    steps = np.diff(np.unique(np.asarray(stamps, np.int64)))
    return steps.size > 1 and int(steps.max() - steps.min()) > 1


def average_rate(stream: Any, frames: int, stamps: list[int]) -> Fraction:
    """The container's average frame rate, else one from the timestamps, else 25."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    if frames > 1 and stamps and stream.time_base and max(stamps) > min(stamps):
        span = (max(stamps) - min(stamps)) * Fraction(stream.time_base)
        return Fraction(frames - 1) / span
    return FALLBACK_FPS


def first_frame(container: Any, stream: Any, path: Path) -> Any:
    """The first decodable frame, or :class:`VideoError` when there is none."""
    try:
        for frame in container.decode(stream):
            return frame
    except av.FFmpegError as error:
        raise VideoError(f"{path}: no frame could be decoded ({reason(error)})") from None
    raise VideoError(f"{path}: no frame could be decoded (no video data)")


def probe_video(path: Path) -> VideoInfo:
    """What ``path`` holds: demux its video packets and decode its first frame."""
    path = Path(path)
    container = open_input(path)
    try:
        stream = container.streams.video[0]
        frame = first_frame(container, stream, path)
        with av.open(str(path)) as again:  # from the start, without relying on seeking
            frames, stamps = packet_timing(again, again.streams.video[0])
        context = stream.codec_context
        return VideoInfo(
            path=path,
            width=frame.width,
            height=frame.height,
            frames=frames,
            header_frames=max(int(stream.frames or 0), 0),
            fps=average_rate(stream, frames, stamps),
            variable_fps=is_variable_rate(stamps),
            time_base=Fraction(stream.time_base or Fraction(1, 90000)),
            codec=context.name,
            pix_fmt=frame.format.name,
            bit_depth=bit_depth_of_format(frame.format.name),
            color_range=int(frame.color_range or context.color_range or 0),
            colorspace=int(frame.colorspace),
            color_primaries=int(frame.color_primaries),
            color_trc=int(frame.color_trc),
            rotation=int(frame.rotation or 0),
            audio=stream_infos(container, "audio"),
            subtitles=stream_infos(container, "subtitle"),
        )
    finally:
        container.close()


def source_range(frame: Any) -> int:
    """The frame's YUV range; unspecified is limited, except FFmpeg's full-range ``yuvj``."""
    if frame.color_range in (LIMITED_RANGE, FULL_RANGE):
        return int(frame.color_range)
    return FULL_RANGE if frame.format.name.startswith("yuvj") else LIMITED_RANGE


def to_rgb(frame: Any, deep: bool) -> np.ndarray:
    """A decoded frame as (H, W, 3) RGB, uint16 when ``deep``, with its own matrix and range."""
    rgb = frame.reformat(
        format=RGB48 if deep else "rgb24",
        src_colorspace=SWS_MATRIX.get(int(frame.colorspace), Colorspace.ITU601),
        src_color_range=source_range(frame),
        dst_color_range=ColorRange.JPEG,
        interpolation=CONVERSION,
    )
    return rgb.to_ndarray()


def read_video_frames(path: Path) -> Generator[VideoFrame, None, None]:
    """The frames of ``path`` in display order; a decoding failure is a :class:`VideoError`
    naming the file and the frame."""
    path = Path(path)
    container = open_input(path)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    time_base = Fraction(stream.time_base or Fraction(1, 90000))
    index = 0
    try:
        deep: bool | None = None
        for frame in container.decode(stream):
            if deep is None:
                deep = bit_depth_of_format(frame.format.name) > 8
            yield VideoFrame(
                index, to_rgb(frame, deep), frame.pts, frame.duration or None, time_base
            )
            index += 1
    except av.FFmpegError as error:
        raise VideoError(
            f"{path}: frame {index + 1} cannot be decoded ({reason(error)}): truncated or "
            f"damaged after {index} good frames"
        ) from None
    finally:
        container.close()


# --- writing ---------------------------------------------------------------------------------
def chroma_of(pix_fmt: str) -> str:
    """The chroma layout of a pixel format: 420, 422 or 444 (RGB and gray count as 444)."""
    found = re.match(r"yuvj?a?(4\d\d)p", pix_fmt)
    return found.group(1) if found else "444"


def pixel_format_for(codec: Any, chroma: str, depth: int, width: int, height: int) -> str:
    """The YUV pixel format ``codec`` writes closest to ``chroma`` at ``depth`` bits: the same
    depth first (or the deepest below it), 4:4:4 when odd sizes rule out subsampling."""
    offered = {f.name for f in codec.video_formats or ()}
    layouts = [chroma, "420", "422", "444"]
    if width % 2 or height % 2:
        layouts = ["444"]
    depths = [d for d in (16, 12, 10, 8) if d <= max(depth, 8)]
    for bits in depths:
        for layout in dict.fromkeys(layouts):
            name = f"yuv{layout}p" if bits == 8 else f"yuv{layout}p{bits}le"
            if name in offered:
                return name
    if not offered:
        return "yuv420p"
    return sorted(offered)[0]


class VideoWriter:
    """Encodes RGB frames to ``path`` (a context manager); ``path`` appears only on a clean exit.

    ``like`` (a probed source) gives the frame rate, time base, colour tags, rotation and bit
    depth; ``source`` is the file whose audio and subtitle streams are copied (none when None).
    ``codec`` defaults to the container's (:data:`DEFAULT_CODECS`), ``quality`` is its constant
    rate factor (:data:`CRF_DEFAULTS`), ``bit_depth`` overrides the source's, ``fps`` is used
    when there is no ``like``; ``options`` go to the encoder as they are. What cannot be kept
    (10 bits in an 8-bit codec, a variable rate in AVI, a stream the container cannot hold) is
    said in :attr:`notes`.
    """

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        *,
        like: VideoInfo | None = None,
        source: Path | None = None,
        codec: str | None = None,
        quality: int | None = None,
        bit_depth: int | None = None,
        fps: Fraction | None = None,
        options: Mapping[str, str] | None = None,
    ):
        self.path = Path(path)
        self.size = (width, height)
        self.like = like
        self.notes: list[str] = []
        self.frames = 0
        suffix = self.path.suffix.lower()
        if suffix not in DEFAULT_CODECS:
            raise VideoError(f"{self.path}: not a video suffix ({' '.join(VIDEO_SUFFIXES)})")
        self.fps = Fraction(like.fps if like else fps or FALLBACK_FPS)
        self.time_base = like.time_base if like else 1 / self.fps
        self._one_rate = suffix in CONSTANT_RATE_SUFFIXES
        self._encoder_base = 1 / self.fps if self._one_rate else self.time_base
        self._durations: dict[int, int] = {}
        self._last_pts: int | None = None
        self._source: Any = None
        self._copies: Iterator[Any] = iter(())
        self._held: Any = None
        self.temporary = temporary_beside(self.path)
        try:
            self._container = av.open(str(self.temporary), "w")
            self.matrix_tag, self.range_tag = BT601_TAG, LIMITED_RANGE
            self._stream = self._add_video(codec or DEFAULT_CODECS[suffix], quality, bit_depth)
            self._stream.codec_context.options = {
                **self._stream.codec_context.options,
                **(options or {}),
            }
            if source is not None:
                self._add_copies(Path(source))
            self._copy_metadata()
        except BaseException as error:
            self._abandon()
            if isinstance(error, av.FFmpegError | ValueError) and not isinstance(error, VideoError):
                raise VideoError(
                    f"{self.path}: cannot write this video ({reason(error)})"
                ) from None
            raise

    # -- set-up ---------------------------------------------------------------------------------
    def _add_video(self, codec_name: str, quality: int | None, bit_depth: int | None) -> Any:
        """The video stream: ``codec_name`` at the closest pixel format, the source's colour
        tags and rotation, ``quality`` as its CRF."""
        pix_fmt = self._pixel_format(codec_name, bit_depth)
        stream: Any = self._container.add_stream(codec_name, rate=self.fps)
        stream.width, stream.height = self.size
        stream.pix_fmt = pix_fmt
        stream.time_base = self._encoder_base
        context = stream.codec_context
        context.time_base = self._encoder_base
        if self._one_rate:
            context.max_b_frames = 0  # AVI stores no presentation times to reorder by
        self._tag_colours(context)
        like = self.like
        if like is not None and like.rotation:
            stream.set_display_rotation(like.rotation)
        crf = quality if quality is not None else CRF_DEFAULTS.get(codec_name)
        if crf is not None and codec_name in CRF_DEFAULTS:
            context.options = {"crf": str(crf), **({"b": "0"} if "vpx" in codec_name else {})}
        elif quality is not None:
            self.notes.append(f"{self.path}: quality={quality} ignored ({codec_name} has no CRF)")
        if self._one_rate and like is not None and like.variable_fps:
            self.notes.append(
                f"{self.path}: the source's frame rate varies, and {self.path.suffix} holds one "
                f"rate: frames written one after the other at {float(self.fps):.3f} fps "
                f"(.mkv or .mp4 keep the timing)"
            )
        return stream

    def _pixel_format(self, codec_name: str, bit_depth: int | None) -> str:
        """The pixel format to encode in, with a note when it holds fewer bits than wanted."""
        try:
            codec = av.Codec(codec_name, "w")
        except (av.FFmpegError, ValueError):  # PyAV's UnknownCodecError is a ValueError
            raise VideoError(f"{self.path}: this FFmpeg has no {codec_name} encoder") from None
        like = self.like
        depth = bit_depth or (like.bit_depth if like else 8)
        chroma = chroma_of(like.pix_fmt) if like else "420"
        pix_fmt = pixel_format_for(codec, chroma, depth, *self.size)
        if bit_depth_of_format(pix_fmt) < depth:
            self.notes.append(
                f"{self.path}: {depth}-bit source written with {bit_depth_of_format(pix_fmt)} "
                f"bits ({codec_name} has no deeper pixel format; libx265, ffv1 or libx264 keep 10)"
            )
        return pix_fmt

    def _tag_colours(self, context: Any) -> None:
        """The matrix and range frames are converted with, and the source's primaries and
        transfer, as the stream's colour tags."""
        like = self.like
        self.matrix_tag = like.colorspace if like and like.colorspace in SWS_MATRIX else BT601_TAG
        self.range_tag = source_range_of(like)
        context.colorspace = self.matrix_tag
        context.color_range = self.range_tag
        if like is not None:
            context.color_primaries = like.color_primaries
            context.color_trc = like.color_trc

    def _add_copies(self, source: Path) -> None:
        """Output streams for the source's audio and subtitles (their tags and flags too), and
        their packets to copy."""
        self._source = open_input(source)
        held = set(self._container.supported_codecs)
        copied = []
        for stream in (*self._source.streams.audio, *self._source.streams.subtitles):
            name = stream.codec_context.name
            if name not in held:
                self.notes.append(
                    f"{self.path}: {stream.type} stream {stream.index} ({name}) not copied: "
                    f"{self.path.suffix} cannot hold it (.mkv can hold most)"
                )
                continue
            output = self._container.add_stream_from_template(stream)
            output.metadata.update(
                {k: v for k, v in stream.metadata.items() if k.lower() not in MUXER_TAGS}
            )
            output.disposition = stream.disposition
            copied.append((stream, output))
        if not copied:
            return
        targets = {stream.index: output for stream, output in copied}
        packets = self._source.demux(*(stream for stream, _ in copied))
        self._copies = (self._retarget(p, targets) for p in packets if not is_flush(p))

    @staticmethod
    def _retarget(packet: Any, targets: dict[int, Any]) -> Any:
        packet.stream = targets[packet.stream_index]
        return packet

    def _copy_metadata(self) -> None:
        """The source's title and other tags, its video's language and title, and its chapters,
        where the container has them."""
        if self._source is None:
            return
        for key, value in self._source.metadata.items():
            if key.lower() not in MUXER_TAGS:
                self._container.metadata[key] = value
        video = self._source.streams.video[0].metadata
        for key in ("language", "title"):  # not its statistics: the video is a new one
            if key in video:
                self._stream.metadata[key] = video[key]
        chapters = self._source.chapters()
        if chapters:
            self._container.set_chapters(chapters)

    # -- frames ---------------------------------------------------------------------------------
    def write(
        self, pixels: np.ndarray, pts: int | None = None, duration: int | None = None
    ) -> None:
        """Encode one (H, W, 3) RGB frame, uint8 or uint16, shown at ``pts`` for ``duration``
        ticks of :attr:`time_base` (the source's: a frame read from it passes its own); without
        them frames follow each other at :attr:`fps`."""
        if (
            pixels.ndim != 3
            or pixels.shape[2] != 3
            or (pixels.shape[1], pixels.shape[0]) != self.size
        ):
            raise VideoError(
                f"{self.path}: frame of shape {pixels.shape}, expected {self.size[::-1]} x 3"
            )
        if pixels.dtype not in (np.uint8, np.uint16):
            raise VideoError(f"{self.path}: frames must be uint8 or uint16, got {pixels.dtype}")
        pts = self._encoder_pts(pts, duration)
        try:
            self._mux_video(self._stream.encode(self._frame(pixels, pts)))
            self._mux_copies(until=float(pts * self._encoder_base))
        except av.FFmpegError as error:
            raise VideoError(
                f"{self.path}: writing frame {self.frames + 1} failed ({reason(error)})"
            ) from None
        self.frames += 1

    def _encoder_pts(self, pts: int | None, duration: int | None) -> int:
        """``pts`` (ticks of :attr:`time_base`) in the encoder's ticks, after the last frame's;
        its duration is kept for the packet."""
        tick = round(1 / (self.fps * self._encoder_base)) or 1
        scale = self.time_base / self._encoder_base
        if pts is None or self._one_rate:  # AVI: one frame after the other, no gaps
            pts = 0 if self._last_pts is None else self._last_pts + tick
            duration = None
        else:
            pts = round(pts * scale)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # a repeated (or rounded-together) timestamp: encoders refuse
        self._durations[pts] = round(duration * scale) if duration else tick
        self._last_pts = pts
        return pts

    def _frame(self, pixels: np.ndarray, pts: int) -> Any:
        rgb = av.VideoFrame.from_ndarray(
            np.ascontiguousarray(pixels), format="rgb24" if pixels.dtype == np.uint8 else RGB48
        )
        frame = rgb.reformat(
            format=self._stream.pix_fmt,
            src_colorspace=SWS_MATRIX.get(self.matrix_tag, Colorspace.ITU601),
            dst_colorspace=SWS_MATRIX.get(self.matrix_tag, Colorspace.ITU601),
            src_color_range=ColorRange.JPEG,
            dst_color_range=self.range_tag,
            interpolation=CONVERSION,
        )
        frame.colorspace = self.matrix_tag
        frame.color_range = self.range_tag
        if self.like is not None:
            frame.color_primaries = self.like.color_primaries
            frame.color_trc = self.like.color_trc
        frame.pts = pts
        frame.time_base = self._encoder_base
        return frame

    def _mux_video(self, packets: list[Any]) -> None:
        for packet in packets:
            if not packet.duration and packet.pts is not None:
                packet.duration = self._durations.get(packet.pts, 0)
            self._durations.pop(packet.pts, None)
            self._container.mux(packet)

    def _mux_copies(self, until: float | None) -> None:
        """Copy the source's packets up to ``until`` seconds (all when None), so the file stays
        interleaved and none are held in memory for long."""
        while True:
            packet = self._held or next(self._copies, None)
            if packet is None:
                return
            stamp = packet.dts if packet.dts is not None else packet.pts
            if until is not None and stamp is not None and stamp * packet.time_base > until:
                self._held = packet
                return
            self._held = None
            self._container.mux(packet)

    # -- ending ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Flush the encoder, copy the rest of the source's packets, and publish the file."""
        try:
            self._mux_video(self._stream.encode(None))
            self._mux_copies(until=None)
            self._container.close()
        except av.FFmpegError as error:
            self._abandon()
            raise VideoError(f"{self.path}: finishing the file failed ({reason(error)})") from None
        self._close_source()
        if self.frames == 0:
            self.temporary.unlink(missing_ok=True)
            raise VideoError(f"{self.path}: no frame was written; nothing published")
        publish(self.temporary, self.path)

    def _close_source(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def _abandon(self) -> None:
        """Close whatever is open and delete the temporary file."""
        for closing in (getattr(self, "_container", None), self._source):
            if closing is not None:
                # It is being thrown away; its own error would say nothing new.
                with contextlib.suppress(Exception):
                    closing.close()
        self._source = None
        self.temporary.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self._abandon()


def source_range_of(like: VideoInfo | None) -> int:
    """The range to write: the source's (unspecified: limited, ``yuvj``: full), else limited."""
    if like is None:
        return LIMITED_RANGE
    if like.color_range in (LIMITED_RANGE, FULL_RANGE):
        return like.color_range
    return FULL_RANGE if like.pix_fmt.startswith("yuvj") else LIMITED_RANGE


def is_flush(packet: Any) -> bool:
    """The empty packet PyAV's demuxer yields at the end of each stream."""
    return packet.size == 0 and packet.pts is None and packet.dts is None


# --- compression in memory ------------------------------------------------------------------
def compress_frames(frames: np.ndarray, codec: str, bitrate: int) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames encoded with ``codec`` at ``bitrate`` bits per second of a
    1 frame/s stream (so bits per frame), 4:2:0, into an MP4 in memory, and decoded back, as
    mmagic's ``RandomVideoCompression``. An odd side is padded by repeating its last row or
    column and cropped after. One encoder thread: the same frames give the same output."""
    count, height, width, _ = frames.shape
    padded = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream: Any = container.add_stream(codec, rate=1)
        stream.width, stream.height = padded.shape[2], padded.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = int(bitrate)
        stream.codec_context.thread_count = 1
        for pixels in padded:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer, "r", format="mp4") as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    if len(decoded) != count:
        raise VideoError(f"{codec}: {count} frames encoded, {len(decoded)} decoded")
    return np.stack(decoded)[:, :height, :width]


# --- frame folders ---------------------------------------------------------------------------
def natural_key(path: Path) -> list[Any]:
    """Sort key: digits compare as numbers (frame2 before frame10)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, or by decoding when Pillow cannot parse it."""
    from PIL import Image

    try:
        with header_only_pil(), Image.open(path) as image:
            return image.size
    except Exception:  # not a format Pillow reads (DICOM): decode it
        from src.io.images import decode

        pixels = decode(path)
        return pixels.shape[1], pixels.shape[0]


def check_numbering(frames: list[Path]) -> None:
    """Refuse a gap in frames numbered with one prefix (frame_001, frame_002, ...)."""
    found = [NUMBERED.match(p.stem) for p in frames]
    if not all(found) or len({m.group("prefix") for m in found if m}) != 1:
        return
    numbers = [int(m.group("number")) for m in found if m]
    for path, previous, number in zip(frames[1:], numbers, numbers[1:], strict=False):
        if number != previous + 1:
            gap = "a repeated number" if number == previous else f"frame {previous + 1} missing"
            raise VideoError(f"{path}: the frame numbers jump from {previous} to {number} ({gap})")


def read_frame_folder(folder: Path) -> list[Path]:
    """The images of ``folder`` as one clip, in natural name order; refuses an empty folder, a
    gap in numbered names and frames of different sizes, naming the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoError(f"{folder}: no such folder")
    frames = sorted(list_images(folder), key=natural_key)
    if not frames:
        raise VideoError(f"{folder}: no frames in it (image files)")
    check_numbering(frames)
    first = image_size(frames[0])
    for path in frames[1:]:
        size = image_size(path)
        if size != first:
            raise VideoError(
                f"{path}: {size[0]}x{size[1]}, while {frames[0].name} is {first[0]}x{first[1]} "
                f"(a clip's frames share one size)"
            )
    return frames


class FrameFolderWriter:
    """Writes a clip's frames as images under the source frames' names into ``folder``, which
    appears (or replaces the old one) only on a clean exit; a context manager."""

    def __init__(self, folder: Path, names: list[str]):
        self.folder = Path(folder)
        self.names = list(names)
        self.written = 0
        self.temporary = temporary_beside(self.folder, folder=True)

    def write(self, pixels: np.ndarray) -> Path:
        """Write the next frame with :func:`src.io.images.write_image`; returns its final path."""
        if self.written >= len(self.names):
            raise VideoError(f"{self.folder}: more frames than the {len(self.names)} names given")
        name = self.names[self.written]
        write_image(self.temporary / name, pixels)
        self.written += 1
        return self.folder / name

    def __enter__(self) -> FrameFolderWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is not None or self.written != len(self.names):
            shutil.rmtree(self.temporary, ignore_errors=True)
            if kind is None:
                raise VideoError(
                    f"{self.folder}: {self.written} of {len(self.names)} frames written; "
                    f"nothing published"
                )
            return
        publish_folder(self.temporary, self.folder)


def is_video_encoder(name: str) -> bool:
    """Whether this FFmpeg (PyAV's own) can encode video with the codec ``name``."""
    try:
        return bool(av.Codec(name, "w").type == "video")
    except (av.FFmpegError, ValueError):  # PyAV's UnknownCodecError is a ValueError
        return False
