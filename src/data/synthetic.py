"""Synthetic degradations beyond plain bicubic, each a :class:`~src.data.degradations.Degradation`.

* :class:`BicubicNoiseDegradation`: MATLAB bicubic, then Gaussian noise (the "DN" setting).
* :class:`BlurBicubicDegradation`: Gaussian blur of the HR, then MATLAB bicubic (the "BD" setting
  of RDN: 7x7, sigma 1.6), optionally with random anisotropic kernels.
* :class:`RealESRGANDegradation`: the second-order pipeline of Real-ESRGAN (Wang et al., ICCVW
  2021), written with NumPy and OpenCV: two rounds of blur (Gaussian family or sinc), random
  resize, Gaussian or Poisson noise and JPEG, then a resize to the LR size with a final sinc
  filter, in random order with the last JPEG.

Every random choice is drawn from the generator the dataset passes, so the same generator state
gives the same LR. Every setting is a constructor argument with a YAML key of the same name
(``conf/degradation/*.yaml``).

The random choices are made by the ``draw_*`` functions below, which the batch path on the
training device (:mod:`src.data.batch_degradation`) shares, so both draw the same parameters
from a patch's generator. Not included from Real-ESRGAN: its training-pair queue that mixes
degradations across a batch. The unsharp-masked target is ``data.sharpen_target``; JPEG here
is OpenCV's encoder, at an integer quality.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

from src.data.kernels import (
    BORDERS,
    KernelSettings,
    filter_image,
    gaussian_kernel,
    odd_size,
    random_kernel,
    sinc_kernel,
    uniform,
)
from src.ops.imresize import imresize_uint8
from src.utils import choices

# Noise values come from a generator seeded by one draw below this bound from the patch's own,
# so both paths take the same draws from it (the batch path seeds a torch.Generator instead).
SEED_BOUND = 2**62
RESIZE_MODES = dict(
    zip(choices.RESIZE_MODES, (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC), strict=True)
)
GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def plain(value: Any) -> Any:
    """YAML values (dicts, lists, OmegaConf containers) as dicts and tuples."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(plain(item) for item in value)
    return value


def check_choices(what: str, given: Iterable[str], allowed: tuple[str, ...]) -> None:
    """Refuse names outside ``allowed`` with a message listing the allowed ones."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; choose from {list(allowed)}")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float values in 0..255 -> uint8, rounded half up and clipped."""
    return np.clip(np.floor(image + 0.5), 0, 255).astype(np.uint8)


def choose(rng: np.random.Generator, probs: Mapping[str, float]) -> str:
    """A key of ``probs`` drawn with those (normalised) probabilities."""
    names = list(probs)
    weights = np.array([probs[name] for name in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def gaussian_noise(
    shape: tuple[int, ...], sigma: float, gray: bool, rng: np.random.Generator
) -> np.ndarray:
    """Zero-mean noise of standard deviation ``sigma``; ``gray`` shares it across channels."""
    noise_shape = (*shape[:2], 1) if gray else shape
    return rng.standard_normal(noise_shape, dtype=np.float32) * np.float32(sigma)


def poisson_noise(image: np.ndarray, gray: bool, rng: np.random.Generator) -> np.ndarray:
    """Shot noise of a [0, 1] image whose photon count per level follows the image's number of
    distinct 8-bit values (rounded up to a power of two), as in Real-ESRGAN."""
    source = image @ GRAY_WEIGHTS if gray else image
    levels = np.clip(np.rint(source * 255.0), 0, 255) / 255.0
    count = 2.0 ** math.ceil(math.log2(max(len(np.unique(levels)), 2)))
    noise = (rng.poisson(levels * count) / count - levels).astype(np.float32)
    return noise[..., None] if gray else noise


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip of a [0, 1] float RGB image at ``quality`` (OpenCV's encoder)."""
    encoded = to_uint8(np.clip(image, 0.0, 1.0) * 255.0)[:, :, ::-1]
    ok, buffer = cv2.imencode(".jpg", encoded, [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if ok else None
    if decoded is None:
        raise RuntimeError(f"JPEG round trip of a {image.shape} image failed")
    return decoded[:, :, ::-1].astype(np.float32) / 255.0


def resize(image: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """Resize a float (H, W, C) image to ``height x width`` (at least 1 px) with ``mode``."""
    height, width = max(1, height), max(1, width)
    if (height, width) == image.shape[:2]:
        return image
    resized = cv2.resize(image, (width, height), interpolation=RESIZE_MODES[mode])
    return resized.reshape(height, width, image.shape[2])


class BicubicNoiseDegradation:
    """MATLAB bicubic downscale, then Gaussian noise with ``sigma`` drawn from ``sigma`` (in
    0..255 levels); with probability ``gray_prob`` the same noise goes into every channel."""

    deterministic = False

    def __init__(self, sigma: Sequence[float] = (0.0, 30.0), gray_prob: float = 0.0):
        self.sigma = (float(sigma[0]), float(sigma[1]))
        self.gray_prob = float(gray_prob)

    def __call__(self, hr: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
        lr = imresize_uint8(hr, 1.0 / scale).astype(np.float32)
        gray = rng.uniform() < self.gray_prob
        return to_uint8(lr + gaussian_noise(lr.shape, uniform(rng, self.sigma), gray, rng))


class BlurBicubicDegradation:
    """Gaussian blur of the HR (rounded to uint8, as MATLAB's ``imfilter`` does), then MATLAB
    bicubic. An isotropic ``kernel_size`` kernel with ``sigma`` drawn from ``sigma``; with
    probability ``anisotropic_prob`` an anisotropic one, its axes' sigmas drawn from
    ``sigma_x``/``sigma_y`` and its rotation from ``rotation_deg``. ``border``: ``reflect`` or
    ``replicate`` (MATLAB ``imfilter(..., 'replicate')``).

    A single fixed isotropic kernel (``sigma`` a single value, ``anisotropic_prob`` 0) is
    deterministic: the data module then degrades each whole image once, at set-up.
    """

    def __init__(
        self,
        kernel_size: int = 7,
        sigma: Sequence[float] = (1.6, 1.6),
        anisotropic_prob: float = 0.0,
        sigma_x: Sequence[float] = (0.2, 4.0),
        sigma_y: Sequence[float] = (0.2, 4.0),
        rotation_deg: Sequence[float] = (0.0, 180.0),
        border: str = "reflect",
    ):
        if border not in BORDERS:
            raise ValueError(f"border must be one of {list(BORDERS)}, got {border!r}")
        gaussian_kernel(kernel_size, 1.0)  # refuses an even or non-positive size now
        self.kernel_size = int(kernel_size)
        self.sigma = (float(sigma[0]), float(sigma[1]))
        self.anisotropic_prob = float(anisotropic_prob)
        self.sigma_x = (float(sigma_x[0]), float(sigma_x[1]))
        self.sigma_y = (float(sigma_y[0]), float(sigma_y[1]))
        self.rotation_deg = (float(rotation_deg[0]), float(rotation_deg[1]))
        self.border = border
        self.deterministic = self.anisotropic_prob == 0 and self.sigma[0] == self.sigma[1]

    def kernel(self, rng: np.random.Generator) -> np.ndarray:
        """The blur kernel of one call."""
        if self.anisotropic_prob > 0 and rng.uniform() < self.anisotropic_prob:
            sigma_x, sigma_y = uniform(rng, self.sigma_x), uniform(rng, self.sigma_y)
            rotation = math.radians(uniform(rng, self.rotation_deg))
            return gaussian_kernel(self.kernel_size, sigma_x, sigma_y, rotation)
        return gaussian_kernel(self.kernel_size, uniform(rng, self.sigma))

    def __call__(self, hr: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
        blurred = filter_image(hr.astype(np.float32), self.kernel(rng), self.border)
        return imresize_uint8(to_uint8(blurred), 1.0 / scale)


@dataclass(frozen=True)
class ResizeSettings:
    """A random resize: ``up``/``down``/``keep`` with probabilities ``probs``; the factor from
    ``[1, scale[1]]`` up or ``[scale[0], 1]`` down, relative to the ``input`` image or to the
    final ``lr`` size; the interpolation drawn from ``modes``."""

    probs: Mapping[str, float] = field(
        default_factory=lambda: {"up": 0.2, "down": 0.7, "keep": 0.1}
    )
    scale: tuple[float, float] = (0.15, 1.5)
    modes: tuple[str, ...] = ("area", "bilinear", "bicubic")
    relative_to: Literal["input", "lr"] = "input"

    def __post_init__(self) -> None:
        check_choices("resize direction", self.probs, ("up", "down", "keep"))
        check_choices("resize mode", self.modes, tuple(RESIZE_MODES))
        check_choices("relative_to", (self.relative_to,), ("input", "lr"))


@dataclass(frozen=True)
class NoiseSettings:
    """With probability ``prob``, noise: Gaussian (``sigma`` in 0..255 levels) with probability
    ``gaussian_prob``, otherwise Poisson scaled by ``poisson_scale``; shared across channels
    (gray noise) with probability ``gray_prob``."""

    prob: float = 1.0
    gaussian_prob: float = 0.5
    sigma: tuple[float, float] = (1.0, 30.0)
    poisson_scale: tuple[float, float] = (0.05, 3.0)
    gray_prob: float = 0.4


@dataclass(frozen=True)
class JpegSettings:
    """With probability ``prob``, a JPEG round trip at a quality drawn from ``quality``."""

    prob: float = 1.0
    quality: tuple[float, float] = (30.0, 95.0)


@dataclass(frozen=True)
class StageSettings:
    """One round of degradation: blur (with probability ``blur_prob``), resize, noise, JPEG
    (``jpeg: null`` leaves it to the final step)."""

    blur_prob: float = 1.0
    blur: KernelSettings = field(default_factory=KernelSettings)
    resize: ResizeSettings = field(default_factory=ResizeSettings)
    noise: NoiseSettings = field(default_factory=NoiseSettings)
    jpeg: JpegSettings | None = field(default_factory=JpegSettings)

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> StageSettings:
        v = plain(values)
        parts = {"blur": KernelSettings, "resize": ResizeSettings, "noise": NoiseSettings}
        unknown = sorted(set(v) - {"blur_prob", "jpeg", *parts})
        if unknown:
            raise ValueError(f"unknown stage setting(s) {unknown}")
        built: dict[str, Any] = {k: part(**v[k]) for k, part in parts.items() if k in v}
        if "jpeg" in v:
            built["jpeg"] = None if v["jpeg"] is None else JpegSettings(**v["jpeg"])
        return cls(blur_prob=float(v.get("blur_prob", 1.0)), **built)


@dataclass(frozen=True)
class FinalSettings:
    """The last step: resize to the LR size (``modes``) followed by a sinc filter (with
    probability ``sinc_prob``, size from ``kernel_size``, cutoff in units of pi from
    ``sinc_cutoff``), and ``jpeg``; the JPEG comes first with probability ``jpeg_first_prob``."""

    modes: tuple[str, ...] = ("area", "bilinear", "bicubic")
    sinc_prob: float = 0.8
    kernel_size: tuple[int, int] = (7, 21)
    sinc_cutoff: tuple[float, float] = (1 / 3, 1.0)
    jpeg: JpegSettings = field(default_factory=JpegSettings)
    jpeg_first_prob: float = 0.5

    def __post_init__(self) -> None:
        check_choices("resize mode", self.modes, tuple(RESIZE_MODES))

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> FinalSettings:
        v = plain(values)
        if "jpeg" in v:
            v["jpeg"] = JpegSettings(**v["jpeg"])
        return cls(**v)


@dataclass(frozen=True)
class NoiseDraw:
    """One patch's noise: Gaussian of standard deviation ``strength`` (on the [0, 1] scale) or
    Poisson scaled by ``strength``; ``gray`` shares it across channels."""

    gaussian: bool
    strength: float
    gray: bool


@dataclass(frozen=True)
class FinalDraw:
    """One patch's last step: JPEG ``first`` or last, at ``quality`` (None: no JPEG), the
    resize ``mode`` and the sinc kernel (None: not filtered)."""

    first: bool
    quality: int | None
    mode: str
    sinc: np.ndarray | None


# The random choices of the pipeline, shared by the per-patch path below and the batch path
# (src/data/batch_degradation.py), so that both draw from the same distributions.
def draw_blur(rng: np.random.Generator, stage: StageSettings) -> np.ndarray | None:
    """The blur kernel of one round, or None when the round does not blur."""
    return random_kernel(rng, stage.blur) if rng.uniform() < stage.blur_prob else None


def draw_resize(rng: np.random.Generator, settings: ResizeSettings) -> tuple[float, str]:
    """A resize factor and interpolation mode."""
    direction = choose(rng, settings.probs)
    low, high = settings.scale
    if direction == "up":
        scale = uniform(rng, (1.0, high))
    elif direction == "down":
        scale = uniform(rng, (low, 1.0))
    else:
        scale = 1.0
    return scale, settings.modes[int(rng.integers(len(settings.modes)))]


def resized_shape(
    settings: ResizeSettings, scale: float, shape: tuple[int, int], lr_size: tuple[int, int]
) -> tuple[int, int]:
    """The size a resize by ``scale`` gives, relative to the image or the LR size; at least 1."""
    height, width = shape if settings.relative_to == "input" else lr_size
    return max(1, int(height * scale)), max(1, int(width * scale))


def draw_noise(rng: np.random.Generator, settings: NoiseSettings) -> NoiseDraw | None:
    if rng.uniform() >= settings.prob:
        return None
    gray = rng.uniform() < settings.gray_prob
    if rng.uniform() < settings.gaussian_prob:
        return NoiseDraw(True, uniform(rng, settings.sigma) / 255.0, gray)
    return NoiseDraw(False, uniform(rng, settings.poisson_scale), gray)


def draw_jpeg(rng: np.random.Generator, settings: JpegSettings | None) -> int | None:
    if settings is None or rng.uniform() >= settings.prob:
        return None
    return round(uniform(rng, settings.quality))


def draw_final(rng: np.random.Generator, settings: FinalSettings) -> FinalDraw:
    first = rng.uniform() < settings.jpeg_first_prob
    quality = draw_jpeg(rng, settings.jpeg) if first else None
    mode = settings.modes[int(rng.integers(len(settings.modes)))]
    sinc = None
    if rng.uniform() < settings.sinc_prob:
        size = odd_size(rng, settings.kernel_size)
        sinc = sinc_kernel(size, math.pi * uniform(rng, settings.sinc_cutoff))
    if not first:
        quality = draw_jpeg(rng, settings.jpeg)
    return FinalDraw(first, quality, mode, sinc)


class RealESRGANDegradation:
    """Real-ESRGAN's second-order degradation of an HR patch (see the module docstring).

    ``first`` and ``second`` are :class:`StageSettings` as mappings, ``final`` a
    :class:`FinalSettings` mapping; missing keys take Real-ESRGAN's x4 defaults except where
    ``conf/degradation/realesrgan.yaml`` writes them out. The output is exactly
    ``(H // scale, W // scale, 3)`` uint8.
    """

    deterministic = False

    def __init__(
        self,
        first: Mapping[str, Any] | None = None,
        second: Mapping[str, Any] | None = None,
        final: Mapping[str, Any] | None = None,
    ):
        self.first = StageSettings.from_config(first or {})
        self.second = StageSettings.from_config(second or {})
        self.final = FinalSettings.from_config(final or {})

    def _round(
        self,
        image: np.ndarray,
        stage: StageSettings,
        lr_size: tuple[int, int],
        rng: np.random.Generator,
    ) -> np.ndarray:
        kernel = draw_blur(rng, stage)
        if kernel is not None:
            image = filter_image(image, kernel)
        scale, mode = draw_resize(rng, stage.resize)
        image = resize(image, *resized_shape(stage.resize, scale, image.shape[:2], lr_size), mode)
        noise = draw_noise(rng, stage.noise)
        if noise is not None:
            image = self._noise(image, noise, rng)
        quality = draw_jpeg(rng, stage.jpeg)
        return image if quality is None else jpeg(image, quality)

    @staticmethod
    def _noise(image: np.ndarray, draw: NoiseDraw, rng: np.random.Generator) -> np.ndarray:
        rng = np.random.default_rng(int(rng.integers(SEED_BOUND)))
        if draw.gaussian:
            noise = gaussian_noise(image.shape, draw.strength, draw.gray, rng)
        else:
            noise = poisson_noise(image, draw.gray, rng) * np.float32(draw.strength)
        return np.clip(image + noise, 0.0, 1.0)

    def _final(
        self, image: np.ndarray, lr_size: tuple[int, int], rng: np.random.Generator
    ) -> np.ndarray:
        draw = draw_final(rng, self.final)
        if draw.first and draw.quality is not None:
            image = jpeg(image, draw.quality)
        image = resize(image, lr_size[0], lr_size[1], draw.mode)
        if draw.sinc is not None:
            image = filter_image(image, draw.sinc)
        if not draw.first and draw.quality is not None:
            image = jpeg(image, draw.quality)
        return image

    def __call__(self, hr: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
        lr_size = (hr.shape[0] // scale, hr.shape[1] // scale)
        image = hr.astype(np.float32) / 255.0
        image = self._round(image, self.first, lr_size, rng)
        image = self._round(image, self.second, lr_size, rng)
        image = self._final(image, lr_size, rng)
        return to_uint8(np.clip(image, 0.0, 1.0) * 255.0)
