"""EFDN (the NTIRE 2025 efficient SR baseline): its EDBB folds into one convolution exactly, the
fused network is the released layout with the released size, and the names are the authors'.
Parity with the authors' code: tests/fixtures/parity/efdn_x4.npz and efdn_deploy_x4.npz."""

from __future__ import annotations

import pytest
import torch

from src.archs.efdn import EDBB, EFDN, EDBBDeploy
from src.archs.reparam import fuse_network, fused_parameter_count, is_fusable

# Keys of the released file (EFDN_gv.pth, the challenge's team00_EFDN.pth), 142 in all.
RELEASED_KEYS = [
    "head.weight",
    "cells.0.conv1.conv1x1.weight",
    "cells.0.conv1.act.weight",
    "cells.0.conv2.rep_conv.weight",
    "cells.0.conv2.act.weight",
    "cells.0.conv3.rep_conv.bias",
    "cells.0.fuse.weight",
    "cells.0.att.conv_max.weight",
    "cells.0.att.conv3_.bias",
    "cells.0.branch.3.weight",
    "cells.3.att.conv4.weight",
    "local_fuse.2.weight",
    "tail.0.weight",
]


def _randomised(block: EDBB) -> EDBB:
    """Every parameter drawn at a scale where all branches matter (the filters' scales start
    at 1e-3)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.normal_(0.0, 0.3)
    return block


@pytest.mark.parametrize("with_idt", [False, True])
@pytest.mark.parametrize("with_13", [False, True])
def test_edbb_fuses_into_one_convolution_with_its_activation(with_idt: bool, with_13: bool):
    block = _randomised(EDBB(6, 6, with_idt=with_idt, with_13=with_13)).eval()
    x = torch.randn(2, 6, 9, 11)
    fused = block.fuse()
    assert isinstance(fused, EDBBDeploy) and isinstance(fused.rep_conv, torch.nn.Conv2d)
    with torch.no_grad():
        expected, actual = block(x), fused(x)
    assert (actual - expected).abs().max() <= 1e-5 * max(1.0, float(expected.abs().max()))


def test_edbb_with_other_widths_skips_the_identity():
    block = _randomised(EDBB(4, 6, with_idt=True)).eval()
    assert not block.with_idt
    x = torch.randn(1, 4, 7, 7)
    with torch.no_grad():
        assert torch.allclose(block.fuse()(x), block(x), atol=1e-5)


def test_fused_network_is_the_released_layout_and_size():
    net = EFDN(4).eval()
    fused = fuse_network(net)
    released = EFDN(4, deploy=True)
    assert is_fusable(net) and not is_fusable(released)
    shapes = {key: tuple(value.shape) for key, value in fused.state_dict().items()}
    assert shapes == {key: tuple(value.shape) for key, value in released.state_dict().items()}
    assert set(RELEASED_KEYS) <= set(shapes) and len(shapes) == 142
    assert fused_parameter_count(net) == 276_192
    assert sum(p.numel() for p in net.parameters()) == 353_760


def test_fused_network_computes_what_the_branches_compute():
    net = EFDN(2, num_features=8).eval()
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if name.endswith((".scale", ".bias")):
                parameter.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(1))
        x = torch.rand(1, 3, 18, 20)
        expected, actual = net(x), fuse_network(net)(x)
    assert (actual - expected).abs().max() <= 1e-5 * max(1.0, float(expected.abs().max()))


def test_training_form_names_follow_the_authors_edbb():
    keys = set(EFDN(4, num_features=8, with_13=True).state_dict())
    for branch in ("conv1x1_sbx", "conv1x1_sby", "conv1x1_lpl"):
        for name in ("k0", "b0", "scale", "bias", "mask"):
            assert f"cells.1.conv2.{branch}.{name}" in keys
    assert {"cells.1.conv3.rep_conv.weight", "cells.1.conv3.conv1x1.bias"} <= keys
    assert {"cells.1.conv3.conv1x1_3x3.k0", "cells.1.conv3.conv1x1_3x3.b1"} <= keys
    assert not any("conv1x1_3x3" in key for key in EFDN(4, num_features=8).state_dict())
