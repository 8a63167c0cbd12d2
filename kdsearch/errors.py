"""User-facing errors: one line that names the problem, no traceback."""

from __future__ import annotations


class KDSearchError(Exception):
    """A problem with the user's input or environment, reported as one line."""


class SpecError(KDSearchError):
    """A spec field is missing, malformed or out of range."""


class DataError(KDSearchError):
    """A dataset is missing, empty, or its columns/labels do not fit the task."""


class ModelError(KDSearchError):
    """A model preset, folder or hub name cannot be resolved."""


class Interrupted(KDSearchError):
    """SIGINT or SIGTERM stopped a search; the line says how to continue it."""

    def __init__(self, signal_number: int | None, message: str) -> None:
        super().__init__(message)
        self.exit_code = 128 + (signal_number or 2)  # as a shell reports a process its signal ended
