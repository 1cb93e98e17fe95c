"""The simulated clock and event queue: one seeded generator, one heap, no threads.

Everything that happens in a simulation is a callback scheduled at a simulated
time. Ties are broken by insertion order, so a run is a pure function of its
seed. A callback belongs to a process (`Proc`): when that process is killed its
pending callbacks are dropped, and while it is stalled they wait.
"""

from __future__ import annotations

import heapq
import random
from typing import Callable, Optional

_heappush, _heappop = heapq.heappush, heapq.heappop


class Timer:
    __slots__ = ("args", "at", "cancelled", "fn", "gen", "owner")

    def __init__(self, at: float, fn: Callable, args: tuple, owner: Optional[Proc]) -> None:
        self.at = at
        self.fn = fn
        self.args = args
        self.owner = owner
        self.gen = owner.gen if owner is not None else 0
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Sim:
    """The scheduler. `rng` is the only source of randomness of a whole run."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0
        self._heap: list = []
        self._seq = 0
        self.steps = 0
        self.after_step: list = []  # called after every event (invariant checks)

    def at(self, when: float, fn: Callable, *args, owner: Optional[Proc] = None) -> Timer:
        now = self.now
        if when < now:
            when = now
        t = Timer(when, fn, args, owner)
        self._seq = seq = self._seq + 1
        _heappush(self._heap, (when, seq, t))
        return t

    def after(self, delay: float, fn: Callable, *args, owner: Optional[Proc] = None) -> Timer:
        # `at` inlined (two thirds of all events are scheduled through here)
        when = self.now + delay
        if when < self.now:
            when = self.now
        t = Timer(when, fn, args, owner)
        self._seq = seq = self._seq + 1
        _heappush(self._heap, (when, seq, t))
        return t

    def _push(self, t: Timer, when: float) -> None:
        t.at = when
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, t))

    def step(self) -> bool:
        """Run the next event; False when nothing is left."""
        heap = self._heap
        while heap:
            when, _, t = _heappop(heap)
            if t.cancelled:
                continue
            owner = t.owner
            if owner is not None:
                if not owner.alive or owner.gen != t.gen:
                    continue
                if owner.stalled_until > when:
                    self._push(t, owner.stalled_until)
                    continue
            self.now = when
            self.steps += 1
            t.fn(*t.args)
            for check in self.after_step:
                check()
            return True
        return False

    def run_until(self, limit: float, stop: Optional[Callable[[], bool]] = None,
                  max_steps: int = 10_000_000) -> None:
        while self._heap and self.steps < max_steps:
            if self._heap[0][0] > limit:
                self.now = limit
                return
            if not self.step():
                return
            if stop is not None and stop():
                return

    def uniform(self, a: float, b: float) -> float:
        return self.rng.uniform(a, b)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p


class Proc:
    """One simulated process (a role's daemon). Killing it drops its timers and
    connections; a restart is a new Proc built from what the host's disk holds."""

    def __init__(self, sim: Sim, host: object, name: str) -> None:
        self.sim = sim
        self.host = host
        self.name = name
        self.alive = True
        self.gen = 1
        self.stalled_until = 0.0
        self.ends: list = []  # network ends this process holds

    def later(self, delay: float, fn: Callable, *args) -> Timer:
        sim = self.sim
        when = sim.now + delay
        if when < sim.now:
            when = sim.now
        t = Timer(when, fn, args, self)
        sim._seq = seq = sim._seq + 1
        _heappush(sim._heap, (when, seq, t))
        return t

    def stall(self, seconds: float) -> None:
        self.stalled_until = max(self.stalled_until, self.sim.now + seconds)

    def die(self, silent: bool = False) -> None:
        """kill -9: timers gone, connections reset by the kernel. `silent` (the host lost
        power): no kernel is left to reset them; the peers' ends stay half-open."""
        if not self.alive:
            return
        self.alive = False
        for end in list(self.ends):
            if silent:
                end.ghost()
            else:
                end.reset()
        self.ends = []
