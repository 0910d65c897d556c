"""Temporary files of our own naming, and cleaning up after a process that was killed.

Every write that must not be seen half done goes to a temporary name that carries the writer's
process id and becomes the real name only when complete. A process killed mid-write leaves its
temporary behind; the next run removes those whose process is gone, and never reads them.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

PID_IN_NAME = re.compile(r"\.(?P<pid>\d+)\.")


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
