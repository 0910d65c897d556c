"""The standard test sets, fetched file by file from a pinned manifest and checked.

``benchmark_downloads.tsv`` pins every HR file of Set5, Set14, B100, Urban100 and Manga109 to a
public URL at a fixed commit, with the sha256 and size of its bytes; ``benchmark_pixels.tsv``
(:mod:`src.data.pixels`) gives the sha256 of each decoded image. :func:`ensure_benchmark`
makes a set's HR folder whole:

* the pinned files the folder lacks are downloaded one by one with
  :func:`src.io.download.download` (resumable ``.part`` files, the sha256 checked before a file
  gets its name, a download that does not match deleted and refused naming the file and URL),
  then decoded and compared with the pixel manifest;
* copies already there can be checked too: one that is not the pinned file and decodes to other
  pixels is named in a warning, since its scores will not match the papers';
* with downloading off, a missing set stops with one sentence saying how to get it, and a partly
  present one is used with a warning.

A set the manifest does not pin (a folder of one's own) is left alone, and so is a folder holding
images under other names than the pinned ones: nothing is downloaded beside someone's own copy.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from src.data.errors import DatasetNotFoundError
from src.data.pixels import name_list, pixel_digest, pixel_manifest, warn_differing
from src.io.download import DownloadError, RemoteArchive, download, sha256_of
from src.io.images import ImageReadError, decode, list_images
from src.utils.runtime import say

DOWNLOADS = Path(__file__).with_name("benchmark_downloads.tsv")
COLUMNS = ("set", "file", "url", "sha256", "bytes")


@dataclass(frozen=True)
class PinnedFile:
    """One HR file of a test set: its name in ``<Set>/HR`` and where its bytes come from."""

    set_name: str
    remote: RemoteArchive

    @property
    def name(self) -> str:
        return self.remote.name


def pinned_files(set_name: str, manifest: Path | None = None) -> tuple[PinnedFile, ...]:
    """The files ``manifest`` (default: the shipped one) pins for ``set_name``; none for a set
    it does not know."""
    return _read_manifest(manifest or DOWNLOADS).get(set_name, ())


@cache
def _read_manifest(path: Path) -> dict[str, tuple[PinnedFile, ...]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise DownloadError(f"cannot read the download manifest {path}: {error}") from error
    sets: dict[str, list[PinnedFile]] = {}
    for number, line in enumerate(lines, 1):
        if line.strip() and not line.startswith("#"):
            pinned = _parse_row(line, f"{path}:{number}")
            sets.setdefault(pinned.set_name, []).append(pinned)
    return {name: tuple(files) for name, files in sets.items()}


def _parse_row(line: str, where: str) -> PinnedFile:
    fields = line.split("\t")
    if len(fields) != len(COLUMNS) or not fields[4].isdigit():
        raise DownloadError(
            f"{where}: expected {len(COLUMNS)} tab-separated columns "
            f"({', '.join(COLUMNS)}; bytes a whole number), got {line!r}"
        )
    set_name, file, url, sha256, size = fields
    return PinnedFile(set_name, RemoteArchive(url, sha256, filename=file, size=int(size)))


def ensure_benchmark(
    name: str,
    hr_dir: Path,
    *,
    allow_download: bool = True,
    check_copies: bool = False,
    manifest: Path | None = None,
    pixels: Path | None = None,
) -> None:
    """Make ``hr_dir`` hold every file ``manifest`` pins for set ``name``, downloading the
    missing ones when ``allow_download``; ``check_copies`` also checks the files already there
    (a warning names those that decode to other pixels than ``pixels`` gives)."""
    pinned = pinned_files(name, manifest)
    if not pinned:
        return
    if hr_dir.exists() and not hr_dir.is_dir():
        raise DatasetNotFoundError(f"{name}: {hr_dir} is a file; its HR images belong in a folder")
    missing = [f for f in pinned if not (hr_dir / f.name).is_file()]
    if check_copies:
        present = [f for f in pinned if (hr_dir / f.name).is_file()]
        warn_differing(name, [f.name for f in present if not _is_reference(hr_dir, f, pixels)])
    if not missing or _own_copy(name, hr_dir, pinned):
        return
    if allow_download:
        fetch_pinned(name, hr_dir, missing, manifest, pixels)
    elif len(missing) < len(pinned):
        warnings.warn(
            f"{name}: {len(missing)} of its {len(pinned)} images are missing from {hr_dir} "
            f"(data.download=false), so its scores are not comparable with published ones",
            stacklevel=2,
        )
    else:
        raise DatasetNotFoundError(
            f"{name} images not found: expected its {len(pinned)} HR images at "
            f"{hr_dir.resolve()}, and data.download=false. Set data.download=true to fetch them "
            f"({_megabytes(pinned)}, each checked against the pinned manifest), or set "
            f"paths.data_dir to the folder holding benchmarks/{name}/HR"
        )


def fetch_pinned(
    name: str,
    hr_dir: Path,
    files: Sequence[PinnedFile],
    manifest: Path | None = None,
    pixels: Path | None = None,
) -> None:
    """Download ``files`` of set ``name`` into ``hr_dir`` one by one, printing progress, then
    compare each one's decoded pixels with the reference."""
    say(f"downloading {name}: {len(files)} files ({_megabytes(files)}) into {hr_dir}")
    step = max(1, len(files) // 10)
    odd = []
    for count, pinned in enumerate(files, 1):
        try:
            path = download(pinned.remote, hr_dir, progress=False)
        except OSError as error:  # the network's errors come as DownloadError: this is the disk
            raise DownloadError(
                f"{name}: cannot write {pinned.name} into {hr_dir}: {error}"
            ) from error
        except DownloadError as error:
            raise DownloadError(
                f"{name}: {pinned.name} was not downloaded: {error} ({count - 1} of "
                f"{len(files)} files fetched before it; the pinned digests are in "
                f"{manifest or DOWNLOADS})"
            ) from error
        if not _pixels_match(name, path, pixels):
            odd.append(pinned.name)
        if count % step == 0 or count == len(files):
            say(f"downloading {name}: {count}/{len(files)} files")
    if odd:
        warnings.warn(
            f"{name}: {name_list(odd)} downloaded intact (sha256 as pinned) but decode on this "
            f"machine to other pixels than the reference copies (a different image decoder), "
            f"so scores may differ from published ones",
            stacklevel=2,
        )
    say(f"{name}: {len(files)} files downloaded, their sha256 and decoded pixels checked")


def _is_reference(hr_dir: Path, pinned: PinnedFile, pixels: Path | None) -> bool:
    """The file at ``hr_dir`` is the pinned one, or decodes to the reference pixels."""
    path = hr_dir / pinned.name
    if path.stat().st_size == pinned.remote.size and sha256_of(path) == pinned.remote.sha256:
        return True
    return _pixels_match(pinned.set_name, path, pixels)


def _pixels_match(set_name: str, path: Path, pixels: Path | None) -> bool:
    """False when ``path`` decodes (or fails to decode) to other pixels than the manifest's;
    True for a file the pixel manifest does not list."""
    expected = pixel_manifest(pixels).get((set_name, path.name))
    if expected is None:
        return True
    try:
        return pixel_digest(decode(path)) == expected
    except ImageReadError:
        return False


def _own_copy(name: str, hr_dir: Path, pinned: Sequence[PinnedFile]) -> bool:
    """True, with a warning, when ``hr_dir`` holds images under names the manifest does not
    pin: someone's own copy, used as it is and never mixed with downloaded files."""
    known = {f.name for f in pinned}
    others = [p.name for p in list_images(hr_dir) if p.name not in known] if hr_dir.is_dir() else []
    if others:
        warnings.warn(
            f"{name}: {hr_dir} holds images under other names than the standard ones "
            f"({name_list(others)}); they are used as they are, nothing is downloaded and their "
            f"pixels are not checked. Move them away to download the reference copies",
            stacklevel=3,
        )
    return bool(others)


def _megabytes(files: Sequence[PinnedFile]) -> str:
    return f"{sum(f.remote.size or 0 for f in files) / 1e6:.1f} MB"
