"""A deterministic simulation of a whole JRS cluster (issue 12 item 5).

The real `Pool`, node core and submitter core, wired by a simulated network,
disk and clock in one process; every random choice from one seeded generator,
so a seed is a permanent reproduction: `python -m tests.sim --seed N --shape S`.
See tests/sim/check.py for the invariants, faults.py for the faults.
"""

from .world import Result, run

__all__ = ["Result", "run"]
