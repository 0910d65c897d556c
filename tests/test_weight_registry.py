"""The weight registry: ``model.pretrained=<name>`` downloads a released file from a server on
127.0.0.1, checks its sha256 (in full, or the 8-digit prefix a published name carries), caches it
and loads it with the entry's key map; a wrong checksum, an unknown name or a file for another
network is one readable error. Every entry names a model config and a scale that model builds, and
the released files at hand (../shared/weights) are byte for byte what the registry says."""

from __future__ import annotations

import hashlib
import http.server
import inspect
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import hydra
import pytest
import torch
from torch import nn

from src.archs.basicvsr import BasicVSR
from src.archs.imdn import IMDN
from src.archs.pan import PAN
from src.io.tensors import PretrainedWeightsError
from src.models import weight_registry as wr
from src.models.loading import load_module
from src.models.pretrained import import_weights
from src.models.weight_registry import (
    MMAGIC_BASICVSRPP,
    REGISTRY,
    KeyMap,
    RegisteredWeights,
    find_weights,
)
from src.models.zoo import network_class
from src.utils.errors import UserError
from tests.helpers import compose_config

IMDN_ARCH = "src.archs.imdn.IMDN"

# The registered files that ../shared/weights holds, under their folder there.
SHARED_FILES = {
    "basicvsr_vimeo90k_bi": "BasicSR_BasicVSR/BasicVSR_Vimeo90K_BIx4-2a29695a.pth",
    **{f"imdn_x{s}": f"Zheng222_IMDN/IMDN_x{s}.pth" for s in (2, 3, 4)},
    **{f"pan_x{s}": f"zhaohengyuan1_PAN/PANx{s}_DF2K.pth" for s in (2, 3, 4)},
    "rfdn_aim_x4": "njulj_RFDN/RFDN_AIM.pth",
    "carn_m": "nmhkahn_CARN-pytorch/carn_m.pth",
    "rlfn_x2": "bytedance_RLFN/rlfn_x2.pth",
    "rlfn_s_x2": "bytedance_RLFN/rlfn_s_x2.pth",
    **{
        f"{model}_{data.lower()}_x2": f"Zheng-MJ_SMFANet/{stem}_{data}_100w_x2SR.pth"
        for model, stem in (("smfanet", "SMFANet"), ("smfanet_plus", "SMFANet_plus"))
        for data in ("DF2K", "DIV2K")
    },
}


# --- a server on 127.0.0.1 ---------------------------------------------------------------------


@dataclass
class Server:
    base: str
    files: dict[str, bytes] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def publish(self, name: str, data: bytes) -> str:
        self.files[name] = data
        return f"{self.base}/{name}"


def _handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            server.hits.append(name)
            data = server.files.get(name)
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    state = Server("")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the network fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the network was used")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _tiny_imdn(seed: int = 0) -> IMDN:
    torch.manual_seed(seed)
    return IMDN(scale=2, num_features=32, num_blocks=1)


def _saved(state: object, folder: Path) -> bytes:
    path = folder / "made.pth"
    torch.save(state, path)
    data = path.read_bytes()
    path.unlink()
    return data


def _register(monkeypatch: pytest.MonkeyPatch, *entries: RegisteredWeights) -> None:
    monkeypatch.setattr(wr, "REGISTRY", {**REGISTRY, **{e.name: e for e in entries}})


def _entry(url: str, data: bytes, **changes: object) -> RegisteredWeights:
    entry = RegisteredWeights(
        name="tiny_imdn_x2",
        model="imdn",
        arch=IMDN_ARCH,
        scales=(2,),
        url=url,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        checked="made by the test",
    )
    return replace(entry, **changes)  # type: ignore[arg-type]


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- download, check, cache ------------------------------------------------------------------


def test_registered_name_is_downloaded_checked_cached_and_reused(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = _tiny_imdn()
    data = _saved({"params": source.state_dict()}, tmp_path)
    _register(monkeypatch, _entry(server.publish("IMDN_tiny.pth", data), data))
    cache = tmp_path / "cache"

    net = _tiny_imdn(seed=1)
    import_weights(net, "tiny_imdn_x2", cache_dir=cache)

    assert _same_weights(net, source)
    assert (cache / "IMDN_tiny.pth").read_bytes() == data
    assert server.hits == ["IMDN_tiny.pth"]
    again = _tiny_imdn(seed=1)
    import_weights(again, "TINY_IMDN_X2", cache_dir=cache)  # letter case does not matter
    assert _same_weights(again, source)
    assert server.hits == ["IMDN_tiny.pth"]  # the cached copy was used


def test_prefix_only_entry_checks_the_prefix_and_refuses_a_wrong_one(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = _tiny_imdn()
    data = _saved({"params": source.state_dict()}, tmp_path)
    digest = hashlib.sha256(data).hexdigest()
    url = server.publish("IMDN_tiny.pth", data)
    cache = tmp_path / "cache"
    wrong = f"{(int(digest[:8], 16) ^ 1):08x}"
    _register(monkeypatch, _entry(url, data, sha256=wrong, size=None))

    with pytest.raises(UserError) as info:
        import_weights(_tiny_imdn(seed=1), "tiny_imdn_x2", cache)
    message = str(info.value)
    assert "\n" not in message
    assert wrong in message and digest in message and url in message
    assert list(cache.iterdir()) == []  # nothing kept, no temporary left

    _register(monkeypatch, _entry(url, data, sha256=digest[:8], size=None))
    net = _tiny_imdn(seed=1)
    import_weights(net, "tiny_imdn_x2", cache)
    assert _same_weights(net, source)
    import_weights(net, "tiny_imdn_x2", cache)
    assert server.hits == ["IMDN_tiny.pth"] * 2  # the refused download, then one good one


def test_wrong_full_checksum_is_one_error_line_and_leaves_no_file(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = _saved({"params": _tiny_imdn().state_dict()}, tmp_path)
    url = server.publish("IMDN_tiny.pth", data)
    _register(monkeypatch, _entry(url, data, sha256="0" * 64))
    cache = tmp_path / "cache"

    with pytest.raises(UserError) as info:
        import_weights(_tiny_imdn(seed=1), "tiny_imdn_x2", cache)

    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("model.pretrained=tiny_imdn_x2: checksum mismatch")
    assert hashlib.sha256(data).hexdigest() in message
    assert str(cache / "IMDN_tiny.pth") in message  # where to put it by hand
    assert list(cache.iterdir()) == []


def test_missing_file_on_the_server_names_the_url(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"{server.base}/gone.pth"
    _register(monkeypatch, _entry(url, b"x", sha256="0" * 8))
    with pytest.raises(UserError, match="HTTP 404") as info:
        import_weights(_tiny_imdn(), "tiny_imdn_x2", tmp_path)
    assert url in str(info.value) and "\n" not in str(info.value)


def test_key_map_selects_a_prefix_and_renames(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = _tiny_imdn()
    layout = {
        f"generator.{k}".replace("upsampler.", "tail."): v for k, v in source.state_dict().items()
    }
    other = {f"discriminator.{k}": torch.zeros(1) for k in ("conv.weight", "conv.bias")}
    data = _saved({"meta": {"iter": 3}, "state_dict": {**layout, **other}}, tmp_path)
    assert any(k.startswith("generator.tail.") for k in layout)  # the rename has work to do
    key_map = KeyMap(
        prefixes=("generator_ema.", "generator."), renames=((r"^tail\.", "upsampler."),)
    )
    _register(monkeypatch, _entry(server.publish("gen.pth", data), data, key_map=key_map))

    net = _tiny_imdn(seed=1)
    import_weights(net, "tiny_imdn_x2", tmp_path)

    assert _same_weights(net, source)
    with pytest.raises(PretrainedWeightsError, match="generator_ema"):
        KeyMap(prefixes=("generator_ema.",)).apply({"net.x": torch.zeros(1)})


def test_mmagic_basicvsrpp_names_map_to_basicsr_names() -> None:
    """The authors' names as mmagic's BasicVSRPlusPlusNet saves them (read from its port in the
    vsbasicvsrpp 3.0.0 wheel; the whole map was checked there with outputs equal)."""
    authors_to_ours = {
        "generator.spynet.mean": "spynet.mean",
        "generator.spynet.basic_module.0.basic_module.0.conv.weight": (
            "spynet.basic_module.0.basic_module.0.weight"
        ),
        "generator.spynet.basic_module.5.basic_module.4.conv.bias": (
            "spynet.basic_module.5.basic_module.8.bias"
        ),
        "generator.spynet.basic_module.2.basic_module.3.conv.weight": (
            "spynet.basic_module.2.basic_module.6.weight"
        ),
        "generator.upsample1.upsample_conv.weight": "upconv1.weight",
        "generator.upsample2.upsample_conv.bias": "upconv2.bias",
        "generator.deform_align.backward_1.conv_offset.6.weight": (
            "deform_align.backward_1.conv_offset.6.weight"
        ),
        "generator.backbone.forward_2.main.2.0.conv1.weight": (
            "backbone.forward_2.main.2.0.conv1.weight"
        ),
        "generator.reconstruction.main.0.weight": "reconstruction.main.0.weight",
    }
    state = {key: torch.zeros(1) for key in authors_to_ours}
    mapped = MMAGIC_BASICVSRPP.apply({**state, "step_counter": torch.zeros(1)})
    assert sorted(mapped) == sorted(authors_to_ours.values())


# --- names, files and networks -----------------------------------------------------------------


def test_unknown_name_is_one_error_line_with_close_names(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        import_weights(_tiny_imdn(), "basicvsr_vimeo_bi", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("model.pretrained=basicvsr_vimeo_bi: no such file")
    assert "basicvsr_vimeo90k_bi" in message
    with pytest.raises(UserError, match="imdn_x4"):
        find_weights(tmp_path / "IMDN_x4.pth")  # a path that is not there: close names too


def test_an_existing_file_wins_over_a_registered_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("imdn_x2").write_bytes(b"")
    assert find_weights("imdn_x2") == Path("imdn_x2")
    assert find_weights("imdn_x3") is REGISTRY["imdn_x3"]


def test_registered_file_for_another_network_is_refused_before_any_download(
    offline: None, tmp_path: Path
) -> None:
    with pytest.raises(PretrainedWeightsError) as info:
        import_weights(PAN(scale=4), "imdn_x4", tmp_path)
    assert "model=imdn scale=4" in str(info.value)
    with pytest.raises(PretrainedWeightsError, match="model=imdn scale=2"):
        import_weights(IMDN(scale=4), "imdn_x2", tmp_path)
    assert not tmp_path.joinpath("IMDN_x4.pth").exists()


def test_every_entry_is_well_formed() -> None:
    assert len(wr._ENTRIES) == len(REGISTRY)  # no name given twice
    assert all(name == name.lower() for name in REGISTRY)  # lookups are case-insensitive
    assert len({e.file_name for e in REGISTRY.values()}) == len(REGISTRY)  # one cache name each
    for entry in REGISTRY.values():
        assert entry.url.startswith("https://"), entry.name
        if not entry.full_digest:  # then the published name carries the prefix
            assert entry.file_name.removesuffix(".pth").endswith(f"-{entry.sha256}"), entry.name


@pytest.mark.parametrize("model", sorted({e.model for e in REGISTRY.values()}))
def test_entries_name_a_model_config_and_a_scale_it_builds(model: str) -> None:
    network, _ = network_class(model)  # composes conf/model/<model>.yaml
    parameters = inspect.signature(network).parameters
    for entry in (e for e in REGISTRY.values() if e.model == model):
        assert entry.arch == f"{network.__module__}.{network.__qualname__}", entry.name
        assert all(network.traits.supports_scale(s) for s in entry.scales), entry.name
        assert set(entry.net) <= set(parameters), entry.name


# --- the released files at hand ----------------------------------------------------------------


@pytest.mark.shared
def test_registry_digests_match_the_shared_files(shared_weights: Path) -> None:
    for name, relative in SHARED_FILES.items():
        path = shared_weights / relative
        entry = REGISTRY[name]
        assert path.stat().st_size == entry.size, name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256, name


@pytest.mark.shared
def test_real_file_resolves_by_name_offline_from_the_cache(
    shared_weights: Path, offline: None, tmp_path: Path
) -> None:
    shared = shared_weights / SHARED_FILES["basicvsr_vimeo90k_bi"]
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / REGISTRY["basicvsr_vimeo90k_bi"].file_name).symlink_to(shared)

    net = BasicVSR()
    import_weights(net, "basicvsr_vimeo90k_bi", cache)

    expected = BasicVSR()
    import_weights(expected, shared)
    assert _same_weights(net, expected)


@pytest.mark.shared
def test_model_pretrained_name_through_the_model_config(
    shared_weights: Path, offline: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``model=imdn scale=4 model.pretrained=imdn_x4`` as a command composes it, the file in the
    weights cache of the folder the command runs in."""
    shared = shared_weights / SHARED_FILES["imdn_x4"]
    monkeypatch.chdir(tmp_path)
    cache = Path(".cache") / "weights"
    cache.mkdir(parents=True)
    (cache / "IMDN_x4.pth").symlink_to(shared)
    cfg = compose_config("eval", ["model=imdn", "scale=4", "model.pretrained=imdn_x4"], tmp_path)

    module = load_module(cfg)

    expected = hydra.utils.instantiate(cfg.model.net)
    import_weights(expected, shared)
    assert _same_weights(module.net, expected)
