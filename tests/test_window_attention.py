"""src/archs/window.py's attention: window attention in the form torch's fused kernel takes."""

from __future__ import annotations

import math

import pytest
import torch

from src.archs.window import attention

FUSED_CPU_KERNEL = "aten::_scaled_dot_product_flash_attention_for_cpu"


def reference(query, key, value, bias=None, scale=None):
    """softmax(q k^T * scale + bias) v, written out in float64."""
    query, key, value = (t.double() for t in (query, key, value))
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    logits = query @ key.transpose(-2, -1) * scale
    if bias is not None:
        logits = logits + bias.double()
    return logits.softmax(-1) @ value


def kernels(call) -> set[str]:
    with torch.profiler.profile() as profile:
        call()
    return {event.key for event in profile.key_averages() if "attention" in event.key}


# (query's leading dimensions, the bias's shape): window networks' layouts.
LAYOUTS = [
    pytest.param((1, 4), (3, 16, 16), id="one-image-shared-bias"),
    pytest.param((2, 4), (3, 16, 16), id="batch-shared-bias"),
    pytest.param((2, 4), (4, 3, 16, 16), id="batch-per-window-bias"),
    pytest.param((1, 4), (4, 3, 16, 16), id="one-image-per-window-bias"),
    pytest.param((5,), (3, 16, 16), id="4d-query"),
    pytest.param((2, 4), None, id="no-bias"),
]


@pytest.mark.parametrize(("leading", "bias_shape"), LAYOUTS)
def test_attention_equals_the_formula_and_runs_the_fused_cpu_kernel(leading, bias_shape):
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(*leading, 3, 16, 8, generator=generator) for _ in range(3))
    bias = None if bias_shape is None else torch.randn(*bias_shape, generator=generator)
    with torch.no_grad():
        out = attention(query, key, value, bias)
        assert out.shape == (*leading, 3, 16, 8)
        assert torch.allclose(out.double(), reference(query, key, value, bias), atol=1e-5)
        # torch's own kernel choice: a 5-D query or a 3-D bias sent it to the math path before.
        assert FUSED_CPU_KERNEL in kernels(lambda: attention(query, key, value, bias))


def test_attention_takes_a_scale_other_keys_and_value_widths():
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(2, 2, 9, 4, generator=generator)
    key = torch.randn(2, 2, 25, 4, generator=generator)
    value = torch.randn(2, 2, 25, 6, generator=generator)
    bias = torch.randn(2, 9, 25, generator=generator)
    out = attention(query, key, value, bias, scale=1.0)
    assert out.shape == (2, 2, 9, 6)
    assert torch.allclose(out.double(), reference(query, key, value, bias, 1.0), atol=1e-5)


def test_gradients_reach_query_key_value_and_a_learned_bias():
    generator = torch.Generator().manual_seed(2)
    tensors = [
        torch.randn(2, 3, 2, 8, 4, generator=generator, dtype=torch.float64, requires_grad=True)
        for _ in range(3)
    ]
    bias = torch.randn(2, 8, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k, v, b: attention(q, k, v, b), (*tensors, bias))
