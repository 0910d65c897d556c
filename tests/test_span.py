"""SPAN's two forms: the re-parameterisable convolution folds exactly, the folded network is
the trained one, and a folded file runs in the deploy form."""

from __future__ import annotations

import torch

from src.archs.span import SPAN, Conv3XC


def test_a_folded_conv3xc_is_the_branches_it_folds_border_included():
    torch.manual_seed(0)
    conv = Conv3XC(4, 5)
    for branch in [conv.sk, *conv.conv]:
        torch.nn.init.normal_(branch.bias)  # biases far from zero: the padding carries them
    x = torch.randn(2, 4, 9, 13)
    trained = conv.train()(x)
    folded = conv.eval()(x)
    assert trained.shape == folded.shape == (2, 5, 9, 13)
    assert torch.allclose(trained, folded, atol=1e-5)


def test_the_folded_network_equals_the_training_form_and_deploys_from_a_file():
    torch.manual_seed(1)
    net = SPAN(2, num_features=8)
    x = torch.rand(1, 3, 21, 17)
    with torch.no_grad():
        trained = net.train()(x)
        folded = net.eval()(x)
    assert torch.allclose(trained, folded, atol=1e-4)
    net.fold()
    deployed = SPAN(2, num_features=8, deploy=True)
    deployed.load_state_dict(net.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.allclose(deployed.eval()(x), folded, atol=1e-5)


def test_the_folded_kernels_are_not_trained():
    net = SPAN(4)
    trained = {name for name, _ in net.named_parameters()}
    assert not any("eval_conv" in name for name in trained)
    folded = sum(b.numel() for name, b in net.named_buffers() if "eval_conv" in name)
    outside = sum(
        p.numel()
        for name, p in net.named_parameters()
        if ".sk." not in name and ".conv." not in name
    )
    assert folded + outside == 426_288
