"""Modulated deformable convolution (src/ops/deform_conv.py, src/archs/deform_conv.py).

The reference below is written from torchvision's definition (``deform_conv2d_kernel.cpp``: one
bilinear read per input channel, tap and output pixel, each of the four neighbours zero when
outside the image, times the mask, then the weights), in float64 with plain Python loops, so it
shares no code and no vectorisation with the implementation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from src.archs.deform_conv import ModulatedDeformConv2d
from src.ops.deform_conv import deform_conv_output_size, modulated_deform_conv2d
from src.ops.imresize import one_thread

# float32 implementation against the float64 reference (measured: at most 3.0e-6, on outputs
# up to 7.8).
TOLERANCE = 1e-5


def bilinear_reference(plane: np.ndarray, y: float, x: float) -> float:
    """torchvision's bilinear read: 0 at or beyond one pixel outside, else the four
    neighbours, each zero when outside the image."""
    height, width = plane.shape
    if y <= -1 or y >= height or x <= -1 or x >= width:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    total = 0.0
    for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            if 0 <= yy < height and 0 <= xx < width:
                total += wy * wx * float(plane[yy, xx])
    return total


def deform_conv_reference(
    image: np.ndarray,
    offset: np.ndarray,
    mask: np.ndarray | None,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    offset_groups: int,
) -> np.ndarray:
    batch, channels, _, _ = image.shape
    out_channels, group_in, kernel_h, kernel_w = weight.shape
    taps = kernel_h * kernel_w
    out_h, out_w = offset.shape[2:]
    per_offset_group = channels // offset_groups
    per_out_group = out_channels // groups
    out = np.zeros((batch, out_channels, out_h, out_w))
    for n in range(batch):
        for oy in range(out_h):
            for ox in range(out_w):
                # Every modulated sample of this output pixel: samples[c, i, j].
                samples = np.zeros((channels, kernel_h, kernel_w))
                for c in range(channels):
                    g = c // per_offset_group
                    for i in range(kernel_h):
                        for j in range(kernel_w):
                            k = i * kernel_w + j
                            dy = offset[n, 2 * (g * taps + k), oy, ox]
                            dx = offset[n, 2 * (g * taps + k) + 1, oy, ox]
                            y = oy * stride[0] - padding[0] + i * dilation[0] + dy
                            x = ox * stride[1] - padding[1] + j * dilation[1] + dx
                            m = 1.0 if mask is None else mask[n, g * taps + k, oy, ox]
                            samples[c, i, j] = m * bilinear_reference(image[n, c], y, x)
                for o in range(out_channels):
                    grp = o // per_out_group
                    block = samples[grp * group_in : (grp + 1) * group_in]
                    value = float((weight[o] * block).sum())
                    out[n, o, oy, ox] = value + (0.0 if bias is None else bias[o])
    return out


CASES = {
    # name: (N, C_in, C_out, H, W, kernel, stride, padding, dilation, groups, offset_groups)
    "stride2-dil2-pad-groups": (2, 4, 6, 9, 11, (3, 3), (2, 2), (2, 2), (2, 2), 2, 2),
    "rect-kernel-mixed-axes": (1, 6, 4, 8, 7, (3, 2), (1, 2), (1, 0), (2, 1), 2, 3),
    "four-offset-groups": (1, 4, 2, 6, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, 4),
    "stride2-dil2-one-group": (1, 3, 2, 10, 9, (3, 3), (2, 2), (1, 1), (2, 2), 1, 1),
}


def make_case(name: str, dtype: torch.dtype = torch.float32, seed: int = 0):
    batch, channels, out_c, height, width, kernel, stride, padding, dilation, groups, ogroups = (
        CASES[name]
    )
    generator = torch.Generator().manual_seed(seed)
    out_h = deform_conv_output_size(height, kernel[0], stride[0], padding[0], dilation[0])
    out_w = deform_conv_output_size(width, kernel[1], stride[1], padding[1], dilation[1])
    taps = kernel[0] * kernel[1]
    image = torch.randn(batch, channels, height, width, generator=generator, dtype=dtype)
    # Offsets up to 3 px carry many taps partly or wholly outside the image.
    offset = 3 * torch.randn(batch, 2 * ogroups * taps, out_h, out_w, generator=generator)
    mask = torch.rand(batch, ogroups * taps, out_h, out_w, generator=generator)
    weight = torch.randn(out_c, channels // groups, *kernel, generator=generator)
    bias = torch.randn(out_c, generator=generator)
    geometry = {
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "groups": groups,
        "offset_groups": ogroups,
    }
    tensors = [t.to(dtype) for t in (image, offset, mask, weight, bias)]
    return tensors, geometry


@pytest.mark.parametrize("name", sorted(CASES))
def test_equals_per_tap_bilinear_reference(name: str) -> None:
    (image, offset, mask, weight, bias), geometry = make_case(name)
    got = modulated_deform_conv2d(image, offset, mask, weight, bias, **geometry)
    want = deform_conv_reference(
        *(t.double().numpy() for t in (image, offset, mask, weight, bias)), **geometry
    )
    assert got.shape == want.shape
    worst = float(np.abs(got.double().numpy() - want).max())
    assert worst < TOLERANCE, f"max |difference| {worst:.3g} from the reference"


def test_without_mask_is_dcn_v1() -> None:
    (image, offset, _, weight, bias), geometry = make_case("stride2-dil2-pad-groups")
    got = modulated_deform_conv2d(image, offset, None, weight, bias, **geometry)
    want = deform_conv_reference(
        *(t.double().numpy() for t in (image, offset)),
        None,
        *(t.double().numpy() for t in (weight, bias)),
        **geometry,
    )
    assert float(np.abs(got.double().numpy() - want).max()) < TOLERANCE


def test_integer_offsets_on_the_image_border() -> None:
    """Samples exactly on pixels, on the last row/column and at exactly one pixel outside
    (0 there), where floor/ceil slips would show."""
    image = torch.arange(1.0, 1.0 + 2 * 5 * 6).reshape(1, 2, 5, 6)
    weight = torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    choices = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0, 0.5, -0.5])
    index = torch.randint(
        0, len(choices), (1, 18, 5, 6), generator=torch.Generator().manual_seed(2)
    )
    offset = choices[index]
    mask = torch.ones(1, 9, 5, 6)
    got = modulated_deform_conv2d(image, offset, mask, weight, None, padding=1)
    want = deform_conv_reference(
        image.double().numpy(),
        offset.double().numpy(),
        mask.double().numpy(),
        weight.double().numpy(),
        None,
        (1, 1),
        (1, 1),
        (1, 1),
        1,
        1,
    )
    assert float(np.abs(got.double().numpy() - want).max()) < 1e-4  # values up to 60


@pytest.mark.parametrize(
    "stride, padding, dilation, groups",
    [(1, 1, 1, 1), (2, 2, 2, 2), ((1, 2), (0, 1), (2, 1), 4)],
)
def test_zero_offsets_and_unit_mask_are_conv2d(stride, padding, dilation, groups) -> None:
    generator = torch.Generator().manual_seed(3)
    image = torch.randn(2, 8, 13, 12, generator=generator)
    # Weights at a layer's initial scale (outputs of order 1, as in a network).
    weight = torch.randn(4, 8 // groups, 3, 3, generator=generator) / math.sqrt(8 // groups * 9)
    bias = torch.randn(4, generator=generator)
    want = F.conv2d(image, weight, bias, stride, padding, dilation, groups)
    offset = torch.zeros(2, 2 * 2 * 9, *want.shape[2:])
    mask = torch.ones(2, 2 * 9, *want.shape[2:])
    got = modulated_deform_conv2d(
        image, offset, mask, weight, bias, stride, padding, dilation, groups, offset_groups=2
    )
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_offset_layout_is_dy_dx_interleaved_per_tap() -> None:
    """A 1x1 kernel with offset (dy, dx) = (1, 0) reads the row below; (0, 1) the next column."""
    image = torch.arange(20.0).reshape(1, 1, 4, 5)
    weight = torch.ones(1, 1, 1, 1)
    down = torch.zeros(1, 2, 4, 5)
    down[:, 0] = 1.0
    right = torch.zeros(1, 2, 4, 5)
    right[:, 1] = 1.0
    got_down = modulated_deform_conv2d(image, down, None, weight)
    got_right = modulated_deform_conv2d(image, right, None, weight)
    torch.testing.assert_close(got_down[0, 0, :3], image[0, 0, 1:])
    torch.testing.assert_close(got_right[0, 0, :, :4], image[0, 0, :, 1:])
    # One pixel outside reads 0 (float32 grid coordinates land within about 1e-7 px of it).
    torch.testing.assert_close(got_down[0, 0, 3], torch.zeros(5), atol=1e-4, rtol=0)
    torch.testing.assert_close(got_right[0, 0, :, 4], torch.zeros(4), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "stride, padding, dilation, groups, offset_groups",
    [(1, 1, 1, 2, 2), (2, 2, 2, 1, 1)],
)
def test_gradcheck_float64(stride, padding, dilation, groups, offset_groups) -> None:
    """Gradients of input, offset, mask, weight and bias against finite differences."""
    generator = torch.Generator().manual_seed(4)
    image = torch.randn(1, 4, 5, 4, generator=generator, dtype=torch.float64)
    weight = torch.randn(2, 4 // groups, 3, 3, generator=generator, dtype=torch.float64)
    bias = torch.randn(2, generator=generator, dtype=torch.float64)
    out_h = deform_conv_output_size(5, 3, stride, padding, dilation)
    out_w = deform_conv_output_size(4, 3, stride, padding, dilation)
    # Offsets of about a pixel: some taps inside, some straddling the border, some outside.
    offset = 1.2 * torch.randn(
        1, 2 * offset_groups * 9, out_h, out_w, generator=generator, dtype=torch.float64
    )
    mask = torch.rand(1, offset_groups * 9, out_h, out_w, generator=generator, dtype=torch.float64)
    inputs = tuple(t.requires_grad_(True) for t in (image, offset, mask, weight, bias))

    def run(*args: torch.Tensor) -> torch.Tensor:
        return modulated_deform_conv2d(
            *args,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            offset_groups=offset_groups,
        )

    # One thread: on a busy 2-core machine each tiny 2-thread product can wait ~20 ms for a core.
    with one_thread():
        assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_bands_give_the_same_output_and_gradients() -> None:
    (image, offset, mask, weight, bias), geometry = make_case("stride2-dil2-pad-groups")
    inputs = [t.clone().requires_grad_(True) for t in (image, offset, mask, weight, bias)]
    banded = [t.clone().requires_grad_(True) for t in (image, offset, mask, weight, bias)]
    whole = modulated_deform_conv2d(*inputs, **geometry)
    row_bytes = 2 * 4 * 9 * whole.shape[3] * 4
    parts = modulated_deform_conv2d(*banded, **geometry, max_column_bytes=2 * row_bytes)
    torch.testing.assert_close(parts, whole, atol=1e-6, rtol=0)
    grad = torch.randn_like(whole)
    whole.backward(grad)
    parts.backward(grad)
    for a, b in zip(inputs, banded, strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-5)


def test_bfloat16_samples_in_float32() -> None:
    """bf16 grid coordinates near 60 px are off by up to 0.125 px (measured: 15% of the
    output's range on this case); sampled in float32, only the bf16 rounding of the columns and
    the product remain (0.3%)."""
    generator = torch.Generator().manual_seed(5)
    image = torch.randn(1, 4, 64, 64, generator=generator)
    offset = 0.3 * torch.randn(1, 18, 64, 64, generator=generator)
    mask = torch.rand(1, 9, 64, 64, generator=generator)
    weight = torch.randn(4, 4, 3, 3, generator=generator) / 6
    rounded = [t.bfloat16() for t in (image, offset, mask, weight)]
    want = modulated_deform_conv2d(*(t.float() for t in rounded), None, padding=1)
    got = modulated_deform_conv2d(*rounded, None, padding=1)
    assert got.dtype == torch.bfloat16
    error = (got.float() - want).abs().max().item()
    assert error < 0.01 * want.abs().max().item(), error


@pytest.mark.parametrize(
    "change, message",
    [
        ({"offset_channels": 17}, "offset has 17 channels"),
        ({"mask_channels": 8}, "mask of shape"),
        ({"offset_size": 5}, "must be (N=1"),
        ({"groups": 3}, "does not fit"),
    ],
)
def test_bad_shapes_are_refused(change: dict[str, int], message: str) -> None:
    image = torch.randn(1, 4, 6, 6)
    weight = torch.randn(2, 4, 3, 3)
    size = change.get("offset_size", 6)
    offset = torch.zeros(1, change.get("offset_channels", 18), size, size)
    mask = torch.ones(1, change.get("mask_channels", 9), size, size)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        modulated_deform_conv2d(
            image, offset, mask, weight, None, padding=1, groups=change.get("groups", 1)
        )


def test_module_keys_and_layout_follow_basicsr_dcnv2pack() -> None:
    layer = ModulatedDeformConv2d(16, 8, 3, padding=1, deformable_groups=2)
    shapes = {key: tuple(value.shape) for key, value in layer.state_dict().items()}
    assert shapes == {
        "weight": (8, 16, 3, 3),
        "bias": (8,),
        "conv_offset.weight": (2 * 3 * 9, 16, 3, 3),
        "conv_offset.bias": (2 * 3 * 9,),
    }
    # Zero-initialised conv_offset (as BasicSR): no offset, mask sigmoid(0) = 1/2.
    x = torch.randn(1, 16, 10, 9)
    torch.testing.assert_close(
        layer(x), 0.5 * F.conv2d(x, layer.weight, None, padding=1) + layer.bias[:, None, None]
    )
    # The offset is the first two thirds of conv_offset's output, the mask sigmoid of the rest.
    torch.nn.init.normal_(layer.conv_offset.weight, std=0.05)
    feat = torch.randn(1, 16, 10, 9)
    raw = layer.conv_offset(feat)
    offset, mask = layer.offset_and_mask(feat)
    torch.testing.assert_close(offset, raw[:, : 2 * 2 * 9])
    torch.testing.assert_close(mask, torch.sigmoid(raw[:, 2 * 2 * 9 :]))
    torch.testing.assert_close(
        layer(x, feat),
        modulated_deform_conv2d(x, offset, mask, layer.weight, layer.bias, 1, 1, 1, 1, 2),
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu() -> None:
    (image, offset, mask, weight, bias), geometry = make_case("stride2-dil2-pad-groups")
    want = modulated_deform_conv2d(image, offset, mask, weight, bias, **geometry)
    got = modulated_deform_conv2d(
        *(t.cuda() for t in (image, offset, mask, weight, bias)), **geometry
    )
    torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-4)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # the exporter's own deprecations
@pytest.mark.parametrize("groups", [1, 2])
def test_onnx_export_with_dynamic_batch_height_and_width(tmp_path, groups: int) -> None:
    """torch.onnx.export(dynamo=True) at opset 18, as src.models.exporting does: the sampling
    is one GridSample node; onnxruntime gives PyTorch's output at other sizes."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(6)
    layer = ModulatedDeformConv2d(8, 8, 3, padding=1, groups=groups, deformable_groups=2).eval()
    torch.nn.init.normal_(layer.conv_offset.weight, std=0.3)  # offsets of a pixel or two
    dynamic = torch.export.Dim.DYNAMIC
    path = tmp_path / "dcn.onnx"
    with torch.no_grad():
        program = torch.onnx.export(
            layer,
            (torch.randn(2, 8, 24, 20),),
            dynamo=True,
            input_names=["x"],
            output_names=["y"],
            dynamic_shapes={"x": {0: dynamic, 2: dynamic, 3: dynamic}},
            opset_version=18,
            verbose=False,
        )
    assert program is not None
    program.save(str(path))
    model = onnx.load(str(path))
    assert {o.domain: o.version for o in model.opset_import}[""] == 18
    assert "GridSample" in {node.op_type for node in model.graph.node}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in ((2, 8, 24, 20), (1, 8, 17, 31), (3, 8, 9, 40)):
        x = torch.randn(*shape)
        with torch.no_grad():
            want = layer(x).numpy()
        (got,) = session.run(None, {"x": x.numpy()})
        assert got.shape == want.shape
        assert float(np.abs(got - want).max()) < 1e-4
