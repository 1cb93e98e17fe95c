"""Cluster shapes: how many nodes, submitters and jobs, and which faults, per seed.

A shape is a recipe; the seed's generator picks the concrete cluster from it
(job counts, durations, exit codes), so different seeds of one shape differ.
`small` and `large` are the CI shapes (the fault mix at full rate); `fair`
has no faults and two backlogged users, for the fair-share check. `backlog` puts
big submits on few wide nodes under every fault kind, so demand counts fall while
backlogged: the submitter's hold-back of small falls (`DEMAND_SLACK`) runs under faults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_FAULTS = ("node-kill", "node-crash", "master-kill", "submit-kill", "reset", "partition",
              "stall", "disk", "ctrl-c")  # ("master-cut", a partition at the master: `revoke`)


@dataclass
class Shape:
    name: str
    nodes: tuple  # slots per node
    submitters: tuple  # (user, jobs_min, jobs_max, priority, start_delay)
    cpus: tuple = (1,)  # request_cpus choices
    duration: tuple = (0.2, 4.0)
    fail_chance: float = 0.15  # exit code != 0
    signal_chance: float = 0.03  # the job dies of a signal on its own
    max_retries: tuple = (None, 0, 1, 2)
    output: tuple = (0, 4 << 20)
    faults: tuple = ALL_FAULTS
    fault_gap: float = 4.0  # mean seconds between faults
    fault_window: float = 40.0  # faults happen in [1, fault_window]
    node_timeout: float = 6.0
    give_up: float = 20.0
    submitter_lease: float = 20.0  # the Pool forgets a submitter gone this long
    retain: float = 7 * 86400.0  # a node keeps results nobody collects this long
    fairness: bool = False
    extra: dict = field(default_factory=dict)


SHAPES = {
    "small": Shape("small", nodes=(2, 2), submitters=(("alice", 2, 6, 0, 0.0),
                                                     ("bob", 1, 5, 0, 0.5))),
    "large": Shape("large", nodes=(4, 2, 3, 1),
                   submitters=(("alice", 5, 14, 0, 0.0), ("bob", 5, 14, 0, 1.0),
                               ("alice", 2, 8, 0, 2.0), ("carol", 1, 6, 0, 3.0)),
                   cpus=(1, 1, 2), fault_window=60.0, fault_gap=3.0),
    # revocations the submitter never hears of (D5's kind): long jobs, and the faults
    # that part a node from the master (its claims revoked with kill, the drop landing
    # once the partition heals) while the submitter misses the node-lost (cut off from
    # the master itself, or killed and resumed)
    "revoke": Shape("revoke", nodes=(2, 2), submitters=(("alice", 2, 5, 0, 0.0),
                                                       ("bob", 2, 5, 0, 0.5)),
                    duration=(4.0, 20.0), faults=("master-cut", "submit-kill", "stall"),
                    fault_gap=3.0),
    # the submitter's demand hold-back under faults: 40-200 short jobs a submit, so a
    # count stays at or above DEMAND_SLACK (jrs/client/core.py) while it falls by one a
    # job start, on few nodes with many slots (many starts per round trip)
    "backlog": Shape("backlog", nodes=(8, 8, 6),
                     submitters=(("alice", 40, 200, 0, 0.0), ("bob", 40, 200, 0, 1.0)),
                     duration=(0.2, 2.0), output=(0, 64 << 10), fault_window=30.0),
    "fair": Shape("fair", nodes=(4, 4), submitters=(("alice", 240, 240, 0, 0.0),
                                                   ("bob", 240, 240, 0, 5.0)),
                  duration=(1.0, 3.0), fail_chance=0.0, signal_chance=0.0,
                  max_retries=(None,), output=(0, 0), faults=(), fairness=True),
    "fair-weighted": Shape("fair-weighted", nodes=(4, 4, 4),
                           submitters=(("alice", 300, 300, 10, 0.0),
                                       ("bob", 200, 200, 0, 5.0)),
                           duration=(1.0, 3.0), fail_chance=0.0, signal_chance=0.0,
                           max_retries=(None,), output=(0, 0), faults=(), fairness=True),
}
