"""One exception type for everything a user can get wrong.

The CLI and the TUI turn a :class:`UserError` into one clear line (what went wrong, what to do)
instead of a traceback. Engine code raises it wherever bad input is detected.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; ``str(error)`` is the one-line message shown to them."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} — {hint}" if hint else message)


class DataError(UserError):
    """The training text could not be found, fetched or used."""


class CheckpointError(UserError):
    """A checkpoint file is missing, damaged, unsafe or does not fit."""


class ConfigError(UserError):
    """Model, training or sampling options that cannot work together."""


def describe(error: BaseException) -> str:
    """One line for an error: a user's problem as it is worded, anything else with its type."""
    if isinstance(error, UserError):
        return str(error)
    first = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
