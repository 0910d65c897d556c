"""Each network's declaration (:mod:`src.archs.base`) holds for the network itself: the scales it
declares are exactly those it builds for, tiles are exact where it says so, bf16 autocast stays
close where it says so, and every ``conf/model`` network declares.

The small networks come from the parity fixtures' settings (tests/fixtures/parity), one per
class, so no second list of test sizes is kept here.
"""

from __future__ import annotations

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir

from src.archs.base import NetworkTraits, traits_of
from src.models.zoo import CONF_DIR, model_names, network_class
from src.ops.inference import upscale_tiled
from tests.parity_fixtures import FIXTURE_DIR, build_own_network, read_fixture

SCALES_TRIED = range(1, 9)
BF16_RELATIVE_ERROR = 0.02


def small_networks() -> dict[str, dict]:
    """One fixture's ``{"target", "kwargs"}`` per SR network class, by class name."""
    found: dict[str, dict] = {}
    for path in sorted(FIXTURE_DIR.glob("*.npz")):
        meta = read_fixture(path).meta
        cls = hydra.utils.get_class(meta["target"])
        if traits_of(cls) is not None:
            found.setdefault(cls.__name__, {"target": meta["target"], "kwargs": meta["kwargs"]})
    return found


SMALL = small_networks()
TILE_EXACT = sorted(
    n for n, s in SMALL.items() if traits_of(hydra.utils.get_class(s["target"])).tile_exact
)
BF16_SAFE = sorted(
    n for n, s in SMALL.items() if traits_of(hydra.utils.get_class(s["target"])).bf16_safe
)


@pytest.mark.parametrize("name", model_names())
def test_every_model_config_builds_a_declared_network(name: str) -> None:
    cls, _ = network_class(name)
    assert isinstance(traits_of(cls), NetworkTraits), f"{cls.__name__} declares no traits"


@pytest.mark.parametrize("name", model_names())
def test_declared_scales_are_the_scales_it_builds_for(name: str) -> None:
    cls, upsampler = network_class(name)
    traits = traits_of(cls)
    assert traits is not None
    built = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}"])
    for scale in SCALES_TRIED:
        cfg.scale = scale  # model.net.scale interpolates it
        try:
            with torch.device("meta"):
                hydra.utils.instantiate(cfg.model.net)
            built.append(scale)
        except Exception:
            pass
    declared = [s for s in SCALES_TRIED if traits.supports_scale(s, upsampler)]
    assert built == declared


VIDEO = sorted(
    n for n, s in SMALL.items() if traits_of(hydra.utils.get_class(s["target"])).is_video
)


@pytest.mark.parametrize("name", VIDEO)
def test_declared_frames_are_what_the_network_takes_and_gives(name: str) -> None:
    """A clip network maps (N, T, C, h, w) to (N, T, C, sh, sw); a window network a window of its
    declared length to its centre frame (N, C, sh, sw)."""
    from src.archs.base import frames_of

    net = build_own_network(SMALL[name])
    kind, window, _ = frames_of(net)
    traits = traits_of(net)
    assert traits is not None
    scale = int(SMALL[name]["kwargs"].get("scale", 4))
    frames = window if kind == "window" else 5  # IconVSR pads 2 frames each side: 5 at least
    size = 64  # a multiple of every declared size (EDVR 4) and large enough for SPyNet
    clip = torch.rand(1, frames, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = net(clip)
    if kind == "window":
        assert out.shape == (1, 3, size * scale, size * scale)
    else:
        assert kind == "sequence"
        assert out.shape == (1, frames, 3, size * scale, size * scale)


@pytest.mark.parametrize("name", TILE_EXACT)
def test_tiles_are_exact_where_declared(name: str) -> None:
    net = build_own_network(SMALL[name])
    scale = int(SMALL[name]["kwargs"].get("scale", 2))
    channels = 3
    lr = torch.rand(1, channels, 72, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = net(lr)
        tiled = upscale_tiled(net, lr, scale, tile=24, overlap=24)
    assert (whole - tiled).abs().max() < 1e-5


@pytest.mark.parametrize("name", BF16_SAFE)
def test_bf16_autocast_stays_close_where_declared_safe(name: str) -> None:
    net = build_own_network(SMALL[name])
    lr = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = net(lr)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(lr).float()
    assert torch.isfinite(low).all()
    relative = (low - reference).abs().max() / reference.abs().max()
    assert relative < BF16_RELATIVE_ERROR


def test_a_tiled_run_of_an_inexact_network_says_so() -> None:
    from src.archs.edsr import EDSR
    from src.archs.rcan import RCAN
    from src.models.loading import tiling_note
    from src.models.sr_module import SRModule

    rcan = RCAN(2, num_groups=1, num_blocks=1, num_features=16, reduction=4)
    edsr = EDSR(2, num_blocks=1, num_features=8)
    note = tiling_note(SRModule(net=rcan, scale=2, tile=32))
    assert note is not None and "RCAN's tiles are not exact" in note and "tile=32" in note
    assert tiling_note(SRModule(net=rcan, scale=2, tile=None)) is None
    assert tiling_note(SRModule(net=edsr, scale=2, tile=32)) is None
