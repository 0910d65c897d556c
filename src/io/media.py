"""Images and videos as they come from users, for prediction: find, read, write.

Unlike :mod:`src.io.images` (training and scoring, always 8-bit RGB), these keep what the file
holds: grayscale stays one channel, alpha stays, 16-bit stays 16-bit. The EXIF orientation tag
(JPEG, PNG, WebP, TIFF) is applied on reading, so a phone photo comes out upright and the output,
written without the tag, displays the same way. Every write is atomic
(:func:`src.utils.files.atomic_path`): the file is encoded to a temporary name in the target
folder and renamed when complete, so a failure leaves no partial output. Videos go through
:mod:`src.io.video` (PyAV): their sound and subtitles are copied into the result.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.io.images import (
    ImageReadError,
    decode,
    header_only_pil,
)
from src.io.video import VIDEO_SUFFIXES
from src.utils.errors import UserError
from src.utils.files import is_temporary, remove_stale

IMAGE_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".webp",
    ".tif",
    ".tiff",
    ".bmp",
    ".gif",
    ".dcm",
    ".dicom",
)
OUTPUT_FORMATS = {
    "png": ".png",
    "jpg": ".jpg",
    "jpeg": ".jpg",
    "webp": ".webp",
    "tiff": ".tiff",
    "dcm": ".dcm",
}
# Formats that store 16-bit samples; the others get 8 bits.
GLOB_CHARS = "*?["


class MediaError(ImageReadError):
    """An input or output file that cannot be used; the message names it."""


class NoInputsError(UserError):
    """``input`` matched no image or video."""


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def is_media(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES or is_video(path)


def is_partial(path: Path) -> bool:
    """A temporary file of an unfinished write of ours (:mod:`src.utils.files`)."""
    return is_temporary(path)


def usable_input(path: Path) -> bool:
    """An image or video file to upscale: not a temporary of an unfinished write."""
    return path.is_file() and is_media(path) and not is_partial(path)


def same_file(path: Path, other: Path) -> bool:
    """Whether two paths name one file: the same path once symlinks are resolved, or, where both
    exist, the same file on disk (a hard link)."""
    if path.resolve() == other.resolve():
        return True
    try:
        return os.path.samefile(path, other)
    except OSError:  # one of them does not exist (yet)
        return False


def remove_stale_partials(folder: Path) -> list[Path]:
    """Delete the temporaries that killed runs left in ``folder``; return them."""
    if not folder.is_dir():
        return []
    return remove_stale([p for p in folder.iterdir() if is_partial(p)])


def find_inputs(spec: str) -> list[Path]:
    """The images and videos ``spec`` names: a file, a folder (its files, sorted) or a glob."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if usable_input(p))
        where = f"in the folder {path}"
    elif any(char in spec for char in GLOB_CHARS):
        matches = (Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True))
        found = sorted(p for p in matches if usable_input(p))
        where = f"matching {spec!r}"
    else:
        raise NoInputsError(f"input not found: {spec} (give a file, a folder or a glob)")
    if not found:
        suffixes = " ".join((*IMAGE_SUFFIXES, *VIDEO_SUFFIXES))
        raise NoInputsError(f"no images or videos {where} (looked for {suffixes})")
    return found


def output_path(source: Path, output_dir: Path, output_format: str | None) -> Path:
    """Where the result of ``source`` goes: same name, the format's suffix if one is given."""
    if output_format is None or is_video(source):
        return output_dir / source.name
    suffix = OUTPUT_FORMATS.get(output_format.lower().lstrip("."))
    if suffix is None:
        raise UserError(
            f"output_format={output_format!r} is not one of {', '.join(OUTPUT_FORMATS)} (or null)"
        )
    return output_dir / f"{source.stem}{suffix}"


# --- images ----------------------------------------------------------------------------------
# Pillow modes -> (channels, bytes per sample) of what decoding gives (palettes may carry alpha).
MODE_LAYOUT = {
    "1": (1, 1),
    "L": (1, 1),
    "P": (4, 1),
    "LA": (4, 1),
    "RGB": (3, 1),
    "RGBA": (4, 1),
    "CMYK": (3, 1),
    "YCbCr": (3, 1),
    "I;16": (1, 2),
    "I;16B": (1, 2),
    "I": (1, 2),
    "F": (1, 4),
}


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without decoding the pixels."""

    width: int
    height: int
    channels: int
    sample_bytes: int
    frames: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(path: Path) -> ImageHeader | None:
    """The size, layout and frame count of ``path`` from its header; None when Pillow cannot
    parse it (decoding then says what is wrong)."""
    from PIL import Image

    try:
        with header_only_pil(), Image.open(path) as image:
            channels, sample_bytes = MODE_LAYOUT.get(image.mode, (4, 2))
            frames = int(getattr(image, "n_frames", 1))
            return ImageHeader(image.width, image.height, channels, sample_bytes, frames)
    except Exception:  # not an image Pillow knows, or a damaged header
        return None


def available_memory() -> int | None:
    """Bytes of memory the system could give this process now (``MemAvailable``), if known."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def read_image(path: Path) -> np.ndarray:
    """Decode ``path`` upright (:func:`decode` applies EXIF orientation), as stored otherwise:
    (H, W) gray or (H, W, 3|4) RGB(A), uint8 or uint16."""
    pixels = decode(path)
    if pixels.dtype not in (np.uint8, np.uint16):
        raise MediaError(f"{path}: unsupported pixel type {pixels.dtype} (need 8 or 16 bit)")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 3 and pixels.shape[2] not in (3, 4):
        raise MediaError(f"{path}: unsupported channel count {pixels.shape[2]}")
    return pixels
