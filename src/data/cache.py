"""Decode once: the ``data.cache`` settings and the memory cap on decoded training images.

By default a training set is decoded at set-up and kept in memory as uint8 (DataLoader workers
share it copy-on-write). :func:`check_memory_cap` reads only the image headers first and stops
the run, naming the size, when the decoded pixels would exceed ``data.cache.memory_gb``; the way
to train on such a set (DIV2K, Flickr2K, DF2K) is the on-disk, memory-mapped cache of
:mod:`src.data.subimages` (``cache=mapped`` or ``cache=subimages``, ``data.cache.on_disk``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from src.io.images import header_only_pil
from src.utils.errors import UserError

log = logging.getLogger(__name__)

GIB = 2**30


class MemoryCapError(UserError):
    """A training set whose decoded pixels would not fit under ``data.cache.memory_gb``."""


@dataclass(frozen=True)
class CacheSettings:
    """``data.cache``: ``memory_gb`` caps the decoded training images held in memory (null: no
    cap); ``on_disk`` writes the training images once under ``dir``, cut into ``crop`` px
    squares every ``step`` px (``crop`` null: whole), memory-mapped by every later run."""

    memory_gb: float | None = 16.0
    on_disk: bool = False
    crop: int | None = 480
    step: int = 240
    dir: str = ".cache/data"


def cache_settings(values: CacheSettings | Mapping[str, Any] | None) -> CacheSettings:
    """``data.cache`` as given in YAML (a mapping; its values were checked against the config
    schema, :mod:`src.utils.schema`)."""
    if values is None:
        return CacheSettings()
    if isinstance(values, CacheSettings):
        return values
    return CacheSettings(**values)


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding it; (0, 0) when unreadable
    (decoding names such a file later)."""
    try:
        with header_only_pil(), Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError, ValueError):
        return (0, 0)


def decoded_bytes(files: list[Path], scale: int) -> int:
    """Bytes of uint8 RGB pixels the files decode to, with their bicubic LR (1 / scale^2)."""
    pixels = sum(width * height for width, height in map(header_size, files))
    return int(pixels * 3 * (1 + 1 / scale**2))


def readable_size(size: int) -> str:
    """``size`` bytes in MiB below a GiB, else in GiB."""
    return f"{size / 2**20:.1f} MiB" if size < GIB else f"{size / GIB:.2f} GiB"


def check_memory_cap(name: str, files: list[Path], scale: int, memory_gb: float | None) -> None:
    """Stop before decoding when ``files`` would take more than ``memory_gb`` in memory."""
    if memory_gb is None:
        return
    needed = decoded_bytes(files, scale)
    log.info("%s: %d images, %s decoded", name, len(files), readable_size(needed))
    if needed > memory_gb * GIB:
        raise MemoryCapError(
            f"{name}: {len(files)} images decode to {readable_size(needed)} (HR and its x{scale} "
            f"LR), over data.cache.memory_gb={memory_gb:g}. Use cache=mapped (or "
            f"cache=subimages) to write them once to disk under data.cache.dir and memory-map "
            f"them, or raise data.cache.memory_gb"
        )
