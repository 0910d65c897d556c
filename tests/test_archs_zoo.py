"""The model zoo's architectures: shapes at every scale, one training step, state-dict round trips,
parameter counts against the papers, and the paper conventions each network relies on."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.archs.atd import ATD
from src.archs.base import size_multiple_of
from src.archs.dat import DAT
from src.archs.drct import DRCT
from src.archs.drrn import DRRN
from src.archs.ecbsr import ECBSR
from src.archs.efdn import EFDN
from src.archs.espcn import ESPCN
from src.archs.fsrcnn import FSRCNN
from src.archs.hat import HAT
from src.archs.hit_srf import HiTSRF
from src.archs.omnisr import OmniSR
from src.archs.plksr import PLKSR
from src.archs.rcan import RCAN
from src.archs.rdn import RDN
from src.archs.reparam import fuse_network
from src.archs.rlfn import RLFN
from src.archs.rrdbnet import RRDBNet
from src.archs.safmn import SAFMN
from src.archs.span import SPAN
from src.archs.srcnn import SRCNN
from src.archs.srformer import SRFormer
from src.archs.srvgg_compact import SRVGGNetCompact
from src.archs.swinir import RSTB, SwinIR, SwinTransformerBlock, shifted_window_mask
from src.archs.vdsr import VDSR
from src.ops.color import rgb_to_ycbcr, ycbcr_to_rgb
from src.ops.imresize import imresize

Factory = Callable[[int], nn.Module]

# Settings the classical and light variants share at test size.
ATD_TINY: dict[str, Any] = {
    "embed_dim": 12,
    "depths": (2,),
    "num_heads": (2,),
    "window_size": 4,
    "category_size": 8,
    "num_tokens": 4,
    "reducted_dim": 4,
    "convffn_kernel_size": 3,
}
DAT_TINY: dict[str, Any] = {"embed_dim": 96, "split_size": (4, 8), "expansion_factor": 2.0}

# Small widths and depths: the same code paths as the real networks, at test speed.
TINY: dict[str, Factory] = {
    "srcnn": lambda s: SRCNN(s, num_features=(8, 4)),
    "srcnn_rgb": lambda s: SRCNN(s, num_features=(8, 4), y_only=False),
    "fsrcnn": lambda s: FSRCNN(s, num_features=8, shrunk_features=4, num_mapping_layers=1),
    "fsrcnn_rgb": lambda s: FSRCNN(
        s, num_features=8, shrunk_features=4, num_mapping_layers=1, y_only=False
    ),
    "espcn": lambda s: ESPCN(s, num_features=(8, 4)),
    "espcn_rgb": lambda s: ESPCN(s, num_features=(8, 4), y_only=False),
    "vdsr": lambda s: VDSR(s, num_layers=3, num_features=8),
    "vdsr_rgb": lambda s: VDSR(s, num_layers=3, num_features=8, y_only=False),
    "drrn": lambda s: DRRN(s, num_units=2, num_features=8),
    "drrn_b2_rgb": lambda s: DRRN(s, num_blocks=2, num_units=2, num_features=8, y_only=False),
    "rcan": lambda s: RCAN(s, num_groups=1, num_blocks=1, num_features=16, reduction=4),
    "rdn": lambda s: RDN(s, num_blocks=2, num_layers=2, growth_rate=8, num_features=16),
    "swinir": lambda s: SwinIR(
        s, embed_dim=12, depths=(2,), num_heads=(2,), window_size=4, num_features=8
    ),
    "swinir_light": lambda s: SwinIR(
        s, embed_dim=12, depths=(2,), num_heads=(2,), window_size=4, upsampler="pixelshuffledirect"
    ),
    "rrdbnet": lambda s: RRDBNet(s, num_features=8, num_blocks=1, growth_rate=4),
    "srvgg_compact": lambda s: SRVGGNetCompact(s, num_feat=8, num_conv=2),
    "rlfn": lambda s: RLFN(s, num_features=8),
    "span": lambda s: SPAN(s, num_features=8),
    "ecbsr": lambda s: ECBSR(s, module_nums=1, channel_nums=8),
    "ecbsr_rgb": lambda s: ECBSR(s, module_nums=1, channel_nums=8, with_idt=True, colors=3),
    "safmn": lambda s: SAFMN(s, dim=8, n_blocks=1),
    "hat": lambda s: HAT(
        s,
        embed_dim=12,
        depths=(2,),
        num_heads=(2,),
        window_size=4,
        squeeze_factor=4,
        num_features=8,
    ),
    "drct": lambda s: DRCT(
        s, embed_dim=12, depths=(2,), num_heads=(3,), window_size=4, gc=4, num_features=8
    ),
    "srformer": lambda s: SRFormer(
        s, embed_dim=12, depths=(2,), num_heads=(2,), window_size=4, num_features=8
    ),
    "srformer_light": lambda s: SRFormer(
        s, embed_dim=12, depths=(2,), num_heads=(2,), window_size=4, upsampler="pixelshuffledirect"
    ),
    "atd": lambda s: ATD(s, **ATD_TINY, num_features=8),
    "atd_light": lambda s: ATD(s, **ATD_TINY, upsampler="pixelshuffledirect"),
    "hit_srf": lambda s: HiTSRF(
        s, embed_dim=48, depths=(2,), num_heads=(2,), base_win_size=4, hier_win_ratios=(0.5, 2)
    ),
    "dat": lambda s: DAT(s, **DAT_TINY, depth=(2, 2), num_heads=(4, 4), num_features=16),
    "dat_light": lambda s: DAT(
        s,
        **DAT_TINY,
        depth=(4,),
        num_heads=(4,),
        resi_connection="3conv",
        upsampler="pixelshuffledirect",
    ),
    "omnisr": lambda s: OmniSR(s, num_feat=8, res_num=1, block_num=1, window_size=4),
    "plksr": lambda s: PLKSR(s, dim=8, n_blocks=1, kernel_size=5),
    "plksr_tiny": lambda s: PLKSR(s, dim=8, n_blocks=1, kernel_size=5, use_ea=False),
    # 16 features: the attention's 4 channels (8 would leave 2, all cut by its ReLUs here).
    "efdn": lambda s: EFDN(s, num_features=16),
    "efdn_13_idt": lambda s: EFDN(s, num_features=16, with_13=True, with_idt=True),
}
PIXEL_SHUFFLE_X8 = ("rcan", "rdn", "swinir", "rrdbnet", "hat", "drct", "srformer", "atd", "dat")
# Parameters that get no gradient in exact arithmetic, in the authors' design too (only rounding
# noise reaches them), by network: DAT's last position-bias bias (one constant per head, which
# the softmax cancels) and the biases of its convolutions followed by BatchNorm (cancelled by
# the mean subtraction).
GRADIENT_FREE: dict[str, tuple[str, ...]] = {
    name: (
        "pos.pos3.2.bias",
        "dwconv.0.bias",
        "channel_interaction.1.bias",
        "spatial_interaction.0.bias",
    )
    for name in ("dat", "dat_light")
}
# ECBSR's Sobel and Laplacian branches filter a map whose border is padded with the 1x1 bias:
# a constant shift, which filters summing to zero cancel (upstream's branches as well).
GRADIENT_FREE.update(
    {
        name: ("conv1x1_sbx.b0", "conv1x1_sby.b0", "conv1x1_lpl.b0")
        for name in ("ecbsr", "ecbsr_rgb")
    }
)
# EFDN's EDBB has the same three filter branches.
GRADIENT_FREE.update(
    {
        name: ("conv1x1_sbx.b0", "conv1x1_sby.b0", "conv1x1_lpl.b0")
        for name in ("efdn", "efdn_13_idt")
    }
)
# Window-attention networks pad to their window inside and crop back: any input size works.
WINDOWED = (
    "swinir",
    "swinir_light",
    "hat",
    "drct",
    "srformer",
    "srformer_light",
    "atd",
    "atd_light",
)

# Real sizes: (factory, scale, reference parameter count, where the reference comes from).
REAL: dict[str, tuple[Factory, int, int, str]] = {
    "srcnn": (SRCNN, 4, 57_184, "SRCNN 9-5-5 on Y: the paper's 57,184 weights (+97 biases)"),
    "fsrcnn": (
        FSRCNN,
        4,
        12_464 + 173 + 172,
        "the paper's 12,464 conv weights + 173 biases + 172 per-channel PReLU slopes",
    ),
    "espcn": (
        ESPCN,
        4,
        5 * 5 * 64 + 3 * 3 * 64 * 32 + 3 * 3 * 32 * 16 + 64 + 32 + 16,
        "the paper's (5,64)-(3,32)-3 layers on Y at x4, weights + biases",
    ),
    "vdsr": (VDSR, 4, 665_000, "VDSR paper: 665K"),
    "drrn": (DRRN, 4, 297_000, "DRRN paper: B1U25 297K"),
    "rcan": (RCAN, 4, 15_600_000, "RCAN: about 15.6M"),
    "rdn": (RDN, 4, 22_300_000, "RDN: about 22.3M"),
    "swinir": (SwinIR, 4, 11_900_000, "SwinIR classical: about 11.9M at x4"),
    "swinir_light": (
        lambda s: SwinIR(
            s, embed_dim=60, depths=(6,) * 4, num_heads=(6,) * 4, upsampler="pixelshuffledirect"
        ),
        2,
        878_000 + 4 * 6 * (2 * 8 - 1) ** 2 * 6,
        "SwinIR-light paper: 878K at x2, which leaves out the relative position bias tables",
    ),
    "rrdbnet": (RRDBNet, 4, 16_700_000, "ESRGAN generator: about 16.7M"),
    "rlfn": (RLFN, 4, 543_000, "RLFN paper: 543K at x4 (527K at x2)"),
    "rlfn_prune": (
        lambda s: RLFN(s, num_features=46, mid_features=48, num_blocks=4),
        4,
        317_218,
        "NTIRE 2024 ESR baseline RLFN_Prune: team00_rlfn.pth holds 317,218 values (0.317M)",
    ),
    "efdn": (
        lambda s: EFDN(s, deploy=True),
        4,
        276_192,
        "EFDN_gv.pth (= NTIRE 2025 ESR team00_EFDN.pth) holds 276,192 values (0.276M)",
    ),
    "safmn": (SAFMN, 4, 240_000, "SAFMN paper: 240K at x4 (228K at x2)"),
    "hat": (HAT, 4, 20_800_000, "HAT README: 20.8M at x4"),
    "drct": (DRCT, 4, 14_130_000, "DRCT README: 14.13M at x4"),
    "atd": (
        ATD,
        4,
        20_260_000,
        "ATD: 20.26M at x4 (as expected from the paper; not checked against it here)",
    ),
    "srformer": (SRFormer, 2, 10_400_000, "SRFormer README: 10.40M at x2"),
    "plksr": (
        PLKSR,
        4,
        7_390_000,
        "PLKSR: 7.39M at x4 (as expected from the paper; not checked against it here)",
    ),
    "hit_srf": (HiTSRF, 4, 866_000, "HiT-SR README: HiT-SRF 866K at x4"),
    "dat": (DAT, 4, 14_800_000, "DAT README: 14.80M at x4"),
    "omnisr": (OmniSR, 4, 792_000, "Omni-SR paper: 792K at x4 (less 12,880 position/norm terms)"),
    # ECBSR counts its fused (inference) form, as the paper does: 3x3 convolutions and PReLUs.
    "ecbsr": (
        lambda s: fuse_network(ECBSR(s)),
        4,
        (9 * 16 + 16 + 16) + 4 * (9 * 16 * 16 + 16 + 16) + (9 * 16 * 16 + 16),
        "ECBSR-M4C16 x4 on Y, fused: counted by hand from the authors' plainsr.py layout",
    ),
    "ecbsr_m16c64": (
        lambda s: fuse_network(ECBSR(s, module_nums=16, channel_nums=64)),
        4,
        (9 * 64 + 64 + 64) + 16 * (9 * 64 * 64 + 64 + 64) + (9 * 64 * 16 + 16),
        "ECBSR-M16C64 x4 on Y, fused: counted by hand from the authors' plainsr.py layout",
    ),
    "srvgg_compact": (
        lambda s: SRVGGNetCompact(s, num_conv=32),
        4,
        1_213_296,
        "realesr-general-x4v3: 34 convolutions of 64 features and 33 PReLUs, counted by hand",
    ),
}


def _input(height: int = 13, width: int = 11, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _fit(net: nn.Module, height: int = 13, width: int = 11) -> tuple[int, int]:
    """The sides rounded up to the input size multiple ``net`` needs (RRDBNet x2: 2, x1: 4)."""
    multiple = size_multiple_of(net)
    return height + -height % multiple, width + -width % multiple


def _count(net: nn.Module) -> int:
    return sum(parameter.numel() for parameter in net.parameters())


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", sorted(TINY))
def test_output_is_input_times_scale(name: str, scale: int) -> None:
    net = TINY[name](scale).eval()
    assert net.scale == scale
    height, width = _fit(net, 13, 11)
    with torch.no_grad():
        out = net(_input(height, width))
    assert out.shape == (1, 3, height * scale, width * scale)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", PIXEL_SHUFFLE_X8)
def test_x8(name: str) -> None:
    with torch.no_grad():
        out = TINY[name](8).eval()(_input(5, 6))
    assert out.shape == (1, 3, 40, 48)


@pytest.mark.parametrize("size", [(13, 11), (4, 9), (3, 5), (1, 6), (8, 8)])
@pytest.mark.parametrize("name", WINDOWED)
def test_window_networks_take_any_input_size(name: str, size: tuple[int, int]) -> None:
    with torch.no_grad():
        out = TINY[name](2).eval()(_input(*size))
    assert out.shape == (1, 3, 2 * size[0], 2 * size[1])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(TINY))
def test_one_training_step_updates_every_weight(name: str) -> None:
    torch.manual_seed(0)
    net = TINY[name](2).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    before = {key: value.detach().clone() for key, value in net.named_parameters()}
    lr, hr = _input(12, 12, batch=2), _input(24, 24, batch=2, seed=1)

    loss = F.l1_loss(net(lr), hr)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    assert torch.isfinite(loss)
    exempt = GRADIENT_FREE.get(name, ())
    unchanged = [
        key
        for key, value in net.named_parameters()
        if torch.equal(value, before[key]) and not key.endswith(exempt)
    ]
    assert not unchanged, f"not updated by a training step: {unchanged}"


@pytest.mark.parametrize("name", sorted(TINY))
def test_state_dict_round_trip(name: str) -> None:
    torch.manual_seed(0)
    trained = TINY[name](2).eval()
    torch.manual_seed(1)
    fresh = TINY[name](2).eval()
    x = _input(*_fit(fresh))
    with torch.no_grad():
        assert not torch.equal(fresh(x), trained(x)), "two random inits should differ"
        fresh.load_state_dict(trained.state_dict())
        assert torch.equal(fresh(x), trained(x))


@pytest.mark.parametrize("name", sorted(REAL))
def test_parameter_count_matches_paper(name: str) -> None:
    factory, scale, reference, source = REAL[name]
    with torch.device("meta"):  # no memory, no init cost: only shapes matter here
        net = factory(scale)
    count = _count(net)
    assert abs(count - reference) <= 0.02 * reference, f"{count:,} vs {reference:,} ({source})"


def test_ycbcr_is_matlab_bt601_and_inverts() -> None:
    black_white_gray = torch.tensor([0.0, 1.0, 0.5]).expand(3, 1, 3)  # (C, H, W): 3 pixels
    ycbcr = rgb_to_ycbcr(black_white_gray)
    torch.testing.assert_close(ycbcr[0, 0], torch.tensor([16.0, 235.0, 125.5]) / 255.0)
    torch.testing.assert_close(ycbcr[1:], torch.full((2, 1, 3), 128.0 / 255.0))
    rgb = _input(7, 5, batch=2)
    torch.testing.assert_close(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["srcnn", "fsrcnn", "espcn", "vdsr", "drrn", "ecbsr"])
def test_y_only_networks_leave_chroma_bicubic(name: str) -> None:
    net = TINY[name](3).eval()
    x = _input()
    with torch.no_grad():
        out, bicubic = rgb_to_ycbcr(net(x)), rgb_to_ycbcr(imresize(x, scale=3.0))
    torch.testing.assert_close(out[:, 1:], bicubic[:, 1:], atol=1e-5, rtol=0)
    assert not torch.allclose(out[:, :1], bicubic[:, :1], atol=1e-3)


@pytest.mark.parametrize("name", ["vdsr", "vdsr_rgb", "drrn", "drrn_b2_rgb"])
def test_global_residual_is_added_to_bicubic(name: str) -> None:
    net = TINY[name](4).eval()
    last_conv = [module for module in net.modules() if isinstance(module, nn.Conv2d)][-1]
    assert last_conv.bias is not None
    nn.init.zeros_(last_conv.weight)
    nn.init.zeros_(last_conv.bias)
    x = _input()
    with torch.no_grad():
        torch.testing.assert_close(net(x), imresize(x, scale=4.0), atol=1e-5, rtol=0)


def _naive_window_attention(block: SwinTransformerBlock, x: torch.Tensor) -> torch.Tensor:
    """The paper's (S)W-MSA for one (H, W, C) image, one window and one head at a time; pairs
    of tokens that the cyclic shift brought together from opposite borders may not attend."""
    attn, size, shift = block.attn, block.window_size, block.shift
    height, width, channels = x.shape
    heads = attn.num_heads
    head_dim = channels // heads
    shifted = torch.roll(x, shifts=(-shift, -shift), dims=(0, 1))
    wrapped_rows = torch.arange(height) >= height - shift if shift else torch.zeros(height) > 0
    wrapped_cols = torch.arange(width) >= width - shift if shift else torch.zeros(width) > 0
    positions = [(r, c) for r in range(size) for c in range(size)]
    out = torch.zeros_like(shifted)
    for top in range(0, height, size):
        for left in range(0, width, size):
            tokens = shifted[top : top + size, left : left + size].reshape(-1, channels)
            query, key, value = attn.qkv(tokens).chunk(3, dim=-1)
            results = []
            for head in range(heads):
                part = slice(head * head_dim, (head + 1) * head_dim)
                logits = query[:, part] @ key[:, part].T / math.sqrt(head_dim)
                for i, (ri, ci) in enumerate(positions):
                    for j, (rj, cj) in enumerate(positions):
                        index = (ri - rj + size - 1) * (2 * size - 1) + (ci - cj + size - 1)
                        logits[i, j] += attn.relative_position_bias_table[index, head]
                        same_region = (
                            wrapped_rows[top + ri] == wrapped_rows[top + rj]
                            and wrapped_cols[left + ci] == wrapped_cols[left + cj]
                        )
                        if not same_region:
                            logits[i, j] = -math.inf
                results.append(logits.softmax(dim=-1) @ value[:, part])
            window = attn.proj(torch.cat(results, dim=-1)).view(size, size, channels)
            out[top : top + size, left : left + size] = window
    return torch.roll(out, shifts=(shift, shift), dims=(0, 1))


@pytest.mark.parametrize("block_index", [0, 1], ids=["window", "shifted_window"])
def test_swin_block_matches_naive_attention(block_index: int) -> None:
    torch.manual_seed(0)
    net = SwinIR(2, embed_dim=12, depths=(2,), num_heads=(3,), window_size=4).eval()
    rstb = net.layers[0]
    assert isinstance(rstb, RSTB)
    block = rstb.residual_group.blocks[block_index]
    assert isinstance(block, SwinTransformerBlock)
    assert block.shift == (2 if block_index else 0)
    with torch.no_grad():
        nn.init.normal_(block.attn.relative_position_bias_table)  # make the bias matter
        height, width = 8, 12
        tokens = torch.randn(1, height * width, 12)
        mask = shifted_window_mask(height, width, 4, 2, tokens.device) if block.shift else None
        got = block(tokens, (height, width), mask)
        expected = tokens + _naive_window_attention(
            block, block.norm1(tokens).view(height, width, 12)
        ).reshape(1, -1, 12)
        expected = expected + block.mlp(block.norm2(expected))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "scale", "keys"),
    [
        (
            "rcan",
            4,
            [
                "head.0.weight",
                "body.0.body.0.body.0.weight",
                "body.0.body.0.body.3.conv_du.2.weight",
                "body.0.body.1.weight",
                "body.1.weight",
                "tail.0.2.weight",
                "tail.1.weight",
            ],
        ),
        (
            "rdn",
            4,
            [
                "SFENet1.weight",
                "SFENet2.weight",
                "RDBs.1.convs.1.conv.0.weight",
                "RDBs.1.LFF.weight",
                "GFF.0.weight",
                "GFF.1.weight",
                "UPNet.0.weight",
                "UPNet.2.weight",
                "UPNet.4.weight",
            ],
        ),
        (
            "swinir",
            4,
            [
                "conv_first.weight",
                "patch_embed.norm.weight",
                "layers.0.residual_group.blocks.1.attn.relative_position_bias_table",
                "layers.0.residual_group.blocks.1.attn.qkv.weight",
                "layers.0.residual_group.blocks.1.mlp.fc2.weight",
                "layers.0.conv.weight",
                "norm.weight",
                "conv_after_body.weight",
                "conv_before_upsample.0.weight",
                "upsample.2.weight",
                "conv_last.weight",
            ],
        ),
        ("swinir_light", 3, ["upsample.0.weight"]),
        (
            "safmn",
            2,
            [
                "to_feat.weight",
                "feats.0.norm1.weight",
                "feats.0.safm.mfr.3.weight",
                "feats.0.safm.aggr.weight",
                "feats.0.ccm.ccm.2.weight",
                "to_img.0.weight",
            ],
        ),
        (
            "span",
            4,
            [
                "conv_1.sk.weight",
                "conv_1.conv.0.weight",
                "conv_1.conv.2.bias",
                "conv_1.eval_conv.weight",
                "block_6.c3_r.eval_conv.bias",
                "conv_cat.weight",
                "conv_2.conv.1.weight",
                "upsampler.0.weight",
            ],
        ),
        (
            "rrdbnet",
            4,
            [
                "conv_first.weight",
                "body.0.rdb3.conv5.weight",
                "conv_body.weight",
                "conv_up1.weight",
                "conv_up2.weight",
                "conv_hr.weight",
                "conv_last.weight",
            ],
        ),
    ],
)
def test_state_dict_keys_follow_reference_code(name: str, scale: int, keys: list[str]) -> None:
    state = TINY[name](scale).state_dict()
    assert set(keys) <= set(state), sorted(set(keys) - set(state))
    assert not any("mean" in key or "relative_position_index" in key for key in state)


@pytest.mark.parametrize(("scale", "unshuffle"), [(1, 4), (2, 2), (4, 1)])
def test_rrdbnet_follows_basicsr_at_x1_x2_and_x4(scale: int, unshuffle: int) -> None:
    """BasicSR pixel-unshuffles the input by 4 at x1 and by 2 at x2, then upsamples x4 as at x4
    (so its and Real-ESRGAN's x2 files load); the input sides must be multiples of the factor."""
    net = TINY["rrdbnet"](scale).eval()
    state = net.state_dict()
    assert tuple(state["conv_first.weight"].shape) == (8, 3 * unshuffle**2, 3, 3)
    assert "conv_up2.weight" in state and "conv_up3.weight" not in state
    assert size_multiple_of(net) == unshuffle
    with torch.no_grad():
        assert net(_input(12, 8)).shape == (1, 3, 12 * scale, 8 * scale)
        if unshuffle > 1:
            with pytest.raises(ValueError, match=f"multiples of {unshuffle}"):
                net(_input(12, 8 + unshuffle // 2))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"depths": (2, 2), "num_heads": (2,)},
        {"embed_dim": 10, "num_heads": (3,), "depths": (2,)},
        {"upsampler": "nearest+conv"},
    ],
)
def test_swinir_rejects_inconsistent_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SwinIR(2, **kwargs)  # type: ignore[arg-type]


def test_srvgg_compact_has_the_official_layout_of_realesr_general_x4v3() -> None:
    """The authors' file stores body.0 (first convolution), body.1 (its PReLU), ..., body.66
    (the last convolution, 48 = 3 x 4^2 channels): the same keys and shapes load strictly."""
    keys = SRVGGNetCompact(4, num_conv=32).state_dict()
    expected = {"body.0.weight": (64, 3, 3, 3), "body.1.weight": (64,), "body.65.weight": (64,)}
    expected |= {"body.66.weight": (48, 64, 3, 3), "body.66.bias": (48,)}
    assert {k: tuple(keys[k].shape) for k in expected} == expected
    assert len(keys) == 34 * 2 + 33  # conv weight + bias each, one slope vector per PReLU


def test_srvgg_compact_learns_a_residual_over_nearest_upscaling() -> None:
    net = SRVGGNetCompact(2, num_feat=4, num_conv=1)
    nn.init.zeros_(net.body[-1].weight)
    nn.init.zeros_(net.body[-1].bias)
    x = _input(5, 7)
    assert torch.equal(net(x), F.interpolate(x, scale_factor=2, mode="nearest"))
