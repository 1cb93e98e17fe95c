"""The one error type the submit-language code raises."""

from __future__ import annotations

from typing import Optional

from ..errors import EXIT_USAGE, JrsError


class SubmitError(JrsError):
    """A submit file HTCondor would reject; the message is `file:line: reason`."""

    exit_status = EXIT_USAGE

    def __init__(self, reason: str, path: Optional[str] = None, line: Optional[int] = None):
        self.reason = reason
        self.path = path
        self.line = line
        super().__init__(self._format())

    def _format(self) -> str:
        if self.path and self.line:
            return f"{self.path}:{self.line}: {self.reason}"
        if self.path:
            return f"{self.path}: {self.reason}"
        return self.reason

    def at(self, path: str, line: Optional[int]) -> SubmitError:
        """Attach a location unless one is already known."""
        if self.path is None:
            self.path, self.line = path, line
            self.args = (self._format(),)
        return self
