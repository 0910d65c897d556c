"""Synthetic clips: a camera moving smoothly over a still photograph, for CPU demos and tests.

Each clip is a view of ``frame_size`` HR pixels that pans over the photo at a steady, sub-pixel
velocity along a gentle arc while it zooms and turns slowly (a magnification between 1 and
``1 + max_zoom``, so the photo is never shrunk and nothing aliases; a turn of at most
``max_rotation`` degrees). Every HR frame is rendered from the photo by one affine warp
(``cv2.warpAffine``, bicubic, in float32, rounded to uint8; OpenCV places samples to 1/32 px),
so consecutive frames show the same scene displaced by a fraction of a pixel: the sub-pixel
information a multi-frame network can use and a single-image network cannot. LR frames are
MATLAB bicubic (``bi``) or BD (``bd``) of the HR frames, as for real clips.

Everything about a clip (its path, its photo) is a function of ``(seed, image index, clip
index)``: the same seed gives the same pixels. Validation uses photos held out of training
(``conf/data/synthetic_clips.yaml``: trained on astronaut, coffee, rocket, hubble_deep_field and
immunohistochemistry; validated on chelsea and stereo_motorcycle, as ``data=sample``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from src.data.clips import Clip, ClipError, make_lr, modcrop_frames, refuse_or_warn
from src.data.errors import DatasetNotFoundError
from src.data.sources import ImageSource, OnBadImage

# Source pixels kept between a view's corner and the photo's edge (the bicubic taps' reach).
EDGE_MARGIN = 3.0


@dataclass(frozen=True)
class CameraPath:
    """Where the view is in each frame: its centre (x, y) in photo pixels, its magnification
    (frame pixels per photo pixel) and its angle in radians."""

    centres: np.ndarray
    zooms: np.ndarray
    angles: np.ndarray

    @property
    def length(self) -> int:
        return len(self.zooms)


def view_extent(frame_size: tuple[int, int], max_angle: float) -> np.ndarray:
    """Half the width and height, in photo pixels, that a view of ``frame_size`` (h, w) at
    magnification >= 1 and an angle up to ``max_angle`` can cover, plus the edge margin."""
    h, w = frame_size
    c, s = abs(math.cos(max_angle)), abs(math.sin(min(max_angle, math.pi / 2)))
    return np.array([(c * w + s * h) / 2.0, (s * w + c * h) / 2.0]) + EDGE_MARGIN


def draw_path(
    rng: np.random.Generator,
    frames: int,
    frame_size: tuple[int, int],
    image_size: tuple[int, int],
    max_speed: float,
    max_zoom: float,
    max_rotation: float,
) -> CameraPath:
    """A smooth camera path over a photo of ``image_size`` (h, w): a pan bent into a gentle
    arc whose fastest step is up to ``max_speed`` photo px, a zoom and a turn that change
    linearly from one random value to another. The view stays inside the photo; a path too
    long for it is slowed down until it fits."""
    max_angle = math.radians(max_rotation)
    extent = view_extent(frame_size, max_angle)
    room = np.array([image_size[1] - 1.0, image_size[0] - 1.0]) - 2.0 * extent
    if np.any(room < 0):
        raise ClipError(
            f"a {image_size[1]}x{image_size[0]} photo is too small for views of "
            f"{frame_size[1]}x{frame_size[0]} px (frame_size)"
        )
    t = np.arange(frames, dtype=np.float64)
    heading = rng.uniform(0.0, 2.0 * math.pi)
    speed = rng.uniform(0.25, 1.0) * max_speed
    bend = rng.uniform(-1.0, 1.0) * 2.0
    along = np.array([math.cos(heading), math.sin(heading)])
    across = np.array([-along[1], along[0]])
    arc = np.sin(math.pi * t / max(frames - 1, 1))
    offsets = t[:, None] * along + bend * arc[:, None] * across
    steps = np.linalg.norm(np.diff(offsets, axis=0), axis=1) if frames > 1 else np.ones(1)
    offsets *= speed / steps.max()  # the fastest step moves ``speed`` px
    span = offsets.max(axis=0) - offsets.min(axis=0)
    shrink = min(1.0, *(r / s for r, s in zip(room, span, strict=True) if s > 0))
    offsets *= shrink
    low = extent - offsets.min(axis=0)
    high = extent + room - offsets.max(axis=0)
    start = low + rng.uniform(0.0, 1.0, size=2) * (high - low)
    zoom_from, zoom_to = 1.0 + rng.uniform(0.0, max_zoom, size=2)
    angle_from, angle_to = rng.uniform(-max_angle, max_angle, size=2)
    zooms = np.linspace(float(zoom_from), float(zoom_to), frames)
    angles = np.linspace(float(angle_from), float(angle_to), frames)
    return CameraPath(start + offsets, zooms, angles)


def view_matrix(
    centre: np.ndarray, zoom: float, angle: float, frame_size: tuple[int, int]
) -> np.ndarray:
    """The 2x3 affine map from frame pixel (x, y) to photo pixel of one view."""
    h, w = frame_size
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    linear = np.array([[cos, -sin], [sin, cos]])
    frame_centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    return np.hstack([linear, (centre - linear @ frame_centre)[:, None]])


def render_frames(image: np.ndarray, path: CameraPath, frame_size: tuple[int, int]) -> np.ndarray:
    """The HR frames of ``path`` over an (H, W, 3) uint8 photo: (T, h, w, 3) uint8."""
    h, w = frame_size
    photo = image.astype(np.float32)
    frames = []
    for centre, zoom, angle in zip(path.centres, path.zooms, path.angles, strict=True):
        matrix = view_matrix(centre, float(zoom), float(angle), frame_size)
        warped = cv2.warpAffine(
            photo,
            matrix,
            (w, h),
            flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT_101,
        )
        frames.append(np.clip(np.floor(warped + 0.5), 0, 255).astype(np.uint8))
    return np.stack(frames)


@dataclass(frozen=True)
class SyntheticClip:
    """One synthetic clip, rendered when read."""

    set_name: str
    name: str
    image: np.ndarray = field(repr=False)
    path: CameraPath = field(repr=False)
    size: tuple[int, int]
    lr_source: Literal["bi", "bd"] = "bi"

    @property
    def frame_names(self) -> tuple[str, ...]:
        return tuple(f"{t:08d}" for t in range(self.path.length))

    def frame_size(self) -> tuple[int, int]:
        return self.size

    def read(self, scale: int) -> Clip:
        hr = np.ascontiguousarray(
            modcrop_frames(render_frames(self.image, self.path, self.size), scale)
        )
        return Clip(
            self.set_name, self.name, self.frame_names, hr, make_lr(hr, scale, self.lr_source)
        )


@dataclass(kw_only=True)
class SyntheticClips:
    """``clips_per_image`` clips of ``frames`` frames of ``frame_size`` (height, width) HR px
    over each photo of ``images`` (any image source: the bundled photos, a folder), their
    paths drawn from ``seed`` (see the module docstring for the other settings). A photo too
    small for the view is refused or skipped (``on_bad_image``)."""

    images: ImageSource
    name: str = "synthetic_clips"
    clips_per_image: int = 4
    frames: int = 15
    frame_size: tuple[int, int] = (128, 128)
    max_speed: float = 2.0
    max_zoom: float = 0.05
    max_rotation: float = 1.0
    seed: int = 0
    lr_source: Literal["bi", "bd"] = "bi"
    on_bad_image: OnBadImage = "error"
    _made: list[SyntheticClip] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.frame_size = (int(self.frame_size[0]), int(self.frame_size[1]))
        if self.lr_source not in ("bi", "bd"):
            raise ClipError(f"{self.name}: lr_source must be bi or bd, got {self.lr_source!r}")

    def clips_found(self) -> list[SyntheticClip]:
        """Every clip (made once: photos decoded, paths drawn; frames rendered when read)."""
        if self._made is not None:
            return self._made
        made, problems = [], []
        for index, image in enumerate(self.images.load()):
            for number in range(self.clips_per_image):
                rng = np.random.default_rng((self.seed, index, number))
                try:
                    path = draw_path(
                        rng,
                        self.frames,
                        self.frame_size,
                        image.pixels.shape[:2],
                        self.max_speed,
                        self.max_zoom,
                        self.max_rotation,
                    )
                except ClipError as error:
                    problems.append(f"{self.images.name}/{image.name}: {error}")
                    break
                name = f"{image.name}_{number:02d}"
                made.append(
                    SyntheticClip(
                        self.name, name, image.pixels, path, self.frame_size, self.lr_source
                    )
                )
        refuse_or_warn(problems, self.on_bad_image, f"photo(s) of {self.name}")
        if not made:
            raise DatasetNotFoundError(f"{self.name}: no photo is large enough for a clip")
        self._made = made
        return made
