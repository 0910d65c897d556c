"""The data package's own error, below every module that raises it."""

from __future__ import annotations

from src.utils.errors import UserError


class DatasetNotFoundError(UserError, FileNotFoundError):
    """A configured dataset is not on disk and cannot be fetched; the message says what to do."""
