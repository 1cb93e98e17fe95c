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
  `demand_rate` bytes a second; a demand costs its frame's size plus `message_cost`,
  and once decoded `entry_cost` more per request entry (an entry costs the master as
  much to check as kilobytes of text: bytes alone let one session take a whole core).
  The sessions of one host share a second bucket (`host_demand_burst`,
  `host_demand_rate`), which outlives them: many sessions, or a session closed and
  opened again for a fresh bucket, get one host no more than that.
  A demand that finds a bucket empty is not dropped: it is kept as the session's
  newest demand, replacing (coalescing) any older one kept, and handed back by `due`
  once the bucket has refilled. Demands are whole states (the submitter's counts of
  the moment), so the newest one alone is the update; nothing is lost. A kept frame
  that a newer one replaces is charged nothing: the shell never decodes it.
- **other messages** (`progress`, `release`, `new-cluster`, `removed`, `error`) are
  charged to the same buckets once decoded: their frame's size plus `message_cost`,
  and `progress_entry_cost` per cluster entry of a `progress`. They cannot be
  coalesced (each release names its own claim), so one that finds a bucket in debt,
  or its session with a demand kept (which goes first: order), waits: `message_wait`
  says until when, and the shell reads nothing more of that session meanwhile. Data
  frames (no honest peer sends the master any) cost as much each, and their bytes.

- **node sessions** (`NodeBudget`): a connection playing the node role, once its
  `node-hello` named a node of node.list that has no live session, is a secret
  holder's like any other, and nothing bounded it: one impostor session sending
  `claim-ok`s, pings, reports of 4,096 claims, frames the wire refuses or 1-byte data
  frames as fast as it could took 82-100 % of the master's core. Every frame of a node
  session, its hello included, is now charged to a bucket of its own and one of its
  host (`node_burst`, `node_rate`; `host_node_burst`, `host_node_rate`): its bytes
  plus `node_message_cost`, and `node_claim_cost` per claim entry it lists (a report's
  or a hello's), data frames a message's worth each plus their bytes. A session in
  debt is not read until a batch's worth is back, as above; nothing is dropped.

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
#   A frame larger than what is left is a debt: the largest kept (2.5 MiB, the
#   master's MAX_DEMAND_FRAME; the wire's 16 MiB is refused) keeps that session's
#   next demand ~5 s.
# - 2 MiB/s, bursts of 8 MiB for all sessions of a host: four sessions' worth, ~1/6 of
#   a loaded core at the costliest; without it 64 sessions had 64 budgets.
# - 512 bytes a message: bounds the rate of tiny demands too (each has a fixed cost);
# - 2,048 bytes an entry: measured, one entry (its decode, schema and payload checks and
#   the Pool's books) costs the master ~50 us unloaded, 150 us at load 6 on 2 cores, as
#   much as ~8 KB of plain text. Charged by bytes alone, 84 KB demands of 1,024 entries
#   each took a whole core within the byte budget; so a session's demands cost at most
#   ~256 entries a second, ~4 % of a core loaded, and an honest one-entry demand ~3 KB.
# - 256 bytes a progress cluster entry: measured, decoding and checking one costs ~6 us
#   (a 1,000-entry progress, 61 KB, took 8 ms at load 5.5), ~1/8 of a demand entry; an
#   honest submitter sends one progress a second with one entry (~860 bytes of budget)
#   and a release per claim it gives back through the master (~600 bytes each).
# - node sessions, 4 MiB/s after bursts of 16 MiB (8 MiB/s, 32 MiB for all node sessions
#   of one host: a few nodes on one machine, or an impostor taking the names of several
#   nodes that are down), 512 bytes a message and 64 a claim entry. What an honest node
#   sends (jrs/node/core.py, daemon.py): a `node-report` a second listing its claims
#   (~36 bytes each, at most one per slot), a `claim-ok` or `claim-refused` per offer,
#   a `claim-released` per claim dropped, a `ping` back from a stop, a `pong` per ping
#   of ours. The busiest honest node we size for has 1,000 slots running 1 s jobs,
#   each on a claim of its own: 1,000 offers and 1,000 releases a second, ~90 bytes
#   each, ~1.2 MB/s of budget, and its report ~100 KB: under a third of the rate, and
#   the burst takes ~28,000 such messages at once (a node's hello listing 4,096 claims,
#   ~1 MB, ~1/16 of it). Measured on the master (unloaded): a `claim-ok` it answers
#   ~16 us, a frame the wire refuses ~11 us, a 1-byte data frame ~3 us, a claim entry
#   of a report ~0.75 us (a 4,096-claim report, 150 KB, ~3 ms): so 64 bytes an entry
#   (~1/8 of a message, ~3/4 of its bytes), and flooded at the rate a session costs
#   ~7,000 small messages a second (~11 % of a core unloaded), where unbounded it took
#   the whole core.
# - a session opened costs more than its hello's bytes: 64 KiB of the host's demand
#   budget for a submitter's, 256 KiB of its node budget for a node's (measured, a
#   submitter session that says hello and closes costs the master ~0.8 ms with its
#   handshake, a node's more: the Pool takes and drops the node). Charged as bytes
#   alone, a host opening and closing sessions as fast as it could took 67-76 % of
#   the master's core (R12); now at most 32 (and 32 node sessions) a second after a
#   burst of 128, ~3 %. An honest submitter opens one, and one per reconnect.
# - a tool's connection (`jrs status`, `q`, `rm`) costs 64 KiB plus 256 bytes per
#   node, submitter or cluster its answer lists (or id it removes), charged to the
#   host's demand budget, and waits like a session while the host is in debt: a
#   status of 1,000 nodes is built and sent in ~10 ms, and nothing bounded them.
SETTINGS: dict = {
    "sessions_per_host": ("JRS_MASTER_SESSIONS_PER_HOST", 64, int),
    "requests_per_session": ("JRS_MASTER_REQUESTS_PER_SESSION", 1024, int),
    "requests_per_host": ("JRS_MASTER_REQUESTS_PER_HOST", 16_384, int),
    "demand_rate": ("JRS_MASTER_DEMAND_RATE", 512 * 1024, float),
    "demand_burst": ("JRS_MASTER_DEMAND_BURST", 4 << 20, float),
    "message_cost": ("JRS_MASTER_DEMAND_MESSAGE_COST", 512, int),
    "entry_cost": ("JRS_MASTER_DEMAND_ENTRY_COST", 2048, int),
    "host_demand_rate": ("JRS_MASTER_HOST_DEMAND_RATE", 2 << 20, float),
    "host_demand_burst": ("JRS_MASTER_HOST_DEMAND_BURST", 8 << 20, float),
    "progress_entry_cost": ("JRS_MASTER_PROGRESS_ENTRY_COST", 256, int),
    "node_rate": ("JRS_MASTER_NODE_RATE", 4 << 20, float),
    "node_burst": ("JRS_MASTER_NODE_BURST", 16 << 20, float),
    "host_node_rate": ("JRS_MASTER_HOST_NODE_RATE", 8 << 20, float),
    "host_node_burst": ("JRS_MASTER_HOST_NODE_BURST", 32 << 20, float),
    "node_message_cost": ("JRS_MASTER_NODE_MESSAGE_COST", 512, int),
    "node_claim_cost": ("JRS_MASTER_NODE_CLAIM_COST", 64, int),
    "session_cost": ("JRS_MASTER_SESSION_COST", 64 * 1024, int),
    "node_session_cost": ("JRS_MASTER_NODE_SESSION_COST", 256 * 1024, int),
    "tool_cost": ("JRS_MASTER_TOOL_COST", 64 * 1024, int),
    "tool_entry_cost": ("JRS_MASTER_TOOL_ENTRY_COST", 256, int),
}
_COSTS = ("message_cost", "entry_cost", "progress_entry_cost", "node_message_cost",
          "node_claim_cost", "session_cost", "node_session_cost", "tool_cost",
          "tool_entry_cost")  # may be 0 (the others at least 1)
MAX_HOSTS = 4096  # host buckets kept; past it those of hosts without sessions, full first
SLACK = 1e-6  # seconds: a bucket this close to refilled is refilled (rounding, no re-wait)
# bytes of budget a message waiting for a bucket in debt waits to see back (at most the
# burst): those after it then go without a wait each, at the same rate
BATCH = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """The bounds (see the module docstring); `from_env` reads the JRS_MASTER_* knobs."""

    sessions_per_host: int = SETTINGS["sessions_per_host"][1]
    requests_per_session: int = SETTINGS["requests_per_session"][1]
    requests_per_host: int = SETTINGS["requests_per_host"][1]
    demand_rate: float = SETTINGS["demand_rate"][1]
    demand_burst: float = SETTINGS["demand_burst"][1]
    message_cost: int = SETTINGS["message_cost"][1]
    entry_cost: int = SETTINGS["entry_cost"][1]
    host_demand_rate: float = SETTINGS["host_demand_rate"][1]
    host_demand_burst: float = SETTINGS["host_demand_burst"][1]
    progress_entry_cost: int = SETTINGS["progress_entry_cost"][1]
    node_rate: float = SETTINGS["node_rate"][1]
    node_burst: float = SETTINGS["node_burst"][1]
    host_node_rate: float = SETTINGS["host_node_rate"][1]
    host_node_burst: float = SETTINGS["host_node_burst"][1]
    node_message_cost: int = SETTINGS["node_message_cost"][1]
    node_claim_cost: int = SETTINGS["node_claim_cost"][1]
    session_cost: int = SETTINGS["session_cost"][1]
    node_session_cost: int = SETTINGS["node_session_cost"][1]
    tool_cost: int = SETTINGS["tool_cost"][1]
    tool_entry_cost: int = SETTINGS["tool_entry_cost"][1]

    def __post_init__(self) -> None:
        for name, (var, _default, _kind) in SETTINGS.items():
            value = getattr(self, name)
            low = 0 if name in _COSTS else 1
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


class _Bucket:
    """Tokens refilled at `rate` a second up to `burst`; below 0 is a debt to wait out."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.last = now

    def refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def ready_at(self) -> float:
        """When the tokens are back to 0 (now, or the last refill, if they are)."""
        return self.last + max(0.0, -self.tokens) / self.rate

    def full_at(self) -> float:
        return self.last + max(0.0, self.burst - self.tokens) / self.rate


def _batch_back(buckets: tuple) -> float:
    """When each of `buckets` (refilled) has a batch's worth (BATCH, at most its burst)
    back: a session in debt waits that long, then reads a batch without a wait each
    (a wake-up per message cost ~100 us)."""
    return max(b.last + (min(BATCH, b.burst) - b.tokens) / b.rate for b in buckets)


def _host_owed(buckets: dict, host: str, now: float) -> Optional[float]:
    """When `host`'s bucket in `buckets` is out of debt, if it is in debt (None: it
    is not, or it has no bucket): see `Limiter.host_owed`."""
    b = buckets.get(host)
    if b is None:
        return None
    b.refill(now)
    if b.tokens >= 0:
        return None
    at = b.ready_at()  # (not a batch's worth: a new session's hello waits no longer)
    return at if at > now + SLACK else None


def _forget_idle(buckets: dict, open_hosts: Mapping) -> None:
    """Make room for one more host bucket: drop those of hosts without sessions (not
    in `open_hosts`), the ones full first (they hold nothing: a new bucket is a full
    one), as many as needed to get under MAX_HOSTS."""
    idle = [h for h in buckets if h not in open_hosts]
    idle.sort(key=lambda h: buckets[h].full_at())
    for h in idle[:max(1, len(buckets) - MAX_HOSTS + 1)]:
        del buckets[h]


class _Session:
    __slots__ = ("applied", "bucket", "bytes", "coalesced", "deferred", "held", "host",
                 "kept", "kept_cost", "kept_since", "messages", "served", "waits")

    def __init__(self, host: str, bucket: _Bucket, held: int) -> None:
        self.host = host
        self.held = held  # request entries of its last applied demand
        self.bucket = bucket
        self.kept: Any = None  # the newest demand over budget, waiting for tokens
        self.kept_cost = 0.0
        self.kept_since = 0.0
        self.served = -1.0  # when a demand of it was last let through (-1: never)
        self.applied = 0
        self.deferred = 0  # demands kept (each kept demand is applied or replaced)
        self.coalesced = 0  # kept demands a newer one replaced (never applied)
        self.bytes = 0
        self.messages = 0  # other messages charged (`message_wait`)
        self.waits = 0  # ... of them that had to wait for the budget


class Limiter:
    """The master's per-source bounds: sessions, requests held, demand rate."""

    def __init__(self, limits: Optional[Limits] = None) -> None:
        self.limits = limits or Limits()
        self._sessions: dict = {}
        self._host_sessions: dict = {}  # host -> sessions open
        self._host_held: dict = {}  # host -> request entries held by its sessions
        self._waiting: set = set()  # keys of sessions with a kept demand
        self._host_buckets: dict = {}  # host -> _Bucket, kept after its sessions close
        self._host_waiting: dict = {}  # host -> its sessions with a kept demand

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
        lim = self.limits
        self._sessions[key] = _Session(host, _Bucket(lim.demand_rate, lim.demand_burst, now),
                                       held)
        if host not in self._host_buckets:
            if len(self._host_buckets) >= MAX_HOSTS:
                _forget_idle(self._host_buckets, self._host_sessions)
            self._host_buckets[host] = _Bucket(lim.host_demand_rate, lim.host_demand_burst,
                                               now)
        self._host_sessions[host] = self._host_sessions.get(host, 0) + 1
        self._host_held[host] = self._host_held.get(host, 0) + held

    def close_session(self, key: Hashable) -> Optional[dict]:
        """The session ended (or was replaced): its count, its requests and any kept
        demand go. Returns its figures (`stats`), None if it was not open; closing
        twice is harmless."""
        s = self._sessions.pop(key, None)
        if s is None:
            return None
        if key in self._waiting:
            self._unwait(key, s)
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

    def decoded(self, key: Hashable, entries: int) -> None:
        """A demand let through has been decoded: its `entries` are charged to the
        session's bucket (a debt that later demands wait for), applied or refused. At
        most `requests_per_session` + 1 of them: past the bound the demand is refused
        whole, and its other entries are never checked by payload nor the Pool (their
        bytes were charged as bytes); charging them all let one refused demand of
        100,000 minimal entries (2.7 MB) stall the host's honest demands ~95 s."""
        s = self._sessions[key]
        cost = min(entries, self.limits.requests_per_session + 1) * self.limits.entry_cost
        s.bucket.tokens -= cost
        self._host_buckets[s.host].tokens -= cost

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

    def demand_frame(self, key: Hashable, size: int, frame: Any, now: float) -> bool:
        """A demand of `size` bytes came on session `key`. True: apply it now (it has
        been charged). False: it is kept as the session's newest demand (replacing an
        older kept one, which is then never applied) until `due` hands it back."""
        s = self._sessions[key]
        host = self._host_buckets[s.host]
        s.bucket.refill(now)
        host.refill(now)
        s.bytes += size
        cost = float(size + self.limits.message_cost)
        if s.kept is not None:  # order: a newer demand never overtakes a kept one
            s.kept, s.kept_cost = frame, cost
            s.coalesced += 1
            return False
        if s.bucket.tokens >= 0 and host.tokens >= 0 \
                and not self._host_waiting.get(s.host):  # others of the host queue first
            s.bucket.tokens -= cost
            host.tokens -= cost
            s.served = now
            return True
        s.kept, s.kept_cost, s.kept_since = frame, cost, now
        s.deferred += 1
        self._waiting.add(key)
        self._host_waiting[s.host] = self._host_waiting.get(s.host, 0) + 1
        return False

    def _unwait(self, key: Hashable, s: _Session) -> None:
        self._waiting.discard(key)
        left = self._host_waiting.get(s.host, 0) - 1
        if left > 0:
            self._host_waiting[s.host] = left
        else:
            self._host_waiting.pop(s.host, None)

    def due_at(self, key: Hashable) -> Optional[float]:
        """When the kept demand of `key` may be applied (None: none is kept)."""
        s = self._sessions.get(key)
        if s is None or s.kept is None:
            return None
        return max(s.bucket.ready_at(), self._host_buckets[s.host].ready_at())

    def next_due(self) -> Optional[float]:
        """The earliest `due_at` of all sessions (None: no demand is kept)."""
        times = [self.due_at(k) for k in self._waiting]
        return min((t for t in times if t is not None), default=None)

    def due(self, now: float) -> list:
        """[(key, frame)] of the kept demands whose bucket has refilled by `now`, each
        charged and no longer kept: the shell applies them now."""
        out = []
        # the least recently served first, then the one kept first: the sessions of a
        # host share its refills in turn (first come first served let the first to
        # spend the burst also be the first kept, and served again before the others)
        order = sorted(self._waiting, key=lambda k: (self.due_at(k) or 0.0,
                                                     self._sessions[k].served,
                                                     self._sessions[k].kept_since))
        for key in order:  # a host's bucket may be spent by those before: asked again
            at = self.due_at(key)
            if at is None or at > now:
                continue
            s = self._sessions[key]
            for b in (s.bucket, self._host_buckets[s.host]):
                b.refill(now)
                b.tokens = max(b.tokens, 0.0) - s.kept_cost  # (rounding: due = refilled)
            out.append((key, s.kept))
            s.kept, s.kept_cost, s.served = None, 0.0, now
            self._unwait(key, s)
        return out

    # ------------------------------------------------------------ other messages

    def message_wait(self, key: Hashable, size: int, entries: int, now: float,
                     waited: bool = False, messages: int = 1) -> Optional[float]:
        """A decoded `progress`, `release` or other non-demand message of `size` bytes
        (with `entries` cluster entries) on session `key`; or `messages` data frames of
        `size` bytes in all, each a message's worth (`message_cost`) plus its bytes: no
        honest peer sends the master data, and 1-byte frames are bounded so like any
        other flood (R10). None: handle it now, it has been charged. A time: handle it
        no sooner (its session or host is in debt, or its session has a demand kept,
        which goes first): the shell reads nothing more of the session until then, and
        asks again (`waited`: counts it once)."""
        s = self._sessions[key]
        host = self._host_buckets[s.host]
        s.bucket.refill(now)
        host.refill(now)
        if s.kept is not None:  # after it: when due (now, if it is) the shell applies
            if not waited:       # it (`due`) and asks again
                s.waits += 1
            return max(self.due_at(key) or now, now)
        if s.bucket.tokens < 0 or host.tokens < 0:  # in debt: until a batch's worth
            if not waited:  # is back (a wake-up per message cost ~100 us each)
                s.waits += 1
            at = _batch_back((s.bucket, host))
            if at > now + SLACK:
                return at
        cost = float(size + messages * self.limits.message_cost
                     + entries * self.limits.progress_entry_cost)
        for b in (s.bucket, host):
            b.tokens = max(b.tokens, 0.0) - cost
        s.bytes += size
        s.messages += messages
        return None

    def opened(self, key: Hashable, cost: float, now: float) -> None:
        """Session `key`'s hello and opening (`session_cost`): charged to its host's
        bucket (a debt the host's next hello waits for, `host_owed`; a session's own
        bucket is new, and a churning host's would be too), not to its figures
        (`stats`: what it sent after)."""
        b = self._host_buckets[self._sessions[key].host]
        b.refill(now)
        b.tokens -= cost

    def host_charge(self, host: str, cost: float, now: float) -> None:
        """`cost` bytes of budget spent for `host` outside a session (a tool's
        connection): a debt its sessions and tools then wait for (`host_owed`)."""
        b = self._host_buckets.get(host)
        if b is None:
            if len(self._host_buckets) >= MAX_HOSTS:
                _forget_idle(self._host_buckets, self._host_sessions)
            lim = self.limits
            b = self._host_buckets[host] = _Bucket(lim.host_demand_rate,
                                                   lim.host_demand_burst, now)
        b.refill(now)
        b.tokens = max(max(b.tokens, 0.0) - cost, -b.burst)  # (a debt of a burst at most)

    def host_owed(self, host: str, now: float) -> Optional[float]:
        """None: a submitter session of `host` may be read now. A time: its host's
        bucket is in debt until then (a batch's worth back, as `message_wait`): the
        shell reads none of its sessions, a new one's first message included, until
        then (`Channel.before_read`). A debt was otherwise waited out only by the
        session that ran it up, after its frame was decoded: a host that opened session
        after session, each sending one 4 MiB frame of dense JSON and closing, had every
        frame decoded free (R11: 99 % of the master's core)."""
        return _host_owed(self._host_buckets, host, now)

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
                "deferred": s.deferred, "coalesced": s.coalesced, "bytes": s.bytes,
                "messages": s.messages, "waits": s.waits}


class _NodeSession:
    __slots__ = ("bucket", "bytes", "host", "messages", "waits")

    def __init__(self, host: str, bucket: _Bucket) -> None:
        self.host, self.bucket = host, bucket
        self.bytes = 0
        self.messages = 0  # frames charged (messages, refused frames, data frames)
        self.waits = 0  # ... of them that had to wait for the budget


class NodeBudget:
    """The budgets of the master's node sessions: one bucket a session, one a host
    (kept after its sessions close, so reconnecting gets no fresh one), in bytes; see
    the module docstring and SETTINGS for the sizes and why. The same interface as
    `Limiter` for other messages (`open_session`, `message_wait`, `stats`,
    `close_session`), so the shell charges either the same way; nothing here is kept
    or coalesced (every node message counts: a claim-ok, a release), the shell waits."""

    def __init__(self, limits: Optional[Limits] = None) -> None:
        self.limits = limits or Limits()
        self._sessions: dict = {}
        self._host_buckets: dict = {}
        self._host_sessions: dict = {}  # host -> node sessions open

    def open_session(self, key: Hashable, host: str, now: float) -> None:
        """A node session whose hello the shell took (then charged like any frame)."""
        self.close_session(key)
        lim = self.limits
        self._sessions[key] = _NodeSession(host, _Bucket(lim.node_rate, lim.node_burst, now))
        if host not in self._host_buckets:
            if len(self._host_buckets) >= MAX_HOSTS:
                _forget_idle(self._host_buckets, self._host_sessions)
            self._host_buckets[host] = _Bucket(lim.host_node_rate, lim.host_node_burst, now)
        self._host_sessions[host] = self._host_sessions.get(host, 0) + 1

    def close_session(self, key: Hashable) -> Optional[dict]:
        """Its figures (`stats`), None if it was not open; the host's bucket stays."""
        s = self._sessions.pop(key, None)
        if s is None:
            return None
        left = self._host_sessions.get(s.host, 0) - 1
        if left > 0:
            self._host_sessions[s.host] = left
        else:
            self._host_sessions.pop(s.host, None)
        return self._stats(s)

    def message_wait(self, key: Hashable, size: int, entries: int, now: float,
                     waited: bool = False, messages: int = 1) -> Optional[float]:
        """A frame of `size` bytes listing `entries` claims on node session `key` (or
        `messages` data frames of `size` bytes in all). None: handle it now, it has
        been charged. A time: not before then (its session or host is in debt); the
        shell reads nothing more of the session meanwhile and asks again (`waited`:
        counted once). An unknown key (a closed session) is charged nothing."""
        s = self._sessions.get(key)
        if s is None:
            return None
        buckets = (s.bucket, self._host_buckets[s.host])
        for b in buckets:
            b.refill(now)
        if s.bucket.tokens < 0 or buckets[1].tokens < 0:
            if not waited:
                s.waits += 1
            at = _batch_back(buckets)
            if at > now + SLACK:
                return at
        lim = self.limits
        cost = float(size + messages * lim.node_message_cost + entries * lim.node_claim_cost)
        for b in buckets:
            b.tokens = max(b.tokens, 0.0) - cost
        s.bytes += size
        s.messages += messages
        return None

    def host_owed(self, host: str, now: float) -> Optional[float]:
        """As `Limiter.host_owed`, for the node sessions of `host`."""
        return _host_owed(self._host_buckets, host, now)

    def stats(self, key: Hashable) -> Optional[dict]:
        s = self._sessions.get(key)
        return None if s is None else self._stats(s)

    @staticmethod
    def _stats(s: _NodeSession) -> dict:
        return {"host": s.host, "bytes": s.bytes, "messages": s.messages, "waits": s.waits}
