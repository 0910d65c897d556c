"""What every entry point shares: user errors become one readable line, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from hydra.errors import InstantiationException

from src.data.images import ImageReadError
from src.data.sources import DatasetNotFoundError
from src.models.checkpoint import CheckpointError
from src.models.sr_module import NonFiniteLossError
from src.utils.errors import UserError

T = TypeVar("T")

EXIT_USER_ERROR = 2


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is meant for the user as it stands."""
    types: list[type[BaseException]] = [
        DatasetNotFoundError,
        ImageReadError,
        CheckpointError,
        NonFiniteLossError,
        UserError,
    ]
    try:
        from src.models.pretrained import PretrainedWeightsError

        types.append(PretrainedWeightsError)
    except ImportError:
        pass
    try:
        from src.data.download import DownloadError

        types.append(DownloadError)
    except ImportError:
        pass
    return tuple(types)


def root_cause(error: BaseException) -> BaseException:
    """Unwrap Hydra's InstantiationException to the error raised inside the constructor."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def run_or_explain(task: Callable[[], T]) -> T:
    """Run ``task``; a known user error prints ``error: <message>`` and exits with status 2."""
    try:
        return task()
    except Exception as error:
        cause = root_cause(error)
        if isinstance(cause, user_error_types()):
            print(f"error: {cause}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USER_ERROR) from None
        raise
