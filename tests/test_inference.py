"""The shared inference path: tiling matches whole-image inference; self-ensemble is exact."""

from __future__ import annotations

import pytest
import torch

from src.archs.edsr import EDSR
from src.ops.inference import _d4_forward, _d4_inverse, upscale


@pytest.fixture(scope="module")
def tiny_edsr() -> EDSR:
    torch.manual_seed(0)
    return EDSR(2, num_blocks=2, num_features=8).eval()


@torch.no_grad()
def test_tiles_with_enough_context_match_the_whole_image(tiny_edsr: EDSR):
    lr = torch.rand(1, 3, 37, 29)
    whole = upscale(tiny_edsr, lr, 2)
    # Receptive field of this net: 2 blocks x 2 convs + 3 more convs, radius 7 LR pixels.
    tiled = upscale(tiny_edsr, lr, 2, tile=12, tile_overlap=8)
    assert tiled.shape == whole.shape == (1, 3, 74, 58)
    assert torch.allclose(tiled, whole, atol=1e-5)


@torch.no_grad()
def test_tiles_without_context_differ_at_seams(tiny_edsr: EDSR):
    lr = torch.rand(1, 3, 30, 30)
    whole = upscale(tiny_edsr, lr, 2)
    assert not torch.allclose(upscale(tiny_edsr, lr, 2, tile=10, tile_overlap=0), whole, atol=1e-4)


def test_d4_inverse_undoes_forward():
    x = torch.rand(2, 3, 5, 7)
    for index in range(8):
        assert torch.equal(_d4_inverse(_d4_forward(x, index), index), x)


@torch.no_grad()
def test_self_ensemble_of_an_equivariant_op_is_the_op():
    def upsample(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)

    lr = torch.rand(1, 3, 6, 9)
    assert torch.allclose(upscale(upsample, lr, 2, self_ensemble=True), upsample(lr))


@torch.no_grad()
def test_self_ensemble_averages_the_eight_views(tiny_edsr: EDSR):
    lr = torch.rand(1, 3, 10, 12)
    views = [_d4_inverse(tiny_edsr(_d4_forward(lr, k)), k) for k in range(8)]
    expected = torch.stack(views).mean(0)
    assert torch.allclose(upscale(tiny_edsr, lr, 2, self_ensemble=True), expected, atol=1e-6)
    assert not torch.allclose(expected, tiny_edsr(lr), atol=1e-4)


@pytest.mark.parametrize(("tile", "overlap"), [(0, 4), (8, -1)])
def test_bad_tile_settings_are_refused(tiny_edsr: EDSR, tile: int, overlap: int):
    with pytest.raises(ValueError):
        upscale(tiny_edsr, torch.rand(1, 3, 20, 20), 2, tile=tile, tile_overlap=overlap)
