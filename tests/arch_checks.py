"""Checks shared by the per-architecture tests (tests/test_<arch>.py): parameter counts, the
state-dict layout fingerprint pinned against the authors' code, "the output is the input times the
scale and finite", activation checkpointing against the plain network, and strict import of a
file saved in an official layout. Each test keeps its own settings, inputs and pinned values;
these functions only hold what the tests had in common."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from src.models.pretrained import import_weights


def parameter_count(net: nn.Module) -> int:
    """Every parameter's elements (relative position bias tables included), not the buffers."""
    return sum(p.numel() for p in net.parameters())


def assert_near_published(count: int, published: int, tolerance: float = 0.02) -> None:
    """``count`` is within ``tolerance`` (relative) of a paper's or README's rounded figure."""
    assert abs(count - published) <= tolerance * published, (
        f"{count:,} parameters, published {published:,}"
    )


def layout_fingerprint(
    state: Mapping[str, torch.Tensor], shape: Callable[[torch.Size], object] = tuple
) -> tuple[int, int, str]:
    """(number of keys, their total elements, sha256 of the sorted ``"key:shape"`` lines joined
    by newlines), the form the tests pin the authors' state dicts in.

    ``shape`` spells each shape in the lines: ``tuple`` gives ``key:(180, 3, 3, 3)`` and
    ``key:(180,)``, ``list`` gives ``key:[180, 3, 3, 3]`` (the form HAT's values were taken in).
    """
    lines = sorted(f"{key}:{shape(value.shape)}" for key, value in state.items())
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return len(lines), sum(value.numel() for value in state.values()), digest


def assert_scaled_finite_output(net: nn.Module, x: torch.Tensor, scale: int) -> None:
    """``net`` (in eval mode) maps ``x`` (N, C, H, W) to (N, C, H * scale, W * scale), finite."""
    with torch.no_grad():
        out = net.eval()(x)
    n, c, h, w = x.shape
    assert out.shape == (n, c, h * scale, w * scale)
    assert torch.isfinite(out).all()


def parameters_without_gradient(net: nn.Module) -> list[str]:
    """Names of the parameters the last backward pass left with no gradient or an all-zero one."""
    return [name for name, p in net.named_parameters() if p.grad is None or not p.grad.any()]


def assert_checkpointing_keeps_gradients(
    plain: nn.Module,
    checkpointed: nn.Module,
    x: torch.Tensor,
    loss: Callable[[torch.Tensor], torch.Tensor] = lambda out: out.square().mean(),
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """With ``plain``'s weights copied into ``checkpointed`` (the same network with activation
    checkpointing on), one backward pass of ``loss(net(x))`` gives every parameter the same
    gradient in both (``torch.testing.assert_close``, its default tolerances unless given)."""
    checkpointed.load_state_dict(plain.state_dict())
    for net in (plain, checkpointed):
        loss(net(x)).backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None, name
        torch.testing.assert_close(a.grad, b.grad, rtol=rtol, atol=atol, msg=name)


def assert_same_weights(net: nn.Module, expected: Mapping[str, torch.Tensor]) -> None:
    """Every entry of ``expected`` is in ``net``'s state dict, bit for bit."""
    state = net.state_dict()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def assert_official_file_loads_strictly(
    path: Path,
    content: Mapping[str, object],
    source: nn.Module,
    build: Callable[[], nn.Module],
    x: torch.Tensor | None = None,
) -> nn.Module:
    """Save ``content`` (the file as the authors write it: ``{"params": state}`` or a bare state
    dict) at ``path``, import it strictly into ``build()`` (made after ``torch.manual_seed(1)``,
    so that it starts from other weights than ``source``) and check that the import made it
    ``source``: the same outputs on ``x`` when given, else the same state dict. Returns the
    network the file went into."""
    torch.save(content, path)
    torch.manual_seed(1)
    target = build()
    import_weights(target, path)
    if x is None:
        assert_same_weights(target, source.state_dict())
    else:
        with torch.no_grad():
            assert torch.equal(target(x), source(x))
    return target


def with_random_offsets(net: nn.Module, scale: float = 0.05) -> None:
    """Give the deformable layers' offset convolutions (zero at initialisation, as upstream)
    small weights, as training would: their inputs then reach the output."""
    from src.archs.deform_conv import ModulatedDeformConv2d

    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, ModulatedDeformConv2d):
                module.conv_offset.weight.normal_(0.0, scale)


def assert_offsets_gate_then_train(net: nn.Module, x: torch.Tensor, target: torch.Tensor) -> None:
    """At initialisation the offset convolutions are zero (upstream's init), so only the layers
    feeding them get no gradient; with any offset weights every parameter gets one, and an Adam
    step leaves everything finite."""
    net.train()
    (net(x) - target).abs().mean().backward()
    missing = parameters_without_gradient(net)
    assert missing and all("offset_conv" in name for name in missing), missing
    net.zero_grad(set_to_none=True)
    with_random_offsets(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    loss = (net(x) - target).abs().mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert not parameters_without_gradient(net)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in net.parameters())


def assert_frames_reach(net: nn.Module, clip: torch.Tensor, pairs: list[tuple[int, int]]) -> None:
    """For each ``(changed, seen)``: replacing frame ``changed`` of ``clip`` (N, T, C, H, W)
    changes the output frame ``seen`` (propagation carries it there)."""
    with torch.no_grad():
        out = net.eval()(clip)
        for changed, seen in pairs:
            other = clip.clone()
            other[:, changed] = torch.rand_like(clip[:, changed])
            assert not torch.allclose(net(other)[:, seen], out[:, seen]), (changed, seen)
