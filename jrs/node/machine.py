"""Facts about this machine that a node offers (its memory), read from /proc.

Here, not in `roles/node.py`, so that `client/local.py` (the one-process cluster of
`submit --local`) depends on the node package, not on a role's entry point.
"""

from __future__ import annotations


def mem_total_mb() -> int:
    """The machine's memory in MiB (1024 when /proc/meminfo cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 1024
