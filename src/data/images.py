"""Decoding images into uint8 RGB arrays, once, with errors that name the file.

Every image that enters SR Lab passes through :func:`read_rgb`: 16-bit images are reduced to
8 bits, grayscale is expanded to three equal channels (the convention for Set14's ``bridge``),
and an alpha channel is dropped. Anything unreadable raises :class:`ImageReadError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from src.utils.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# What decoding makes of a file (part of the key of on-disk caches of decoded pixels).
DECODED_PIXELS = "uint8 RGB: 16-bit rounded to 8, gray expanded to 3 channels, alpha dropped"


class ImageReadError(UserError, ValueError):
    """An image file that cannot be used, with the file and the reason in the message."""


@dataclass(frozen=True)
class NamedImage:
    """A decoded image: ``pixels`` is an (H, W, 3) uint8 RGB array; ``lr`` a given LR, if any;
    ``gray`` says the file itself had one channel (scoring conventions differ for those);
    ``path`` names the file it came from, for messages (empty when it did not come from one);
    ``note``, when not empty, is a warning about it that the user should see."""

    name: str
    pixels: np.ndarray
    lr: np.ndarray | None = None
    gray: bool = False
    path: str = ""
    note: str = ""


def to_rgb_uint8(pixels: np.ndarray, source: str) -> np.ndarray:
    """Normalise a decoded array to (H, W, 3) uint8 RGB; ``source`` names it in errors."""
    if pixels.dtype == np.uint16:
        pixels = ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8) * 255
    elif pixels.dtype != np.uint8:
        raise ImageReadError(f"{source}: unsupported pixel type {pixels.dtype} (need 8 or 16 bit)")
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
        raise ImageReadError(f"{source}: unsupported image shape {pixels.shape}")
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


def decode(path: str | Path) -> np.ndarray:
    """Decode ``path`` as stored (RGB order, any depth and channel count), or raise naming it."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes)")
    raw = np.fromfile(path, dtype=np.uint8)
    pixels = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ImageReadError(f"{path}: not a readable image (corrupt, truncated or not an image)")
    if pixels.ndim == 3 and pixels.shape[2] >= 3:
        order = cv2.COLOR_BGRA2RGBA if pixels.shape[2] == 4 else cv2.COLOR_BGR2RGB
        pixels = cv2.cvtColor(pixels, order)
    return pixels


def is_single_channel(pixels: np.ndarray) -> bool:
    """True for a decoded (H, W) or (H, W, 1) array: a grayscale file."""
    return pixels.ndim == 2 or pixels.shape[2] == 1


def read_named(path: Path) -> NamedImage:
    """Decode ``path`` into a :class:`NamedImage` named by its stem."""
    raw = decode(path)
    rgb = to_rgb_uint8(raw, str(path))
    return NamedImage(path.stem, rgb, gray=is_single_channel(raw), path=str(path))


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode ``path`` to (H, W, 3) uint8 RGB, or raise :class:`ImageReadError` naming it."""
    return to_rgb_uint8(decode(path), str(path))


def write_rgb(path: str | Path, pixels: np.ndarray) -> None:
    """Encode an (H, W, 3) uint8 RGB array to ``path``; the extension picks the format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix or ".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path}")
    tmp = path.with_name(f".{path.name}.tmp")
    encoded.tofile(tmp)
    tmp.replace(path)


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


@contextmanager
def header_only_pil() -> Iterator[None]:
    """Pillow without its decompression-bomb guard, for reading headers (size, EXIF) only: the
    guard refuses to open images over 179 MP, and 200 MP phone photos exist."""
    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit
