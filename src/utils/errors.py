"""The base class of errors whose message is meant for the user as it stands."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (a bad option, a missing input); entry points print
    ``error: <message>`` and exit with status 2 instead of a traceback."""
