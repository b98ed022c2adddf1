"""Errors the user can fix: printed as one line (`error: …`), never as a traceback."""
from __future__ import annotations


class UserError(Exception):
    """`code` is the process exit code: 2 for usage and unusable input, 1 for partial input."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code
