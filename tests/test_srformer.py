"""SRFormer and SRFormer-light: shapes on odd and sub-window inputs, permuted self-attention against
a direct reading of the paper, parameter counts against the paper, the authors' state-dict layout
and strict loading of a file saved in that layout."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from src.archs.srformer import (
    PSA,
    SRFormer,
    aligned_relative_position_index,
    permuted_window_mask,
)
from src.models.zoo import build_net
from tests.arch_checks import (
    assert_checkpointing_keeps_gradients,
    assert_near_published,
    assert_official_file_loads_strictly,
    assert_scaled_finite_output,
    layout_fingerprint,
    parameter_count,
)

UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect")

# The authors' counts: 10.40M for classical SRFormer at x2 (README of HVision-NKU/SRFormer, beside
# SwinIR's 11.75M); SRFormer-light 853K / 861K / 873K at x2 / x3 / x4 (the paper's lightweight
# table). Both include the relative position bias tables.
PAPER_PARAMETERS = {
    ("srformer", 2): 10_400_000,
    ("srformer_light", 2): 853_000,
    ("srformer_light", 3): 861_000,
    ("srformer_light", 4): 873_000,
}

# The official state dict (HVision-NKU/SRFormer, basicsr/archs/srformer_arch.py at c04752b, built
# with its options/test configurations), less the aligned_relative_position_index and attn_mask
# buffers: (keys, elements, sha256 of the sorted "key:shape" lines), measured by running that code.
OFFICIAL_FINGERPRINTS = {
    ("srformer", 2): (
        638,
        10_376_783,
        "723390c7c4765f9cd2640379f51485e29aaf2c7d15e4ca3add45ebf75ead76f4",
    ),
    ("srformer", 3): (
        638,
        10_561_423,
        "14cc4bf6171c2be52ab6ce19a667e7e64137c58d5d4d02d30ea177ed0d4fbc2c",
    ),
    ("srformer", 4): (
        640,
        10_524_495,
        "155b11d1f8c0dc30179aeb78324832861f44df1f414bcd33be3098910e35e63b",
    ),
    ("srformer_light", 2): (
        426,
        853_272,
        "754425359f7045d7686cedf03127f8705c7de02dd32e8594285ed80a7f90e8a1",
    ),
    ("srformer_light", 3): (
        426,
        861_387,
        "5ce8a7a1fbd2ab3dbf87b5ffd79a52c3df9d675d5e600eca038e0c318ba9d17e",
    ),
    ("srformer_light", 4): (
        426,
        872_748,
        "92a0d38ffe925a85667828bcb85f5b0d87e3205eca7504066f0d0bd5b3900847",
    ),
}
OFFICIAL_KEYS = {
    "srformer": {
        "conv_first.weight": (180, 3, 3, 3),
        "patch_embed.norm.weight": (180,),
        "layers.0.residual_group.blocks.1.attn.relative_position_bias_table": (441, 6),
        "layers.0.residual_group.blocks.1.attn.kv.weight": (90, 180),
        "layers.0.residual_group.blocks.1.attn.q.weight": (180, 180),
        "layers.5.residual_group.blocks.5.mlp.dwconv.depthwise_conv.0.weight": (360, 1, 5, 5),
        "layers.5.conv.weight": (180, 180, 3, 3),
        "conv_before_upsample.0.weight": (64, 180, 3, 3),
        "upsample.2.weight": (256, 64, 3, 3),
        "conv_last.weight": (3, 64, 3, 3),
    },
    "srformer_light": {
        "layers.3.residual_group.blocks.0.attn.relative_position_bias_table": (225, 6),
        "layers.3.residual_group.blocks.0.attn.kv.bias": (30,),
        "layers.3.residual_group.blocks.0.mlp.fc1.weight": (120, 60),
        "norm.weight": (60,),
        "conv_after_body.weight": (60, 60, 3, 3),
        "upsample.0.weight": (48, 60, 3, 3),
    },
}


def tiny(
    scale: int,
    upsampler: str = "pixelshuffle",
    drop_path_rate: float = 0.1,
    checkpoint_layers: bool = False,
) -> SRFormer:
    return SRFormer(
        scale,
        embed_dim=12,
        depths=(2,),
        num_heads=(2,),
        window_size=4,
        upsampler=upsampler,
        num_features=8,
        drop_path_rate=drop_path_rate,
        checkpoint_layers=checkpoint_layers,
    )


@cache
def real_net(model: str, scale: int) -> torch.nn.Module:
    """The network of ``conf/model/<model>.yaml``, on the meta device (shapes only)."""
    return build_net(model, scale, device="meta")


@pytest.mark.parametrize("upsampler", UPSAMPLERS)
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(13, 11), (37, 53), (3, 2), (1, 6)])
def test_any_input_size_gives_scaled_finite_output(
    size: tuple[int, int], scale: int, upsampler: str
) -> None:
    torch.manual_seed(0)
    net = tiny(scale, upsampler)
    assert_scaled_finite_output(net, torch.rand(1, 3, *size), scale)


def test_one_training_step_reaches_every_parameter() -> None:
    net = tiny(2)
    F.l1_loss(net(torch.rand(2, 3, 10, 9)), torch.rand(2, 3, 20, 18)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_activation_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    plain = tiny(2, drop_path_rate=0.0)
    checkpointed = tiny(2, drop_path_rate=0.0, checkpoint_layers=True)
    # torch.allclose's tolerances (rtol 1e-5) with atol 1e-6, as this test has always used
    assert_checkpointing_keeps_gradients(
        plain, checkpointed, torch.rand(1, 3, 9, 10), rtol=1e-5, atol=1e-6
    )


def _naive_psa(attention: PSA, window: torch.Tensor) -> torch.Tensor:
    """The paper's PSA on one (ws, ws, C) window, spelt out: keys and values take C/4 channels
    per token, and each 2x2 block of tokens is concatenated (row-major) into one token."""
    ws, _, c = window.shape
    heads, half = attention.num_heads, ws // 2
    kv = attention.kv(window)
    folded = [
        torch.cat([part[2 * i + di, 2 * j + dj] for di in (0, 1) for dj in (0, 1)])
        for part in (kv[..., : c // 4], kv[..., c // 4 :])
        for i in range(half)
        for j in range(half)
    ]
    keys = torch.stack(folded[: half * half]).view(half * half, heads, -1).transpose(0, 1)
    values = torch.stack(folded[half * half :]).view(half * half, heads, -1).transpose(0, 1)
    queries = attention.q(window).view(ws * ws, heads, -1).transpose(0, 1)
    bias = torch.empty(heads, ws * ws, half * half)
    table = attention.relative_position_bias_table
    for row in range(ws):
        for col in range(ws):
            for i in range(half):
                for j in range(half):
                    dy, dx = row // 2 - i + half - 1, col // 2 - j + half - 1
                    bias[:, row * ws + col, i * half + j] = table[dy * (2 * half - 1) + dx]
    scores = queries @ keys.transpose(1, 2) / (c // heads) ** 0.5 + bias
    out = (scores.softmax(-1) @ values).transpose(0, 1).reshape(ws * ws, c)
    return attention.proj(out)


def test_permuted_self_attention_matches_a_direct_reading() -> None:
    torch.manual_seed(0)
    attention = PSA(dim=16, window_size=4, num_heads=2, qkv_bias=True)
    with torch.no_grad():
        attention.relative_position_bias_table.normal_()
        windows = torch.randn(1, 2, 16, 16)
        fast = attention(windows, None)
        for index in range(2):
            naive = _naive_psa(attention, windows[0, index].view(4, 4, 16))
            assert torch.allclose(fast[0, index], naive, atol=1e-5)


def test_aligned_index_gives_each_query_the_bias_of_its_2x2_block() -> None:
    index = aligned_relative_position_index(6)
    assert index.shape == (36, 9)
    assert torch.equal(index[0], index[1]) and torch.equal(index[0], index[6])
    assert torch.equal(index[7], index[0]) and not torch.equal(index[2], index[0])


@pytest.mark.parametrize("window_size", [4, 16])
def test_shift_mask_keeps_each_query_with_keys_of_its_own_region(window_size: int) -> None:
    """For an even shift every 2x2 key block lies in one region: a query may attend to a key
    exactly when the pixel at the key block's corner is in the query's region."""
    h, w, shift = 2 * window_size, 3 * window_size, window_size // 2
    mask = permuted_window_mask(h, w, window_size, shift, torch.device("cpu"))
    assert mask.shape == (h * w // window_size**2, window_size**2, window_size**2 // 4)
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    assert (mask == 0).any(dim=-1).all(), "a query with no key to attend to"
    last = mask.shape[0] - 1  # the bottom-right window holds four regions
    query, corner_key = 0, window_size * window_size // 4 - 1
    assert mask[last, query, 0] == 0 and mask[last, query, corner_key] == -100


@pytest.mark.parametrize(("model", "scale"), list(PAPER_PARAMETERS))
def test_parameter_count_matches_paper(model: str, scale: int) -> None:
    count = parameter_count(real_net(model, scale))
    assert_near_published(count, PAPER_PARAMETERS[(model, scale)])
    assert count == OFFICIAL_FINGERPRINTS[(model, scale)][1]


@pytest.mark.parametrize(("model", "scale"), list(OFFICIAL_FINGERPRINTS))
def test_state_dict_has_the_official_keys_and_shapes(model: str, scale: int) -> None:
    state = real_net(model, scale).state_dict()
    assert layout_fingerprint(state) == OFFICIAL_FINGERPRINTS[(model, scale)]


@pytest.mark.parametrize("model", list(OFFICIAL_KEYS))
def test_x4_state_dict_has_these_official_keys(model: str) -> None:
    state = real_net(model, 4).state_dict()
    for key, shape in OFFICIAL_KEYS[model].items():
        assert tuple(state[key].shape) == shape, key


def test_a_file_in_the_official_layout_loads_strictly(tmp_path: Path) -> None:
    """The authors save ``{"params": ...}`` with each block's aligned index and, in shifted
    blocks, the attention mask for their 64 x 64 training patches."""
    torch.manual_seed(0)
    trained = tiny(2).eval()
    official = dict(trained.state_dict())
    mask = permuted_window_mask(64, 64, 4, 2, torch.device("cpu"))
    for index in range(2):
        prefix = f"layers.0.residual_group.blocks.{index}"
        official[f"{prefix}.attn.aligned_relative_position_index"] = (
            aligned_relative_position_index(4)
        )
        if index % 2:
            official[f"{prefix}.attn_mask"] = mask
    assert_official_file_loads_strictly(
        tmp_path / "SRFormer_SRx2.pth",
        {"params": official},
        trained,
        lambda: tiny(2).eval(),
        x=torch.rand(1, 3, 9, 7),
    )
