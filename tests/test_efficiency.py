"""The efficiency protocol: counts against hand-computed ones, the report, bad arguments."""

from __future__ import annotations

import pytest
from torch import nn

from src.models.efficiency import count_activations, count_macs, folded_parameters, measure
from src.models.zoo import build_net
from tests.helpers import run_module


def test_macs_and_activations_are_the_challenges_counts():
    """RLFN: each convolution's multiply-accumulates and output elements, from its output, plus
    fvcore's 4 operations per output element of each bilinear upsampling (its attention's);
    pooling is not counted, as fvcore does not."""
    import torch
    import torch.nn.functional as F

    net = build_net("rlfn", 2, device="meta")
    macs, elements, layers = [0], [0], [0]
    upsampled = [0]
    interpolate = F.interpolate

    def counted_interpolate(x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        out = interpolate(x, *args, **kwargs)  # type: ignore[arg-type]
        upsampled[0] += out.numel()
        return out

    def hook(module: nn.Conv2d, _: object, output: torch.Tensor) -> None:
        per_output = module.in_channels // module.groups * module.kernel_size[0] ** 2
        macs[0] += output.numel() * per_output
        elements[0] += output.numel()
        layers[0] += 1

    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(hook)
    with torch.no_grad(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(F, "interpolate", counted_interpolate)
        net(torch.zeros(1, 3, 20, 20, device="meta"))
    for module in net.modules():
        module._forward_hooks.clear()
    assert upsampled[0] == 6 * 16 * 20 * 20  # six blocks, 16 attention channels at full size
    assert count_macs(net, 20, "meta") * 1e9 == pytest.approx(macs[0] + 4 * upsampled[0])
    activations, convolutions = count_activations(net, 20, "meta")
    assert (activations * 1e6, convolutions) == (pytest.approx(elements[0]), layers[0])


def test_span_reports_its_folded_size_and_counts_its_functional_convolutions():
    span = build_net("span", 4, device="meta")
    assert folded_parameters(span) == 426_288
    # 20 Conv3XC (conv_1, 18 in the blocks, conv_2), conv_cat and the upsampler's convolution.
    assert count_activations(span, 16, "meta")[1] == 22
    assert folded_parameters(build_net("rlfn", 4, device="meta")) is None


def test_measure_gives_both_precisions_when_asked():
    result = measure("fsrcnn", 2, 16, 1, "cpu", bf16_setting="true")
    assert result.fp32_ms > 0 and result.bf16_ms is not None and result.bf16_ms > 0
    assert result.params == 12_809 and result.conv_layers > 0


def test_bf16_is_skipped_with_a_reason_on_a_cpu_without_it(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("src.models.efficiency.cpu_has_native_bf16", lambda: False)
    result = measure("fsrcnn", 2, 16, 1, "cpu")
    assert result.bf16_ms is None and "no bf16 instructions" in result.bf16_note


def test_the_command_prints_the_report_and_refuses_bad_arguments():
    args = ["efficiency", "model=fsrcnn", "scale=2", "size=16", "runs=1", "bf16=true"]
    done = run_module("src.models", args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "FLOPs" in done.stdout and "activations" in done.stdout and "bf16" in done.stdout
    bad = run_module("src.models", ["efficiency", "model=nope"])
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(
        "error: model=nope"
    )
    odd = run_module("src.models", ["efficiency", "model=fsrcnn", "runs=zero"])
    assert odd.returncode == 2 and "error: runs must be an integer >= 1, got 'zero'" in odd.stderr


@pytest.mark.parametrize(
    ("argument", "line"),
    [
        (
            "sclae=4",
            "error: unknown key sclae: efficiency takes no such argument (did you mean scale?)",
        ),
        ("size=0", "error: size must be an integer >= 1, got 0"),
        ("bf16=maybe", "error: bf16 must be one of auto or true or false, got 'maybe'"),
        ("device=banana", "error: device must be one of cpu, cuda, mps or a string of the form"),
        ("scale", "error: efficiency: 'scale' is not key=value"),
    ],
)
def test_efficiency_arguments_are_checked_by_the_schema(argument: str, line: str) -> None:
    from src.models.efficiency import parse
    from src.utils.schema import ConfigValueError

    with pytest.raises(ConfigValueError) as refused:
        parse(["model=fsrcnn", argument])
    assert f"error: {refused.value}".startswith(line)
