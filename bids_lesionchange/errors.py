"""Errors that carry what a user needs: the file, the step, and how to fix it."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """An input that cannot be processed, named with the file and the step where it failed.

    ``str(err)`` reads as one sentence: ``<step>: <file>: <message>``.
    """

    def __init__(self, path: str | Path | None, step: str, message: str):
        self.path = None if path is None else Path(path)
        self.step = step
        self.message = message
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{step}: {where}{message}")

    def __reduce__(self):
        # rebuilt from its parts, so that it crosses a process boundary (the isolated prediction
        # process, Nipype's workers) as itself and not as a TypeError
        return type(self), (self.path, self.step, self.message)
