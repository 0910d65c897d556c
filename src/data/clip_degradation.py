"""RealBasicVSR's training degradation (Chan et al., CVPR 2022): Real-ESRGAN's second-order
pipeline drawn once per clip, plus video compression by a real codec, applied to whole batches
of clips on the training device after transfer, as the image batch path is
(:mod:`src.data.batch_degradation`).

Same draws, same operations, per clip: every parameter of a step (kernel, resize mode, noise kind,
strength and grayness, JPEG quality, codec and bitrate, order of the last step) is drawn by the
``draw_*`` functions of :mod:`src.data.synthetic` from a NumPy generator seeded by the clip's own
seed (:class:`~src.data.clips.TrainingClips` gives every sample one), and every frame of the clip
goes through the batch path's operations with those parameters. Noise values differ from frame
to frame (each frame has a generator seeded from the clip's draw), as in the authors' pipeline;
their kind and strength do not. The resize factor of each round is drawn per batch, as in the
image batch path (a batch is one tensor); the authors train one clip per GPU, where that is per
clip.

The order is mmagic's ``configs/real_basicvsr`` training pipeline: round one (blur, resize,
noise, JPEG, then video compression: ``video.first``), round two (blur, resize, noise, JPEG, and
``video.second`` where given), then the last step, in random order: the compression (JPEG under
``final.jpeg``, then ``video.final``) and the resize to the LR size with its sinc filter
(``final.jpeg_first_prob`` is the probability that the compression comes first). The sides of
every random resize are floored to even numbers, as mmagic's ``is_size_even`` (a 4:2:0 codec
needs them). ``from_sharpened``: the clip data module degrades the unsharp-masked HR
(``data.sharpen_target``), as the authors do.

Video compression (mmagic's ``RandomVideoCompression``): a codec drawn from ``codecs`` with their
probabilities and an integer bitrate uniform in ``bitrate``, both ends included, in bits per
second of a 1 frame/s stream; the clip's frames go through :func:`src.io.video.compress_frames`
on the CPU. Not reproduced: mmagic lets the blur, noise, JPEG and resize parameters drift from
frame to frame by small random steps (``*_step``); here they are the same on every frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from src.data.batch_degradation import add_noise, compress, patch_generators, resize_by_mode
from src.data.synthetic import (
    SEED_BOUND,
    NoiseDraw,
    RealESRGANDegradation,
    StageSettings,
    choose,
    draw_blur,
    draw_final,
    draw_jpeg,
    draw_noise,
    draw_resize,
    plain,
    resized_shape,
)
from src.io.video import compress_frames, is_video_encoder
from src.ops import degrade
from src.utils.errors import UserError

T = TypeVar("T")
VIDEO_SLOTS = ("first", "second", "final")


@dataclass(frozen=True)
class VideoSettings:
    """With probability ``prob``, a video codec round trip: the codec drawn from ``codecs``
    (name: probability, normalised), the bitrate from ``bitrate`` (bits per frame)."""

    prob: float = 1.0
    codecs: Mapping[str, float] = field(default_factory=lambda: {"libx264": 2 / 3, "mpeg4": 1 / 3})
    bitrate: tuple[int, int] = (10_000, 100_000)

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"prob must be between 0 and 1, got {self.prob}")
        weights = list(self.codecs.values())
        if not weights or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"codecs need non-negative probabilities, got {self.codecs}")
        missing = [name for name in self.codecs if not is_video_encoder(name)]
        if missing:
            raise ValueError(f"codec(s) {missing}: this FFmpeg (PyAV's) has no encoder")
        low, high = self.bitrate
        if not 0 < low <= high:
            raise ValueError(
                f"bitrate must be [low, high] with 0 < low <= high, got {list(self.bitrate)}"
            )


@dataclass(frozen=True)
class VideoDraw:
    """One clip's compression: ``codec`` at ``bitrate``."""

    codec: str
    bitrate: int


def video_settings(values: Mapping[str, Any] | None) -> dict[str, VideoSettings | None]:
    """``video`` of the config: a :class:`VideoSettings` mapping or null per slot."""
    v = plain(values or {})
    unknown = sorted(set(v) - set(VIDEO_SLOTS))
    if unknown:
        raise ValueError(f"unknown video slot(s) {unknown}; choose from {list(VIDEO_SLOTS)}")
    settings: dict[str, VideoSettings | None] = {}
    for slot in VIDEO_SLOTS:
        try:
            settings[slot] = None if v.get(slot) is None else VideoSettings(**v[slot])
        except (TypeError, ValueError) as error:
            raise ValueError(f"video.{slot}: {error}") from None
    return settings


def draw_video(rng: np.random.Generator, settings: VideoSettings | None) -> VideoDraw | None:
    """A clip's codec and bitrate, or None when it is not compressed (or ``settings`` is None,
    which draws nothing)."""
    if settings is None or rng.uniform() >= settings.prob:
        return None
    codec = choose(rng, settings.codecs)
    low, high = (int(end) for end in settings.bitrate)
    return VideoDraw(codec, int(rng.integers(low, high + 1)))


def per_frame(values: Sequence[T], frames: int) -> list[T]:
    """Each clip's value once for each of its frames, clip after clip."""
    return [value for value in values for _ in range(frames)]


def even(length: int) -> int:
    """``length`` floored to an even number, at least 2."""
    return max(2, length - length % 2)


def noise_generators(
    rngs: list[np.random.Generator], draws: Sequence[NoiseDraw | None], frames: int
) -> list[np.random.Generator]:
    """A generator for each frame: seeded from one draw of its clip's generator where the clip
    has noise (so frames get different noise), the clip's own, untouched, where it has none."""
    out = []
    for rng, draw in zip(rngs, draws, strict=True):
        if draw is None:
            out.extend([rng] * frames)
            continue
        base = int(rng.integers(SEED_BOUND))
        out.extend(np.random.default_rng([base, frame]) for frame in range(frames))
    return out


def only(values: Sequence[T | None], keep: Sequence[bool]) -> list[T | None]:
    """``values`` where ``keep`` is true, None elsewhere."""
    return [value if k else None for value, k in zip(values, keep, strict=True)]


def compress_clips(image: torch.Tensor, frames: int, draws: list[VideoDraw | None]) -> torch.Tensor:
    """Each clip of (N x T, C, H, W) frames through its codec (on the CPU, on 8-bit levels);
    clips drawn without compression as they are."""
    if all(draw is None for draw in draws):
        return image
    clips = image.unflatten(0, (len(draws), frames))
    out = clips.clone()
    for index, draw in enumerate(draws):
        if draw is None:
            continue
        levels = torch.round(clips[index].clamp(0.0, 1.0) * 255.0).to(torch.uint8)
        pixels = levels.permute(0, 2, 3, 1).cpu().numpy()
        decoded = compress_frames(pixels, draw.codec, draw.bitrate)
        restored = torch.from_numpy(decoded).permute(0, 3, 1, 2).to(image.device, image.dtype)
        out[index] = restored / 255.0
    return out.flatten(0, 1)


def compression(
    image: torch.Tensor,
    frames: int,
    qualities: list[int | None],
    videos: list[VideoDraw | None],
) -> torch.Tensor:
    """Each clip's JPEG round trip at its quality, then its video codec; None: not that one."""
    image = compress(image, per_frame(qualities, frames))
    return compress_clips(image, frames, videos)


class ClipRealESRGANDegradation(RealESRGANDegradation):
    """Real-ESRGAN's degradation drawn per clip, with video compression (module docstring).

    ``first``, ``second`` and ``final`` are as :class:`~src.data.synthetic.RealESRGANDegradation`
    takes them; ``video`` maps ``first``/``second``/``final`` to a :class:`VideoSettings`
    mapping or null. Clips only: :meth:`degrade_clips`."""

    on_device = True

    def __init__(
        self,
        first: Mapping[str, Any] | None = None,
        second: Mapping[str, Any] | None = None,
        final: Mapping[str, Any] | None = None,
        video: Mapping[str, Any] | None = None,
        from_sharpened: bool = False,
    ):
        super().__init__(first, second, final)
        self.video = video_settings(video)
        self.from_sharpened = bool(from_sharpened)

    def __call__(self, hr: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
        raise self._clips_only()

    def degrade_batch(self, hr: torch.Tensor, seeds: Sequence[int], scale: int) -> torch.Tensor:
        raise self._clips_only()

    @staticmethod
    def _clips_only() -> UserError:
        return UserError(
            "degradation=realbasicvsr degrades clips: train on clip data (data=reds, "
            "synthetic_clips, clip_folder, vimeo90k)"
        )

    def degrade_clips(self, hr: torch.Tensor, seeds: Sequence[int], scale: int) -> torch.Tensor:
        """(N, T, 3, H, W) HR in [0, 1] -> (N, T, 3, H // scale, W // scale) LR on 8-bit
        levels, clip i degraded by the draws of ``seeds[i]``."""
        if hr.dim() != 5 or hr.shape[0] != len(seeds):
            raise ValueError(
                f"clips (N, T, C, H, W) and N seeds, got {tuple(hr.shape)} and {len(seeds)} seeds"
            )
        frames = hr.shape[1]
        rngs = patch_generators(seeds)
        batch_rng = np.random.default_rng([int(seed) for seed in seeds])
        lr_size = (hr.shape[-2] // scale, hr.shape[-1] // scale)
        image = hr.float().flatten(0, 1)
        for stage, slot in ((self.first, "first"), (self.second, "second")):
            image = self._clip_round(image, frames, stage, slot, lr_size, rngs, batch_rng)
        image = self._clip_final(image, frames, lr_size, rngs)
        return (torch.round(image.clamp(0.0, 1.0) * 255.0) / 255.0).unflatten(0, hr.shape[:2])

    def _clip_round(
        self,
        image: torch.Tensor,
        frames: int,
        stage: StageSettings,
        slot: str,
        lr_size: tuple[int, int],
        rngs: list[np.random.Generator],
        batch_rng: np.random.Generator,
    ) -> torch.Tensor:
        kernels = [draw_blur(rng, stage) for rng in rngs]
        if any(k is not None for k in kernels):
            stacked = degrade.stack_kernels(per_frame(kernels, frames), image.device, image.dtype)
            image = degrade.filter_each(image, stacked)
        scale, _ = draw_resize(batch_rng, stage.resize)
        shape = (image.shape[-2], image.shape[-1])
        height, width = resized_shape(stage.resize, scale, shape, lr_size)
        modes = [draw_resize(rng, stage.resize)[1] for rng in rngs]
        image = resize_by_mode(image, (even(height), even(width)), per_frame(modes, frames))
        noises = [draw_noise(rng, stage.noise) for rng in rngs]
        generators = noise_generators(rngs, noises, frames)
        image = add_noise(image, per_frame(noises, frames), generators)
        qualities = [draw_jpeg(rng, stage.jpeg) for rng in rngs]
        videos = [draw_video(rng, self.video[slot]) for rng in rngs]
        return compression(image, frames, qualities, videos)

    def _clip_final(
        self,
        image: torch.Tensor,
        frames: int,
        lr_size: tuple[int, int],
        rngs: list[np.random.Generator],
    ) -> torch.Tensor:
        draws = [draw_final(rng, self.final) for rng in rngs]
        videos = [draw_video(rng, self.video["final"]) for rng in rngs]
        qualities = [d.quality for d in draws]
        before = [d.first for d in draws]
        image = compression(image, frames, only(qualities, before), only(videos, before))
        image = resize_by_mode(image, lr_size, per_frame([d.mode for d in draws], frames))
        if any(d.sinc is not None for d in draws):
            sincs = degrade.stack_kernels(
                per_frame([d.sinc for d in draws], frames), image.device, image.dtype
            )
            image = degrade.filter_each(image, sincs)
        after = [not first for first in before]
        return compression(image, frames, only(qualities, after), only(videos, after))


def degrades_clips(degradation: Any) -> bool:
    """True for a degradation the clip data module applies to training batches of clips."""
    return callable(getattr(degradation, "degrade_clips", None))
