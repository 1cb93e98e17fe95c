"""The roles chosen at launch: master, node, executor, submit and the small tools.

Each module's `main(args)` is thin: it reads configuration, opens state and
serves, leaving protocol and scheduling logic to I/O-free modules.
"""

from __future__ import annotations

from ..errors import EXIT_UNAVAILABLE, JrsError


def unavailable(what: str) -> JrsError:
    """The honest answer of a role this build does not implement yet."""
    return JrsError(f"{what} is not available in this version of jrs yet; "
                    "`jrs submit --dry-run FILE` shows what a submit file expands to",
                    EXIT_UNAVAILABLE)
