"""Pretrained-weight import: official checkpoints load exactly, unsafe files are refused, the
usual containers are unwrapped, mismatches are reported by key, and the loaded networks really
super-resolve (PSNR on Set5 butterfly x4)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from src.archs.carn_m import CARNM
from src.archs.imdn import IMDN
from src.archs.pan import PAN
from src.archs.rfdn import RFDN
from src.archs.rlfn import RLFN
from src.models.pretrained import PretrainedWeightsError, import_weights, read_state_dict

NetFactory = Callable[[int], nn.Module]


def RLFN_S(scale: int) -> RLFN:  # the paper's name for the 48-channel variant
    return RLFN(scale, num_features=48)


# (network, scale, checkpoint under ../shared/weights)
OFFICIAL_CHECKPOINTS: list[tuple[NetFactory, int, str]] = [
    *((IMDN, s, f"Zheng222_IMDN/IMDN_x{s}.pth") for s in (2, 3, 4)),
    *((PAN, s, f"zhaohengyuan1_PAN/PANx{s}_DF2K.pth") for s in (2, 3, 4)),
    (RFDN, 4, "njulj_RFDN/RFDN_AIM.pth"),
    *((CARNM, s, "nmhkahn_CARN-pytorch/carn_m.pth") for s in (2, 3, 4)),
    (RLFN, 2, "bytedance_RLFN/rlfn_x2.pth"),
    (RLFN_S, 2, "bytedance_RLFN/rlfn_s_x2.pth"),
]

# Parameter counts the papers quote (RFDN: the released AIM 2020 model, nf=50, 4 blocks).
PAPER_PARAMETERS: list[tuple[NetFactory, int, int]] = [
    (IMDN, 2, 694_000),
    (IMDN, 4, 715_000),
    (PAN, 2, 261_000),
    (PAN, 4, 272_000),
    (CARNM, 4, 412_000),
    (RFDN, 4, 433_000),
    (RLFN, 2, 527_000),
    (RLFN, 4, 543_000),
]


def _case_id(case: tuple[NetFactory, int, object]) -> str:
    return f"{case[0].__name__}-x{case[1]}"


# --------------------------------------------------------------------------------------------
# Official checkpoints and parameter counts


@pytest.mark.shared
@pytest.mark.parametrize("case", OFFICIAL_CHECKPOINTS, ids=_case_id)
def test_official_checkpoint_loads_exactly(
    case: tuple[NetFactory, int, str], shared_weights: Path
) -> None:
    factory, scale, relative = case
    net = factory(scale)
    path = shared_weights / relative
    assert set(read_state_dict(path)) == set(net.state_dict())
    import_weights(net, path)
    assert net.scale == scale
    with torch.no_grad():
        out = net.eval()(torch.rand(1, 3, 9, 14))
    assert out.shape == (1, 3, 9 * scale, 14 * scale)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("case", PAPER_PARAMETERS, ids=_case_id)
def test_parameter_count_matches_paper(case: tuple[NetFactory, int, int]) -> None:
    factory, scale, published = case
    count = sum(p.numel() for p in factory(scale).parameters())
    assert abs(count - published) / published < 0.02, f"{count} parameters, paper {published}"


# --------------------------------------------------------------------------------------------
# Unsafe files are refused without running anything


def _leave_marker(path: str) -> None:
    """What unpickling the trap would do: prove code ran by writing a file."""
    Path(path).write_text("unpickling ran code")


class _TrapModule(nn.Module):
    """A module whose unpickling calls ``_leave_marker``."""

    def __init__(self, marker: Path):
        super().__init__()
        self.marker = str(marker)
        self.conv = nn.Conv2d(3, 3, 1)

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return (_leave_marker, (self.marker,))


def test_pickled_module_with_side_effect_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    path = tmp_path / "trap.pth"
    torch.save(_TrapModule(marker), path)

    with pytest.raises(PretrainedWeightsError) as info:
        import_weights(nn.Conv2d(3, 3, 1), path)
    message = str(info.value)
    assert str(path) in message
    assert "pickled" in message and "state dict" in message
    assert not marker.exists()

    # Control: the trap is real, an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_whole_pickled_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "whole_module.pt"
    torch.save(nn.Conv2d(3, 3, 1), path)
    with pytest.raises(PretrainedWeightsError, match="pickled"):
        read_state_dict(path)


def test_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "weights.pth"
    with pytest.raises(PretrainedWeightsError, match="nowhere"):
        read_state_dict(path)


def test_corrupt_file_is_reported(tmp_path: Path) -> None:
    whole, path = tmp_path / "whole.pth", tmp_path / "truncated.pth"
    torch.save(_tiny_net().state_dict(), whole)
    path.write_bytes(whole.read_bytes()[:-64])
    with pytest.raises(PretrainedWeightsError, match="truncated"):
        read_state_dict(path)


def test_unknown_file_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.pkl"
    path.write_bytes(b"\x80\x04N.")
    with pytest.raises(PretrainedWeightsError, match=r"\.pkl"):
        read_state_dict(path)


def test_file_without_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(PretrainedWeightsError, match="not a state dict"):
        read_state_dict(path)


def test_safetensors_without_package_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"")
    with pytest.raises(PretrainedWeightsError, match="pip install safetensors"):
        read_state_dict(path)


def test_safetensors_round_trip(tmp_path: Path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    source, target = _tiny_net(), _tiny_net(seed=1)
    path = tmp_path / "weights.safetensors"
    safetensors_torch.save_file(source.state_dict(), str(path))
    import_weights(target, path)
    _assert_same_weights(target, source)


# --------------------------------------------------------------------------------------------
# Containers and prefixes


def _tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1))


def _assert_same_weights(net: nn.Module, reference: nn.Module) -> None:
    for (key, value), expected in zip(
        net.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(value, expected), key


def _prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in state.items()}


CONTAINERS: dict[str, Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], object]] = {
    "plain": lambda good, _: good,
    "basicsr-params": lambda good, _: {"params": good},
    "basicsr-params-ema-preferred": lambda good, bad: {"params": bad, "params_ema": good},
    "lightning": lambda good, _: {
        "state_dict": _prefixed(good, "net."),
        "epoch": 3,
        "global_step": 1200,
        "pytorch-lightning_version": "2.6.0",
    },
    "lightning-with-loss-network": lambda good, bad: {
        "state_dict": {**_prefixed(good, "net."), **_prefixed(bad, "loss.features.")}
    },
    "data-parallel": lambda good, _: _prefixed(good, "module."),
    "model-key-data-parallel": lambda good, _: {"model": _prefixed(good, "module.")},
}


@pytest.mark.parametrize("layout", list(CONTAINERS))
def test_container_layouts_load(layout: str, tmp_path: Path) -> None:
    source, decoy, target = _tiny_net(0), _tiny_net(1), _tiny_net(2)
    path = tmp_path / "weights.pth"
    torch.save(CONTAINERS[layout](source.state_dict(), decoy.state_dict()), path)
    import_weights(target, path)
    _assert_same_weights(target, source)


def test_prefix_kept_when_not_on_every_key(tmp_path: Path) -> None:
    state = _tiny_net().state_dict()
    state["module.extra"] = torch.zeros(1)
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    assert "module.extra" in read_state_dict(path)


def _tiny_swinir() -> nn.Module:
    from src.archs.swinir import SwinIR

    return SwinIR(2, embed_dim=12, depths=(2,), num_heads=(2,), window_size=4, num_features=8)


def test_recomputed_window_buffers_in_an_authors_file_are_dropped(tmp_path: Path) -> None:
    """The authors' SwinIR files also store each block's relative position index and shifted
    window mask; SwinIR rebuilds them, so those keys are dropped and the rest loads strictly."""
    source = _tiny_swinir()
    state = source.state_dict()
    block = "layers.0.residual_group.blocks.1"
    state[f"{block}.attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    state[f"{block}.attn_mask"] = torch.zeros(4, 16, 16)
    path = tmp_path / "swinir_official.pth"
    torch.save({"params": state}, path)
    target = _tiny_swinir()
    import_weights(target, path)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())


def test_other_extra_keys_still_fail_on_a_network_with_recomputed_buffers(tmp_path: Path) -> None:
    state = _tiny_swinir().state_dict()
    state["layers.0.relative_position_bias_extra"] = torch.zeros(3)
    path = tmp_path / "swinir_extra.pth"
    torch.save(state, path)
    with pytest.raises(PretrainedWeightsError, match="relative_position_bias_extra"):
        import_weights(_tiny_swinir(), path)


# --------------------------------------------------------------------------------------------
# Mismatches name the offending key and load nothing


def _tamper_shape(state: dict[str, torch.Tensor]) -> None:
    state["0.weight"] = torch.zeros(5, 3, 3, 3)


def _add_key(state: dict[str, torch.Tensor]) -> None:
    state["head.extra_weight"] = torch.zeros(7)


def _drop_key(state: dict[str, torch.Tensor]) -> None:
    del state["2.bias"]


@pytest.mark.parametrize(
    ("tamper", "offending", "kind"),
    [
        (_tamper_shape, "0.weight", "shape mismatch"),
        (_add_key, "head.extra_weight", "unexpected"),
        (_drop_key, "2.bias", "missing"),
    ],
    ids=["wrong-shape", "extra-key", "missing-key"],
)
def test_mismatch_is_reported_by_key(
    tamper: Callable[[dict[str, torch.Tensor]], None], offending: str, kind: str, tmp_path: Path
) -> None:
    state = dict(_tiny_net(0).state_dict())
    tamper(state)
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    target, untouched = _tiny_net(2), _tiny_net(2)
    with pytest.raises(PretrainedWeightsError) as info:
        import_weights(target, path)
    message = str(info.value)
    assert offending in message and kind in message
    assert str(path) in message and "Sequential" in message
    _assert_same_weights(target, untouched)


# --------------------------------------------------------------------------------------------
# The loaded networks super-resolve: PSNR_Y on Set5 butterfly x4 (papers' scoring)

# Measured with the official weights; a broken layer costs far more than the tolerance.
BUTTERFLY_X4_PSNR_Y = {"IMDN": 28.559, "RFDN": 28.641, "CARNM": 27.988}
PSNR_TOLERANCE_DB = 0.05
# cv2's bicubic scores 22.32 dB here (MATLAB's 22.10): any working network is far above.
MIN_GAIN_OVER_BICUBIC_DB = 5.0


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot read {path}"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _psnr_y(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """PSNR of the BT.601 luma of two uint8 RGB images, ``border`` pixels cropped, peak 255."""

    def luma(image: np.ndarray) -> np.ndarray:
        rgb = image.astype(np.float64) / 255.0
        return 16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]

    crop = (slice(border, -border), slice(border, -border))
    mse = np.mean((luma(sr)[crop] - luma(hr)[crop]) ** 2)
    return float(10.0 * np.log10(255.0**2 / mse))


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image[0].permute(1, 2, 0).clamp(0, 1) * 255.0).round().byte().numpy()


@pytest.mark.shared
@pytest.mark.parametrize(
    ("factory", "relative", "value_range"),
    [
        (IMDN, "Zheng222_IMDN/IMDN_x4.pth", 1.0),
        (RFDN, "njulj_RFDN/RFDN_AIM.pth", 255.0),
        (CARNM, "nmhkahn_CARN-pytorch/carn_m.pth", 1.0),
    ],
    ids=["IMDN", "RFDN", "CARNM"],
)
def test_butterfly_x4_psnr(
    factory: NetFactory,
    relative: str,
    value_range: float,
    shared_weights: Path,
    shared_data: Path,
) -> None:
    scale = 4
    set5 = shared_data / "benchmarks" / "Set5"
    lr = _read_rgb(set5 / "LR_bicubic" / "X4" / "butterflyx4.png")
    hr = _read_rgb(set5 / "HR" / "butterfly.png")
    hr = hr[: lr.shape[0] * scale, : lr.shape[1] * scale]

    net = factory(scale)
    import_weights(net, shared_weights / relative)
    x = torch.from_numpy(lr).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    with torch.no_grad():
        sr = net.eval()(x * value_range) / value_range

    psnr = _psnr_y(_to_uint8(sr), hr, border=scale)
    size = (lr.shape[1] * scale, lr.shape[0] * scale)
    bicubic = _psnr_y(cv2.resize(lr, size, interpolation=cv2.INTER_CUBIC), hr, border=scale)
    expected = BUTTERFLY_X4_PSNR_Y[factory.__name__]
    print(f"{factory.__name__} butterfly x4: {psnr:.4f} dB (bicubic {bicubic:.4f} dB)")
    assert psnr > bicubic + MIN_GAIN_OVER_BICUBIC_DB
    assert abs(psnr - expected) < PSNR_TOLERANCE_DB, f"{psnr:.4f} dB, expected {expected}"


@pytest.mark.shared
def test_rfdn_value_range_matters(shared_weights: Path, shared_data: Path) -> None:
    """The released RFDN works in 0..255: fed [0, 1] it is far worse (hence ``value_range``)."""
    set5 = shared_data / "benchmarks" / "Set5"
    lr = _read_rgb(set5 / "LR_bicubic" / "X4" / "butterflyx4.png")
    hr = _read_rgb(set5 / "HR" / "butterfly.png")
    net = RFDN(4)
    import_weights(net, shared_weights / "njulj_RFDN" / "RFDN_AIM.pth")
    x = torch.from_numpy(lr).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    with torch.no_grad():
        unscaled = _psnr_y(_to_uint8(net.eval()(x)), hr, border=4)
    assert unscaled < BUTTERFLY_X4_PSNR_Y["RFDN"] - 3.0
