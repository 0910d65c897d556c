"""Per-part learning rates and frozen steps (model.lr_multipliers, model.freeze_steps): BasicVSR's
recipe trains its SPyNet at 1/8 of the rate and freezes it for the first 5000 steps."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from src.models.sr_module import SRModule
from src.utils.errors import UserError


class TwoParts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.flow = nn.Conv2d(3, 3, 1)
        self.body = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.flow(x))


def module(**options: object) -> SRModule:
    adam = functools.partial(torch.optim.Adam, lr=1e-3)
    return SRModule(TwoParts(), scale=1, optimizer=adam, channels_last=False, **options)


def test_lr_multiplier_makes_a_group_with_the_scaled_rate() -> None:
    sr = module(lr_multipliers={"flow": 0.125})
    optimizer = sr.configure_optimizers()
    rates = [group["lr"] for group in optimizer.param_groups]
    assert rates == [1e-3, 1e-3 * 0.125]
    flow_ids = {id(p) for p in sr.net.flow.parameters()}
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == flow_ids
    assert not flow_ids & {id(p) for p in optimizer.param_groups[0]["params"]}


def test_frozen_part_gets_no_update_until_its_step() -> None:
    sr = module(freeze_steps={"flow": 1})
    optimizer = torch.optim.SGD(sr.net.parameters(), lr=0.1)
    before = [p.detach().clone() for p in sr.net.parameters()]
    sr.net(torch.rand(1, 3, 4, 4)).sum().backward()
    sr.on_before_optimizer_step(optimizer)  # global_step 0 < 1: flow frozen
    optimizer.step()
    after = list(sr.net.parameters())
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])  # flow
    assert not torch.equal(after[2], before[2])  # body moved
    assert sr.frozen_parameters()  # still frozen at step 0


def test_unknown_prefix_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"model\.lr_multipliers\.spynet"):
        module(lr_multipliers={"spynet": 0.125}).configure_optimizers()
    with pytest.raises(UserError, match=r"model\.freeze_steps\.spynet"):
        module(freeze_steps={"spynet": 10}).frozen_parameters()


def test_a_part_loads_from_a_whole_network_file_or_its_own(tmp_path) -> None:
    from src.models.pretrained import PretrainedWeightsError, import_part

    source = TwoParts()
    whole = tmp_path / "whole.pth"
    torch.save(source.state_dict(), whole)
    own = tmp_path / "flow.pth"
    torch.save(source.flow.state_dict(), own)
    for path in (whole, own):
        sr = module(pretrained_parts={"flow": str(path)})
        torch.testing.assert_close(sr.net.flow.weight, source.flow.weight)
        assert not torch.equal(sr.net.body.weight, source.body.weight)  # only the part
    with pytest.raises(PretrainedWeightsError, match="no part 'spynet'"):
        import_part(TwoParts(), "spynet", whole)
    with pytest.raises(PretrainedWeightsError, match="do not fit"):
        import_part(nn.Sequential(nn.Conv2d(3, 4, 1)), "0", own)
