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
