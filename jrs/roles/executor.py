"""The executor role (not implemented yet: it refuses to start rather than pretend)."""

from __future__ import annotations

from . import unavailable


def main(args: dict) -> int:
    raise unavailable("the executor role")
