"""What every entry point shares: user errors become one readable line, not a traceback.

Every exception meant for the user derives from :class:`~src.utils.errors.UserError`."""

from __future__ import annotations

import re
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


def constructor_refusal(error: BaseException) -> str | None:
    """The one line for a constructor that refused its config arguments (a ``ValueError`` or
    ``TypeError`` raised while Hydra instantiated a node: ``scale=5`` on a pixel-shuffle
    network, an unknown upsampler), naming the config key and the class; None for anything
    else."""
    if not isinstance(error, InstantiationException):
        return None
    cause = root_cause(error)
    if not isinstance(cause, ValueError | TypeError):
        return None
    text = str(error)
    key = re.search(r"full_key: (\S+)", text)
    target = re.search(r"Error in call to target '([\w.]+)'", text)
    where = key.group(1) if key else "config"
    name = f" ({target.group(1).rsplit('.', 1)[-1]})" if target else ""
    return f"{where}{name}: {cause}"


def run_or_explain(task: Callable[[], T]) -> T:
    """Run ``task``; a known user error prints ``error: <message>`` and exits with status 2.

    Known: a :class:`UserError`, and a constructor's refusal of its config arguments
    (:func:`constructor_refusal`)."""
    try:
        return task()
    except Exception as error:
        cause = root_cause(error)
        message = str(cause) if isinstance(cause, UserError) else constructor_refusal(error)
        if message is not None:
            print(f"error: {message}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USER_ERROR) from None
        raise
