"""The master server: a thin asyncio shell around `Pool`.

It only moves messages: each one a peer sends goes, through one table per peer
kind (`NODE`, `SUBMITTER`, `TOOL`: message type -> handler), to a `Pool` event,
and the actions the pool returns are sent. It carries no job data. Its files
are a counter of cluster ids, so ids are never reused, and the submitters'
session bindings; everything else is rebuilt from the hellos of nodes and
submitters after a restart.

Nothing a peer sends can end a session loop or the ticker with a traceback:
bad payloads are answered with `bad-message`, our own bugs are logged with
their traceback and the loop goes on. Log lines about peers carry only bounded,
escaped excerpts of what they sent, rate-limited per source address.

What one source host may hold and spend is decided by `limits.Limiter` (sessions per
host, request entries per session and per host, budgets per session and per host that
demands and every other submitter message are charged to); this shell only asks it.
Demand frames in our own field order are kept undecoded by the wire
(`Connection.keep_raw`) until the limiter lets them through, so of a flood of demands
only the one finally applied is decoded and checked; another message over budget
stops this shell reading its session until the budget is back (`_charged`). Node
sessions have budgets of their own (`limits.NodeBudget`, per session and per host):
every frame of one is charged, its hello, refused frames and data frames included,
before it is handled.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import OrderedDict
from typing import Callable, Optional

from .. import records
from ..errors import ConfigError
from ..wire.connection import BadMessage, Raw, json_units
from ..wire.errors import MessageTooBig
from ..wire.hosts import host_key
from ..wire.messages import error
from ..wire.slots import HostBytes
from .limits import Limiter, Limits, NodeBudget
from .payload import MAX_DEMAND, MAX_REQUESTS, PayloadError
from .peerlog import PeerLog, excerpt
from .pool import MAX_SESSIONS, Pool

log = logging.getLogger("jrs.master")
PEER_ERRORS = (PayloadError, KeyError, TypeError, ValueError, AttributeError, IndexError)
PING_TIMEOUT = 2.0  # a live node session must answer within this to keep its place
SEND_LOG_BURST = 200  # lines a minute about what the Pool sends to one host (claim-drops...)
# seconds between the ticker's rounds (JRS_MASTER_TICK): each round matches, times out
# offers and nodes, and lets each submitter spend a round's evaluation budget. A test of
# many rounds (a hostile demand judged over them) sets it shorter rather than wait
# seconds per round.
TICK = 1.0
# message costs a frame of a node session costs that is refused (by the wire's schema
# or by the table: no honest node sends one) and answered: flooded at one each, they
# took 16 % of a core within the budget (a message's cost and an answer's), ~4 % now
REFUSED = 4
# bytes of budget a JSON value or key costs on top of the bytes (`connection.json_units`,
# R11): `[[0],[0],...]` takes ~0.12 us a byte to decode here, ~0.25 us a unit, and
# charged by bytes alone it took 28 % of a core from 4 submitter sessions and 57 % from
# one impostor node session; a node's report of 4,096 claims costs ~25 % more
UNIT_BYTES = 8
# what one source host's submitter and node sessions may read a second, after a burst,
# whatever becomes of it (`Master._read_paid`, before it is decoded): reading and
# decrypting a MiB and counting its JSON values costs the master ~4 ms. Demand frames
# a newer one replaces are never decoded nor charged to the demand budget, and read as
# fast as a host sent them they took 100 % of its core (R12); 8 MiB/s is ~3 %. An
# honest submitter sends a few KB a second, a node of 1,000 slots ~1.2 MB
READ_RATE = float(8 << 20)
READ_BURST = float(32 << 20)
# how our submitters' demand frames begin (json.dumps of {"type": "demand", ...} with
# the wire's separators): these are kept undecoded until the demand budget lets them in.
# A demand in another field order is decoded on arrival; over budget it is kept too,
# and the session is not read until it is due (only what the wire had read ahead, up
# to 256 KiB, aio.READ_SIZE, is decoded meanwhile).
DEMAND_PREFIX = b'{"type":"demand",'
# the longest demand frame kept or applied: the Pool takes at most MAX_DEMAND characters
# of keys, requirements and ads (payload.py), a frame carries them JSON-escaped (a quote
# or a backslash is two bytes) around at most MAX_REQUESTS entries' fields. A longer
# frame (the wire allows 16 MiB) is refused on arrival, never kept: kept, it held 16 MiB
# per session and its decode was charged only once it was due. (A demand of mostly
# non-ASCII text, \uXXXX on the wire, can be refused here below MAX_DEMAND characters.)
MAX_DEMAND_FRAME = 2 * MAX_DEMAND + MAX_REQUESTS * 512


def _is_demand(body: bytes) -> bool:
    return body.startswith(DEMAND_PREFIX)


def _check_size(size: int) -> None:
    """A demand frame longer than any the Pool could take is refused (bad-message, the
    payload's error for an oversized demand) before it is kept or decoded."""
    if size > MAX_DEMAND_FRAME:
        raise PayloadError(f"the requests' keys, requirements and ads are larger than "
                           f"{MAX_DEMAND} characters in all (a frame of {size} bytes)")


def _claims(msg: dict) -> int:
    """The claim entries a node's message lists (a report's ids, a hello's claims),
    charged each: the schema let up to 100,000 of them through."""
    claims = msg.get("claims")
    return len(claims) if isinstance(claims, list) else 0


def _host(peer: object) -> str:
    return host_key(peer)  # the one place addresses become hosts (an IPv6 /64 is one)


def _env_seconds(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        raise ConfigError(f"{name}: want a number of seconds")


def _tick_seconds() -> float:
    """JRS_MASTER_TICK, else TICK: positive, as a ticker that never sleeps would spin."""
    tick = _env_seconds("JRS_MASTER_TICK", TICK)
    if not tick > 0:
        raise ConfigError("JRS_MASTER_TICK: want a positive number of seconds")
    return tick


class ClusterCounter:
    """Cluster ids from a tiny file: never one handed out twice, even across a crash.

    The file holds a ceiling: every id below it may have been handed out, so a master
    started again continues from it. The ceiling is raised (written and fsynced before
    any id below it goes out) BLOCK ids at a time, so a submit waits for a disk flush
    only once in BLOCK clusters: a flush costs 3-15 ms on a busy disk, most of what a
    one-job submit waits for at the master. The ids of a block a stopped master had not
    used are skipped, never reused."""

    BLOCK = 64

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "next-cluster")
        try:
            with open(self.path) as f:
                self.next = int(f.read().strip() or 1)
        except FileNotFoundError:
            self.next = 1
        except ValueError:
            raise ConfigError(f"{self.path}: not a number; fix or remove it")
        self.ceiling = self.next

    def take(self) -> int:
        if self.next >= self.ceiling:
            ceiling = self.next + self.BLOCK
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{ceiling}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            records.fsync_dir(os.path.dirname(self.path))  # else a power cut can undo the rename
            self.ceiling = ceiling
        value = self.next
        self.next = value + 1
        return value


class SessionStore:
    """Submitter session bindings (id -> sha256 of its token) kept across master restarts:
    otherwise an id seen in `jrs status` could be bound by someone else in the seconds
    between a master's restart and its submitter's return. Append-only records, 0600,
    not fsynced (a binding lost with a power cut is made again at the next hello)."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "sessions")
        try:
            recs, _damaged = records.read(self.path)
        except FileNotFoundError:
            recs = []
        self.loaded: OrderedDict = OrderedDict()
        for r in recs:
            sid, digest = r.get("s"), r.get("h")
            if isinstance(sid, str) and isinstance(digest, str):
                self.loaded.pop(sid, None)
                self.loaded[sid] = digest
        while len(self.loaded) > MAX_SESSIONS:
            self.loaded.popitem(last=False)
        if len(recs) > 2 * len(self.loaded) + 1000:  # compact
            records.write_new(self.path, [{"s": k, "h": v} for k, v in self.loaded.items()])
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                          0o600)

    def add(self, sid: str, digest: str) -> None:
        try:
            records.append(self.fd, {"s": sid, "h": digest})
        except OSError as exc:  # a full disk must not refuse the submitter
            log.warning("cannot record the session of %s in %s: %s", sid, self.path, exc)


class Master:
    def __init__(self, config, counter: ClusterCounter,
                 clock: Callable[[], float] = time.monotonic,
                 sessions: Optional[SessionStore] = None,
                 limits: Optional[Limits] = None) -> None:
        self.config = config
        self.clock = clock
        self.tick = _tick_seconds()
        # claim ids: 128 random bits (contract 9); a node binds each to its first session
        self.pool = Pool(config.nodes, clock(), new_id=lambda: os.urandom(16).hex(),
                         node_timeout=_env_seconds("JRS_NODE_TIMEOUT", 6.0),
                         submitter_lease=_env_seconds("JRS_SUBMITTER_LEASE", 300.0),
                         offer_timeout=_env_seconds("JRS_OFFER_TIMEOUT", 10.0),
                         tick_period=self.tick)
        self.store = sessions
        if sessions is not None:
            self.pool.sessions.update(sessions.loaded)
        self.counter = counter
        self.nodes: dict = {}
        self.submitters: dict = {}
        self.rm_waiters: dict = {}
        self.pings: dict = {}  # (id(channel), seq) -> future
        self._seq = itertools.count(1)
        self.peerlog = PeerLog(log)
        self.sendlog = PeerLog(log, burst=SEND_LOG_BURST)  # the Pool's notable sends
        self.limiter = Limiter(limits or Limits.from_env(os.environ))
        self.node_budget = NodeBudget(self.limiter.limits)  # node sessions' (by channel)
        self.reads = HostBytes(READ_RATE, READ_BURST, most_wait=10.0)  # what sessions read
        self._session_sid: dict = {}  # submitter channel -> its id (the limiter's keys)
        self._due_timer: Optional[asyncio.TimerHandle] = None
        self._due_at = 0.0

    # ------------------------------------------------------------ sending

    def send(self, actions: list) -> None:
        for kind, ident, msg in actions:
            ch = (self.nodes if kind == "node" else self.submitters).get(ident)
            if msg["type"] in ("give-back", "unmatchable", "node-lost", "claim-drop"):
                # a peer can make many (an impostor node's claim-oks are each answered
                # with a claim-drop): bounded per host they go to, like every peer's lines
                self.sendlog.info(ch.peer if ch is not None else f"{kind} {ident}",
                                  "to %s %s: %s", kind, excerpt(ident), excerpt(msg, 300))
            if ch is None:
                continue  # the pool learns of it (node_gone, offer time-out, hello)
            try:
                ch.send(msg)
            except Exception as exc:  # a dead transport: the peer's loop cleans up
                log.info("cannot send to %s %s: %s", kind, excerpt(ident), exc)

    def _bad(self, ch, msg: dict, exc: Exception) -> None:
        kind = msg.get("type")
        self.peerlog.warning(ch.peer, "bad %s from %s: %s", excerpt(kind), ch.peer,
                             excerpt(str(exc)))
        try:
            ch.send(error("bad-message", str(exc)[:200], kind if isinstance(kind, str) else None))
        except Exception:  # the transport is gone; its loop ends
            pass

    async def _loop(self, ch, table: dict, who: str) -> None:
        """Read messages and hand each to its handler until the channel closes."""
        while True:
            msg = await ch.recv()
            if isinstance(msg, Raw):  # a demand frame kept undecoded (submitters only)
                await self._handle(ch, who, Master._raw_demand, msg, "demand")
                continue
            if not isinstance(msg, dict):  # data frames are not for the master: they
                continue  # were charged as they came (`on_data`)
            handler = table.get(msg["type"])
            if table is NODE and not await self._charged(
                    ch, _claims(msg), messages=1 if handler is not None else REFUSED):
                continue  # (every node message, before its handler: refused ones too)
            if handler is None:
                if ch in self._session_sid and not await self._charged(ch):
                    continue  # (a submitter's refused message is charged like others)
                self._bad(ch, msg, ValueError(f"a {ch.peer_role} may not send "
                                              f"{excerpt(msg['type'])}"))
                continue
            await self._handle(ch, who, handler, msg, msg["type"])

    async def _handle(self, ch, who: str, handler, msg, kind: str) -> None:
        """One message to its handler: a peer's fault answered, our bug logged."""
        try:
            result = handler(self, ch, who, msg)
            if asyncio.iscoroutine(result):
                await result
        except PEER_ERRORS as exc:
            self._bad(ch, msg if isinstance(msg, dict) else {"type": kind}, exc)
        except Exception:  # our bug: say where, keep serving
            self.peerlog.exception(ch.peer, "handling %s from %s", excerpt(kind), ch.peer)
            try:
                ch.send(error("internal", "the master failed on this message", kind))
            except Exception:
                pass

    # ------------------------------------------------------------ sessions

    async def serve(self, ch) -> None:
        if ch.peer_role == "submit":
            ch.conn.keep_raw = _is_demand
        ch.before_read = lambda: self._host_paid(ch)  # (a tool's: the demand budget's)
        if ch.peer_role in ("submit", "node"):
            ch.on_each_read = lambda nbytes: self._read_paid(ch, nbytes)
        try:
            first = await asyncio.wait_for(ch.recv(), 30)
        except asyncio.TimeoutError:
            return
        if isinstance(first, Raw):
            ch.send(error("protocol", "a submit may not start with demand"))
            return
        if not isinstance(first, dict):
            return
        kind = first["type"]
        try:
            if ch.peer_role == "node" and kind == "node-hello":
                await self._node(ch, first)
            elif ch.peer_role == "submit" and kind == "submitter-hello":
                await self._submitter(ch, first)
            elif ch.peer_role == "tool" and kind in TOOL:
                try:
                    await TOOL[kind](self, ch, "", first)
                finally:  # (what it costs grows with what it lists: limits.tool_cost)
                    self.limiter.host_charge(_host(ch.peer), self._tool_cost(first),
                                             self.clock())
                await ch.drain()
            else:
                ch.send(error("protocol", f"a {ch.peer_role} may not start with "
                                          f"{excerpt(kind)}"))
        except PEER_ERRORS as exc:
            self._bad(ch, first, exc)

    async def _alive(self, ch) -> bool:
        """Does this (older) node session answer a ping within PING_TIMEOUT?"""
        seq = next(self._seq)
        fut = asyncio.get_running_loop().create_future()
        self.pings[(id(ch), seq)] = fut
        try:
            ch.send({"type": "ping", "seq": seq})
            return bool(await asyncio.wait_for(fut, PING_TIMEOUT))
        except (asyncio.TimeoutError, Exception):  # closed: not alive
            return False
        finally:
            self.pings.pop((id(ch), seq), None)

    def _fail_pings(self, ch) -> None:
        for (cid, _), fut in list(self.pings.items()):
            if cid == id(ch) and not fut.done():
                fut.set_result(False)

    async def _node(self, ch, hello: dict) -> None:
        name = hello["name"]
        if name not in self.pool.nodes:
            self.peerlog.warning(ch.peer, "refused unknown node %s from %s (not in node.list)",
                                 excerpt(name), ch.peer)
            ch.send(error("unknown-node", f"{excerpt(name)} is not in the master's node.list"))
            return
        while True:  # a live session keeps its place: a copied name cannot kick it off
            old = self.nodes.get(name)
            if old is None or old is ch:
                break
            if await self._alive(old):
                self.peerlog.warning(ch.peer, "refused a second node-hello for %s from %s: "
                                     "the session from %s answers", name, ch.peer, old.peer)
                ch.send(error("duplicate-node", f"{name} has a live session"))
                return
            if self.nodes.get(name) is old:
                del self.nodes[name]
                old.close()
        self.nodes[name] = ch
        self.node_budget.open_session(ch, _host(ch.peer), self.clock())
        ch.on_bad = lambda size: self._charged(ch, size=size + UNIT_BYTES * ch.last_units,
                                               messages=REFUSED)
        ch.on_data = lambda frames, nbytes: self._charged(ch, size=nbytes, messages=frames)
        ch.on_costly = lambda size, units: self._prepaid(ch, size, units)
        try:
            # the hello too: a host's bucket outlives its sessions, so hellos of 4,096
            # claims, each on a new connection, are bounded per host like any message
            if not await self._charged(ch, _claims(hello), size=ch.last_size + UNIT_BYTES
                                       * ch.last_units + self.limiter.limits.node_session_cost):
                return
            self.send(self.pool.node_hello(name, hello, self.clock()))
            log.info("node %s up (%s slots)", name, hello["slots"])
            await self._loop(ch, NODE, name)
        finally:
            self._fail_pings(ch)
            figures = self.node_budget.close_session(ch)
            if figures and figures["waits"]:
                self.peerlog.info(ch.peer, "node session %s from %s: %d frames (%d waited "
                                  "for its budget), %d bytes", excerpt(name), ch.peer,
                                  figures["messages"], figures["waits"], figures["bytes"])
            if self.nodes.get(name) is ch:
                del self.nodes[name]
                self.send(self.pool.node_gone(name, self.clock()))

    async def _submitter(self, ch, hello: dict) -> None:
        sid = hello["submitter"]
        host = _host(ch.peer)
        old = self.submitters.get(sid)
        why = self.limiter.session_refusal(host, replaces=old)
        if why is not None:  # before the Pool: nothing of it is bound or applied
            self.peerlog.warning(ch.peer, "refused submitter %s from %s: %s", excerpt(sid),
                                 ch.peer, why)
            ch.send(error("limit", why, "submitter-hello"))
            return
        bound = sid in self.pool.sessions
        token = hello.get("token")
        actions = self.pool.open_session(hello, self.clock())  # session, then payload
        if actions is None:  # the server closes the channel
            why = "not its session" if token else "no session token"
            self.peerlog.warning(ch.peer, "refused submitter %s from %s: %s",
                                 excerpt(sid), ch.peer, why)
            ch.send(error("session", "this submitter id belongs to another session" if token
                          else "a submitter-hello must carry its session token"))
            return
        if not bound and self.store is not None and sid in self.pool.sessions:
            self.store.add(sid, self.pool.sessions[sid])
        self.limiter.open_session(ch, host, self.clock(), replaces=old)
        self._session_sid[ch] = sid
        ch.on_bad = lambda size: self._charged(  # refused frames too
            ch, size=size + UNIT_BYTES * ch.last_units)
        # and data frames, a message's worth each plus their bytes, those the wire
        # swallows after a refused header too (R10: they were charged to nothing)
        ch.on_data = lambda frames, nbytes: self._charged(ch, size=nbytes, messages=frames)
        ch.on_costly = lambda size, units: self._prepaid(ch, size, units)
        if old is not None:
            old.close()
        self.submitters[sid] = ch
        try:
            # the hello, and the session it opened (limits.session_cost): what a host
            # opening and closing sessions pays, the debt its next hello waits for
            self.limiter.opened(ch, ch.last_size + UNIT_BYTES * ch.last_units
                                + self.limiter.limits.session_cost, self.clock())
            ch.send(self.pool.welcome(hello))  # names the listed claims it dropped
            self.send(actions)
            await self._loop(ch, SUBMITTER, sid)
        finally:
            self._session_sid.pop(ch, None)
            figures = self.limiter.close_session(ch)
            if figures and (figures["deferred"] or figures["waits"]):
                self.peerlog.info(ch.peer, "submitter %s from %s: %d demands applied, %d "
                                  "held back for its demand budget (%d replaced by a newer "
                                  "one), %d other messages (%d waited for the budget), %d "
                                  "bytes", excerpt(sid), ch.peer, figures["applied"],
                                  figures["deferred"], figures["coalesced"],
                                  figures["messages"], figures["waits"], figures["bytes"])
            if self.submitters.get(sid) is ch:
                del self.submitters[sid]
                self.send(self.pool.submitter_gone(sid, self.clock()))

    # ------------------------------------------------------------ node messages

    def _node_report(self, ch, name: str, msg: dict) -> None:
        self.send(self.pool.node_report(name, msg, self.clock()))

    def _claim_answer(self, ch, name: str, msg: dict) -> None:
        self.send(self.pool.claim_answer(name, msg, self.clock()))

    def _claim_released(self, ch, name: str, msg: dict) -> None:
        self.send(self.pool.claim_released(name, msg["claim"], self.clock()))

    def _ping(self, ch, name: str, msg: dict) -> None:
        # a node back from a stop: the pong comes after every claim-drop its report
        # caused (one channel, in order), so the node then knows which claims it keeps
        ch.send({"type": "pong", "seq": msg["seq"]})

    def _pong(self, ch, name: str, msg: dict) -> None:
        fut = self.pings.get((id(ch), msg["seq"]))
        if fut is not None and not fut.done():
            fut.set_result(True)

    def _ignore(self, ch, who: str, msg: dict) -> None:
        if msg["type"] == "error":
            self.peerlog.info(ch.peer, "%s says: %s", excerpt(who),
                              excerpt(msg.get("message")))

    # ------------------------------------------------------------ submitter messages

    async def _new_cluster(self, ch, sid: str, msg: dict) -> None:
        if await self._charged(ch):  # one in ClusterCounter.BLOCK is a disk flush
            ch.send({"type": "cluster", "id": self.counter.take()})

    async def _demand(self, ch, sid: str, msg: dict) -> None:
        """A demand that came decoded (not in our field order, or read with the hello)."""
        if self.limiter.stats(ch) is None:
            return  # a session replaced by a newer hello: what it had read goes nowhere
        _check_size(ch.last_size)
        replaces = self.limiter.kept(ch) is not None
        if self.limiter.demand_frame(ch, ch.last_size, msg, self.clock()):
            self._apply_demand(ch, sid, msg)
            return
        if not replaces:
            self._arm(self.limiter.due_at(ch))
        at = self.limiter.due_at(ch)  # kept: read nothing more of this peer until then
        if at is not None:
            await asyncio.sleep(max(0.0, at - self.clock()))
            self._run_due()

    def _raw_demand(self, ch, sid: str, raw: Raw) -> None:
        # a frame replacing a kept one does not move its due time: no timer work (a
        # next_due() per frame was a loop over all waiting sessions for each frame)
        if self.limiter.stats(ch) is None:
            return  # replaced (see _demand): quietly, its channel is closed
        _check_size(len(raw.body))
        replaces = self.limiter.kept(ch) is not None
        # its values too (UNIT_BYTES each), as any message's: kept undecoded it reported
        # none, and dense JSON demands were decoded at 5 times their charge (R12: 28 %)
        size = len(raw.body) + UNIT_BYTES * json_units(raw.body)
        if self.limiter.demand_frame(ch, size, raw, self.clock()):
            self._apply_demand(ch, sid, raw)
        elif not replaces:
            self._arm(self.limiter.due_at(ch))

    def _apply_demand(self, ch, sid: str, msg) -> None:
        """A demand the budget let through (decoded here if it was kept undecoded): its
        request entries within the limits, then to the Pool."""
        if isinstance(msg, Raw):
            event = ch.conn.decode(msg.body)
            if isinstance(event, BadMessage):
                raise ValueError(event.reason)
            msg = event.body
            if msg["type"] != "demand":  # its fields said so twice (a hostile frame)
                raise ValueError(f"a kept demand frame is a {excerpt(msg['type'])}")
        entries = len(msg["requests"])
        self.limiter.decoded(ch, entries)
        why = self.limiter.demand_refusal(ch, entries)
        if why is not None:  # nothing of it applied: the Pool keeps the previous one
            self.peerlog.warning(ch.peer, "refused a demand of submitter %s from %s: %s",
                                 excerpt(sid), ch.peer, why)
            ch.send(error("limit", why, "demand"))
            return
        self.send(self.pool.set_demand(sid, msg["requests"], self.clock()))
        self.limiter.demand_applied(ch, entries)

    def _arm(self, at: Optional[float] = None) -> None:
        """A timer for the earliest kept demand (one for all sessions): `at`, the due
        time of a demand newly kept (O(1)), or else the earliest of all (`next_due`)."""
        if at is None:
            at = self.limiter.next_due()
        if at is None:
            return
        if self._due_timer is not None:
            if self._due_at <= at:
                return
            self._due_timer.cancel()
        self._due_at = at
        self._due_timer = asyncio.get_running_loop().call_later(
            max(0.0, at - self.clock()), self._run_due)

    def _run_due(self) -> None:
        """Apply the kept demands whose budget has refilled, each the newest of its
        session; a fault in one is answered on its channel, as in the session loop."""
        if self._due_timer is not None:
            self._due_timer.cancel()
            self._due_timer = None
        for ch, frame in self.limiter.due(self.clock()):
            sid = self._session_sid.get(ch)
            if sid is None or self.submitters.get(sid) is not ch:
                continue  # (the limiter drops what closed sessions kept; belt and braces)
            try:
                self._apply_demand(ch, sid, frame)
            except PEER_ERRORS as exc:
                self._bad(ch, {"type": "demand"}, exc)
            except Exception:  # our bug: say where, keep serving
                self.peerlog.exception(ch.peer, "applying a kept demand from %s", ch.peer)
        self._arm()

    async def _read_paid(self, ch, nbytes: int) -> None:
        """A read of a session, before it is decoded: its bytes come from its host's
        read budget (READ_RATE, READ_BURST), whatever becomes of them."""
        wait = self.reads.take(_host(ch.peer), nbytes, self.clock())
        if wait > 0.0:
            await asyncio.sleep(wait)

    async def _host_paid(self, ch) -> None:
        """Before each read of a channel whose session has not opened yet (its first
        message, a tool's one): wait while its host's bucket is in debt
        (`Limiter.host_owed`), so a host's new sessions cannot decode for free what its
        older ones ran up. An open session's reads are its budget's (`_charged`, and
        `_prepaid` before a costly frame is decoded): gated by its host's debt too, a
        session flooding demands read them at the budget's rate, each applied, where
        read on they are kept undecoded and only the newest is (`Limiter.demand_frame`)."""
        if ch in self._session_sid or self.node_budget.stats(ch) is not None:
            return
        books = self.node_budget if ch.peer_role == "node" else self.limiter
        host = _host(ch.peer)
        while True:
            at = books.host_owed(host, self.clock())
            if at is None:
                return
            await asyncio.sleep(max(0.0, at - self.clock()))

    def _tool_cost(self, msg: dict) -> float:
        lim = self.limiter.limits
        if msg["type"] == "rm":
            listed = len(msg.get("ids") or ())
        elif msg.get("what") == "queue":
            listed = len(self.pool.submitters) + sum(
                len(s.clusters) for s in self.pool.submitters.values())
        else:
            listed = len(self.pool.nodes) + len(self.pool.submitters)
        # at most half a second of the host's rate: what it lists is the cluster's, made
        # by others too (R13: 400 gone submitters of 1,024 clusters made one honest
        # `jrs q` cost its host 100 MiB, a 46 s wait for its sessions)
        return float(min(lim.tool_cost + lim.tool_entry_cost * listed,
                         max(lim.tool_cost, lim.host_demand_rate / 2)))

    async def _prepaid(self, ch, size: int, units: int) -> None:
        """A frame of many values (`Channel.on_costly`), before it is decoded: its
        bytes and values are charged first (waiting while the session or its host is
        in debt); the message then costs its message's worth alone."""
        await self._charged(ch, size=size + UNIT_BYTES * units, messages=0)

    async def _charged(self, ch, entries: int = 0, size: Optional[int] = None,
                       messages: int = 1) -> bool:
        """Charge the message `recv` returned last on this submitter or node session to
        its budget (`Limiter.message_wait`, `NodeBudget.message_wait`: `messages` message
        costs, with `size` bytes: data frames, a node's refused frame), first waiting,
        without reading the session, while the budget is in debt or a demand of it is
        kept (that one goes first). False: the session was replaced or closed meanwhile
        (drop the message quietly). A node session that waits is logged once."""
        if size is None:  # the message's bytes and its values (UNIT_BYTES)
            size = ch.last_size + UNIT_BYTES * ch.last_units
        waited = False
        books = self.node_budget if ch.peer_role == "node" else self.limiter
        while books.stats(ch) is not None:
            at = books.message_wait(ch, size, entries, self.clock(), waited, messages)
            if at is None:
                return True
            if not waited and books is self.node_budget and books.stats(ch)["waits"] == 1:
                self.peerlog.info(ch.peer, "node session from %s is over its budget: read "
                                  "at its rate from now on", ch.peer)  # (honest: never)
            waited = True
            await asyncio.sleep(max(0.0, at - self.clock()))
            self._run_due()
        return False

    async def _release(self, ch, sid: str, msg: dict) -> None:
        if await self._charged(ch):  # each costs a claim-drop to a node
            self.send(self.pool.release(sid, msg["claim"], self.clock(),
                                        kill=msg.get("kill") is True))

    async def _progress(self, ch, sid: str, msg: dict) -> None:
        if await self._charged(ch, len(msg["clusters"])):
            self.send(self.pool.set_progress(sid, msg["clusters"]))

    async def _removed(self, ch, sid: str, msg: dict) -> None:
        if not await self._charged(ch):
            return
        fut = self.rm_waiters.get(msg["re"])
        if fut is not None and fut.sid == sid and not fut.done():
            fut.set_result(msg["count"])

    async def _submitter_error(self, ch, sid: str, msg: dict) -> None:
        if await self._charged(ch):
            self._ignore(ch, sid, msg)

    # ------------------------------------------------------------ tools

    async def _query(self, ch, _who: str, msg: dict) -> None:
        if msg["what"] in ("status", "queue"):
            reply = (dict(self.pool.status(self.clock()), type="status-reply")
                     if msg["what"] == "status" else dict(self.pool.queue(), type="queue-reply"))
            try:
                ch.send(reply)
            except MessageTooBig as exc:  # (~10,000 busy nodes: connection.MAX_UNITS)
                log.warning("cannot answer a %s query: %s", msg["what"], exc)
                ch.send(error("too-big", f"the {msg['what']} is too big for one message: "
                                         f"{exc}", "query"))
        else:
            ch.send(error("unexpected", f"no query {excerpt(msg['what'])}", "query"))

    async def _rm_tool(self, ch, _who: str, msg: dict) -> None:
        ids = msg["ids"]
        if len(ids) > 1000:
            raise ValueError("at most 1000 ids per rm")
        ch.send({"type": "rm-reply", "results": await self._rm(ids)})

    async def _rm(self, ids: list) -> list:
        results = []
        for text in ids:
            text = str(text)[:64]
            cluster_text = text.split(".")[0]
            if not cluster_text.isdigit():
                results.append({"id": text, "error": "not a CLUSTER or CLUSTER.PROC"})
                continue
            owner = self.pool.owner_of(int(cluster_text))
            ch = self.submitters.get(owner.id) if owner else None
            if ch is None:
                results.append({"id": text, "error": "no such cluster (or its submitter "
                                                     "is not connected)"})
                continue
            token = os.urandom(8).hex()
            fut = _Waiter(owner.id)
            self.rm_waiters[token] = fut
            ch.send({"type": "rm", "re": token, "ids": [text]})
            try:
                count = await asyncio.wait_for(fut.future, 10)
                results.append({"id": text, "removed": count})
            except asyncio.TimeoutError:
                results.append({"id": text, "error": "the submitter did not answer"})
            finally:
                self.rm_waiters.pop(token, None)
        return results

    # ------------------------------------------------------------ time

    async def ticker(self) -> None:
        """Time for the pool, at once and then every `tick` seconds (a master stopped
        before its second tick is then pardoned the time it was stopped, as after any
        other tick: sim, small 108). An exception is logged with its traceback and the
        next tick comes anyway: the master never goes on silently doing nothing."""
        while True:
            try:
                self.send(self.pool.tick(self.clock()))
            except Exception:  # our bug; keep the pool's clock running
                log.exception("the master's ticker failed (continuing)")
            await asyncio.sleep(self.tick)


class _Waiter:
    """A pending `rm` answer, bound to the submitter that must give it."""

    def __init__(self, sid: str) -> None:
        self.sid = sid
        self.future = asyncio.get_running_loop().create_future()

    def done(self) -> bool:
        return self.future.done()

    def set_result(self, value: object) -> None:
        self.future.set_result(value)


NODE: dict = {
    "node-report": Master._node_report,
    "claim-ok": Master._claim_answer,
    "claim-refused": Master._claim_answer,
    "claim-released": Master._claim_released,
    "ping": Master._ping,
    "pong": Master._pong,
    "error": Master._ignore,
}
SUBMITTER: dict = {
    "new-cluster": Master._new_cluster,
    "demand": Master._demand,
    "release": Master._release,
    "progress": Master._progress,
    "removed": Master._removed,
    "error": Master._submitter_error,
}
TOOL: dict = {
    "query": Master._query,
    "rm": Master._rm_tool,
}

