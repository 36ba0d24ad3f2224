"""The one error type for mistakes a user can cause (bad file, bad name, bad key).

The CLI prints ``str(err)`` on one line and exits 2. Bugs are not SafealignErrors and keep their tracebacks.
"""

from __future__ import annotations


class SafealignError(Exception):
    """A user-caused error. ``file``, ``line`` and ``field`` locate it when known."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = None if file is None else str(file)
        self.line = line
        self.field = field

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line is not None else "") + ": "
        elif self.line is not None:
            where = f"line {self.line}: "
        fld = f"field '{self.field}': " if self.field else ""
        return " ".join(f"{where}{fld}{self.message}".split())  # always one line
