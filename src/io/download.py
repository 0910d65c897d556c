"""Fetch dataset archives from public URLs, check their sha256, and unpack them safely.

Dataset configs describe an archive as a :class:`RemoteArchive` (URL, sha256, optional size and
the folder inside the archive that holds the images). :func:`fetch` downloads it into a cache
folder and unpacks it into the dataset folder; :func:`download` and :func:`extract` are the two
halves. Only the standard library is used.

Guarantees:

* A download is written to ``<name>.part`` and resumed with an HTTP ``Range`` request when it
  was cut off; the file gets its final name (:func:`src.utils.files.publish`) only once its
  checksum matches, and a file with a wrong checksum is deleted rather than kept. The ``.part``
  name carries no process id on purpose: the next run, whichever process, resumes it.
* Extraction refuses members that would land outside the target folder (absolute paths, ``..``,
  links pointing outside, device and fifo entries) and unpacks into a sibling temporary folder
  first (named by :mod:`src.utils.files`' rule, so one left by a killed run is removed by the
  next), so a failed or refused extraction leaves the target folder as it was.

Every failure the user can act on is raised as :class:`DownloadError`, whose message names the
URL or file and says what to do.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import lzma
import os
import posixpath
import re
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Literal

from src.utils.errors import UserError
from src.utils.files import (
    publish,
    remove_stale_beside,
    temporary_beside,
    write_text_atomic,
)

log = logging.getLogger(__name__)

__all__ = ["DownloadError", "RemoteArchive", "download", "extract", "fetch", "sha256_of"]

_USER_AGENT = "srlab-download/0.1"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_HASH_BLOCK = 1 << 20
# Python >= 3.10.12 / 3.11.4 ships tarfile's "data" filter; it is a second layer behind our checks.
_TAR_DATA_FILTER = hasattr(tarfile, "data_filter")


class DownloadError(UserError, RuntimeError):
    """A dataset archive could not be downloaded, verified or unpacked; the message says why."""


@dataclass(frozen=True)
class RemoteArchive:
    """One downloadable archive as written in a dataset config.

    ``sha256`` is the hex digest of the archive file itself. ``filename`` defaults to the last
    component of the URL's path. ``size`` (bytes) is optional: it feeds the progress line and is
    compared with what the server announces. ``subdir`` names the folder inside the archive whose
    content is wanted; :func:`fetch` places that folder's content, not the whole archive.
    """

    url: str
    sha256: str
    filename: str | None = None
    size: int | None = None
    subdir: str | None = None

    def __post_init__(self) -> None:
        digest = self.sha256.strip().lower()
        if not _SHA256_HEX.fullmatch(digest):
            raise DownloadError(
                f"{self.url}: sha256 {self.sha256!r} is not a 64-character hex digest; "
                f"copy the digest of the archive into the dataset config"
            )
        object.__setattr__(self, "sha256", digest)
        if self.size is not None and self.size < 0:
            raise DownloadError(f"{self.url}: size must be a byte count >= 0, got {self.size}")
        _check_plain_filename(self.name, self.url)
        if self.subdir is not None:
            _check_relative(self.subdir, f"{self.url}: subdir")

    @property
    def name(self) -> str:
        """The archive's file name in the download folder."""
        return self.filename or _filename_from_url(self.url)


def sha256_of(path: Path) -> str:
    """Hex sha256 digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def download(
    archive: RemoteArchive,
    dest_dir: Path,
    *,
    progress: bool = True,
    chunk_size: int = 1 << 20,
    timeout: float = 30.0,
) -> Path:
    """Download ``archive`` into ``dest_dir`` and return the verified file's path.

    A file already there with the right checksum is reused without touching the network.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / archive.name
    if _reuse_verified(final, archive):
        return final
    part = _part_path(final)
    _transfer(archive, part, progress=progress, chunk_size=chunk_size, timeout=timeout)
    _verify_or_discard(part, archive)
    publish(part, final)
    return final


def extract(archive_path: Path, target_dir: Path, *, subdir: str | None = None) -> Path:
    """Unpack a zip or tar archive into ``target_dir`` and return ``target_dir``.

    With ``subdir``, only the content of that folder inside the archive is placed. A missing
    ``target_dir`` appears in one rename; an existing one gains the archive's top-level entries,
    none of which may exist there already.
    """
    if not archive_path.is_file():
        raise DownloadError(f"cannot extract {archive_path}: no such file")
    kind = _archive_kind(archive_path)
    remove_stale_beside(target_dir, folder=True)
    staging = temporary_beside(target_dir, folder=True).absolute()
    try:
        _unpack(kind, archive_path, staging)
        _reject_escaping_links(staging, archive_path)
        payload = _select_subdir(staging, subdir, archive_path)
        _move_into_place(payload, target_dir, archive_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target_dir


def fetch(
    archive: RemoteArchive, cache_dir: Path, target_dir: Path, *, progress: bool = True
) -> Path:
    """Download ``archive`` into ``cache_dir`` (or reuse it) and unpack it into ``target_dir``.

    With ``archive.subdir`` set, ``target_dir`` receives that folder's content only.

    A marker file in ``target_dir`` records the archive's digest, so a second call with the same
    archive returns at once, without the network or the cached archive.
    """
    marker = _marker_path(target_dir, archive)
    if _read_marker(marker) == archive.sha256:
        return target_dir
    path = download(archive, cache_dir, progress=progress)
    extract(path, target_dir, subdir=archive.subdir)
    _write_marker(marker, archive.sha256)
    return target_dir


# --- archive description ---------------------------------------------------------------------


def _filename_from_url(url: str) -> str:
    return urllib.parse.unquote(posixpath.basename(urllib.parse.urlsplit(url).path))


def _check_plain_filename(name: str, url: str) -> None:
    if not name or name in {".", ".."} or "/" in name or "\\" in name:
        raise DownloadError(
            f"{url}: cannot use {name!r} as a file name; set `filename` in the dataset config"
        )


def _check_relative(path: str, what: str) -> None:
    posix = path.replace("\\", "/")
    normal = posixpath.normpath(posix)
    if posix.startswith("/") or PureWindowsPath(posix).drive or _leaves_root(normal):
        raise DownloadError(f"{what} {path!r} must be a relative path inside the archive")


# --- download --------------------------------------------------------------------------------


def _part_path(final: Path) -> Path:
    return final.with_name(final.name + ".part")


def _reuse_verified(final: Path, archive: RemoteArchive) -> bool:
    if not final.is_file():
        return False
    actual = sha256_of(final)
    if actual == archive.sha256:
        return True
    log.warning(
        "%s has sha256 %s, expected %s; deleting it and downloading %s again",
        final,
        actual,
        archive.sha256,
        archive.url,
    )
    final.unlink()
    return False


def _transfer(
    archive: RemoteArchive, part: Path, *, progress: bool, chunk_size: int, timeout: float
) -> None:
    """Bring ``part`` up to the full archive, resuming from its current size when possible."""
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = urllib.request.urlopen(_request(archive.url, offset), timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset > 0:
            return  # nothing left to send: the checksum decides whether the .part is complete
        raise DownloadError(
            f"{archive.url}: server answered HTTP {err.code} {err.reason}. Check the URL in the "
            f"dataset config, or put the archive (sha256 {archive.sha256}) at "
            f"{part.with_name(part.name.removesuffix('.part'))} by hand"
        ) from err
    except (OSError, http.client.HTTPException) as err:
        raise _interrupted(archive.url, part, err) from err
    with response:
        append = _accepts_resume(response, offset, archive.url, part)
        total = _announced_total(response, append) or archive.size
        _check_announced_size(archive, total, part)
        _stream(
            response, part, archive, append=append, total=total, progress=progress, chunk=chunk_size
        )
    _check_complete(archive.url, part, total)


def _request(url: str, offset: int) -> urllib.request.Request:
    headers = {"User-Agent": _USER_AGENT}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.Request(url, headers=headers)


def _accepts_resume(response: http.client.HTTPResponse, offset: int, url: str, part: Path) -> bool:
    """True if the reply continues the ``.part`` (206); False if it is the whole file again."""
    if response.status != 206:
        return False
    start = _content_range_start(response.headers.get("Content-Range", ""))
    if start != offset:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{url}: asked to resume at byte {offset} but the server sent a range starting at "
            f"{start}; deleted {part}, rerun to download from the start"
        )
    return True


def _content_range_start(header: str) -> int | None:
    match = re.match(r"bytes\s+(\d+)-", header.strip())
    return int(match.group(1)) if match else None


def _announced_total(response: http.client.HTTPResponse, append: bool) -> int | None:
    """Size of the whole file according to the reply, if it says."""
    if append:
        match = re.search(r"/(\d+)\s*$", response.headers.get("Content-Range", ""))
        return int(match.group(1)) if match else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _check_announced_size(archive: RemoteArchive, total: int | None, part: Path) -> None:
    if archive.size is None or total is None or total == archive.size:
        return
    part.unlink(missing_ok=True)
    raise DownloadError(
        f"{archive.url}: the server offers {total} bytes but the dataset config expects "
        f"{archive.size}; the file at this URL changed or the config is wrong (fix `size` and "
        f"`sha256`, or the URL)"
    )


def _stream(
    response: http.client.HTTPResponse,
    part: Path,
    archive: RemoteArchive,
    *,
    append: bool,
    total: int | None,
    progress: bool,
    chunk: int,
) -> None:
    done = part.stat().st_size if append else 0
    meter = _Progress(archive.name, total=total, done=done, enabled=progress)
    try:
        with part.open("ab" if append else "wb") as out:
            while block := response.read(chunk):
                out.write(block)
                meter.advance(len(block))
    except (OSError, http.client.HTTPException) as err:
        raise _interrupted(archive.url, part, err) from err
    finally:
        meter.close()


def _check_complete(url: str, part: Path, total: int | None) -> None:
    have = part.stat().st_size if part.is_file() else 0
    if total is not None and have < total:
        raise _interrupted(url, part, f"connection closed after {have} of {total} bytes")


def _interrupted(url: str, part: Path, cause: object) -> DownloadError:
    kept = (
        f"the partial file {part} is kept, so rerunning resumes"
        if part.is_file()
        else "rerun to try again"
    )
    return DownloadError(f"downloading {url} failed: {cause}; {kept}")


def _verify_or_discard(part: Path, archive: RemoteArchive) -> None:
    actual = sha256_of(part)
    if actual == archive.sha256:
        return
    part.unlink()
    raise DownloadError(
        f"checksum mismatch for {archive.url}: expected sha256 {archive.sha256}, got {actual}. "
        f"The download was deleted. If the file at this URL changed on purpose, update sha256 in "
        f"the dataset config; otherwise rerun"
    )


class _Progress:
    """A one-line byte counter on stderr, redrawn at most every ``interval`` seconds."""

    def __init__(
        self, label: str, *, total: int | None, done: int, enabled: bool, interval: float = 0.25
    ) -> None:
        self.label = label
        self.total = total
        self.done = done
        self.enabled = enabled
        self.interval = interval
        self._start_done = done
        self._start = time.monotonic()
        self._last_draw: float | None = None

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        now = time.monotonic()
        if self.enabled and (self._last_draw is None or now - self._last_draw >= self.interval):
            self._draw(now)

    def close(self) -> None:
        if self.enabled and self._last_draw is not None:
            self._draw(time.monotonic())
            sys.stderr.write("\n")
            sys.stderr.flush()

    def _draw(self, now: float) -> None:
        self._last_draw = now
        rate = (self.done - self._start_done) / max(now - self._start, 1e-6)
        line = f"{self.label}: {self.done / 1e6:.1f}"
        if self.total:
            line += f"/{self.total / 1e6:.1f} MB ({100 * self.done / self.total:.0f}%)"
        else:
            line += " MB"
        line += f" {rate / 1e6:.1f} MB/s"
        if self.total and rate > 0:
            line += f" ETA {_clock(max(self.total - self.done, 0) / rate)}"
        sys.stderr.write(f"\r{line:<72}")
        sys.stderr.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


# --- extraction ------------------------------------------------------------------------------


def _archive_kind(path: Path) -> Literal["zip", "tar"]:
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    if tarfile.is_tarfile(path):
        return "tar"
    if zipfile.is_zipfile(path):
        return "zip"
    raise DownloadError(
        f"cannot extract {path}: not a zip or tar archive "
        f"(supported: .zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz)"
    )


def _unpack(kind: Literal["zip", "tar"], archive: Path, root: Path) -> None:
    try:
        if kind == "zip":
            _unpack_zip(archive, root)
        else:
            _unpack_tar(archive, root)
    except tarfile.TarError as err:
        tarinfo = getattr(err, "tarinfo", None)  # set on tarfile.FilterError from the data filter
        if isinstance(tarinfo, tarfile.TarInfo):
            raise _refused(archive, tarinfo.name, str(err)) from err
        raise _damaged(archive, err) from err
    except (zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError) as err:
        raise _damaged(archive, err) from err
    except OSError as err:
        raise DownloadError(f"cannot extract {archive}: {err}") from err


def _damaged(archive: Path, err: Exception) -> DownloadError:
    return DownloadError(
        f"cannot extract {archive}: {err}. The archive looks damaged; delete it and rerun"
    )


def _unpack_zip(archive: Path, root: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for info in members:
            _member_relpath(info.filename, archive)
        for info in members:
            zf.extract(info, root)


def _unpack_tar(archive: Path, root: Path) -> None:
    with tarfile.open(archive, "r:*", errorlevel=2) as tar:
        # A generator keeps this a single pass over (possibly compressed) data: each member is
        # checked just before extractall writes it, and a refusal stops the extraction there.
        members = _vetted_tar_members(tar, archive)
        if _TAR_DATA_FILTER:
            tar.extractall(root, members=members, filter="data")
        else:
            tar.extractall(root, members=members)


def _vetted_tar_members(tar: tarfile.TarFile, archive: Path) -> Iterator[tarfile.TarInfo]:
    symlinks: set[str] = set()
    for member in tar:
        _vet_tar_member(member, symlinks, archive)
        yield member


def _vet_tar_member(member: tarfile.TarInfo, symlinks: set[str], archive: Path) -> None:
    """Refuse a member that could write outside the extraction folder; track symlinks seen."""
    rel = _member_relpath(member.name, archive)
    if _passes_through(member.name, symlinks):
        raise _refused(archive, member.name, "its path goes through a symlink in the archive")
    if member.issym():
        _vet_symlink(member, rel, symlinks, archive)
        symlinks.add(rel)
    elif member.islnk():
        _vet_hardlink(member, symlinks, archive)
    elif not (member.isreg() or member.isdir()):
        raise _refused(archive, member.name, "device, fifo and other special files are not allowed")


def _vet_symlink(member: tarfile.TarInfo, rel: str, symlinks: set[str], archive: Path) -> None:
    link = member.linkname.replace("\\", "/")
    joined = posixpath.join(posixpath.dirname(rel), link)
    if link.startswith("/") or PureWindowsPath(link).drive:
        raise _refused(archive, member.name, f"symlink to absolute path {member.linkname!r}")
    if _leaves_root(posixpath.normpath(joined)) or _passes_through(joined, symlinks):
        raise _refused(archive, member.name, f"symlink to {member.linkname!r} points outside")


def _vet_hardlink(member: tarfile.TarInfo, symlinks: set[str], archive: Path) -> None:
    try:
        target = _member_relpath(member.linkname, archive)
    except DownloadError:
        raise _refused(
            archive, member.name, f"hard link to {member.linkname!r} points outside"
        ) from None
    if target in symlinks or _passes_through(member.linkname, symlinks):
        raise _refused(archive, member.name, f"hard link to {member.linkname!r} goes via a symlink")


def _member_relpath(name: str, archive: Path) -> str:
    """The member's normalised path under the extraction folder; refuses one that leaves it."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or PureWindowsPath(posix).drive:
        raise _refused(archive, name, "absolute path")
    rel = posixpath.normpath(posix)
    if _leaves_root(rel):
        raise _refused(archive, name, "'..' leads outside the extraction folder")
    return rel


def _leaves_root(normalised: str) -> bool:
    return normalised == ".." or normalised.startswith("../")


def _passes_through(path: str, symlinks: set[str]) -> bool:
    """Whether any parent folder on ``path`` (walked as written, '..' included) is a symlink."""
    current = ""
    for component in path.replace("\\", "/").split("/")[:-1]:
        current = posixpath.normpath(posixpath.join(current, component))
        if current in symlinks:
            return True
    return False


def _reject_escaping_links(root: Path, archive: Path) -> None:
    """Refuse the whole extraction if any symlink on disk resolves outside ``root``.

    Catches chains the per-member checks cannot see, such as a link that only escapes through
    another link extracted after it.
    """
    real_root = os.path.realpath(root)
    for folder, dirs, files in os.walk(root):
        for entry in (*dirs, *files):
            path = os.path.join(folder, entry)
            if os.path.islink(path) and not _is_within(real_root, os.path.realpath(path)):
                member = os.path.relpath(path, root)
                raise _refused(archive, member, "symlink resolves outside the extraction folder")


def _is_within(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def _refused(archive: Path, member: str, why: str) -> DownloadError:
    return DownloadError(
        f"refused to extract {archive}: member {member!r} is unsafe ({why}). Nothing was "
        f"extracted; get the archive from a trusted source"
    )


def _select_subdir(staging: Path, subdir: str | None, archive: Path) -> Path:
    if not subdir:
        return staging
    _check_relative(subdir, f"{archive}: subdir")
    chosen = staging / posixpath.normpath(subdir.replace("\\", "/"))
    if chosen.is_dir() and not chosen.is_symlink():
        return chosen
    top = ", ".join(sorted(p.name for p in staging.iterdir())[:10]) or "nothing"
    raise DownloadError(
        f"{archive} has no folder {subdir!r} (its top level holds: {top}); fix `subdir` in the "
        f"dataset config"
    )


def _move_into_place(payload: Path, target: Path, archive: Path) -> None:
    if not os.path.lexists(target):
        publish(payload, target)
        return
    if not target.is_dir():
        raise DownloadError(
            f"cannot extract {archive} into {target}: it exists and is not a folder"
        )
    entries = sorted(payload.iterdir())
    clashes = [entry.name for entry in entries if os.path.lexists(target / entry.name)]
    if clashes:
        raise DownloadError(
            f"cannot extract {archive} into {target}: {', '.join(clashes[:5])} already exist "
            f"there; delete them (or the whole folder) to extract again"
        )
    for entry in entries:
        publish(entry, target / entry.name)


# --- fetch bookkeeping -----------------------------------------------------------------------


def _marker_path(target_dir: Path, archive: RemoteArchive) -> Path:
    return target_dir / f".{archive.name}.extracted"


def _read_marker(marker: Path) -> str | None:
    try:
        return marker.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _write_marker(marker: Path, digest: str) -> None:
    write_text_atomic(marker, digest + "\n")
