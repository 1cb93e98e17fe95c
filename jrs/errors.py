"""Errors a user can cause, and the exit statuses every command shares."""

from __future__ import annotations

EXIT_OK = 0
EXIT_JOBS_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class JrsError(Exception):
    """A user-facing failure: one line for stderr plus the exit status."""

    exit_status = EXIT_USAGE

    def __init__(self, message: str, exit_status: int | None = None) -> None:
        super().__init__(message)
        if exit_status is not None:
            self.exit_status = exit_status


class ConfigError(JrsError):
    """A mistake in the cluster configuration (node.master, node.list, secret)."""


def located(path: str, line: int | None, message: str) -> str:
    """Format `file:line: message` (or `file: message` when no line applies)."""
    return f"{path}:{line}: {message}" if line else f"{path}: {message}"
