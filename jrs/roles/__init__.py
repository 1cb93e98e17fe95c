"""The roles chosen at launch: master, node, executor, submit and the small tools.

Each module's `main(args)` is thin: it reads configuration, opens state and
serves, leaving protocol and scheduling logic to I/O-free modules.
"""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(role: str, verbose: bool) -> None:
    """Daemons log one line per event to stderr (init scripts redirect it)."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO if verbose else logging.WARNING,
                        format=f"%(asctime)s jrs {role}[{os.getpid()}] %(message)s")


def default_state(kind: str) -> str:
    """/var/lib/jrs/KIND as root, else ~/.local/state/jrs/KIND."""
    if os.geteuid() == 0:
        return os.path.join("/var/lib/jrs", kind)
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "jrs", kind)
