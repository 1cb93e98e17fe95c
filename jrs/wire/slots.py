"""Slots for connections in a stage a peer can hold for free: the policy, pure.

A server's connections pass two such stages before they cost a peer anything:
their handshake (anyone can open one), and, once authenticated, the wait for
their first message (the hello that makes them a session the daemon's own
limits count: any secret holder can open many, never say hello, and hold each
until the first-message deadline). `Slots` bounds one stage: at most `per_host`
connections of one host (`hosts.host_key`) and `total` in all. A newcomer that
finds them full is always let in; the connection idle the longest (of its host
when its host is full, else of all) is given up to make room. So a flood can
only push out its own oldest, an honest client, which is through the stage in
milliseconds, is pushed out only by more than `total` newer arrivals or touches
within those milliseconds (R9: in the handshake stage bytes touch, so a flood
dripping on `total` connections faster than an honest handshake completes can push
one out; it costs the flood a packet per connection every few milliseconds), and
a client whose handshake was given up tries again (see `aio.connect`).

The shell (`aio.Server`) calls `admit` for each new connection and closes what
it returns, `touch` when a connection shows activity (the handshake stage: bytes
of a handshake; the first-message stage does not touch, so dripping a frame
buys no time), `leave` when it is through or gone. Keys are opaque. No sockets,
clocks or I/O here: the order is the order of the calls.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, Optional


def within_files(total: int, nofile: int) -> int:
    """The overall bound of a stage for a process allowed `nofile` open files: at most
    a quarter of them (two stages take half; sessions, jobs and state files keep the
    rest), else a flood of connections within the bound runs the daemon out of file
    descriptors, and then nobody is accepted at all."""
    return max(1, min(total, nofile // 4))


class Slots:
    """At most `per_host` keys per host and `total` in all, the least recently
    admitted or touched given up first."""

    def __init__(self, per_host: int, total: int) -> None:
        if per_host < 1 or total < 1:
            raise ValueError(f"slots need at least 1 per host and in all, not "
                             f"{per_host} and {total}")
        self.per_host = per_host
        self.total = total
        self._all: OrderedDict = OrderedDict()  # key -> host, least recent first
        self._by_host: dict = {}  # host -> OrderedDict of its keys, same order
        self.given_up = 0  # keys `admit` handed back to be closed, in all

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._all

    def of(self, host: str) -> int:
        """Keys of `host` holding a slot now."""
        mine = self._by_host.get(host)
        return 0 if mine is None else len(mine)

    def admit(self, key: Hashable, host: str) -> list:
        """`key` (of `host`) takes a slot; returns [(victim, why)], the key given up to
        make room if there was none (its host's oldest when its host is full, which
        also makes room in all; else the oldest of all), or []. A victim no longer
        holds a slot; the shell closes it."""
        out = []
        mine = self._by_host.get(host)
        if mine is not None and len(mine) >= self.per_host:
            victim = next(iter(mine))
            self.leave(victim)
            out.append((victim, f"more than {self.per_host} from one host"))
        if len(self._all) >= self.total:
            victim = next(iter(self._all))
            self.leave(victim)
            out.append((victim, f"more than {self.total} in all"))
        self._all[key] = host
        self._by_host.setdefault(host, OrderedDict())[key] = None
        self.given_up += len(out)
        return out

    def touch(self, key: Hashable) -> None:
        """`key` showed activity: it is now the least idle (given up last)."""
        host = self._all.get(key)
        if host is None:
            return
        self._all.move_to_end(key)
        self._by_host[host].move_to_end(key)

    def leave(self, key: Hashable) -> None:
        """`key` is through the stage, or gone (harmless if it held no slot)."""
        host = self._all.pop(key, None)
        if host is None:
            return
        mine = self._by_host[host]
        del mine[key]
        if not mine:
            del self._by_host[host]


class Counts:
    """At most `per_host` of one host and `total` in all, for connections past both
    stages above: established sessions doing work, held as long as their peer likes
    (a node's submitter sessions have no idle deadline: a job may run for days). Here a
    newcomer past a bound is refused and what is held stays: closing the oldest would
    let a flood end honest sessions. Without it a secret holder's sessions that had
    each sent one message (an `attach` with a token of its own) took every descriptor
    of a node. `per_host` is at most a quarter of `total`, so one host alone never
    fills it."""

    def __init__(self, per_host: int, total: int) -> None:
        if per_host < 1 or total < 1:
            raise ValueError(f"counts need at least 1 per host and in all, not "
                             f"{per_host} and {total}")
        self.total = total
        self.per_host = max(1, min(per_host, total // 4))
        self._by_host: dict = {}
        self._all = 0
        self.refused = 0

    def __len__(self) -> int:
        return self._all

    def of(self, host: str) -> int:
        return self._by_host.get(host, 0)

    def admit(self, host: str) -> Optional[str]:
        """None: one more of `host` is counted (`leave` it later). Else why not (the
        shell says so to the peer and closes; nothing is counted)."""
        n = self._by_host.get(host, 0)
        if n >= self.per_host:
            why = (f"more than {self.per_host} established connections from one host "
                   f"({host})")
        elif self._all >= self.total:
            why = f"more than {self.total} established connections in all"
        else:
            self._by_host[host] = n + 1
            self._all += 1
            return None
        self.refused += 1
        return why

    def leave(self, host: str) -> None:
        """One connection of `host` that `admit` counted is gone."""
        n = self._by_host.get(host, 0)
        if n <= 0:
            return
        self._all -= 1
        if n == 1:
            del self._by_host[host]
        else:
            self._by_host[host] = n - 1


class HostBytes:
    """Bytes each host may have read before its connections' first messages: a token
    bucket per host (`burst` bytes, refilled at `rate` a second), charged a read at a
    time before the read is decoded (R11: JSON of many small containers costs ~0.12 us
    a byte to decode, and before its first message a channel was charged to no budget:
    one connection's 16 frames of 16 MiB held a master's loop for 14.6 s). `take` says
    how long the read waits; the debt is kept within `burst`, so no wait is longer
    than burst / rate (a host that flooded once is not locked out for long after)
    while what is decoded stays at `rate` and the reads the host's waiting
    connections hold (`Slots` bounds those). Pure: the order is the order of the calls."""

    def __init__(self, rate: float, burst: float, kept: int = 4096,
                 most_wait: Optional[float] = None) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"a byte budget needs a positive rate and burst, not {rate} "
                             f"and {burst}")
        self.rate, self.burst, self.kept = float(rate), float(burst), kept
        # the debt is kept within this many seconds' worth too (R12: a wait of 32 s,
        # the burst's, outlasted the 30 s first-message deadline it was spent within)
        self.floor = -min(self.burst, self.rate * most_wait) if most_wait else -self.burst
        self._hosts: dict = {}  # host -> [tokens, when they were counted]

    def __len__(self) -> int:
        return len(self._hosts)

    def take(self, host: str, nbytes: int, now: float,
             refuse_past: Optional[float] = None) -> float:
        """A read of `nbytes` of `host`'s at `now`: seconds it waits (0.0: decode it now).
        `refuse_past`: a wait longer than this is not taken (nothing is charged: what
        the caller refuses costs its host no more wait), only said."""
        got = self._hosts.get(host)
        if got is None:
            if len(self._hosts) >= self.kept:
                self._prune(now)
            got = self._hosts[host] = [self.burst, now]
        elif now > got[1]:
            got[0] = min(self.burst, got[0] + (now - got[1]) * self.rate)
            got[1] = now
        if refuse_past is not None and nbytes - got[0] > refuse_past * self.rate:
            return (nbytes - got[0]) / self.rate
        got[0] = max(got[0] - nbytes, self.floor)
        return -got[0] / self.rate if got[0] < 0 else 0.0

    def _prune(self, now: float) -> None:
        """Forget the hosts whose bucket has refilled (a new one is a full one)."""
        for host, (tokens, then) in list(self._hosts.items()):
            if tokens + (now - then) * self.rate >= self.burst:
                del self._hosts[host]
