"""The one error type CLI commands raise; ``main`` prints it as a single line."""

from __future__ import annotations


class CliError(Exception):
    """A failure to report to the user as ``error: <message>`` with a non-zero exit code."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def one_line(text: str) -> str:
    """``text`` with its lines joined, so an error never spans several terminal lines."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())
