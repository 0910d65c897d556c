"""DICOM slices in and out (pydicom): CT, MR and other single-frame grayscale images.

A slice is read as its modality values (the stored integers through Rescale Slope and
Intercept: Hounsfield units for CT), rounded to integers and offset by 32768 onto the unsigned
16-bit grid SR Lab works on (``u = value + 32768``), so every integer value from -32768 to
32767 is kept exactly and slices with different intercepts share one scale. A value outside that
range, a multi-frame file or a colour one is refused with the file named.

An upscaled slice is written back as DICOM from its source file: the same tags, with the new
pixels stored through the source's own slope and intercept, Rows and Columns multiplied and
Pixel Spacing (and Imager Pixel Spacing) divided by the scale, a new SOP Instance UID (it is a
new, derived image) and a Derivation Description saying what made it; always as explicit VR
little endian, uncompressed, whatever the source's encoding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from src.io.kinds import DICOM_SUFFIXES, ImageReadError
from src.utils.files import atomic_path

# Modality value 0 sits here on the uint16 grid.
MODALITY_OFFSET = 32768
SPACING_TAGS = ("PixelSpacing", "ImagerPixelSpacing")


def is_dicom(path: str | Path) -> bool:
    return Path(path).suffix.lower() in DICOM_SUFFIXES


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError:
        raise ImageReadError("reading DICOM needs pydicom: pip install pydicom") from None
    return pydicom


def _dataset(path: Path) -> Any:
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(path)
    except Exception as error:  # pydicom raises several types for a damaged file
        raise ImageReadError(f"{path}: not a readable DICOM file ({error})") from None


def rescale(dataset: Any) -> tuple[float, float]:
    """The slice's Rescale Slope and Intercept (1 and 0 where absent, as for MR)."""
    return float(getattr(dataset, "RescaleSlope", 1) or 1), float(
        getattr(dataset, "RescaleIntercept", 0) or 0
    )


def read_dicom(path: str | Path) -> np.ndarray:
    """An (H, W) uint16 array of ``path``'s modality values plus :data:`MODALITY_OFFSET`."""
    path = Path(path)
    dataset = _dataset(path)
    if int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1:
        raise ImageReadError(f"{path}: a multi-frame DICOM; SR Lab reads single slices")
    if int(getattr(dataset, "SamplesPerPixel", 1)) != 1:
        raise ImageReadError(f"{path}: a colour DICOM; SR Lab reads grayscale slices")
    try:
        stored = dataset.pixel_array
    except Exception as error:  # missing pixel data, or a codec pydicom lacks
        raise ImageReadError(f"{path}: cannot decode its pixel data ({error})") from None
    slope, intercept = rescale(dataset)
    values = np.rint(stored.astype(np.float64) * slope + intercept) + MODALITY_OFFSET
    if values.min() < 0 or values.max() > 65535:
        raise ImageReadError(
            f"{path}: modality values from {values.min() - MODALITY_OFFSET:.0f} to "
            f"{values.max() - MODALITY_OFFSET:.0f} do not fit -32768..32767"
        )
    return values.astype(np.uint16)


def _stored_range(dataset: Any) -> tuple[int, int, type]:
    bits = int(getattr(dataset, "BitsStored", 16))
    if int(getattr(dataset, "PixelRepresentation", 0)) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1, np.int16
    return 0, (1 << bits) - 1, np.uint16


def write_dicom(target: Path, pixels: np.ndarray, source: Path, scale: int) -> None:
    """Write ``pixels`` ((H, W) uint16 on the grid of :func:`read_dicom`) to ``target`` as a
    DICOM slice made from ``source``'s tags (atomically)."""
    pydicom = _pydicom()
    original = _dataset(source)
    # A copy of the decoded elements, free of the source's encoding (it may be big-endian or
    # implicit VR): written as explicit VR little endian, uncompressed, like the new pixels.
    dataset = pydicom.Dataset()
    for element in original:
        dataset.add(element)
    dataset.file_meta = original.file_meta
    if pixels.ndim != 2 or pixels.dtype != np.uint16:
        raise ImageReadError(f"{target}: DICOM output needs one 16-bit channel")
    slope, intercept = rescale(dataset)
    low, high, dtype = _stored_range(dataset)
    modality = pixels.astype(np.float64) - MODALITY_OFFSET
    stored: np.ndarray = np.clip(np.rint((modality - intercept) / slope), low, high).astype(dtype)
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    dataset.BitsAllocated = 16
    dataset.PixelData = stored.tobytes()
    dataset.Rows, dataset.Columns = (int(n) for n in stored.shape)
    for tag in SPACING_TAGS:
        if tag in dataset:
            element = dataset.data_element(tag)
            element.value = [float(value) / scale for value in element.value]
    uid = pydicom.uid.generate_uid()
    dataset.SOPInstanceUID = uid
    dataset.file_meta.MediaStorageSOPInstanceUID = uid
    dataset.DerivationDescription = f"SR Lab x{scale} super-resolution of {source.name}"
    with atomic_path(target) as temporary:
        pydicom.dcmwrite(
            temporary,
            dataset,
            implicit_vr=False,
            little_endian=True,
            enforce_file_format=True,
        )
