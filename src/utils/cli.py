"""What every entry point shares: user errors become one readable line, not a traceback.

Every exception meant for the user derives from :class:`~src.utils.errors.UserError`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from hydra.errors import InstantiationException

from src.utils.errors import UserError

T = TypeVar("T")

EXIT_USER_ERROR = 2


def needs_quotes(value: str) -> bool:
    """A value Hydra's override grammar only reads quoted: one with spaces or non-ASCII
    letters (a path like ``my photos/été``), not already quoted, not a sweep list."""
    if not value or value[0] in "'\"" or "," in value:
        return False
    return any(char.isspace() or ord(char) > 127 for char in value)


def quote_overrides(argv: list[str]) -> list[str]:
    """``argv`` with each ``key=value`` whose value :func:`needs_quotes` single-quoted, so that
    ``input=my photos/`` works as the user typed it (idempotent: quoted values are kept)."""
    quoted = argv[:1]
    for argument in argv[1:]:
        key, equals, value = argument.partition("=")
        if argument.startswith("-") or not equals or not needs_quotes(value):
            quoted.append(argument)
        else:
            quoted.append(f"{key}='{value.replace(chr(39), chr(92) + chr(39))}'")
    return quoted


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
        if isinstance(cause, UserError):
            print(f"error: {cause}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USER_ERROR) from None
        raise
