"""Modulated deformable convolution (DCNv2) in plain torch, as torchvision's ``deform_conv2d``.

Zhu, Hu, Lin and Dai, "Deformable ConvNets v2: More Deformable, Better Results", CVPR 2019
(with ``mask=None``: DCNv1, Dai et al., "Deformable Convolutional Networks", ICCV 2017).

Conventions (argument order, offset and mask layouts, sampling rule) are those of
torchvision's ``torchvision.ops.deform_conv2d`` (https://github.com/pytorch/vision, commit
5b13205, ``torchvision/csrc/ops/cpu/deform_conv2d_kernel.cpp``; BSD-3-Clause) and of mmcv's
``modulated_deform_conv2d`` (https://github.com/open-mmlab/mmcv, commit f127a73,
``mmcv/ops/modulated_deform_conv.py``; Apache-2.0), whose argument order this function keeps.
torchvision cannot be imported beside this CPU torch wheel and is not used; the code is SR Lab's.

What it computes, for output pixel ``(oy, ox)``, offset group ``g`` and kernel tap ``(i, j)``
(``k = i * kernel_w + j``)::

    y = oy * stride_h - pad_h + i * dilation_h + offset[n, 2 * (g * K + k),     oy, ox]
    x = ox * stride_w - pad_w + j * dilation_w + offset[n, 2 * (g * K + k) + 1, oy, ox]
    column[c, k] = mask[n, g * K + k, oy, ox] * bilinear(input[n, c], y, x)

for every input channel ``c`` of offset group ``g`` (channels split into ``offset_groups``
consecutive blocks), then ``out = weight @ columns + bias`` per convolution group. ``bilinear``
reads the four neighbours of ``(y, x)`` with zero for a neighbour outside the image (so a point
at or beyond one pixel outside gives 0): torchvision's and mmcv's rule.

Offset layout: channel ``2 * (g * K + k)`` is the vertical offset ``dy`` and ``2 * (g * K + k) + 1``
the horizontal ``dx`` of tap ``k`` in offset group ``g``: (dy, dx) interleaved per tap, groups
outermost. The mask has ``offset_groups * K`` channels, channel ``g * K + k``. This is the layout
the released BasicVSR++, EDVR, BasicVSR-family and RealBasicVSR weights were trained with:
BasicSR's ``ModulatedDeformConvPack``/``DCNv2Pack`` and mmcv's ``ModulatedDeformConv2dPack``
compute ``conv_offset(feat)`` with ``3 * offset_groups * K`` channels, split it
``o1, o2, mask = chunk(3)`` and pass ``cat(o1, o2)`` (simply the first two thirds, unchanged)
as the offset and ``sigmoid(mask)`` as the mask, to torchvision's op or to their own CUDA op
interchangeably; BasicVSR++'s second-order alignment adds the optical flow as
``flow.flip(1).repeat(1, offset_groups * K, 1, 1)``, i.e. (dy, dx) pairs. So a released
``conv_offset`` weight loads unchanged: no channel permutation.

How: the offsets become one sampling grid holding every tap (``(N * G, K * rows, W_out, 2)``) and
a single ``grid_sample`` (bilinear, zero padding, ``align_corners=False``, whose out-of-image
rule is the one above) reads the columns ``(N, C * K, rows * W_out)``; the mask multiplies them
and one matrix product per image and convolution group applies the weight. Gradients (input,
offset, mask, weight, bias) come from autograd. Half and bfloat16 inputs are sampled in float32
(grid coordinates need more than 8 or 11 bits of mantissa) and the columns cast back for the
matrix product.
The columns take ``N * C * K * H_out * W_out`` elements; above :data:`COLUMN_BUDGET_BYTES` the
output is made in bands of rows, so inference on a large frame stays bounded (under autograd the
columns of every band are kept for the backward pass, as they would be unbanded). Export
(``torch.export``/ONNX) traces the single-band path: ``GridSample`` (opset 16+) and ``MatMul``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["COLUMN_BUDGET_BYTES", "deform_conv_output_size", "modulated_deform_conv2d"]

# Largest sampled-column tensor made at once (bytes); larger outputs are made in bands of rows.
COLUMN_BUDGET_BYTES = 256 * 1024 * 1024

IntPair = int | tuple[int, int]


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair[0], pair[1]


def deform_conv_output_size(
    size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Output length along one axis, as for ``nn.Conv2d``."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def modulated_deform_conv2d(
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    offset_groups: int = 1,
    *,
    max_column_bytes: int | None = None,
) -> Tensor:
    """Modulated deformable convolution of ``input`` (N, C, H, W), as torchvision's
    ``deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask)``.

    ``offset``: (N, 2 * offset_groups * kh * kw, H_out, W_out), (dy, dx) interleaved per tap
    (module docstring); ``mask``: (N, offset_groups * kh * kw, H_out, W_out), or None for DCNv1;
    ``weight``: (C_out, C / groups, kh, kw). ``max_column_bytes`` overrides
    :data:`COLUMN_BUDGET_BYTES` (the banding threshold). Works on any device and dtype.
    """
    if input.dim() != 4 or offset.dim() != 4 or weight.dim() != 4:
        raise ValueError(
            "modulated_deform_conv2d expects 4-D input, offset and weight, got shapes "
            f"{tuple(input.shape)}, {tuple(offset.shape)}, {tuple(weight.shape)}"
        )
    stride_hw = _pair(stride, "stride")
    padding_hw = _pair(padding, "padding")
    dilation_hw = _pair(dilation, "dilation")
    batch, channels, height, width = input.shape
    out_channels, group_channels, kernel_h, kernel_w = weight.shape
    taps = kernel_h * kernel_w
    if groups < 1 or offset_groups < 1:
        raise ValueError(f"groups and offset_groups must be >= 1, got {groups}, {offset_groups}")
    if group_channels * groups != channels or out_channels % groups:
        raise ValueError(
            f"weight {tuple(weight.shape)} with groups={groups} does not fit {channels} input "
            "channels (weight.shape[1] * groups must equal them, and groups divide C_out)"
        )
    if channels % offset_groups:
        raise ValueError(f"offset_groups={offset_groups} does not divide {channels} channels")
    if offset.shape[1] != 2 * offset_groups * taps:
        raise ValueError(
            f"offset has {offset.shape[1]} channels; 2 * offset_groups * kh * kw = "
            f"{2 * offset_groups * taps} expected"
        )
    if mask is not None and (mask.dim() != 4 or mask.shape[1] != offset_groups * taps):
        raise ValueError(
            f"mask of shape {tuple(mask.shape)}: (N, offset_groups * kh * kw = "
            f"{offset_groups * taps}, H_out, W_out) expected"
        )
    if bias is not None and bias.shape != (out_channels,):
        raise ValueError(f"bias of shape {tuple(bias.shape)}: ({out_channels},) expected")
    out_h = deform_conv_output_size(height, kernel_h, stride_hw[0], padding_hw[0], dilation_hw[0])
    out_w = deform_conv_output_size(width, kernel_w, stride_hw[1], padding_hw[1], dilation_hw[1])
    exporting = torch.compiler.is_compiling()
    if not exporting:
        # Concrete sizes only: under torch.export these are symbolic and already tied together.
        expected = (batch, out_h, out_w)
        if (offset.shape[0], *offset.shape[2:]) != expected or (
            mask is not None and (mask.shape[0], *mask.shape[2:]) != expected
        ):
            raise ValueError(
                f"offset {tuple(offset.shape)} and mask "
                f"{None if mask is None else tuple(mask.shape)} must be (N={batch}, ..., "
                f"H_out={out_h}, W_out={out_w}) for input {tuple(input.shape)}"
            )

    geometry = (kernel_h, kernel_w, stride_hw, padding_hw, dilation_hw, groups, offset_groups)
    rows = out_h
    if not exporting:
        budget = COLUMN_BUDGET_BYTES if max_column_bytes is None else max_column_bytes
        row_bytes = batch * channels * taps * out_w * max(input.element_size(), 4)
        rows = max(1, min(out_h, budget // max(row_bytes, 1)))
    if rows >= out_h:
        return _deform_band(input, offset, mask, weight, bias, geometry, None, exporting)
    bands = [
        _deform_band(
            input, offset, mask, weight, bias, geometry, (start, min(rows, out_h - start)), False
        )
        for start in range(0, out_h, rows)
    ]
    return torch.cat(bands, dim=2)


def _deform_band(
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    geometry: tuple[int, int, tuple[int, int], tuple[int, int], tuple[int, int], int, int],
    band: tuple[int, int] | None,
    exporting: bool,
) -> Tensor:
    """Output rows ``start .. start + rows - 1`` of :func:`modulated_deform_conv2d` for
    ``band = (start, rows)``, all of them for None; ``exporting``: no branch on the batch size."""
    kernel_h, kernel_w, stride, padding, dilation, groups, offset_groups = geometry
    batch, channels, height, width = input.shape
    out_channels = weight.shape[0]
    out_w = offset.shape[3]
    taps = kernel_h * kernel_w
    if band is None:
        start, rows = 0, offset.shape[2]
    else:
        start, rows = band
        offset = offset[:, :, start : start + rows]
        mask = None if mask is None else mask[:, :, start : start + rows]

    # Sampling runs in float32 at least: half/bf16 grid coordinates would lose whole pixels.
    sample_dtype = torch.promote_types(input.dtype, torch.float32)
    device = input.device

    def undeformed(
        first: int, count: int, step: int, pad: int, kernel: int, spacing: int, size: int
    ) -> Tensor:
        """grid_sample coordinate of tap t of output ``first + o`` along one axis before its
        offset, (kernel, count): pixel p is at (2p + 1) / size - 1 (``align_corners=False``)."""
        outputs = torch.arange(first, first + count, device=device, dtype=sample_dtype)
        tap = torch.arange(kernel, device=device, dtype=sample_dtype) * spacing
        pixel = tap[:, None] + (outputs * step - pad)[None, :]
        return (2 * pixel + 1) / size - 1

    # Tap k = i * kernel_w + j: rows (K, rows, 1) from i, columns (K, 1, W_out) from j.
    base_y = undeformed(start, rows, stride[0], padding[0], kernel_h, dilation[0], height)
    base_y = base_y.repeat_interleave(kernel_w, dim=0)[:, :, None]
    base_x = undeformed(0, out_w, stride[1], padding[1], kernel_w, dilation[1], width)
    base_x = base_x.repeat(kernel_h, 1)[:, None, :]

    # (N, G, K, 2, rows, W_out) -> grid (N * G, K * rows, W_out, 2) of normalised (x, y).
    pairs = offset.to(sample_dtype).reshape(batch, offset_groups, taps, 2, rows, out_w)
    x = torch.add(base_x, pairs[:, :, :, 1], alpha=2.0 / width)
    y = torch.add(base_y, pairs[:, :, :, 0], alpha=2.0 / height)
    grid = torch.stack((x, y), dim=-1).reshape(batch * offset_groups, taps * rows, out_w, 2)
    planes = input.to(sample_dtype).reshape(
        batch * offset_groups, channels // offset_groups, height, width
    )
    sampled = F.grid_sample(
        planes, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    # (N * G, C / G, K * rows, W_out) -> (N, G, C / G, K, rows * W_out)
    columns = sampled.reshape(batch, offset_groups, channels // offset_groups, taps, rows * out_w)
    if mask is not None:
        modulation = mask.to(sample_dtype).reshape(batch, offset_groups, 1, taps, rows * out_w)
        if torch.is_grad_enabled():
            columns = columns * modulation
        else:
            columns.mul_(modulation)
    columns = columns.to(input.dtype)
    # One matrix product per (image, convolution group). torch.mm or bmm: a broadcasting
    # matmul of (groups, O/g, CK/g) with (N, groups, CK/g, L) measured twice as slow on CPU
    # (64 channels, 64x64, one thread: 7.5 ms against 3.6 ms), but it is what export traces,
    # so the batch size stays symbolic there.
    kernel = weight.reshape(groups, out_channels // groups, -1)
    per_group = (channels // groups) * taps
    if exporting:
        out = torch.matmul(kernel, columns.reshape(batch, groups, per_group, rows * out_w))
    elif batch * groups == 1:
        out = torch.mm(kernel[0], columns.reshape(per_group, rows * out_w))
    else:
        columns = columns.reshape(batch * groups, per_group, rows * out_w)
        out = torch.bmm(kernel.repeat(batch, 1, 1), columns)
    out = out.reshape(batch, out_channels, rows, out_w)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out
