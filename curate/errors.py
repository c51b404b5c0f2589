"""Errors that users see. Each names where the problem is, so it can be fixed without a debugger."""

from __future__ import annotations

from pathlib import Path


class CurateError(Exception):
    """Base class for errors the CLI reports as one clean line instead of a traceback."""


class InputError(CurateError):
    """Bad user input: names the file, the line (1-based, or row for columnar files) and the field."""

    def __init__(self, path: str | Path, message: str, *, line: int | None = None, field: str | None = None):
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = message
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")


class ConfigError(CurateError):
    """Invalid configuration: names the file and the setting."""
