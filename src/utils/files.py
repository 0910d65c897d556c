"""Temporary files of our own naming, atomic writes, and cleaning up after a killed process.

Every file SR Lab writes goes through :func:`atomic_path` (or :func:`write_text_atomic` /
:func:`write_bytes_atomic`): the content goes to a temporary beside the target, named
``.<stem>.<pid>.<random>.partial<suffix>`` (hidden, the writer's process id, the target's suffix
so that encoders choosing a format by it still do), and becomes the real name in one
:func:`os.replace` only when complete. A reader sees the old file or the new one, never half.

A process killed mid-write leaves its temporary behind; the next run removes those whose process
is gone (:func:`remove_stale`), and never reads them. A folder built whole (a cache) follows the
same naming rule (:func:`temporary_beside` with ``folder=True``) and the same cleanup.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Marks the names of our temporaries: ``.<stem>.<pid>.<random>.partial<suffix>``.
PARTIAL_MARK = ".partial"
PID_IN_NAME = re.compile(r"\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.partial")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (ours or another user's)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def writer_pid(path: Path) -> int | None:
    """The process id a temporary name of ours carries, if any."""
    found = PID_IN_NAME.search(path.name)
    return int(found.group("pid")) if found else None


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is named as a temporary of an unfinished write of ours."""
    return path.name.startswith(".") and PARTIAL_MARK in path.name


def remove_stale(paths: list[Path]) -> list[Path]:
    """Remove the temporaries among ``paths`` whose writer is gone (or unknown); return them."""
    removed = []
    for path in paths:
        pid = writer_pid(path)
        if pid is not None and pid_alive(pid):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _name_parts(target: Path, folder: bool) -> tuple[str, str]:
    """The stem and suffix a temporary of ``target`` is named from (a folder keeps its name)."""
    return (target.name, "") if folder else (target.stem, target.suffix)


def temporaries_of(target: Path, *, folder: bool = False) -> list[Path]:
    """The temporaries of ``target`` that any process (this one included) left beside it."""
    stem, suffix = _name_parts(target, folder)
    pattern = f".{glob.escape(stem)}.*{PARTIAL_MARK}{glob.escape(suffix)}"
    return [path for path in target.parent.glob(pattern) if writer_pid(path) is not None]


def remove_stale_beside(target: Path, *, folder: bool = False) -> list[Path]:
    """Remove the temporaries of ``target`` that killed writers left; return them."""
    return remove_stale(temporaries_of(target, folder=folder))


def temporary_beside(target: Path, *, folder: bool = False) -> Path:
    """A new, empty file (or ``folder``) named by the rule above, in ``target``'s folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    stem, suffix = _name_parts(target, folder)
    prefix, end = f".{stem}.{os.getpid()}.", f"{PARTIAL_MARK}{suffix}"
    if folder:
        name = tempfile.mkdtemp(prefix=prefix, suffix=end, dir=target.parent)
    else:
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=end, dir=target.parent)
        os.close(handle)
    # mkstemp and mkdtemp make it private; give it the permissions a new one would get.
    os.chmod(name, (0o777 if folder else 0o666) & ~process_umask())
    return Path(name)


@functools.cache
def process_umask() -> int:
    """This process's umask, read once (setting it to read it is not thread-safe)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def publish(complete: Path, target: Path) -> None:
    """Give a complete file or folder the name ``target`` in one step, replacing a file there.

    The one rename of SR Lab's writers: every temporary becomes its real name here. Not synced
    to disk: an fsync per predicted image or extracted file would cost more than it saves.
    """
    os.replace(complete, target)


def publish_folder(complete: Path, target: Path) -> None:
    """Put the folder ``complete`` at ``target``; a folder already there is first moved aside
    (under a temporary name, removed after), since a rename cannot replace a non-empty one."""
    replaced = None
    if target.is_dir():
        replaced = temporary_beside(target, folder=True)
        replaced.rmdir()
        target.rename(replaced)
    publish(complete, target)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target`` that becomes ``target`` when the block succeeds.

    On any error the temporary is removed and ``target`` is left as it was; a process killed
    outright leaves the temporary for :func:`remove_stale`.
    """
    temporary = temporary_beside(target)
    try:
        yield temporary
        publish(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (small files: results, records,
    markers); first remove the temporaries that killed writers of ``path`` left."""
    remove_stale_beside(path)
    with atomic_path(path) as temporary, temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    _fsync_folder(path.parent)


def write_text_atomic(path: Path, text: str, encoding: str = "utf-8") -> None:
    """:func:`write_bytes_atomic` for text."""
    write_bytes_atomic(path, text.encode(encoding))
