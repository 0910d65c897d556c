"""One reader for every command: a phone photo stored sideways with an EXIF orientation tag is
the same upright image to training and evaluation (the data sources), to src.score and to
src.predict. OpenCV ignores the tag; before, only predict's reader applied it, so a rotated JPEG
was upscaled upright and scored sideways."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.data.sources import read_each
from src.io.images import EXIF_ORIENTATION_TAG, apply_orientation, read_named
from src.io.media import read_image
from src.score import read as score_read
from tests.test_data import photo

# What a camera stores for each EXIF orientation, from the upright picture (each the inverse of
# the turn the tag asks for).
STORED_FROM_UPRIGHT = {
    3: lambda a: np.rot90(a, 2),
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, 1),
    8: lambda a: np.rot90(a, -1),
}


def write_tagged(path: Path, stored: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    Image.fromarray(stored).save(path, exif=exif, quality=100, subsampling=0)


@pytest.mark.parametrize("orientation", [6, 8, 3, 5])
def test_every_commands_reader_sees_a_rotated_jpeg_upright(tmp_path: Path, orientation: int):
    upright = photo(0, 40, 64)  # landscape, 40 x 64
    stored = np.ascontiguousarray(STORED_FROM_UPRIGHT[orientation](upright))
    assert np.array_equal(apply_orientation(stored, orientation), upright)
    path = tmp_path / "phone.jpg"
    write_tagged(path, stored, orientation)

    seen = {
        "train/eval": read_named(path).pixels,
        "train/eval (read_each)": next(read_each([path], "error", [])).pixels,
        "score": score_read(path)[0],
        "predict": read_image(path),
    }
    for who, pixels in seen.items():
        assert pixels.shape == upright.shape, who
        assert np.abs(pixels.astype(int) - upright.astype(int)).mean() < 2.0, who  # JPEG loss
        assert np.array_equal(pixels, seen["predict"]), who
