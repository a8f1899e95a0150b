"""The one exception type the CLI turns into a one-line error and an exit code."""

from __future__ import annotations


class KBError(Exception):
    """A problem caused by the user's input or environment, reported as one line.

    `code` follows the CLI convention: 1 when a check found problems, 2 for bad usage or input.
    """

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message
