"""The BD degradation (src/ops/bd.py) against an independent computation of the MATLAB recipe
(KAIR's ``generate_LR_Vimeo90K_BD.m``): the 2-D kernel written from fspecial's formula, edge
padding, a direct 2-D correlation at every pixel, then the subsampling and uint8 rounding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from src.ops.bd import bd_downsample, bd_kernel_size, matlab_gaussian_kernel
from src.ops.imresize import imresize_uint8

WALK = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "video" / "Vid4" / "walk"


def reference_bd(frame: np.ndarray, scale: int = 4, sigma: float = 1.6) -> np.ndarray:
    size = int(np.ceil(3 * sigma)) * 2 + 2
    # fspecial('gaussian', size, sigma): grid -(size-1)/2 .. (size-1)/2, normalised.
    grid = np.arange(size) - (size - 1) / 2
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    kernel = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    height = frame.shape[0] - frame.shape[0] % scale
    width = frame.shape[1] - frame.shape[1] % scale
    image = frame[:height, :width].astype(np.float64)
    if image.ndim == 2:
        image = image[:, :, None]
    # imfilter(..., 'replicate') correlates with the origin at 1-based floor((size+1)/2).
    origin = (size + 1) // 2 - 1
    padded = np.pad(
        image, ((origin, size - 1 - origin), (origin, size - 1 - origin), (0, 0)), "edge"
    )
    blurred = np.zeros_like(image)
    for u in range(size):
        for v in range(size):
            blurred += kernel[u, v] * padded[u : u + height, v : v + width]
    # img(scale/2 : scale : end - scale/2, ...) in MATLAB's 1-based indexing.
    kept = blurred[
        scale // 2 - 1 : height - scale // 2 : scale, scale // 2 - 1 : width - scale // 2 : scale
    ]
    out = np.floor(np.clip(kept, 0, 255) + 0.5).astype(np.uint8)
    return out[:, :, 0] if frame.ndim == 2 else out


def test_kernel_size_and_normalisation() -> None:
    assert bd_kernel_size(1.6) == 12
    kernel = matlab_gaussian_kernel(12, 1.6)
    assert kernel.shape == (12, 12)
    assert abs(kernel.sum() - 1.0) < 1e-14
    assert np.all(kernel > 0)
    np.testing.assert_array_equal(kernel, kernel.T)
    np.testing.assert_array_equal(kernel, kernel[::-1, ::-1])
    # Even size: the centre lies between samples 5 and 6 (0-based), four equal maxima.
    peak = np.argwhere(kernel == kernel.max())
    assert sorted(map(tuple, peak.tolist())) == [(5, 5), (5, 6), (6, 5), (6, 6)]
    t = np.arange(12) - 5.5
    formula = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.6**2))
    np.testing.assert_allclose(kernel, formula / formula.sum(), rtol=1e-13, atol=0)


def test_kernel_matches_matlab_fspecial_default() -> None:
    """MATLAB's documented ``fspecial('gaussian')`` (3x3, sigma 0.5), 4 decimals."""
    kernel = matlab_gaussian_kernel(3, 0.5)
    want = np.array([[0.0113, 0.0838, 0.0113], [0.0838, 0.6193, 0.0838], [0.0113, 0.0838, 0.0113]])
    np.testing.assert_allclose(kernel, want, atol=5e-5)


def test_kernel_cuts_values_below_eps_times_max() -> None:
    """fspecial sets values under eps * max to 0 (sigma 0.35 in a 6x6 window: the corners)."""
    kernel = matlab_gaussian_kernel(bd_kernel_size(0.35), 0.35)
    assert kernel[0, 0] == 0.0 and kernel[2, 2] > 0
    assert abs(kernel.sum() - 1.0) < 1e-14


@pytest.mark.parametrize(
    "shape, sigma",
    [
        ((50, 66, 3), 1.6),
        ((48, 40), 1.6),
        ((37, 29, 3), 1.6),
        ((44, 52, 3), 0.35),
        ((36, 36, 3), 2.3),
    ],
)
def test_equals_independent_matlab_recipe(shape: tuple[int, ...], sigma: float) -> None:
    rng = np.random.default_rng(sum(shape))
    frame = rng.integers(0, 256, size=shape, dtype=np.uint8)
    got = bd_downsample(frame, 4, sigma)
    want = reference_bd(frame, 4, sigma)
    assert got.dtype == np.uint8
    assert got.shape == (shape[0] // 4, shape[1] // 4, *shape[2:])
    np.testing.assert_array_equal(got, want)


def test_smooth_frame_equals_reference() -> None:
    """Smooth content (most pixels far from the saturation ends) at x2 as well."""
    y, x = np.mgrid[0:64, 0:72]
    frame = (127.5 + 100 * np.sin(x / 7.0) * np.cos(y / 5.0))[:, :, None] + np.array([0, 10, -10])
    frame = np.clip(np.round(frame), 0, 255).astype(np.uint8)
    for scale in (2, 4):
        np.testing.assert_array_equal(bd_downsample(frame, scale), reference_bd(frame, scale))


def test_constant_frame_stays_constant() -> None:
    frame = np.full((24, 28, 3), 173, dtype=np.uint8)
    assert np.all(bd_downsample(frame) == 173)


def test_lr_pixels_sit_at_block_centres() -> None:
    """Kept pixel 4m + 1 with its Gaussian centred half a pixel after it: the LR grid is that
    of MATLAB's bicubic x1/4, so on a linear ramp (preserved by a symmetric blur) BD and BI
    agree away from the border; 1.5 px off (BasicSR's ``duf_downsample``) would be 3 levels."""
    ramp = np.tile((20 + 2 * np.arange(96)).astype(np.uint8), (40, 1))
    bd = bd_downsample(ramp).astype(int)
    bi = imresize_uint8(ramp, 0.25).astype(int)
    np.testing.assert_array_equal(bd[:, 3:-3], bi[:, 3:-3])
    # Flipping the frame flips the LR frame: the sampling is centred.
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, size=(32, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        bd_downsample(frame[::-1, ::-1]), bd_downsample(frame)[::-1, ::-1]
    )


@pytest.mark.parametrize(
    "frame, scale, error",
    [
        (np.zeros((8, 8), np.float32), 4, TypeError),
        (np.zeros((8, 8, 3, 1), np.uint8), 4, ValueError),
        (np.zeros((9, 9), np.uint8), 3, ValueError),
        (np.zeros((3, 8), np.uint8), 4, ValueError),
    ],
)
def test_bad_input_is_refused(frame: np.ndarray, scale: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        bd_downsample(frame, scale)


@pytest.mark.skipif(
    not (WALK / "00000000.png").is_file(),
    reason=f"Vid4 walk frame not present ({WALK / '00000000.png'}): shared data not mounted",
)
def test_vid4_walk_frame_bd_is_not_bi() -> None:
    from src.io.images import read_rgb

    frame = read_rgb(WALK / "00000000.png")
    assert frame.shape == (480, 720, 3)
    bd = bd_downsample(frame)
    bi = imresize_uint8(frame, 0.25)
    assert bd.shape == bi.shape == (120, 180, 3)
    np.testing.assert_array_equal(bd, reference_bd(frame))
    differing = np.mean(bd != bi)
    assert differing > 0.5, f"only {differing:.1%} of BD pixels differ from BI"
    # Same grid, different blur: close but not equal (1.85 levels apart on average on this frame).
    assert 0.3 < np.abs(bd.astype(int) - bi.astype(int)).mean() < 6
