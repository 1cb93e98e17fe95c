"""How fast a node reads the messages of its submitter sessions.

An attached session is a secret holder's, and the secret makes its holder an
operator, not the owner of the node's CPU: one session sending `ack`s or unknown
types as fast as it could took 40 % of a node's core (R9). So each session and each
source host (`hosts.host_key`) has a token bucket of messages; a message takes one
token, and a session whose bucket or host is a batch in debt is not read until the
debt is paid (nothing is dropped: the sender waits, as TCP makes it). Data frames of a
transfer are not counted: a run's input and its `run` message are one unit, and the
bytes are bounded by the wire already.

An honest submitter sends a `run` and an `ack` per job and a `kill` per removal: the
rate is ~1,000 jobs a second from one submitter to one node (a node of 64 slots
finishing a job a second on each sees ~130 messages a second); a resume's burst of
acks is what `burst` is for. Flooded, a session costs the node ~10 % of a core.

Pure: the shell gives the time and sleeps for what `charge` returns.
"""

from __future__ import annotations

from typing import Hashable, Optional

RATE = 2000.0  # messages a second, one session
BURST = 10000.0
HOST_RATE = 4000.0  # ... all sessions of one host
HOST_BURST = 20000.0
BATCH = 64.0  # a debt smaller than this is let run on (a wake-up per message costs more)
REFUSED_COST = 4.0  # a frame the wire refuses and answers with an error (R10)
HOSTS_KEPT = 4096  # host buckets past this are pruned of full ones with no session


class _Bucket:
    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.last = rate, burst, burst, now

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take `cost` tokens; how long until the debt is paid (0.0 within a batch)."""
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
        self.tokens -= cost
        return -self.tokens / self.rate if self.tokens < -BATCH else 0.0


class MessageBudget:
    def __init__(self, rate: float = RATE, burst: float = BURST,
                 host_rate: float = HOST_RATE, host_burst: float = HOST_BURST) -> None:
        self.rate, self.burst = rate, burst
        self.host_rate, self.host_burst = host_rate, host_burst
        self._sessions: dict = {}  # key -> (host, bucket)
        self._hosts: dict = {}  # host -> [bucket, sessions open]
        self.waited = 0  # times a session was made to wait (for tests and status)

    def open(self, key: Hashable, host: str, now: float) -> None:
        self._sessions[key] = (host, _Bucket(self.rate, self.burst, now))
        entry = self._hosts.get(host)
        if entry is None:
            if len(self._hosts) >= HOSTS_KEPT:
                self._prune(now)
            self._hosts[host] = [_Bucket(self.host_rate, self.host_burst, now), 1]
        else:
            entry[1] += 1

    def close(self, key: Hashable) -> None:
        """The host's bucket stays (a host reconnecting gets no fresh burst)."""
        got = self._sessions.pop(key, None)
        if got is not None:
            self._hosts[got[0]][1] -= 1

    def _prune(self, now: float) -> None:
        """Hosts with no session whose bucket has refilled: forgetting them changes
        nothing (a new bucket is a full one)."""
        for host, (b, n) in list(self._hosts.items()):
            if n <= 0 and b.tokens + (now - b.last) * b.rate >= b.burst:
                del self._hosts[host]

    def charge(self, key: Hashable, now: float, cost: float = 1.0) -> float:
        """One message of session `key` read at `now` (`cost` messages' worth: a frame
        the wire refused costs REFUSED_COST, it is answered): seconds the shell waits
        before it reads the next one (0.0: go on)."""
        got: Optional[tuple] = self._sessions.get(key)
        if got is None:
            return 0.0
        host, bucket = got
        wait = max(bucket.take(now, cost), self._hosts[host][0].take(now, cost))
        if wait > 0.0:
            self.waited += 1
        return wait
