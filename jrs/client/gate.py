"""Hold the submitter core's actions until the run's journal is durable.

A fresh run writes its job spool and creates its journal: an fdatasync of each and
an fsync of their directory, 7-15 ms on this project's busy disk, where the build
before the journal carried a session key paid one fdatasync (bench/cluster.py,
one-job latency). Nothing that depends on the journal may happen before it is
durable (a job that ran must be resumable after a power cut), but the master's
first answers do not depend on it. So the runner does that disk work in a thread
while the core starts, and every action passes through this gate until then:

- an action of a `deferred` kind (a journal record, a job event, a progress line:
  local writes) is held;
- one of an `early` kind (a message to the master, a connection to a node) runs at
  once, unless an action of neither kind is held: it overtakes only local writes,
  never a message to a node (nothing the master or a node hears is reordered);
- anything else (a job's run, a message to a node) is held, and so is everything
  after it;
- `open()` runs what is held in the core's order (actions put meanwhile queue
  behind), and from then on every action runs at once.

Why an early message may overtake a held record: until the journal exists, a crash
leaves nothing to resume (the rerun starts afresh, the master drops the dead
session's claims) and no job has run (every run is held), so nothing the master
heard can depend on a record; once the journal is durable, the held records are
appended before any run leaves.
"""

from __future__ import annotations

from typing import Callable, Optional


class Gate:
    def __init__(self, run: Callable[[object], None], early: tuple, deferred: tuple) -> None:
        self._run = run
        self._early = early
        self._deferred = deferred
        self._held: Optional[list] = []
        self._barrier = False  # an action of neither kind is held

    @property
    def is_open(self) -> bool:
        return self._held is None

    def put(self, action: object) -> None:
        if self._held is None or (not self._barrier and isinstance(action, self._early)):
            self._run(action)
            return
        if not isinstance(action, self._deferred):
            self._barrier = True
        self._held.append(action)

    def open(self) -> None:
        held = self._held
        if held is None:
            return
        self._barrier = True  # (an action run here may put more: they go behind the rest)
        while held:
            self._run(held.pop(0))
        self._held = None
