"""What the readers share and the DICOM reader needs without importing the image reader (which
imports it): the DICOM file suffixes and the error of an unusable image file."""

from __future__ import annotations

from src.utils.errors import UserError

DICOM_SUFFIXES = (".dcm", ".dicom")


class ImageReadError(UserError, ValueError):
    """An image file that cannot be used, with the file and the reason in the message."""
