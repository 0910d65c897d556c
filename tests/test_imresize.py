"""MATLAB-exact bicubic imresize: golden Set5 LR files, a slow loop reference, dtypes and shapes."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from src.ops.imresize import imresize, imresize_uint8, modcrop

SET5 = ("baby", "bird", "butterfly", "head", "woman")


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, f"could not read {path}"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# --- a slow, plain-loop reference of MATLAB's algorithm -------------------------------------------


def _ref_cubic(x: float) -> float:
    a = abs(x)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


def _ref_mirror(j: int, n: int) -> int:
    """MATLAB 1-based index j into the periodic sequence [1..n, n..1], as a 0-based index."""
    aux = list(range(n)) + list(range(n - 1, -1, -1))
    return aux[(j - 1) % (2 * n)]


def _ref_taps(in_len: int, out_len: int, scale: float) -> list[list[tuple[int, float]]]:
    """For each output pixel: (0-based input index, normalised weight) pairs. No tap trimming."""
    antialias = scale < 1
    width = 4 / scale if antialias else 4
    rows = []
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = []
        for p in range(math.ceil(width) + 2):
            j = left + p
            w = scale * _ref_cubic(scale * (u - j)) if antialias else _ref_cubic(u - j)
            taps.append((_ref_mirror(j, in_len), w))
        total = 0.0
        for _, w in taps:
            total += w
        rows.append([(j, w / total) for j, w in taps])
    return rows


def _ref_round_uint8(v: float) -> int:
    """MATLAB double -> uint8: clip to 0..255, round half up, decided exactly with fractions."""
    return min(255, max(0, math.floor(Fraction(v) + Fraction(1, 2))))


def _ref_resize_rows(a: np.ndarray, out_len: int, scale: float) -> np.ndarray:
    """Resize axis 0 of a 2-D float64 array."""
    taps = _ref_taps(a.shape[0], out_len, scale)
    out = np.zeros((out_len, a.shape[1]))
    for i in range(out_len):
        for c in range(a.shape[1]):
            acc = 0.0
            for j, w in taps[i]:
                acc += w * float(a[j, c])
            out[i, c] = acc
    return out


def _ref_imresize_2d(
    image: np.ndarray, out_hw: tuple[int, int], scales: tuple[float, float]
) -> np.ndarray:
    is_uint8 = image.dtype == np.uint8
    a = image.astype(np.float64)
    axes = [0, 1] if scales[0] <= scales[1] else [1, 0]
    for axis in axes:
        moved = a if axis == 0 else a.T
        moved = _ref_resize_rows(moved, out_hw[axis], scales[axis])
        if is_uint8:
            moved = np.vectorize(_ref_round_uint8, otypes=[np.float64])(moved)
        a = moved if axis == 0 else moved.T
    return a.astype(np.uint8) if is_uint8 else a


def _ref_imresize(image: np.ndarray, scale: float) -> np.ndarray:
    h, w = image.shape
    return _ref_imresize_2d(image, (math.ceil(h * scale), math.ceil(w * scale)), (scale, scale))


def _random_image(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if dtype == "uint8":
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.random(shape)


# --- golden MATLAB output -------------------------------------------------------------------------


@pytest.mark.shared
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set5_lr_bicubic_is_reproduced_bit_exactly(shared_data: Path, scale: int) -> None:
    root = shared_data / "benchmarks" / "Set5"
    for name in SET5:
        hr = _read_rgb(root / "HR" / f"{name}.png")
        golden = _read_rgb(root / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png")
        lr = imresize_uint8(modcrop(hr, scale), 1 / scale)
        assert lr.dtype == np.uint8
        assert lr.shape == golden.shape, name
        assert int(np.count_nonzero(lr != golden)) == 0, f"{name} x{scale}"


@pytest.mark.shared
def test_set5_golden_files_tell_apart_skipping_the_intermediate_rounding(
    shared_data: Path,
) -> None:
    """The golden files are sensitive to the rounding between passes, so the test above bites."""
    root = shared_data / "benchmarks" / "Set5"
    hr = _read_rgb(root / "HR" / "butterfly.png")
    golden = _read_rgb(root / "LR_bicubic" / "X4" / "butterflyx4.png")
    hr_float = torch.from_numpy(modcrop(hr, 4)).permute(2, 0, 1).to(torch.float64)
    one_rounding = imresize(hr_float, scale=0.25).add(0.5).floor().clamp(0, 255).to(torch.uint8)
    assert int(np.count_nonzero(one_rounding.permute(1, 2, 0).numpy() != golden)) > 100


# --- against the loop reference -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "float64"])
@pytest.mark.parametrize("scale", [0.25, 1 / 3, 0.37, 0.5, 1.7, 2.0, 3.0, 4.0])
def test_matches_loop_reference(scale: float, dtype: str) -> None:
    rng = np.random.default_rng(int(scale * 1000))
    shape = (37, 29) if scale < 1 else (9, 7)
    image = _random_image(rng, shape, dtype)
    expected = _ref_imresize(image, scale)
    got = imresize(torch.from_numpy(image), scale=scale).numpy()
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape == (math.ceil(shape[0] * scale), math.ceil(shape[1] * scale))
    if dtype == "uint8":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", ["uint8", "float64"])
@pytest.mark.parametrize(
    ("in_hw", "out_hw"),
    [
        ((23, 17), (9, 40)),  # height shrinks, width grows: height is resized first
        ((17, 23), (40, 9)),  # width shrinks, height grows: width first
        ((11, 30), (25, 8)),  # width shrinks more: width first
        ((12, 40), (9, 25)),  # both shrink, width more: width first
        ((30, 20), (12, 13)),  # height shrinks more: height first
        ((13, 9), (13, 21)),  # height untouched
    ],
)
def test_size_with_per_axis_scales_matches_loop_reference(
    in_hw: tuple[int, int], out_hw: tuple[int, int], dtype: str
) -> None:
    rng = np.random.default_rng(in_hw[0] * 100 + out_hw[1])
    image = _random_image(rng, in_hw, dtype)
    scales = (out_hw[0] / in_hw[0], out_hw[1] / in_hw[1])
    expected = _ref_imresize_2d(image, out_hw, scales)
    got = imresize(torch.from_numpy(image), size=out_hw).numpy()
    assert got.shape == out_hw
    if dtype == "uint8":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scales", [(0.5, 2.0), (2.0, 0.5), (0.3, 0.6)])
def test_per_axis_scale_pair_matches_loop_reference(scales: tuple[float, float]) -> None:
    image = _random_image(np.random.default_rng(7), (20, 11), "uint8")
    out_hw = (math.ceil(20 * scales[0]), math.ceil(11 * scales[1]))
    expected = _ref_imresize_2d(image, out_hw, scales)
    got = imresize(torch.from_numpy(image), scale=scales).numpy()
    np.testing.assert_array_equal(got, expected)


def test_uint8_ties_round_half_up() -> None:
    """x2 enlarging has dyadic weights, so exact .5 results occur: they round up, not to even."""
    image = _random_image(np.random.default_rng(3), (4, 64), "uint8")
    exact = imresize(torch.from_numpy(image).to(torch.float64), size=(4, 128))
    ties = exact.frac() == 0.5
    assert int(ties.sum()) > 0, "no exact ties in the sample: the test would not check anything"
    rounded = imresize(torch.from_numpy(image), size=(4, 128))
    in_range = (exact >= 0) & (exact <= 255)
    expected = exact.floor() + 1
    assert torch.equal(rounded[ties & in_range].to(torch.float64), expected[ties & in_range])


def test_uint8_saturates_overshoot() -> None:
    """Bicubic overshoots at hard edges; uint8 output clips to 0..255 instead of wrapping."""
    image = np.zeros((6, 12), dtype=np.uint8)
    image[:, 6:] = 255
    exact = imresize(torch.from_numpy(image).to(torch.float64), scale=2.0)
    assert float(exact.max()) > 255 and float(exact.min()) < 0
    got = imresize(torch.from_numpy(image), scale=2.0)
    assert torch.equal(got, exact.clamp(0, 255).add(0.5).floor().to(torch.uint8))


# --- floating input, shapes, devices --------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.25, 1 / 3, 0.5, 1.7, 2.0, 4.0])
def test_float32_agrees_with_float64(scale: float) -> None:
    x64 = torch.from_numpy(np.random.default_rng(11).random((3, 40, 33)))
    y64 = imresize(x64, scale=scale)
    y32 = imresize(x64.to(torch.float32), scale=scale)
    assert y64.dtype == torch.float64 and y32.dtype == torch.float32
    assert float((y32.to(torch.float64) - y64).abs().max()) < 1e-4


def test_float_output_is_neither_rounded_nor_clipped() -> None:
    image = torch.zeros(6, 12, dtype=torch.float32)
    image[:, 6:] = 1.0
    out = imresize(image, scale=2.0)
    assert float(out.max()) > 1.0 and float(out.min()) < 0.0
    assert not torch.equal(out, out.round())


def test_shapes_hw_chw_nchw_agree() -> None:
    batch = torch.from_numpy(np.random.default_rng(5).random((2, 3, 15, 10)))
    out = imresize(batch, scale=0.5)
    assert out.shape == (2, 3, 8, 5)
    chw = imresize(batch[1], scale=0.5)
    hw = imresize(batch[1, 2], scale=0.5)
    assert chw.shape == (3, 8, 5) and hw.shape == (8, 5)
    np.testing.assert_allclose(out[1].numpy(), chw.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(out[1, 2].numpy(), hw.numpy(), rtol=0, atol=1e-12)


def test_output_size_is_ceil_of_scaled_size() -> None:
    image = torch.zeros(3, 10, 7, dtype=torch.uint8)
    assert imresize(image, scale=0.3).shape == (3, 3, 3)
    assert imresize(image, scale=1.5).shape == (3, 15, 11)
    assert imresize(image, size=(4, 21)).shape == (3, 4, 21)


def test_identity_scale_returns_an_equal_copy() -> None:
    image = torch.rand(2, 5, 6)
    out = imresize(image, scale=1.0)
    assert torch.equal(out, image) and out.data_ptr() != image.data_ptr()


def test_non_contiguous_input() -> None:
    image = torch.from_numpy(np.random.default_rng(9).random((12, 16, 3)))
    chw = image.permute(2, 0, 1)
    expected = imresize(chw.contiguous(), scale=0.5).numpy()
    np.testing.assert_allclose(imresize(chw, scale=0.5).numpy(), expected, rtol=0, atol=1e-12)


def test_argument_errors() -> None:
    image = torch.zeros(8, 8)
    with pytest.raises(ValueError):
        imresize(image)
    with pytest.raises(ValueError):
        imresize(image, scale=0.5, size=(4, 4))
    with pytest.raises(ValueError):
        imresize(image, scale=-1.0)
    with pytest.raises(TypeError):
        imresize(torch.zeros(8, 8, dtype=torch.int16), scale=0.5)
    with pytest.raises(ValueError):
        imresize(torch.zeros(8), scale=0.5)
    with pytest.raises(ValueError):
        imresize(torch.zeros(0, 8), size=(4, 4))
    with pytest.raises(ValueError):
        imresize(image, size=(0, 4))


# --- numpy helpers --------------------------------------------------------------------------------


def test_imresize_uint8_hw_and_hwc() -> None:
    rng = np.random.default_rng(2)
    hwc = _random_image(rng, (16, 12, 3), "uint8")
    out = imresize_uint8(hwc, 0.5)
    assert out.shape == (8, 6, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], _ref_imresize(hwc[:, :, c], 0.5))
    np.testing.assert_array_equal(imresize_uint8(hwc[:, :, 1], 0.5), out[:, :, 1])
    with pytest.raises(TypeError):
        imresize_uint8(hwc.astype(np.float32), 0.5)


def test_modcrop_keeps_top_left_region() -> None:
    image = np.arange(10 * 13 * 3).reshape(10, 13, 3)
    cropped = modcrop(image, 4)
    assert cropped.shape == (8, 12, 3)
    np.testing.assert_array_equal(cropped, image[:8, :12])
    gray = image[:, :, 0]
    assert modcrop(gray, 3).shape == (9, 12)
    np.testing.assert_array_equal(modcrop(gray, 3), gray[:9, :12])
    assert modcrop(image, 1).shape == image.shape
    assert modcrop(image[:8, :12], 4).shape == (8, 12, 3)
    with pytest.raises(ValueError):
        modcrop(image, 0)


@pytest.mark.parametrize("scale", [2.0, 3.0, 4.0, 0.5, 1 / 3, 0.25, 1.5, 0.7])
def test_strided_phases_give_the_bits_of_the_per_tap_gather(scale: float, monkeypatch):
    """The fast path (the input padded once, each tap a strided slice) against the general one
    (a gather per tap): the same products summed in the same order, so the same bits."""
    from src.ops import imresize as module

    rng = np.random.default_rng(int(scale * 100))
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((17, 23), (40, 31))]
    fast = [
        (module.imresize_uint8(img, scale), module.imresize(to_chw(img), scale=scale))
        for img in images
    ]
    monkeypatch.setattr(module, "_phases", lambda *args: None)
    for img, (fast_uint8, fast_float) in zip(images, fast, strict=True):
        assert np.array_equal(module.imresize_uint8(img, scale), fast_uint8)
        assert torch.equal(module.imresize(to_chw(img), scale=scale), fast_float)


def to_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.transpose(2, 0, 1).copy()).float().div(255)[None]
