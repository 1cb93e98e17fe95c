"""What one source may make the master hold and spend (issue 13): the policy, pure.

The Pool bounds what all submitters together hold (65,536 requests) and what their
requirements cost per round; ids and session tokens are free to a secret holder, so
without this one peer could take that whole cap and have every honest demand refused,
or send demand after demand, each a JSON decode and a check of up to a few MiB. The
master's shell asks a `Limiter` before it lets a session or a demand in:

- **sessions per host**: at most `sessions_per_host` submitter sessions open at once
  from one source address (a second hello of a live submitter id replaces its session
  and is not counted twice);
- **requests per session**: a demand may list at most `requests_per_session` request
  entries (entries, not job counts: one entry asking for a million jobs is one);
- **requests per host**: the sessions of one source address may hold at most
  `requests_per_host` entries in all, a quarter of the Pool's cap by default, so one
  host alone cannot fill it;
- **demand rate**: each session has a token bucket of `demand_burst` bytes refilled at
  `demand_rate` bytes a second; a demand costs its frame's size plus `message_cost`.
  A demand that finds the bucket empty is not dropped: it is kept as the session's
  newest demand, replacing (coalescing) any older one kept, and handed back by `due`
  once the bucket has refilled. Demands are whole states (the submitter's counts of
  the moment), so the newest one alone is the update; nothing is lost. A kept frame
  that a newer one replaces is charged nothing: the shell never decodes it.

Over a count limit the shell sends the peer an `error` (code "limit", the text from
here, naming the bound) and applies nothing of that session or demand. Everything
here takes events and an injected clock value and returns decisions: no sockets,
files or clock reads. Keys of sessions are opaque (the shell uses its channels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Optional

from ..errors import ConfigError

# name -> (environment variable, default, kind); the defaults and why:
# - 64 sessions: a busy shared submit host runs a few dozen `jrs submit` at once;
# - 1,024 entries: what one demand may carry anyway (payload.MAX_REQUESTS); an honest
#   submitter lists one entry per distinct (cpus, memory, gpus, requirements) of its
#   idle jobs, usually one;
# - 16,384 entries per host: a quarter of the Pool's 65,536, so at least four hosts
#   are needed to fill it, and 16 sessions of a host may each send the largest demand;
# - 512 KiB/s, bursts of 4 MiB: an honest `jrs submit` (400 short jobs on 8 slots)
#   sent at most 26 demands a second of a few hundred bytes each, under 1/20 of the
#   rate; a demand of the largest size the Pool accepts (1 MiB of text) passes at
#   once, and four in a row. The costliest bytes are many small entries: 1,024 of them
#   (~130 KB) take ~50 ms to decode and check on a loaded 2-core machine, so one
#   session over budget costs at most ~1/5 of a core, where unbounded it took all.
#   A frame larger than what is left is a debt: the wire's largest (16 MiB) keeps
#   that session's next demand ~25 s.
# - 512 bytes a message: bounds the rate of tiny demands too (each has a fixed cost).
SETTINGS: dict = {
    "sessions_per_host": ("JRS_MASTER_SESSIONS_PER_HOST", 64, int),
    "requests_per_session": ("JRS_MASTER_REQUESTS_PER_SESSION", 1024, int),
    "requests_per_host": ("JRS_MASTER_REQUESTS_PER_HOST", 16_384, int),
    "demand_rate": ("JRS_MASTER_DEMAND_RATE", 512 * 1024, float),
    "demand_burst": ("JRS_MASTER_DEMAND_BURST", 4 << 20, float),
    "message_cost": ("JRS_MASTER_DEMAND_MESSAGE_COST", 512, int),
}


@dataclass(frozen=True)
class Limits:
    """The bounds (see the module docstring); `from_env` reads the JRS_MASTER_* knobs."""

    sessions_per_host: int = SETTINGS["sessions_per_host"][1]
    requests_per_session: int = SETTINGS["requests_per_session"][1]
    requests_per_host: int = SETTINGS["requests_per_host"][1]
    demand_rate: float = SETTINGS["demand_rate"][1]
    demand_burst: float = SETTINGS["demand_burst"][1]
    message_cost: int = SETTINGS["message_cost"][1]

    def __post_init__(self) -> None:
        for name, (var, _default, _kind) in SETTINGS.items():
            value = getattr(self, name)
            low = 0 if name == "message_cost" else 1
            if isinstance(value, bool) or not value >= low:
                raise ConfigError(f"{var}: want a number of at least {low}, not {value!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Limits:
        """The limits with each JRS_MASTER_* variable set in `env` (a mapping, not read
        here from the process) in place of its default; a bad value is a ConfigError
        naming the variable."""
        values: dict = {}
        for name, (var, _default, kind) in SETTINGS.items():
            text = env.get(var)
            if text is None or text == "":
                continue
            try:
                values[name] = kind(text)
            except ValueError:
                raise ConfigError(f"{var}: want a number, not {text[:40]!r}")
        return cls(**values)


class _Session:
    __slots__ = ("applied", "bytes", "coalesced", "deferred", "held", "host", "kept",
                 "kept_cost", "last", "tokens")

    def __init__(self, host: str, tokens: float, now: float, held: int) -> None:
        self.host = host
        self.held = held  # request entries of its last applied demand
        self.tokens = tokens  # may go below 0: a demand larger than what is left is a debt
        self.last = now
        self.kept: Any = None  # the newest demand over budget, waiting for tokens
        self.kept_cost = 0.0
        self.applied = 0
        self.deferred = 0  # demands kept (each kept demand is applied or replaced)
        self.coalesced = 0  # kept demands a newer one replaced (never applied)
        self.bytes = 0


class Limiter:
    """The master's per-source bounds: sessions, requests held, demand rate."""

    def __init__(self, limits: Optional[Limits] = None) -> None:
        self.limits = limits or Limits()
        self._sessions: dict = {}
        self._host_sessions: dict = {}  # host -> sessions open
        self._host_held: dict = {}  # host -> request entries held by its sessions
        self._waiting: set = set()  # keys of sessions with a kept demand

    # ------------------------------------------------------------ sessions

    def session_refusal(self, host: str, replaces: Hashable = None) -> Optional[str]:
        """Why a new submitter session from `host` may not open (None: it may).
        `replaces`: the live session of the same submitter id, which the new one takes
        over (not counted when it is from the same host)."""
        n = self._host_sessions.get(host, 0)
        old = self._sessions.get(replaces) if replaces is not None else None
        if old is not None and old.host == host:
            n -= 1
        most = self.limits.sessions_per_host
        if n >= most:
            return (f"at most {most} submitter sessions from one host "
                    f"({host} has {n} open; JRS_MASTER_SESSIONS_PER_HOST)")
        return None

    def open_session(self, key: Hashable, host: str, now: float,
                     replaces: Hashable = None) -> None:
        """A session the shell let in (after `session_refusal` said None and the Pool
        took its hello). The requests `replaces` held are now the new session's: the
        Pool keeps a submitter's requests across a replaced session."""
        held = 0
        old = self._sessions.get(replaces) if replaces is not None else None
        if old is not None:
            held = old.held
            self.close_session(replaces)
        if key in self._sessions:
            self.close_session(key)
        self._sessions[key] = _Session(host, self.limits.demand_burst, now, held)
        self._host_sessions[host] = self._host_sessions.get(host, 0) + 1
        self._host_held[host] = self._host_held.get(host, 0) + held

    def close_session(self, key: Hashable) -> Optional[dict]:
        """The session ended (or was replaced): its count, its requests and any kept
        demand go. Returns its figures (`stats`), None if it was not open; closing
        twice is harmless."""
        s = self._sessions.pop(key, None)
        if s is None:
            return None
        self._waiting.discard(key)
        for book, amount in ((self._host_sessions, 1), (self._host_held, s.held)):
            left = book.get(s.host, 0) - amount
            if left > 0:
                book[s.host] = left
            else:
                book.pop(s.host, None)
        return self._stats(s)

    def sessions_of(self, host: str) -> int:
        return self._host_sessions.get(host, 0)

    def held_by(self, host: str) -> int:
        return self._host_held.get(host, 0)

    # ------------------------------------------------------------ requests held

    def demand_refusal(self, key: Hashable, entries: int) -> Optional[str]:
        """Why a demand of `entries` request entries may not be applied for session
        `key` (None: it may). Nothing changes here; see `demand_applied`."""
        s = self._sessions[key]
        most = self.limits.requests_per_session
        if entries > most:
            return (f"demand refused: at most {most} requests per submitter session "
                    f"(this one lists {entries}; JRS_MASTER_REQUESTS_PER_SESSION)")
        total = self._host_held.get(s.host, 0) - s.held + entries
        most = self.limits.requests_per_host
        if total > most:
            return (f"demand refused: at most {most} requests held by the submitter "
                    f"sessions of one host ({s.host} would hold {total}; "
                    "JRS_MASTER_REQUESTS_PER_HOST)")
        return None

    def demand_applied(self, key: Hashable, entries: int) -> None:
        """The Pool took this demand: the session now holds `entries` entries."""
        s = self._sessions[key]
        self._host_held[s.host] = self._host_held.get(s.host, 0) - s.held + entries
        s.held = entries
        s.applied += 1

    # ------------------------------------------------------------ demand rate

    def _refill(self, s: _Session, now: float) -> None:
        if now > s.last:
            s.tokens = min(self.limits.demand_burst,
                           s.tokens + (now - s.last) * self.limits.demand_rate)
            s.last = now

    def demand_frame(self, key: Hashable, size: int, frame: Any, now: float) -> bool:
        """A demand of `size` bytes came on session `key`. True: apply it now (it has
        been charged). False: it is kept as the session's newest demand (replacing an
        older kept one, which is then never applied) until `due` hands it back."""
        s = self._sessions[key]
        self._refill(s, now)
        s.bytes += size
        cost = float(size + self.limits.message_cost)
        if s.kept is not None:  # order: a newer demand never overtakes a kept one
            s.kept, s.kept_cost = frame, cost
            s.coalesced += 1
            return False
        if s.tokens >= 0:
            s.tokens -= cost
            return True
        s.kept, s.kept_cost = frame, cost
        s.deferred += 1
        self._waiting.add(key)
        return False

    def due_at(self, key: Hashable) -> Optional[float]:
        """When the kept demand of `key` may be applied (None: none is kept)."""
        s = self._sessions.get(key)
        if s is None or s.kept is None:
            return None
        return s.last + max(0.0, -s.tokens) / self.limits.demand_rate

    def next_due(self) -> Optional[float]:
        """The earliest `due_at` of all sessions (None: no demand is kept)."""
        times = [self.due_at(k) for k in self._waiting]
        return min((t for t in times if t is not None), default=None)

    def due(self, now: float) -> list:
        """[(key, frame)] of the kept demands whose bucket has refilled by `now`, each
        charged and no longer kept: the shell applies them now."""
        out = []
        for key in sorted(self._waiting, key=lambda k: self.due_at(k) or 0.0):
            at = self.due_at(key)
            if at is None or at > now:
                continue
            s = self._sessions[key]
            self._refill(s, now)
            s.tokens = max(s.tokens, 0.0) - s.kept_cost  # (rounding: due means refilled)
            out.append((key, s.kept))
            s.kept, s.kept_cost = None, 0.0
        for key, _ in out:
            self._waiting.discard(key)
        return out

    def kept(self, key: Hashable) -> Any:
        """The demand kept for `key` (None: none)."""
        s = self._sessions.get(key)
        return None if s is None else s.kept

    # ------------------------------------------------------------ figures

    def stats(self, key: Hashable) -> Optional[dict]:
        s = self._sessions.get(key)
        return None if s is None else self._stats(s)

    @staticmethod
    def _stats(s: _Session) -> dict:
        return {"host": s.host, "held": s.held, "applied": s.applied,
                "deferred": s.deferred, "coalesced": s.coalesced, "bytes": s.bytes}
