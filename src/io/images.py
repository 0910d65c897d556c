"""Decoding images into pixel arrays of a chosen format, once, with errors that name the file.

Every image that enters SR Lab passes through :func:`to_format`, which gives it the
:class:`PixelFormat` of its data set: by default 8-bit RGB (16-bit files rounded to 8 bits,
grayscale expanded to three equal channels, the convention for Set14's ``bridge``); with
``data.bit_depth=16`` or ``auto`` a 16-bit file stays uint16, and with ``data.channels=1`` a
single-channel file stays (H, W, 1). An alpha channel is always dropped. Anything unreadable, or
a file that does not fit the format without losing information (a colour image in a
single-channel set), raises :class:`ImageReadError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from src.io.kinds import DICOM_SUFFIXES, ImageReadError
from src.utils.errors import UserError
from src.utils.files import atomic_path, is_temporary

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", *DICOM_SUFFIXES)
# What decoding makes of a file (part of the key of on-disk caches of decoded pixels).
EXIF_ORIENTATION_TAG = 0x0112
SIXTEEN_BIT_SUFFIXES = (".png", ".tif", ".tiff", ".dcm", ".dicom")
ALPHA_SUFFIXES = (".png", ".webp", ".tif", ".tiff")
DECODED_PIXELS = "uint8 RGB: 16-bit rounded to 8, gray expanded to 3 channels, alpha dropped"
# The top of each bit depth's range: pixels are divided by it into [0, 1].
PEAK_OF_DEPTH = {8: 255, 16: 65535}
DTYPE_OF_DEPTH = {8: np.uint8, 16: np.uint16}


@dataclass(frozen=True)
class PixelFormat:
    """What a data set's images are decoded to: ``bit_depth`` 8 or 16, or None for each
    file's own depth (``data.bit_depth=auto``); ``channels`` 3 (RGB) or 1 (single-channel)."""

    bit_depth: int | None = 8
    channels: int = 3

    def __post_init__(self) -> None:
        if self.bit_depth not in (None, *PEAK_OF_DEPTH):
            raise UserError(f"data.bit_depth must be auto, 8 or 16, got {self.bit_depth!r}")
        if self.channels not in (1, 3):
            raise UserError(f"data.channels must be 1 or 3, got {self.channels!r}")

    @classmethod
    def from_config(cls, bit_depth: int | str, channels: int | str) -> PixelFormat:
        """From ``data.bit_depth`` (auto, 8, 16) and a resolved ``data.channels`` (1, 3)."""
        depth = None if bit_depth == "auto" else bit_depth
        if isinstance(depth, str) and depth.isdigit():
            depth = int(depth)
        if channels == "auto":
            raise UserError("data.channels=auto must be resolved from the files before use")
        return cls(depth if depth is None else int(depth), int(channels))


# The default format: what SR Lab has always decoded to.
RGB8 = PixelFormat()


def bit_depth_of(pixels: np.ndarray) -> int:
    """8 or 16: the bit depth of a uint8 or uint16 pixel array."""
    return 16 if pixels.dtype == np.uint16 else 8


@dataclass(frozen=True)
class NamedImage:
    """A decoded image: ``pixels`` is an (H, W, C) array of its set's :class:`PixelFormat`
    (uint8 or uint16; C = 3, RGB, or 1); ``lr`` a given LR, if any;
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
    return to_format(pixels, source, RGB8)


def to_format(pixels: np.ndarray, source: str, pixel_format: PixelFormat) -> np.ndarray:
    """Normalise a decoded array to (H, W, C) of ``pixel_format``; ``source`` names it in
    errors. 16 to 8 bits rounds to the nearest level; 8 to 16 bits multiplies by 257 (exact)."""
    pixels = _with_depth(pixels, source, pixel_format.bit_depth)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(f"{source}: unsupported image shape {pixels.shape}")
    colour = pixels[:, :, :3] if pixels.shape[2] >= 3 else pixels[:, :, :1]  # alpha dropped
    if pixel_format.channels == 3:
        return np.ascontiguousarray(
            np.repeat(colour, 3, axis=2) if colour.shape[2] == 1 else colour
        )
    if colour.shape[2] == 3:
        if not (
            np.array_equal(colour[:, :, 0], colour[:, :, 1])
            and np.array_equal(colour[:, :, 0], colour[:, :, 2])
        ):
            raise ImageReadError(
                f"{source}: a colour image in a single-channel set (data.channels=1); convert "
                f"it to grayscale yourself or use data.channels=3"
            )
        colour = colour[:, :, :1]
    return np.ascontiguousarray(colour)


def _with_depth(pixels: np.ndarray, source: str, bit_depth: int | None) -> np.ndarray:
    if pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8) * 255
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f"{source}: unsupported pixel type {pixels.dtype} (need 8 or 16 bit)")
    depth = bit_depth_of(pixels)
    if bit_depth is None or bit_depth == depth:
        return pixels
    if bit_depth == 8:
        return sixteen_to_eight_bits(pixels)
    return pixels.astype(np.uint16) * np.uint16(257)


class ImageWriteError(UserError, OSError):
    """An image that cannot be encoded in the format its file name asks for."""


def sixteen_to_eight_bits(pixels: np.ndarray) -> np.ndarray:
    """uint16 to uint8, each value to the nearest 8-bit level (round(v * 255 / 65535)), exactly
    in integers: the one conversion every reader and writer uses."""
    return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def decode(path: str | Path) -> np.ndarray:
    """Decode ``path`` upright (EXIF orientation applied) in RGB order, at its own depth and
    channel count (a DICOM slice as its modality values on the uint16 grid, :mod:`src.io.dicom`),
    or raise naming it."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes)")
    if path.suffix.lower() in DICOM_SUFFIXES:
        from src.io.dicom import read_dicom  # pydicom only for DICOM files

        return read_dicom(path)
    raw = np.fromfile(path, dtype=np.uint8)
    pixels = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ImageReadError(f"{path}: not a readable image (corrupt, truncated or not an image)")
    if pixels.ndim == 3 and pixels.shape[2] >= 3:
        order = cv2.COLOR_BGRA2RGBA if pixels.shape[2] == 4 else cv2.COLOR_BGR2RGB
        pixels = cv2.cvtColor(pixels, order)
    # OpenCV's IMREAD_UNCHANGED ignores EXIF orientation: turned upright here, once, so a phone
    # photo is the same image to training, evaluation, scoring and prediction.
    return apply_orientation(pixels, exif_orientation(path))


def exif_orientation(path: Path) -> int:
    """The EXIF orientation tag of ``path`` (1 = upright, also when there is none)."""
    from PIL import Image

    try:
        with header_only_pil(), Image.open(path) as image:
            return int(image.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except Exception:  # best effort: a file Pillow cannot parse is taken as upright
        return 1


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an image stored with EXIF ``orientation`` upright (the 8 values of the standard)."""
    if orientation in (5, 7):  # transpose (5) and transverse (7) mirror along a diagonal
        pixels = np.swapaxes(pixels, 0, 1)
        return np.ascontiguousarray(np.rot90(pixels, 2) if orientation == 7 else pixels)
    operations = {
        2: lambda a: a[:, ::-1],
        3: lambda a: np.rot90(a, 2),
        4: lambda a: a[::-1],
        6: lambda a: np.rot90(a, -1),
        8: lambda a: np.rot90(a, 1),
    }
    operation = operations.get(orientation)
    return pixels if operation is None else np.ascontiguousarray(operation(pixels))


def is_single_channel(pixels: np.ndarray) -> bool:
    """True for a decoded (H, W) or (H, W, 1) array: a grayscale file."""
    return pixels.ndim == 2 or pixels.shape[2] == 1


def read_named(path: Path, pixel_format: PixelFormat = RGB8) -> NamedImage:
    """Decode ``path`` into a :class:`NamedImage` named by its stem."""
    raw = decode(path)
    pixels = to_format(raw, str(path), pixel_format)
    return NamedImage(path.stem, pixels, gray=is_single_channel(raw), path=str(path))


def read_pixels(path: str | Path, pixel_format: PixelFormat = RGB8) -> np.ndarray:
    """Decode ``path`` to an (H, W, C) array of ``pixel_format``, or raise naming it."""
    return to_format(decode(path), str(path), pixel_format)


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode ``path`` to (H, W, 3) uint8 RGB, or raise :class:`ImageReadError` naming it."""
    return to_rgb_uint8(decode(path), str(path))


def fit_format(pixels: np.ndarray, suffix: str) -> np.ndarray:
    """Reduce ``pixels`` to what the format stores: 8 bits and no alpha where it must."""
    if pixels.dtype == np.uint16 and suffix not in SIXTEEN_BIT_SUFFIXES:
        pixels = sixteen_to_eight_bits(pixels)
    if pixels.ndim == 3 and pixels.shape[2] == 4 and suffix not in ALPHA_SUFFIXES:
        pixels = np.ascontiguousarray(pixels[:, :, :3])
    return pixels


def write_image(path: str | Path, pixels: np.ndarray) -> None:
    """Encode (H, W), (H, W, 1) or (H, W, 3|4) RGB(A) ``pixels``, uint8 or uint16, to ``path``
    atomically; the suffix picks the format, and what it cannot hold (16 bits, alpha) is reduced
    by :func:`fit_format`. The one image writer."""
    path = Path(path)
    suffix = path.suffix.lower()
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    pixels = fit_format(pixels, suffix)
    if pixels.ndim == 3:
        order = cv2.COLOR_RGBA2BGRA if pixels.shape[2] == 4 else cv2.COLOR_RGB2BGR
        pixels = cv2.cvtColor(pixels, order)
    ok, encoded = cv2.imencode(suffix, pixels)
    if not ok:
        raise ImageWriteError(f"{path}: OpenCV could not encode a {suffix} image")
    with atomic_path(path) as temporary:
        encoded.tofile(temporary)


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; a temporary of an unfinished write
    (a killed run's) is not one."""
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not is_temporary(p)
    )


def images_in_folder(folder: Path, key: str) -> list[Path]:
    """:func:`list_images` of the folder the option ``key`` names, or one error naming both."""
    if not folder.is_dir():
        raise UserError(f"{key}={folder}: no such folder (give a folder of images)")
    files = list_images(folder)
    if not files:
        raise UserError(f"{key}={folder}: no image files in it")
    return files


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
