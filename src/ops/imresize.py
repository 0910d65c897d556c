"""MATLAB-exact bicubic ``imresize`` in torch: how SR Lab makes its low-resolution images.

Published super-resolution numbers use LR = MATLAB ``imresize(modcrop(HR, s), 1/s, 'bicubic')`` on
uint8 RGB. ``imresize`` reproduces that bit for bit (Set5 ``LR_bicubic`` with 0 differing pixels)
and is also what makes LR of 16-bit data: uint16 input is resized as MATLAB resizes a uint16
image, rounded to the 0..65535 grid after each pass (MATLAB keeps the class between passes),
never to 8 bits. It is also the bicubic resampler used inside networks on floating-point
batches, on any device.

Each 1-D pass is a weighted sum of a few input rows or columns; the taps (weights and mirrored
indices) are computed once per (length, scale) in float64 and cached. When the scale is a ratio
p/q of small integers (every SR scale), output pixel ``o + p`` reads the inputs of ``o`` moved by
``q``: the input is then padded once by MATLAB's symmetric reflection and each tap of each of the
``p`` phases is a strided slice of it, instead of a gather per tap. The arithmetic (products and
their sum, tap by tap) is the same either way, so both give the same bits.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
import torch

__all__ = ["imresize", "imresize_array", "imresize_uint8", "modcrop"]

_KERNEL_WIDTH = 4.0  # support of the bicubic kernel, in input pixels, before antialiasing
# The integer pixel types imresize rounds to, with the top of their range.
_INTEGER_MAX = {torch.uint8: 255.0, torch.uint16: 65535.0}


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Top-left ``floor(H/scale)*scale x floor(W/scale)*scale`` region of an HW or HWC image.

    Returns a view of ``image``, as numpy slicing does.
    """
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"modcrop scale must be a positive integer, got {scale!r}")
    if image.ndim not in (2, 3):
        raise ValueError(f"modcrop expects an HW or HWC array, got shape {image.shape}")
    height, width = image.shape[:2]
    return image[: height - height % scale, : width - width % scale]


# Below this many pixels a resize runs on one thread.
SMALL_IMAGE_PIXELS = 1 << 18


@contextmanager
def one_thread(pixels: int = 0) -> Iterator[None]:
    """Run torch single-threaded inside the block, for an image of fewer than
    :data:`SMALL_IMAGE_PIXELS` ``pixels``. A small image's resize is too small to share out:
    with 2 threads on a busy 2-core machine it measured 20x slower (T91 set-up: 6.3 s against
    0.31 s); a 1-megapixel one takes 30% less time on 2 threads than on one."""
    if pixels >= SMALL_IMAGE_PIXELS:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def imresize_uint8(image: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(image, scale, 'bicubic')`` of an HW or HWC uint8 numpy image."""
    if image.dtype != np.uint8:
        raise TypeError(f"imresize_uint8 expects a uint8 array, got {image.dtype}")
    return imresize_array(image, scale)


def imresize_array(image: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(image, scale, 'bicubic')`` of an HW or HWC uint8 or uint16 numpy image,
    in the same type."""
    if image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"imresize_array expects a uint8 or uint16 array, got {image.dtype}")
    if image.ndim not in (2, 3):
        raise ValueError(f"imresize expects an HW or HWC array, got shape {image.shape}")
    with one_thread(image.shape[0] * image.shape[1]):
        if image.ndim == 2:
            return imresize(torch.from_numpy(image), scale=scale).numpy()
        chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return np.ascontiguousarray(imresize(chw, scale=scale).permute(1, 2, 0).numpy())


def imresize(
    image: torch.Tensor,
    scale: float | tuple[float, float] | None = None,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """MATLAB ``imresize(image, scale | size, 'bicubic')`` over the last two dims (H, W).

    Give exactly one of ``scale`` (one factor, or (height, width) factors; the output is
    ``ceil(H*scale) x ceil(W*scale)``) or ``size`` (output (height, width)).
    uint8 (uint16) input gives uint8 (uint16) output, computed in float64 and rounded as MATLAB
    does after each pass.
    Floating input gives the same dtype, computed in that dtype on its device, neither rounded nor
    clipped (MATLAB's double behaviour).
    """
    if image.dim() < 2 or image.shape[-2] == 0 or image.shape[-1] == 0:
        raise ValueError(f"imresize needs a non-empty (..., H, W) tensor, got {tuple(image.shape)}")
    top = _integer_top(image)
    quantise = top is not None
    if image.dtype == torch.uint16:
        image = image.to(torch.float64)  # few torch kernels take uint16; exact for 0..65535
    in_h, in_w = int(image.shape[-2]), int(image.shape[-1])
    (out_h, out_w), (scale_h, scale_w) = _output_plan(in_h, in_w, scale, size)

    passes = [(-2, in_h, out_h, scale_h), (-1, in_w, out_w, scale_w)]
    # MATLAB resizes the dimension with the smaller scale first; on a tie, height first.
    if scale_w < scale_h:
        passes.reverse()

    # uint8 is gathered as is and promoted to float64 by the weights (exact for 0..255).
    integer_type = _integer_type(top)
    compute_dtype = torch.float64 if quantise else image.dtype
    work = image
    for dim, in_len, out_len, dim_scale in passes:
        if in_len == out_len and dim_scale == 1.0:
            continue  # the bicubic taps are exactly (0, 1, 0): an identity pass
        work = _resize_dim(work, dim, out_len, dim_scale, compute_dtype)
        if top is not None:
            # MATLAB keeps the class between passes: the intermediate image is uint8 (uint16),
            # so it is rounded here too. Skipping this puts about 15% of 8-bit pixels off by one.
            work = _round_to_integer_range(work, top)

    if work is image:
        work = image.clone()
    return work.to(integer_type) if integer_type is not None else work


def _integer_top(image: torch.Tensor) -> float | None:
    """The top of an integer image's range (MATLAB-rounded path), None for floating input;
    other types are refused."""
    if image.dtype in _INTEGER_MAX:
        return _INTEGER_MAX[image.dtype]
    if image.is_floating_point():
        return None
    raise TypeError(f"imresize supports uint8, uint16 and floating tensors, got {image.dtype}")


def _integer_type(top: float | None) -> torch.dtype | None:
    return next((dtype for dtype, value in _INTEGER_MAX.items() if value == top), None)


def _output_plan(
    in_h: int,
    in_w: int,
    scale: float | tuple[float, float] | None,
    size: tuple[int, int] | None,
) -> tuple[tuple[int, int], tuple[float, float]]:
    """Output (height, width) and the per-axis scale factors, following MATLAB."""
    if size is not None and scale is None:
        return _plan_from_size(in_h, in_w, size)
    if scale is not None and size is None:
        return _plan_from_scale(in_h, in_w, scale)
    raise ValueError("imresize needs exactly one of `scale` or `size`")


def _plan_from_size(
    in_h: int, in_w: int, size: tuple[int, int]
) -> tuple[tuple[int, int], tuple[float, float]]:
    out_h, out_w = (int(v) for v in size)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"imresize size must be positive, got {size!r}")
    return (out_h, out_w), (out_h / in_h, out_w / in_w)


def _plan_from_scale(
    in_h: int, in_w: int, scale: float | tuple[float, float]
) -> tuple[tuple[int, int], tuple[float, float]]:
    scale_h, scale_w = _scale_pair(scale)
    if not all(math.isfinite(v) and v > 0.0 for v in (scale_h, scale_w)):
        raise ValueError(f"imresize scale must be positive and finite, got {scale!r}")
    out_h, out_w = math.ceil(in_h * scale_h), math.ceil(in_w * scale_w)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"imresize scale {scale!r} gives an empty image from {in_h}x{in_w}")
    return (out_h, out_w), (scale_h, scale_w)


def _scale_pair(scale: float | tuple[float, float]) -> tuple[float, float]:
    """(height, width) factors from one factor or a pair."""
    if isinstance(scale, (tuple, list)):
        if len(scale) != 2:
            raise ValueError(f"imresize scale pair must have 2 entries, got {scale!r}")
        return float(scale[0]), float(scale[1])
    return float(scale), float(scale)


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, term for term as MATLAB writes it."""
    absx = np.abs(x)
    absx2 = absx**2
    absx3 = absx**3
    inner = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1.0)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1.0) & (absx <= 2.0))
    return inner + outer


def _mirror(indices: np.ndarray, length: int) -> np.ndarray:
    """1-based indices, possibly outside 1..length, to 0-based ones by symmetric reflection.

    MATLAB indexes the periodic sequence [1..length, length..1] (the edge pixel repeated).
    """
    period = 2 * length
    folded = (indices - 1) % period
    return np.where(folded < length, folded, period - 1 - folded)


def _row_sums(weights: np.ndarray) -> np.ndarray:
    """Left-to-right sums of each row (numpy's pairwise sum could differ in the last bit)."""
    total = weights[:, 0].copy()
    for column in range(1, weights.shape[1]):
        total += weights[:, column]
    return total


@lru_cache(maxsize=256)
def _raw_contributions(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's taps for one axis: float64 weights and 0-based input indices before mirroring
    (they may fall outside 0..in_len-1), both (out_len, taps)."""
    antialias = scale < 1.0
    # Shrinking stretches the kernel by 1/scale, which also widens its support.
    width = _KERNEL_WIDTH / scale if antialias else _KERNEL_WIDTH
    x = np.arange(1, out_len + 1, dtype=np.float64)
    # 1-based input coordinate of each 1-based output pixel centre.
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = math.ceil(width) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    distance = u[:, None] - indices
    weights = scale * _cubic(scale * distance) if antialias else _cubic(distance)
    weights = weights / _row_sums(weights)[:, None]
    used = np.any(weights != 0.0, axis=0)  # taps that are zero for every output pixel
    return weights[:, used], indices[:, used].astype(np.int64) - 1


@lru_cache(maxsize=256)
def _tap_major(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The cached taps with mirrored indices, tap-major: weights and indices, (taps, out_len)."""
    weights, raw = _raw_contributions(in_len, out_len, scale)
    mirrored = _mirror(raw + 1, in_len)
    return np.ascontiguousarray(weights.T), np.ascontiguousarray(mirrored.T)


@dataclass(frozen=True)
class _Phases:
    """Taps of an axis whose outputs repeat their input pattern every ``period`` pixels, moved
    by ``step`` inputs: ``padding`` (mirrored input indices) extends the input once, and tap
    ``t`` of phase ``r`` reads the padded input from ``starts[r, t]`` every ``step`` with
    ``weights[r, t]`` (one weight per output pixel of the phase)."""

    period: int
    step: int
    padding: np.ndarray
    starts: np.ndarray
    weights: np.ndarray  # (period, taps, out_len // period)


@lru_cache(maxsize=256)
def _phases(in_len: int, out_len: int, scale: float) -> _Phases | None:
    """The phase form of an axis's taps, or None when its indices do not follow a pattern."""
    ratio = Fraction(scale).limit_denominator(64)
    period, step = ratio.numerator, ratio.denominator
    if abs(float(ratio) - scale) > 1e-12 or out_len % period or out_len // period < 2:
        return None
    weights, raw = _raw_contributions(in_len, out_len, scale)
    count = out_len // period
    raw = raw.reshape(count, period, -1)
    expected = raw[:1] + step * np.arange(count)[:, None, None]
    if not np.array_equal(raw, expected):
        return None
    low, high = int(raw.min()), int(raw.max())
    padding = _mirror(np.arange(low, high + 1) + 1, in_len)
    phase_weights = weights.reshape(count, period, -1).transpose(1, 2, 0)
    return _Phases(period, step, padding, raw[0] - low, np.ascontiguousarray(phase_weights))


def _taps(
    in_len: int, out_len: int, scale: float, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The taps as tensors. Only the NumPy arrays are cached: a cached tensor made while a
    tracer runs (ONNX export, torch.compile) would be a fake tensor that poisons later calls."""
    weights, indices = _tap_major(in_len, out_len, scale)
    weights_t = torch.from_numpy(weights).to(device=device, dtype=dtype)
    return weights_t, torch.from_numpy(indices).to(device=device)


def _resize_dim(
    x: torch.Tensor, dim: int, out_len: int, scale: float, dtype: torch.dtype
) -> torch.Tensor:
    """One 1-D pass along ``dim`` (negative): for each output pixel a sum over taps of weight x
    input pixel, computed in ``dtype``.

    The taps are accumulated one at a time in tap order, a fixed sequence that reproduces MATLAB's
    output; a matmul would sum in a BLAS-dependent order, which can flip results landing on .5.
    """
    in_len = int(x.shape[dim])
    phases = _phases(in_len, out_len, scale)
    if phases is None:
        weights, indices = _taps(in_len, out_len, scale, dtype, x.device)
        return _gathered_sum(x, dim, weights, indices)
    return _phased_sum(x, dim, phases, dtype)


def _gathered_sum(
    x: torch.Tensor, dim: int, weights: torch.Tensor, indices: torch.Tensor
) -> torch.Tensor:
    """The general pass: each tap's input pixels gathered by index."""
    shape = [1] * x.dim()
    shape[dim] = -1
    out = x.index_select(dim, indices[0]) * weights[0].view(shape)
    for tap in range(1, weights.shape[0]):
        out += x.index_select(dim, indices[tap]) * weights[tap].view(shape)
    return out


def _phased_sum(x: torch.Tensor, dim: int, phases: _Phases, dtype: torch.dtype) -> torch.Tensor:
    """The pass of a periodic axis: strided slices of the once-padded input, phase by phase,
    then the phases interleaved."""
    padding = torch.from_numpy(phases.padding).to(x.device)
    padded = x.index_select(dim, padding).to(dtype)
    all_weights = torch.from_numpy(phases.weights).to(device=x.device, dtype=dtype)
    count = all_weights.shape[-1]
    shape = [1] * x.dim()
    shape[dim] = -1
    # Without autograd each product goes into one reused buffer (fresh ones cost page faults).
    reuse = not (torch.is_grad_enabled() and padded.requires_grad)
    outputs = []
    for phase in range(phases.period):
        out: torch.Tensor | None = None
        term: torch.Tensor | None = None
        for tap, start in enumerate(phases.starts[phase].tolist()):
            window = padded.narrow(dim, start, phases.step * (count - 1) + 1)
            if phases.step > 1:
                index = [slice(None)] * x.dim()
                index[dim] = slice(None, None, phases.step)
                window = window[tuple(index)]
            weight = all_weights[phase, tap].view(shape)
            if out is None:
                out = window * weight
            elif reuse:
                term = torch.mul(window, weight, out=term if term is not None else None)
                out += term
            else:
                out = out + window * weight
        assert out is not None
        outputs.append(out)
    if phases.period == 1:
        return outputs[0]
    # Phase r holds output pixels r, r + period, ...: stacked after dim, (..., count, period,
    # ...), they interleave when the two dimensions are merged.
    out_shape = list(x.shape)
    out_shape[dim] = count * phases.period
    return torch.stack(outputs, dim=dim).reshape(out_shape)


def _round_to_integer_range(x: torch.Tensor, top: float) -> torch.Tensor:
    """MATLAB's double -> uint8 (uint16) cast, kept in floating point: saturate to 0..top,
    round half up.

    ``floor(x + 0.5)`` would be wrong just below a half (the addition itself rounds up), and
    ``torch.round`` rounds ties to even, so the fraction is compared exactly instead.
    """
    x = x.clamp_(0.0, top)
    whole = torch.floor(x)
    return whole.add_((x - whole).ge_(0.5).to(x.dtype))
