"""Published weight files that losses and metrics need: fetched by checksum, cached, or given.

A setting such as ``loss.perceptual.weights`` takes ``download`` (the published file, fetched once
by :func:`src.io.download.download`, verified by its sha256 and cached), a local ``PATH``
(for machines without internet: the file, or a folder holding the published files under their
published names), or ``random``: random weights, for tests only, announced with a warning every
time, since a loss or a score computed with them means nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch

from src.io.download import DownloadError, RemoteArchive, download
from src.io.tensors import PretrainedWeightsError, load_tensors_only
from src.utils.errors import UserError
from src.utils.runtime import warn

DOWNLOAD = "download"
RANDOM = "random"

# Each file with its sha256 and size as published (torchvision's names carry the digest's start).
PUBLISHED: dict[str, RemoteArchive] = {
    "vgg19": RemoteArchive(
        url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        sha256="dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44",
        size=574_673_361,
    ),
    "vgg16": RemoteArchive(
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
        size=553_433_881,
    ),
    "alexnet": RemoteArchive(
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
        size=244_408_911,
    ),
    "lpips_alex": RemoteArchive(
        url="https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/"
        "weights/v0.1/alex.pth",
        sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
        filename="lpips_v0.1_alex.pth",
        size=6_009,
    ),
    "lpips_vgg": RemoteArchive(
        url="https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/"
        "weights/v0.1/vgg.pth",
        sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
        filename="lpips_v0.1_vgg.pth",
        size=7_289,
    ),
    # The sha256 that the authors' PyPI wheel DISTS_pytorch-0.1 records for this file in its
    # RECORD, checked against the wheel (whose own sha256 is
    # 73e54ce13e7cf3ca962ee8e433d129884ec3dc75e00a27af90525e1da760ac61).
    "dists": RemoteArchive(
        url="https://github.com/dingkeyan93/DISTS/raw/master/DISTS_pytorch/weights.pt",
        sha256="f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218",
        filename="dists_weights.pt",
        size=12_288,
    ),
}
DEFAULT_CACHE = Path(".cache") / "weights"


def weights_file(spec: str, name: str, key: str, cache_dir: str | Path = DEFAULT_CACHE) -> Path:
    """The file ``spec`` stands for (``download``: the published one, fetched if needed);
    errors name ``key`` and say how to give the file offline."""
    if spec == DOWNLOAD:
        published = PUBLISHED[name]
        try:
            return download(published, Path(cache_dir))
        except DownloadError as error:
            raise UserError(
                f"{key}: the {name} weights could not be fetched ({error}); download "
                f"{published.url} (sha256 {published.sha256}) and give {key}=PATH"
            ) from error
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / PUBLISHED[name].name
    if not path.is_file():
        raise UserError(f"{key}={spec}: no such file (give the {name} weights file, or download)")
    return path


def load_weights(
    spec: str, name: str, key: str, cache_dir: str | Path = DEFAULT_CACHE
) -> dict[str, torch.Tensor] | None:
    """The state dict ``spec`` stands for, or None for ``random`` (after a warning)."""
    if spec == RANDOM:
        warn(
            f"{key}=random: the {name} network has random weights (for tests only: losses and "
            f"scores computed with it mean nothing)"
        )
        return None
    path = weights_file(spec, name, key, cache_dir)
    try:
        content = load_tensors_only(path)
    except PretrainedWeightsError as error:
        raise UserError(f"{key}: {error}") from error
    if not isinstance(content, dict):
        raise UserError(f"{key}={path}: not a state dict")
    return content
