"""The pool as the master sees it, and every decision it makes (sans-IO).

Calls describe what happened (a node said hello, a submitter sent demand, a
node's channel closed, time passed); each returns a list of
`(peer kind, peer id, message)` for the shell to send. There is no socket,
file, clock or randomness in here: `now` comes with every call and claim ids
from the `new_id` the shell passes, so a simulation can drive the very class
the master runs. Nothing is persistent except through the peers: a restarted
master rebuilds this from node and submitter hellos.

Fair share: each user's share of the pool's slots is its weight over the sum
of weights of users that want slots, water-filled so nobody is given more than
it asks for. Claims are handed out by progressive filling (the user furthest
below its share first), so free slots are never left idle; when a user is
below its share and nothing is free, users above theirs are asked to give
claims back, which their submitters do at job boundaries (running jobs are
never killed). A request that fits no node as things stand gets a node
reserved for it, so big requests cannot be starved by a stream of small ones.

Offers are claims not yet active. Each is answered (claim-ok/refused), found
in the node's own list of claims (the answer was lost: taken as accepted),
missing from that list once the node had time to answer, or unanswered for
`offer_timeout` seconds: the last two withdraw it, so a lost offer or answer
never keeps a slot, and never counts as satisfying its submitter's demand.

Cost: claims are indexed by node and by submitter, each node keeps its used
capacity, and nodes with free slots sit in a heap by (used + load). A node's
heartbeat costs O(its claims), an offer O(log nodes) plus the nodes it skips,
a match is cached per (request, node) until an attribute it reads changes.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..condor import classad
from . import payload

NODE_TIMEOUT = 6.0
SUBMITTER_LEASE = 300.0
OFFER_TIMEOUT = 10.0
# A master judges a request against the nodes it has heard from only once every node.list
# entry has said hello or this long after its start: a node back within its reconnect
# backoff (5 s at most) plus a connect time-out (sim C4: a restarted master heard only
# its smallest node within 3 s and held 2-cpu jobs for good).
UNMATCHABLE_GRACE = 15.0
# A live submitter is back within its reconnect backoff (5 s at most) plus a connect
# time-out of a master that restarted; claims nodes bring of one that is not, go.
ORPHAN_GRACE = 15.0
# A submitter that gave up on a node (it released a claim there with kill: it cannot
# reach the node, though the master can) is offered no slot there for this long.
AVOID_FOR = 30.0
OFFER_REPORTS = 2  # node-reports after an offer by which the node has answered it
# The shell calls `tick` this often. A gap between two ticks of more than twice this is
# time the master itself was stopped (SIGSTOP, a swapping host): not counted against peers.
TICK_PERIOD = 1.0
# A claim-drop the node has not acted on is sent again in answer to its report after this
# long (a node still running the claim's job is told again, not at every heartbeat).
DROP_RESEND = 10.0
MAX_DROPPED = 100_000  # remembered revoked/withdrawn claim ids
EPS = 1e-6  # slots: a want above its share by more than this is not capped by it
MAX_SESSIONS = 100_000
# submitters gone with nothing on the cluster (no claim) kept for `jrs q` until their
# lease ends, at most this many (the oldest forgotten first; one gone with no cluster
# at once): a host churning submitter sessions made ~8,000 a minute that every tick
# and every `jrs status` walked (R12, F3)
MAX_GONE = 4096
MAX_GONE_CLUSTERS = 65_536  # ... and the clusters they list, at most this many in all (R13)
# With `verify_skips` (the simulation): the first skipped negotiations of a Pool are
# checked on copies of its books, then one in VERIFY_EVERY (each check is O(the pool)).
VERIFY_FIRST = 20
VERIFY_EVERY = 8
# What one submitter's requirements may cost the master per round (a tick), in units:
# EVAL_COST plus a unit per byte of requirements plus one per regexp step for each
# evaluation against a node, PARSE_COST per byte parsed (a 16 KiB requirement: ~1 ms to
# parse, ~0.3 ms per node to evaluate, 2026 hardware; ~10 x that loaded). Cached
# results cost nothing. A submitter over it has the rest of its requests parsed and
# judged at later rounds, while the others' are matched in this one; what one
# operation overshoots is carried to the next round.
EVAL_BUDGET = 262_144
EVAL_COST = 16
PARSE_COST = 8  # measured: a budget of parsing took ~2 x the CPU of one of regexp steps at 4
# All submitters together may spend ROUND_BUDGET a round, whatever the number of sessions
# (ids and tokens are free to a secret holder). Verdicts are taken in turn, the least
# recently charged submitter first, each capped at its own EVAL_BUDGET: a round serves at
# least ROUND_BUDGET / EVAL_BUDGET submitters that spend, so with K of them spending each
# round, one waits at most about K / 4 rounds for its turn; one whose requests are parsed
# and judged (cached) spends nothing and is matched at every round.
ROUND_BUDGET = 4 * EVAL_BUDGET
# Requests (keys) held across all submitters: negotiate walks those that can still get a
# slot (count > 0, not unmatchable), so this bounds one negotiation's walk; a demand that
# would pass it is refused with an error naming the bound.
MAX_POOL_REQUESTS = 65_536
PARSE_CACHE_BYTES = 2 << 20  # requirements texts whose trees are kept, shared
PARSE_CACHE_ENTRIES = 4096


@dataclass
class Node:
    name: str
    host: str
    port: int
    slots: int = 0
    memory: int = 0
    gpus: int = 0
    ad: dict = field(default_factory=dict)  # attribute names lower-cased, for matching
    attrs: dict = field(default_factory=dict)  # as the node reported them, for display
    state: str = "never"  # never | up | down
    connected: bool = False  # a session is open: offers may go to it
    last_seen: float = 0.0
    load: float = 0.0
    running: int = 0
    waiting: Optional[int] = None  # results not yet acknowledged (node-report, optional)
    oldest_wait: Optional[float] = None
    reserved_for: Optional[str] = None
    ad_version: int = 0
    used_cpus: int = 0
    used_memory: int = 0
    used_gpus: int = 0
    claims: dict = field(default_factory=dict)  # cid -> Claim
    heap_seq: int = -1

    def used(self, _claims: object = None) -> tuple:
        return self.used_cpus, self.used_memory, self.used_gpus


@dataclass
class Request:
    key: str
    count: int
    cpus: int
    memory: int
    gpus: int
    requirements: Optional[tuple]
    requirements_text: str
    ad: dict
    weight: float = 1.0
    unmatchable: Optional[str] = None
    checked: int = -1  # topology version the unmatchable verdict was taken at
    witness: Optional[str] = None  # a node that can run it, as last found (see _why_never)
    scanned: int = -1  # topology version at which no node was found able to run it
    refs: tuple = ()  # lower-case attribute names the requirements read from the node
    cache: dict = field(default_factory=dict)  # node -> (ad_version, key, result)
    sid: str = ""  # its submitter, whose budget its parse and evaluations are charged to
    parsed: bool = True  # False: requirements_text waits for a round with budget


@dataclass
class Submitter:
    id: str
    user: str
    host: str
    pid: int
    connected: bool = True
    last_seen: float = 0.0
    requests: dict = field(default_factory=dict)
    clusters: list = field(default_factory=list)
    give_back: int = 0
    avoid: dict = field(default_factory=dict)  # node it gave up on -> until when
    seq: int = 0  # order of arrival (that of `Pool.submitters`)
    asks: int = 0  # slots its live requests ask for (kept by Pool._index)
    weight: float = 1.0  # the largest weight of its requests (kept by Pool._index)


@dataclass
class Claim:
    id: str
    node: str
    submitter: str
    user: str
    cpus: int
    memory: int
    gpus: int
    active: bool = False
    key: str = ""
    offered: float = 0.0
    reports: int = 0  # node-reports seen since the offer
    drop: Optional[bool] = None  # a claim-drop was sent (its kill flag): again at each hello
    drop_sent: float = 0.0  # when it was last sent (sent again with a report after a while)


class _OverBudget(Exception):
    """The submitter has spent its EVAL_BUDGET of this round."""


def _counter_ids() -> Callable[[], str]:
    seq = itertools.count(1)
    return lambda: f"c{next(seq)}"


def _attr_names(tree: Optional[tuple]) -> tuple:
    """The (scope, name) of every attribute `tree` reads (iterative: trees are bounded in
    depth by classad.MAX_DEPTH, not in size)."""
    names: set = set()
    stack = [tree] if tree else []
    while stack:
        t = stack.pop()
        if not isinstance(t, tuple) or not t:
            continue
        if t[0] == "attr":
            names.add((t[1], t[2]))
            continue
        for part in t[1:]:
            if isinstance(part, list):
                stack.extend(part)
            else:
                stack.append(part)
    return tuple(sorted(names))


def _refs(names: tuple, my: dict) -> tuple:
    """Attribute names read from the node's ad (TARGET or unqualified and not in MY)."""
    return tuple(sorted({n for scope, n in names
                         if scope == "target" or (scope == "" and n not in my)}))


def _same_shares(a: dict, b: dict) -> bool:
    """The same shares, a submitter absent from one having none (a cached fill lacks
    the submitters that came since wanting nothing: `_current_shares`)."""
    return all(abs(a.get(s, 0.0) - b.get(s, 0.0)) <= EPS for s in a.keys() | b.keys())


class Pool:
    def __init__(self, node_list: list, now: float = 0.0, *,
                 new_id: Optional[Callable[[], str]] = None,
                 node_timeout: float = NODE_TIMEOUT, submitter_lease: float = SUBMITTER_LEASE,
                 offer_timeout: float = OFFER_TIMEOUT,
                 unmatchable_grace: float = UNMATCHABLE_GRACE,
                 orphan_grace: float = ORPHAN_GRACE,
                 tick_period: float = TICK_PERIOD) -> None:
        self.nodes: dict[str, Node] = {}
        for entry in node_list:
            self.nodes[entry.name] = Node(entry.name, entry.endpoint.host, entry.endpoint.port)
        self.submitters: dict[str, Submitter] = {}
        self.claims: dict[str, Claim] = {}
        self.new_id = new_id or _counter_ids()
        self.node_timeout = node_timeout
        self.submitter_lease = submitter_lease
        self.offer_timeout = offer_timeout
        self.unmatchable_grace = unmatchable_grace
        self.started = now
        self.tick_period = tick_period
        self._last_tick: Optional[float] = None
        # cid -> kill flag of the claim-drop a node gets if it still lists the claim
        self.dropped: OrderedDict = OrderedDict()
        # cid -> when a node listing a remembered dropped claim was last told: told again
        # only after DROP_RESEND (reports back to back, each listing thousands of such
        # ids, must not make one claim-drop and one log line per id per report)
        self._told: dict = {}
        self.sessions: OrderedDict = OrderedDict()  # submitter id -> sha256(token)
        # submitters that hold claims (adopted from a node's hello after a restart) but
        # have not said hello to this master: since when. Past `orphan_grace` their claims
        # are dropped with kill False (a running job finishes, its result waits).
        self._orphans: dict[str, float] = {}
        self.orphan_grace = orphan_grace
        self._by_sub: dict[str, dict] = {}
        self._user_held: dict[str, int] = {}
        self._sub_held: dict[str, int] = {}
        self._sub_pending: dict[tuple, int] = {}  # (sid, key) -> offers not yet answered
        self._offers: OrderedDict = OrderedDict()  # cid -> offered at (oldest first)
        self._seen: OrderedDict = OrderedDict()  # up node -> last seen (oldest first)
        self._heap: list = []  # (used + load, seq, name) of nodes that may take an offer
        self._heap_seq = itertools.count()
        self._reserved: dict[str, str] = {}  # node -> submitter
        self._reserving: dict[str, str] = {}  # submitter -> node
        self._topology = 0  # bumped when a node's capacity or ad changes
        self._known = 0  # nodes heard from (state not "never")
        self.up_slots = 0
        # Shares as the last negotiation computed them (sid -> share), what each
        # submitter wanted then (want, weight, capped), and the submitters whose want may
        # have changed since: see _current_shares. None: compute them again.
        self._shares: Optional[dict] = None
        self._share_base: dict = {}
        self._share_slots = -1
        self._share_dirty: set = set()
        self._givers: set = set()  # submitters last asked to give back a count > 0
        self._gone: OrderedDict = OrderedDict()  # submitters gone, oldest first (MAX_GONE)
        self._gone_clusters = 0  # -> the clusters each listed: their sum
        self.skipped_negotiations = 0  # demand changes that could change nothing (C5)
        self.verify_skips = False  # check each skip on copies (the simulation, tests)
        self.skip_errors: list = []
        # requirements text -> (tree, error, attribute names), least recently used first
        self._parse_cache: OrderedDict = OrderedDict()
        self._parse_cache_bytes = 0
        self._spent: dict = {}  # submitter -> units spent this round (see EVAL_BUDGET)
        self._round_spent = 0  # by all submitters this round (see ROUND_BUDGET)
        self._served: dict = {}  # submitter -> serial of its last charge (its turn)
        self._serial = itertools.count()
        # per submitter with some: its requests that can still get a slot (count > 0, not
        # unmatchable), what negotiate walks; and the number of requests held in all
        self._live: dict = {}
        self.held_requests = 0
        self.parses = 0  # classad parses and evaluations made, for tests and benches
        self.evaluations = 0
        self._sub_seq = itertools.count()

    @property
    def revoked(self) -> set:
        """Claims taken from a lost node (their jobs run elsewhere: the node must kill)."""
        return {cid for cid, kill in self.dropped.items() if kill}

    # ------------------------------------------------------------ books

    def claims_of_node(self, name: str) -> dict:
        return self.nodes[name].claims

    def claims_of_submitter(self, sid: str) -> dict:
        return self._by_sub.get(sid, {})

    def _add(self, c: Claim) -> None:
        self.claims[c.id] = c
        node = self.nodes[c.node]
        node.claims[c.id] = c
        node.used_cpus += c.cpus
        node.used_memory += c.memory
        node.used_gpus += c.gpus
        self._by_sub.setdefault(c.submitter, {})[c.id] = c
        self._sub_held[c.submitter] = self._sub_held.get(c.submitter, 0) + c.cpus
        self._want_changed(c.submitter)
        self._user_held[c.user] = self._user_held.get(c.user, 0) + c.cpus
        if not c.active:
            k = (c.submitter, c.key)
            self._sub_pending[k] = self._sub_pending.get(k, 0) + 1
            self._offers[c.id] = c.offered
        self._touch(node)

    def _activate(self, c: Claim) -> None:
        if c.active:
            return
        c.active = True
        self._unpend(c)

    def _unpend(self, c: Claim) -> None:
        k = (c.submitter, c.key)
        left = self._sub_pending.get(k, 0) - 1
        if left > 0:
            self._sub_pending[k] = left
        else:
            self._sub_pending.pop(k, None)
        self._offers.pop(c.id, None)

    def _remove(self, cid: str, remember: Optional[bool] = None) -> Optional[Claim]:
        """Take a claim off the books; `remember` = the kill flag of a later claim-drop."""
        c = self.claims.pop(cid, None)
        if c is None:
            return None
        node = self.nodes[c.node]
        del node.claims[cid]
        node.used_cpus -= c.cpus
        node.used_memory -= c.memory
        node.used_gpus -= c.gpus
        mine = self._by_sub[c.submitter]
        del mine[cid]
        self._want_changed(c.submitter)
        if not mine:
            del self._by_sub[c.submitter]
        for book, who in ((self._sub_held, c.submitter), (self._user_held, c.user)):
            left = book.get(who, 0) - c.cpus  # a 0-cpu claim may outlive its book entry
            if left > 0:
                book[who] = left
            else:
                book.pop(who, None)
        if not c.active:
            self._unpend(c)
        if remember is not None:
            self._remember(cid, remember)
        self._touch(node)
        return c

    def _want_changed(self, sid: str) -> None:
        """`sid`'s want (held + asked) or weight may have changed: its share, next time,
        is checked (O(its requests)) before the cached shares are used again."""
        if self._shares is None:
            return
        if sid in self.submitters:
            self._share_dirty.add(sid)
        else:  # a user's claims without a submitter: they take part in the fill as is
            self._shares = None

    def _remember(self, cid: str, kill: bool) -> None:
        self.dropped[cid] = kill or self.dropped.get(cid, False)
        self.dropped.move_to_end(cid)
        while len(self.dropped) > MAX_DROPPED:
            self.dropped.popitem(last=False)

    def _tell_dropped(self, cid: str, now: float) -> None:
        self._told[cid] = now
        if len(self._told) > 2 * MAX_DROPPED:  # amortized O(1): keeps the remembered ones
            self._told = {c: t for c, t in self._told.items() if c in self.dropped}

    def _eligible(self, node: Node) -> bool:
        return node.state == "up" and node.connected and node.used_cpus < node.slots

    def _touch(self, node: Node) -> None:
        """Its score or eligibility may have changed: (re)enter it in the heap."""
        if not self._eligible(node):
            node.heap_seq = -1
            return
        seq = next(self._heap_seq)
        node.heap_seq = seq
        heapq.heappush(self._heap, (node.used_cpus + node.load, seq, node.name))
        if len(self._heap) > 2 * len(self.nodes) + 64:
            self._heap = [e for e in self._heap if self.nodes[e[2]].heap_seq == e[1]]
            heapq.heapify(self._heap)

    def _set_state(self, node: Node, state: str) -> None:
        if (node.state == "up") != (state == "up"):
            self.up_slots += node.slots if state == "up" else -node.slots
        if node.state == "never" and state != "never":
            self._topology += 1
            self._known += 1
        node.state = state
        if state != "up":
            self._seen.pop(node.name, None)
            self._unreserve(node)
        self._touch(node)

    def _seen_now(self, node: Node, now: float) -> None:
        node.last_seen = now
        self._seen[node.name] = now
        self._seen.move_to_end(node.name)

    def _drop(self, c: Claim, kill: bool, now: float) -> tuple:
        """A claim-drop for its node, remembered until the node lets the claim go."""
        c.drop = kill or bool(c.drop)
        c.drop_sent = now
        return ("node", c.node, {"type": "claim-drop", "claim": c.id, "kill": c.drop})

    def _grant(self, c: Claim) -> tuple:
        node = self.nodes[c.node]
        return ("submitter", c.submitter,
                {"type": "claim", "claim": c.id, "node": c.node, "host": node.host,
                 "port": node.port, "cpus": c.cpus, "memory": c.memory, "gpus": c.gpus,
                 "key": c.key})

    def check(self) -> None:
        """Assert the indexes agree with `claims` (O(claims): for tests and the simulation)."""
        by_node: dict = {name: [] for name in self.nodes}
        for c in self.claims.values():
            by_node[c.node].append(c)
        for node in self.nodes.values():
            mine = by_node[node.name]
            assert set(node.claims) == {c.id for c in mine}, node.name
            assert node.used() == (sum(c.cpus for c in mine), sum(c.memory for c in mine),
                                   sum(c.gpus for c in mine)), node.name
        assert sum(len(v) for v in self._by_sub.values()) == len(self.claims)
        offers = {c.id for c in self.claims.values() if not c.active}
        assert set(self._offers) == offers
        assert sum(self._sub_pending.values()) == len(offers)
        assert self.up_slots == sum(n.slots for n in self.nodes.values() if n.state == "up")
        assert self._known == sum(1 for n in self.nodes.values() if n.state != "never")
        assert self._gone_clusters == sum(self._gone.values()) and all(
            s in self.submitters and not self.submitters[s].connected for s in self._gone)
        fresh, cached = self.submitter_shares(), self._current_shares()
        assert _same_shares(fresh, cached), (fresh, cached)
        assert all(s.id in self._givers for s in self.submitters.values() if s.give_back)
        for s in self.submitters.values():
            for r in s.requests.values():  # a verdict kept at this topology still holds
                if r.checked == self._topology and r.unmatchable is None:
                    n = self.nodes.get(r.witness) if r.witness is not None else None
                    assert n is not None and n.state != "never" and self._fits_ever(n, r) \
                        and (r.requirements is None  # evaluated here: not charged
                             or classad.matches(r.requirements, r.ad, n.ad)), \
                        (s.id, r.key, r.witness)
        assert all(s.asks == sum(r.count * r.cpus for r in s.requests.values()
                                 if not r.unmatchable) for s in self.submitters.values())
        assert self.held_requests == sum(len(s.requests) for s in self.submitters.values())
        assert self._live == {s.id: live for s in self.submitters.values() for live in (
            {k: r for k, r in s.requests.items() if r.count and not r.unmatchable},) if live}
        assert not self.skip_errors, self.skip_errors[:3]

    # ------------------------------------------------------------ nodes

    def node_hello(self, name: str, msg: dict, now: float) -> list:
        """A node (re)connected. Its list of claims is the truth about what it holds."""
        node = self.nodes.get(name)
        if node is None:
            raise KeyError(name)
        slots = payload.count(msg.get("slots"), "slots", limit=1 << 20)
        memory = payload.count(msg.get("memory"), "memory")
        gpus = payload.count(msg.get("gpus"), "gpus", limit=1 << 16)
        attrs = payload.attrs(msg.get("attrs"))
        listed = payload.node_claims(msg.get("claims"))
        ad = {k.lower(): v for k, v in attrs.items()}
        ad.update(cpus=slots, memory=memory, gpus=gpus, name=name)
        if (slots, memory, gpus, ad) != (node.slots, node.memory, node.gpus, node.ad):
            if node.state == "up":
                self.up_slots += slots - node.slots
            node.slots, node.memory, node.gpus, node.ad = slots, memory, gpus, ad
            node.ad_version += 1
            self._topology += 1
        node.attrs = attrs
        node.connected = True
        self._set_state(node, "up")
        self._seen_now(node, now)
        out: list = [("node", name, {"type": "welcome"})]
        seen = set()
        for c in listed:
            cid = c["claim"]
            seen.add(cid)
            known = self.claims.get(cid)
            if known is not None and known.node == name:
                if known.drop is not None:  # the drop may have gone to a dead session
                    out.append(self._drop(known, known.drop, now))
                elif not known.active:  # accepted; the claim-ok was lost with the old session
                    self._activate(known)
                    out.append(self._grant(known))
                continue
            if cid in self.dropped or known is not None:
                self._tell_dropped(cid, now)
                out.append(("node", name, {"type": "claim-drop", "claim": cid,
                                           "kill": self.dropped.get(cid, False)}))
                continue
            # a master restarted since: the node's word rebuilds the books
            adopted = Claim(cid, name, c["submitter"], c["user"], c["cpus"], c["memory"],
                            c["gpus"], active=True)
            if c["releasing"]:  # an earlier master dropped it (kill False): so do we, and
                adopted.drop, adopted.drop_sent = False, now  # our welcome names it
            self._add(adopted)
            sub = self.submitters.get(c["submitter"])
            if sub is None or not sub.connected:  # dropped if it does not come back
                self._orphans.setdefault(c["submitter"], now)
        for cid in [cid for cid in node.claims if cid not in seen]:
            # offers lost with the old session, or claims the node no longer has
            self._remove(cid, remember=False)
        return out + self.negotiate(now)

    def node_report(self, name: str, msg: dict, now: float) -> list:
        """A heartbeat: costs O(the node's claims), renegotiates only if a claim ended."""
        node = self.nodes[name]
        load = payload.number(msg.get("load"), "load")
        running = payload.count(msg.get("running"), "running", 0)
        held = set(payload.id_list(msg.get("claims"), "claims"))
        waiting = msg.get("waiting")
        node.waiting = payload.count(waiting, "waiting") if waiting is not None else None
        oldest = msg.get("oldest_wait")
        node.oldest_wait = payload.number(oldest, "oldest_wait") if oldest is not None else None
        node.running = running
        self._seen_now(node, now)
        if node.state != "up":
            self._set_state(node, "up")
        if load != node.load:
            node.load = load
            self._touch(node)
        out: list = []
        freed = False
        for c in list(node.claims.values()):
            if c.active:
                if c.id not in held:  # ended on the node without word to us
                    self._remove(c.id, remember=False)
                    freed = True
                elif c.drop is not None and now - c.drop_sent >= DROP_RESEND:
                    # still listed: the drop may have been lost (a node that lost power
                    # before acting on it), or its job is still running (kill False)
                    out.append(self._drop(c, c.drop, now))
            elif c.id in held:  # accepted, the claim-ok was lost
                self._activate(c)
                out.append(self._grant(c))
            else:
                c.reports += 1
                if c.reports >= OFFER_REPORTS:  # it had time to answer: the offer was lost
                    self._remove(c.id, remember=False)
                    freed = True
        # A node back from a partition on its old connection still holds claims we took
        # from it when it went silent; their jobs were rerun elsewhere.
        for cid in sorted(held.difference(node.claims)):
            kill = self.dropped.get(cid)
            if kill is not None and now - self._told.get(cid, float("-inf")) >= DROP_RESEND:
                self._tell_dropped(cid, now)
                out.append(("node", name, {"type": "claim-drop", "claim": cid, "kill": kill}))
        return out + (self.negotiate(now) if freed else [])

    def node_gone(self, name: str, now: float) -> list:
        """Its session closed. Running jobs go on (it may be back soon); offers sent to it
        are lost, and none goes to it until its next hello."""
        node = self.nodes.get(name)
        if node is None or not node.connected:
            return []
        node.connected = False
        self._touch(node)
        withdrawn = [c.id for c in node.claims.values() if not c.active]
        for cid in withdrawn:
            self._remove(cid, remember=False)
        return self.negotiate(now) if withdrawn else []

    def claim_answer(self, name: str, msg: dict, now: float) -> list:
        cid = payload.ident(msg.get("claim"), "claim")
        claim = self.claims.get(cid)
        if claim is None or claim.node != name:
            if msg["type"] == "claim-ok":  # an offer we withdrew or forgot: let it go
                return [("node", name, {"type": "claim-drop", "claim": cid,
                                        "kill": self.dropped.get(cid, False)})]
            return []
        if msg["type"] == "claim-refused":
            if not claim.active:
                self._remove(cid, remember=False)
            return []  # the next tick retries: no offer ping-pong with a node that disagrees
        if claim.active:
            return []
        self._activate(claim)
        return [self._grant(claim)]

    def claim_released(self, name: str, cid: str, now: float) -> list:
        claim = self.claims.get(cid)
        if claim is not None and claim.node == name:
            # remembered: a node whose claims.json kept it (a failed write) and that
            # restarts brings it back in its hello, and is told to drop it
            self._remove(cid, remember=False)
            return self.negotiate(now)
        return []

    # ------------------------------------------------------------ submitters

    def session_ok(self, sid: str, token: Optional[str]) -> bool:
        """Bind a submitter id to sha256 of its session token at its first hello; later
        hellos must bring the same token. A hello without a token is refused (contract 8):
        an id it could use unbound would be one `jrs status` shows, free to take before
        its submitter's first hello, or after a master lost its session records."""
        if not isinstance(token, str) or not token:
            return False
        token_hash = hashlib.sha256(token.encode()).hexdigest()
        bound = self.sessions.get(sid)
        if bound is None:
            self.sessions[sid] = token_hash
            while len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
            return True
        self.sessions.move_to_end(sid)
        return hmac.compare_digest(bound, token_hash)

    def open_session(self, hello: dict, now: float) -> Optional[list]:
        """A submitter-hello: its session checked (None: refused, the shell says why and
        closes), then its payload. A hello whose payload is refused binds nothing: an id
        bound by a bad hello would be taken from its real submitter (fuzzer finding W1)."""
        sid = hello["submitter"]
        bound = sid in self.sessions
        if not self.session_ok(sid, hello.get("token")):
            return None
        try:
            return self.submitter_hello(hello, now)
        except Exception:  # a refused payload (PayloadError) or any other fault
            if not bound:
                self.sessions.pop(sid, None)
            raise

    def submitter_hello(self, msg: dict, now: float) -> list:
        sid = payload.ident(msg.get("submitter"), "submitter")
        user = payload.text(msg.get("user"), "user", 256)
        host = payload.text(msg.get("host"), "host", 256)
        pid = payload.count(msg.get("pid"), "pid", 0)
        known = set(payload.id_list(msg.get("claims"), "claims"))
        clusters = payload.clusters(msg.get("clusters") or [])
        sub = self.submitters.get(sid)
        if sub is None:
            sub = self.submitters[sid] = Submitter(sid, user, host, pid,
                                                   seq=next(self._sub_seq))
            if self._sub_want(sub) or self.claims_of_submitter(sid):
                self._shares = None  # (its claims took part in the fill as its user's)
            else:
                self._want_changed(sid)  # wanting nothing: no share moves (R12)
        sub.connected, sub.last_seen, sub.pid = True, now, pid
        sub.clusters = clusters
        self._gone_clusters -= self._gone.pop(sid, None) or 0
        self._orphans.pop(sid, None)
        return [self._grant(c) for c in self.claims_of_submitter(sid).values()
                if c.active and c.drop is None and c.id not in known]  # granted while away

    def welcome(self, hello: dict) -> dict:
        """The answer to a (checked) submitter-hello: which of the claims it lists this
        master no longer holds for it (`dropped`; `killed`: those whose node was told to
        kill their job). A reconnecting submitter lists claims the master dropped while it
        was away (its old session closed: `submitter_gone`); told nothing, it sent runs on
        them that the nodes refused "unknown claim" (sim D6). A claim this master has no
        word of is not named: after a master restart it may come back with its node's
        hello. Reads the books only; O(claims listed)."""
        sid = hello["submitter"]
        dropped, killed = [], []
        for cid in payload.id_list(hello.get("claims"), "claims"):
            c = self.claims.get(cid)
            if c is not None:
                if c.submitter == sid and c.drop is None:
                    continue  # held
                kill = bool(c.drop) and c.submitter == sid
            elif cid in self.dropped:
                kill = self.dropped[cid]
            else:
                continue
            dropped.append(cid)
            if kill:
                killed.append(cid)
        msg: dict = {"type": "welcome"}
        if dropped:
            msg["dropped"] = dropped
        if killed:
            msg["killed"] = killed
        return msg

    def set_progress(self, sid: str, clusters: list) -> list:
        sub = self.submitters.get(sid)
        if sub is not None:
            sub.clusters = payload.clusters(clusters)
        return []

    def submitter_gone(self, sid: str, now: float) -> list:
        """Its claims go back to the pool as their jobs end (results wait on the nodes
        for a resumed submitter, which needs no claim to collect them)."""
        sub = self.submitters.get(sid)
        out = []
        if sub is not None:
            sub.connected, sub.last_seen = False, now
            self.held_requests -= len(sub.requests)
            sub.requests = {}
            self._index(sub)
            self._want_changed(sid)
        for c in list(self.claims_of_submitter(sid).values()):
            out.append(self._drop(c, False, now))
        if sub is not None:
            self._gone_clusters += len(sub.clusters) - (self._gone.pop(sid, None) or 0)
            self._gone[sid] = len(sub.clusters)
            if not sub.clusters:
                self._forget_if_idle(sid)
            while len(self._gone) > MAX_GONE or self._gone_clusters > MAX_GONE_CLUSTERS:
                self._forget_if_idle(next(iter(self._gone)))
        return out + self.negotiate(now)

    def _forget_if_idle(self, sid: str) -> None:
        """Forget a submitter gone (its session token stays: it may come back) if
        nothing of it is on the cluster: no claim, no claim's job left to end."""
        self._gone_clusters -= self._gone.pop(sid, None) or 0
        sub = self.submitters.get(sid)
        if sub is None or sub.connected or self.claims_of_submitter(sid) \
                or sid in self._orphans or self._sub_held.get(sid):
            return
        self._forget(sub)

    def _forget(self, sub: Submitter) -> None:
        if self._sub_want(sub):
            self._shares = None
        else:  # (wanting nothing, it moves no share: checked, not filled again)
            self._want_changed(sub.id)
        del self.submitters[sub.id]  # `jrs q` forgets it
        self._gone_clusters -= self._gone.pop(sub.id, None) or 0
        self.held_requests -= len(sub.requests)
        self._live.pop(sub.id, None)
        self._givers.discard(sub.id)

    def set_demand(self, sid: str, requests: list, now: float) -> list:
        """A submitter's idle jobs per request key. Demand changes with nearly every job
        start, so it renegotiates only when the change can make an offer, a give-back or
        a verdict (`_demand_is_neutral`); else it only records the counts (sim C5)."""
        sub = self.submitters[sid]
        previous = sub.requests
        shares_before = self._current_shares()
        wanting_before = self._wanting(sub)
        before_counts = {k: r.count for k, r in previous.items()}
        fresh = False  # a request not seen before (or with other requirements)
        new = {}
        asked = payload.requests(requests)
        if self.held_requests - len(previous) + len(asked) > MAX_POOL_REQUESTS:
            raise payload.PayloadError(
                f"demand refused: the master holds at most {MAX_POOL_REQUESTS} requests "
                f"across all submitters ({self.held_requests} held)")
        for r in asked:
            key = r["key"]
            old = previous.get(key)
            text = r["requirements"]
            if old is not None and old.requirements_text == text:
                old.count = r["count"]
                new[key] = old
                continue
            fresh = True
            ad = {k.lower(): v for k, v in r["ad"].items()}
            new[key] = req = Request(key, r["count"], r["cpus"], r["memory"], r["gpus"], None,
                                     text, ad, r["weight"], sid=sid, parsed=not text)
            try:
                self._parse(req)
            except _OverBudget:  # parsed at a later round (negotiate)
                pass
        self.held_requests += len(new) - len(previous)
        sub.requests = new
        self._index(sub)
        self._want_changed(sid)
        out = [("submitter", sid, {"type": "unmatchable", "key": k, "reason": r.unmatchable})
               for k, r in new.items() if r.unmatchable and k not in previous]
        if not fresh and len(new) == len(previous) \
                and self._demand_is_neutral(sub, shares_before, wanting_before):
            self.skipped_negotiations += 1
            n = self.skipped_negotiations
            if self.verify_skips and (n <= VERIFY_FIRST or n % VERIFY_EVERY == 0):
                self._verify_skip(sub, before_counts, now)
            return out
        return out + self.negotiate(now)

    def _verify_skip(self, sub: Submitter, before_counts: dict, now: float) -> None:
        """For the simulation and tests (`verify_skips`): a skipped negotiation must be one
        whose result the demand could not change. Two copies of the books, one with the
        counts of before, are negotiated and must do the same; a difference is kept for
        `check()` to report. O(everything) per skip: small pools only. The copies are
        made by pickling the books once (a deep copy, 5-10 times as fast as
        copy.deepcopy, which took a tenth of a simulation run's CPU)."""
        import pickle

        # negotiate only reads these (and they can hold 100,000 entries): shared, as is
        # the id source (each copy gets its own)
        shared = ("dropped", "_told", "sessions", "new_id", "_parse_cache")
        books = pickle.dumps({k: v for k, v in self.__dict__.items() if k not in shared},
                             pickle.HIGHEST_PROTOCOL)

        def clone() -> Pool:
            seq = itertools.count(1)
            twin = Pool.__new__(Pool)
            twin.__dict__.update(pickle.loads(books))
            for k in shared:
                setattr(twin, k, getattr(self, k))
            twin.new_id = lambda: f"verify-{next(seq)}"
            twin.verify_skips = False
            return twin

        after = clone()
        before = clone()
        for key, count in before_counts.items():
            before.submitters[sub.id].requests[key].count = count
        before._index(before.submitters[sub.id])
        before._want_changed(sub.id)
        got, want = after.negotiate(now), before.negotiate(now)
        if got != want:
            self.skip_errors.append(
                f"demand of {sub.id} {before_counts} -> "
                f"{ {k: r.count for k, r in sub.requests.items()} } skipped a negotiation "
                f"that would have sent {got[:5]} instead of {want[:5]}")

    def _wanting(self, sub: Submitter) -> bool:
        """Does `sub` wait for an offer (a request asking more than its pending offers)?
        O(its requests)."""
        if not sub.connected:
            return False
        pending = self._sub_pending
        return any(r.count > pending.get((sub.id, r.key), 0)
                   for r in sub.requests.values() if r.count and not r.unmatchable)

    def _demand_is_neutral(self, sub: Submitter, shares_before: dict,
                           wanting_before: bool) -> bool:
        """Can new counts of `sub`'s known requests change what `negotiate` does? Not when
        no node has a free slot (no offer can be made, no reservation taken), every
        request it asks for has had its verdict at this topology, it waits for an offer
        exactly when it did (the starving set and the reservations depend on that), and
        the fair shares did not move (its want stayed above its share: the common case of
        a backlogged submitter whose idle count drops by one as a job starts). Then the
        give-backs, which depend only on shares, claims held and who waits, are what they
        were: the round would send nothing. O(its requests) plus an O(1) heap peek."""
        if self._any_free():
            return False
        if any(r.count and r.unmatchable is None and r.checked != self._topology
               for r in sub.requests.values()):
            return False
        if self._wanting(sub) != wanting_before:
            return False
        shares = self._current_shares()
        if shares is shares_before:
            return True
        return _same_shares(shares, shares_before)

    def release(self, sid: str, cid: str, now: float, kill: bool = False) -> list:
        """The submitter lets a claim go. The node ends it once its job is done; the job is
        killed only when `kill` says so (a resumed submitter releasing old claims must not
        kill the jobs it is about to re-attach)."""
        claim = self.claims.get(cid)
        if claim is None or claim.submitter != sid:
            return []
        sub = self.submitters.get(sid)
        if kill and sub is not None:  # it gave up on the node: no new claim there for a while
            sub.avoid[claim.node] = now + AVOID_FOR
        return [self._drop(claim, bool(kill), now)]

    # ------------------------------------------------------------ time

    def tick(self, now: float) -> list:
        if self._last_tick is not None:
            away = now - self._last_tick - self.tick_period
            if away > self.tick_period:
                self._pardon(away, now)
        self._last_tick = now
        self._refill()
        out: list = []
        while self._seen:
            name, seen = next(iter(self._seen.items()))
            if now - seen <= self.node_timeout:
                break
            node = self.nodes[name]
            self._set_state(node, "down")
            by_sub: dict = {}
            for cid in list(node.claims):
                c = self._remove(cid, remember=True)
                by_sub.setdefault(c.submitter, []).append(cid)
            for sid, ids in by_sub.items():
                out.append(("submitter", sid, {"type": "node-lost", "node": name,
                                               "claims": ids}))
        while self._offers:
            cid, offered = next(iter(self._offers.items()))
            if now - offered <= self.offer_timeout:
                break
            c = self._remove(cid, remember=False)
            out.append(("node", c.node, {"type": "claim-drop", "claim": cid, "kill": False}))
        for sub in list(self.submitters.values()):
            if not sub.connected and now - sub.last_seen > self.submitter_lease:
                self._forget(sub)
                self._shares = None
        for sid, since in list(self._orphans.items()):
            if now - since > self.orphan_grace:
                del self._orphans[sid]
                for c in list(self.claims_of_submitter(sid).values()):
                    out.append(self._drop(c, False, now))
        return out + self.negotiate(now)

    def _pardon(self, away: float, now: float) -> None:
        """The master was stopped for `away` seconds (no tick came): the nodes' reports,
        the answers to offers and the submitters' hellos of that time are still queued,
        unread. Their deadlines move by that time, so the first tick after a stall
        declares no live node lost and revokes no claim of a job that runs on (sim
        finding C2). Only the master's own running time counts against a peer: a
        ticker that is merely late each time still counts one period per tick, so a
        dead node is declared lost all the same. O(nodes + offers + submitters), once
        per stall."""
        for name in self._seen:
            self._seen[name] = min(now, self._seen[name] + away)
        for cid in self._offers:  # the same shift for all: the order stays
            c = self.claims[cid]
            c.offered = self._offers[cid] = min(now, c.offered + away)
        for sid in self._orphans:
            self._orphans[sid] = min(now, self._orphans[sid] + away)
        for sub in self.submitters.values():
            if not sub.connected:
                sub.last_seen = min(now, sub.last_seen + away)

    # ------------------------------------------------------------ matching

    def _index(self, sub: Submitter) -> None:
        """Record which of `sub`'s requests negotiate must walk (O(its requests))."""
        live = {k: r for k, r in sub.requests.items() if r.count and not r.unmatchable}
        sub.asks = sum(r.count * r.cpus for r in live.values())
        sub.weight = max([r.weight for r in sub.requests.values()] or [1.0])
        if live:
            self._live[sub.id] = live
        else:
            self._live.pop(sub.id, None)

    def _afford(self, sid: str) -> None:
        if self._spent.get(sid, 0) >= EVAL_BUDGET or self._round_spent >= ROUND_BUDGET:
            raise _OverBudget()

    def _charge(self, sid: str, units: int) -> None:
        self._spent[sid] = self._spent.get(sid, 0) + units
        self._round_spent += units
        self._served[sid] = next(self._serial)

    def _refill(self) -> None:
        """A new round: every submitter's budget is whole again, less what it overspent,
        and so is the round's."""
        self._spent = {sid: left for sid, spent in self._spent.items()
                       for left in (spent - EVAL_BUDGET,) if left > 0}
        self._round_spent = max(0, self._round_spent - ROUND_BUDGET)
        self._served = {sid: n for sid, n in self._served.items() if sid in self.submitters}

    def _parse(self, r: Request) -> None:
        """Parse `r`'s requirements (from the shared cache, else charged to its submitter:
        _OverBudget leaves it unparsed); a text that is not an expression makes it
        unmatchable."""
        if r.parsed:
            return
        text, cache = r.requirements_text, self._parse_cache
        hit = cache.get(text)
        if hit is None:
            self._afford(r.sid)
            self.parses += 1
            tree, bad = None, None
            try:
                tree = classad.parse(text)
            except classad.ClassAdError as exc:
                bad = f"requirements: {exc}"
            hit = cache[text] = (tree, bad, _attr_names(tree))
            self._charge(r.sid, PARSE_COST * len(text))
            self._parse_cache_bytes += len(text)
            while len(cache) > 1 and (self._parse_cache_bytes > PARSE_CACHE_BYTES
                                      or len(cache) > PARSE_CACHE_ENTRIES):
                old, _ = cache.popitem(last=False)
                self._parse_cache_bytes -= len(old)
        else:
            cache.move_to_end(text)
        r.requirements, r.unmatchable, r.parsed = hit[0], hit[1], True
        r.refs = _refs(hit[2], r.ad)

    def _fits_ever(self, node: Node, r: Request) -> bool:
        return r.cpus <= node.slots and r.memory <= node.memory and r.gpus <= node.gpus

    def _matches(self, node: Node, r: Request) -> bool:
        """Cached per (request, node); re-evaluated only when an attribute it reads changed."""
        if r.requirements is None:
            return True
        hit = r.cache.get(node.name)
        if hit is not None and hit[0] == node.ad_version:
            return hit[2]
        key = tuple(repr(node.ad.get(a)) for a in r.refs)
        if hit is not None and hit[1] == key:
            result = hit[2]
        else:
            self._afford(r.sid)
            self.evaluations += 1
            result, steps = classad.matches_counted(r.requirements, r.ad, node.ad)
            self._charge(r.sid, EVAL_COST + len(r.requirements_text) + steps)
        r.cache[node.name] = (node.ad_version, key, result)
        return result

    def _room(self, node: Node, r: Request) -> bool:
        return (node.used_cpus + r.cpus <= node.slots
                and node.used_memory + r.memory <= node.memory
                and node.used_gpus + r.gpus <= node.gpus)

    def _can_run(self, node: Optional[Node], r: Request) -> bool:
        return node is not None and node.state != "never" and self._fits_ever(node, r) \
            and self._matches(node, r)

    def _why_never(self, r: Request, now: float) -> Optional[str]:
        """Why no node heard from can ever run `r` (None: some node can, or too early to
        say). Judged again when the topology changed, but a node found able to run it
        (its witness) that still can settles it in O(1): 1,000 nodes saying hello one by
        one must not cost O(requests x nodes) each."""
        if r.checked == self._topology:
            return None
        if r.witness is not None and self._can_run(self.nodes.get(r.witness), r):
            r.checked = self._topology
            return None
        r.witness = None
        if not self._known:
            return None
        if r.scanned != self._topology:  # once per topology, not at every negotiation
            for n in self.nodes.values():  # _OverBudget: again next round, cached so far
                if self._can_run(n, r):
                    r.witness, r.checked = n.name, self._topology
                    return None
            r.scanned = self._topology
        if self._known < len(self.nodes) and now - self.started < self.unmatchable_grace:
            return None
        known = [n for n in self.nodes.values() if n.state != "never"]
        r.checked = self._topology
        if not any(self._fits_ever(n, r) for n in known):
            big = max(known, key=lambda n: n.slots)
            return (f"it asks for {r.cpus} cpus, {r.memory} MiB, {r.gpus} GPUs and no node "
                    f"is that big (largest: {big.name} with {big.slots} slots, "
                    f"{big.memory} MiB, {big.gpus} GPUs)")
        return (f"requirements ({r.requirements_text}) match none of the "
                f"{len(known)} nodes")

    @staticmethod
    def _water_fill(total: float, want: dict, weight: dict) -> dict:
        """Split `total` in proportion to `weight`, nobody above its `want`."""
        share = {u: 0.0 for u in want}
        left, open_users = float(total), {u for u in want if want[u] > 0}
        while open_users and left > 1e-9:
            wsum = sum(weight[u] for u in open_users)
            given = 0.0
            for u in list(open_users):
                take = min(left * weight[u] / wsum, want[u] - share[u])
                share[u] += take
                given += take
                if share[u] >= want[u] - 1e-9:
                    open_users.discard(u)
            left -= given
            if given <= 1e-9:
                break
        return share

    def _sub_want(self, sub: Submitter) -> int:
        return sub.asks + self._sub_held.get(sub.id, 0)

    def _wants(self) -> tuple:
        """Per user: (slots wanted, weight), and per user its submitters' wants."""
        want: dict = {}
        weight: dict = {}
        per_user: dict = {}
        for sub in self.submitters.values():
            amount = self._sub_want(sub)
            per_user.setdefault(sub.user, {})[sub.id] = amount
            if amount:
                want[sub.user] = want.get(sub.user, 0) + amount
                w = sub.weight
                weight[sub.user] = max(weight.get(sub.user, 0), w)
        for user, amount in self._user_held.items():
            want.setdefault(user, amount)
            weight.setdefault(user, 1.0)
        return want, weight, per_user

    def shares(self) -> dict:
        """Each user's fair share of the slots of the nodes that are up (water-filled)."""
        want, weight, _ = self._wants()
        return self._water_fill(self.up_slots, want, weight)

    def submitter_shares(self) -> dict:
        """Each user's share split equally among that user's submitters (water-filled)."""
        want, weight, per_user = self._wants()
        out: dict = {}
        for user, total in self._water_fill(self.up_slots, want, weight).items():
            subs = per_user.get(user, {})
            if len(subs) == 1:
                (sid, amount), = subs.items()
                out[sid] = min(float(total), float(amount))
            else:
                out.update(self._water_fill(total, subs, {s: 1.0 for s in subs}))
        return out

    @staticmethod
    def _sub_weight(sub: Submitter) -> float:
        return sub.weight

    def _current_shares(self) -> dict:
        """`submitter_shares()`, but computed again only when it may have changed.

        A water-fill gives each submitter min(its want, a level); the level moves only if
        the want of a submitter the level capped changes, or a submitter is not above
        the level any more. So if every submitter whose want changed since the last fill
        was above its share then and still is (same weight), the shares are the same:
        the common case of a claim that ends and an offer that replaces it costs
        O(the submitters that changed), not O(all submitters x their requests)."""
        shares = self._shares
        if shares is not None and self._share_slots == self.up_slots:
            base = self._share_base
            for sid in self._share_dirty:
                sub = self.submitters.get(sid)
                then = base.get(sid)
                want = 0 if sub is None else self._sub_want(sub)
                if then is None or sub is None:
                    # wanting nothing, before the fill (absent) or now (gone), moves no
                    # level: a session that came and went without demand costs no fill
                    # (a host churning sessions made each one's end a fill over every
                    # submitter the Pool keeps: 45 % of the master's CPU, R12)
                    if want == 0 and (then is None or then[0] == 0):
                        continue
                    break
                if self._sub_weight(sub) != then[1]:
                    break
                if want != then[0] and not (then[2] and want > shares.get(sid, 0.0) + EPS):
                    break
            else:
                self._share_dirty.clear()
                return shares
        shares = self.submitter_shares()
        self._share_base = {
            s.id: (w, self._sub_weight(s), w > shares.get(s.id, 0.0) + EPS)
            for s in self.submitters.values() for w in (self._sub_want(s),)}
        self._shares, self._share_slots = shares, self.up_slots
        self._share_dirty.clear()
        return shares

    def negotiate(self, now: float) -> list:
        """Walks only the requests that can still get a slot (`_live`), the submitters
        in turn (see ROUND_BUDGET)."""
        out: list = []
        served = self._served
        for sid in sorted(self._live, key=lambda s: served.get(s, -1)):
            sub, live = self.submitters[sid], self._live[sid]
            for r in list(live.values()):
                if r.unmatchable is None and r.count:
                    try:  # over its budget: this submitter's other verdicts wait
                        self._parse(r)
                        why = r.unmatchable or self._why_never(r, now)
                    except _OverBudget:
                        break
                    if why:
                        r.unmatchable = why
                        del live[r.key]
                        sub.asks -= r.count * r.cpus
                        self._want_changed(sub.id)
                        out.append(("submitter", sub.id,
                                    {"type": "unmatchable", "key": r.key, "reason": why}))
            if not live:
                del self._live[sid]
        share = self._current_shares()
        held = dict(self._sub_held)
        pending = {(sid, r.key): r.count - self._sub_pending.get((sid, r.key), 0)
                   for sid, live in self._live.items() if self.submitters[sid].connected
                   for r in live.values() if r.count and not r.unmatchable and r.parsed}
        wanting = {sid for (sid, _), left in pending.items() if left > 0}
        for name, sid in list(self._reserved.items()):
            if sid not in wanting:
                self._unreserve(self.nodes[name])

        def prio(sid: str) -> float:
            s = share.get(sid)
            return held.get(sid, 0) / s if s else 1e9 + held.get(sid, 0)

        cands = [(prio(s), s, k) for (s, k), left in pending.items() if left > 0]
        heapq.heapify(cands)
        blocked: set = set()
        while cands:
            p, sid, key = heapq.heappop(cands)
            if p != prio(sid):  # it got a claim for another of its requests meanwhile
                heapq.heappush(cands, (prio(sid), sid, key))
                continue
            if not self._any_free():  # nothing is free: every request left waits
                blocked.add((sid, key))
                blocked.update((s, k) for _, s, k in cands)
                break
            sub = self.submitters[sid]
            r = sub.requests[key]
            try:
                node, fragmented = self._pick(r, sub, now)
            except _OverBudget:  # its submitter's budget is spent: next round
                continue
            if node is None:
                blocked.add((sid, key))
                if fragmented and held.get(sid, 0) < share.get(sid, 0) - 1e-9:
                    # below its share, and free slots it cannot use exist: hold a node for
                    # it (a full pool needs none: the next freed slot goes to it anyway)
                    self._reserve(r, sid)
                continue
            cid = self.new_id()
            while cid in self.claims or cid in self.dropped:
                cid = self.new_id()
            if node.reserved_for == sid:
                self._unreserve(node)
            self._add(Claim(cid, node.name, sid, sub.user, r.cpus, r.memory, r.gpus,
                            key=r.key, offered=now))
            held[sid] = held.get(sid, 0) + r.cpus
            pending[(sid, key)] -= 1
            if pending[(sid, key)] > 0:
                heapq.heappush(cands, (prio(sid), sid, key))
            out.append(("node", node.name, {"type": "claim-offer", "claim": cid,
                                             "submitter": sid, "user": sub.user,
                                             "cpus": r.cpus, "memory": r.memory,
                                             "gpus": r.gpus}))
        return out + self._give_back(share, held, blocked)

    def _any_free(self) -> bool:
        """Is some node eligible for an offer? (Stale heap entries on top are dropped.)"""
        heap, nodes = self._heap, self.nodes
        while heap:
            entry = heap[0]
            node = nodes[entry[2]]
            if node.heap_seq == entry[1] and self._eligible(node):
                return True
            heapq.heappop(heap)
        return False

    def _pick(self, r: Request, sub: Submitter, now: float) -> tuple:
        """The least busy (used + load) node with room that matches, from the heap, and
        whether some node had free slots this request could not use (fragmentation)."""
        heap, nodes = self._heap, self.nodes
        sid, avoid = sub.id, sub.avoid
        skipped = []
        best = None
        try:
            while heap:
                entry = heapq.heappop(heap)
                node = nodes[entry[2]]
                if node.heap_seq != entry[1] or not self._eligible(node):
                    continue  # stale
                skipped.append(entry)
                if node.reserved_for not in (None, sid):
                    continue
                if avoid and node.name in avoid:
                    if avoid[node.name] > now:
                        continue
                    del avoid[node.name]
                if self._room(node, r) and self._matches(node, r):
                    best = node
                    break
        finally:  # also on _OverBudget
            for entry in skipped:
                heapq.heappush(heap, entry)
        return best, len(skipped) > (best is not None)

    def _unreserve(self, node: Node) -> None:
        if node.reserved_for is not None:
            self._reserved.pop(node.name, None)
            self._reserving.pop(node.reserved_for, None)
            node.reserved_for = None

    def _reserve(self, r: Request, sid: str) -> None:
        """Hold back the best node for a request nothing can take now (anti-starvation).
        O(nodes), but only while `sid` has no node reserved."""
        if sid in self._reserving:
            return
        best = None
        try:
            for n in self.nodes.values():
                if n.state == "up" and n.reserved_for is None and self._fits_ever(n, r) \
                        and (best is None
                             or n.slots - n.used_cpus > best.slots - best.used_cpus) \
                        and self._matches(n, r):
                    best = n
        except _OverBudget:  # its submitter's budget is spent: at a later round
            return
        if best is not None and best.slots - best.used_cpus < r.cpus:
            best.reserved_for = sid
            self._reserved[best.name] = sid
            self._reserving[sid] = best.name

    def _give_back(self, share: dict, held: dict, blocked: set) -> list:
        """Ask submitters above their share to let claims go at their next job boundary."""
        starving = {s for s, _ in blocked if held.get(s, 0) < math.floor(share.get(s, 0))}
        in_the_way = set()  # hold a slot on a node kept for a starving big request
        for name, rsid in self._reserved.items():
            for c in self.nodes[name].claims.values():
                if c.submitter != rsid:
                    in_the_way.add(c.submitter)
        out = []
        if not starving and not in_the_way:  # nobody is asked: only those asked before
            subs = sorted((self.submitters[s] for s in self._givers if s in self.submitters),
                          key=lambda sub: sub.seq)
        else:
            subs = list(self.submitters.values())
        self._givers.clear()
        for sub in subs:
            over = 0
            if starving and sub.id not in starving:
                over = max(0, math.floor(held.get(sub.id, 0) - math.ceil(share.get(sub.id, 0))))
            if not over and sub.id in in_the_way:
                over = 1
            if over != sub.give_back and sub.connected:
                sub.give_back = over
                out.append(("submitter", sub.id, {"type": "give-back", "count": over}))
            if sub.give_back:
                self._givers.add(sub.id)
        return out

    # ------------------------------------------------------------ views

    def status(self, now: float) -> dict:
        nodes = []
        for n in self.nodes.values():
            per: dict = {}
            for c in n.claims.values():
                per[c.user] = per.get(c.user, 0) + 1
            age = None
            if n.waiting and n.oldest_wait is not None:
                age = round(n.oldest_wait + max(0.0, now - n.last_seen), 1)
            nodes.append({"name": n.name, "address": f"{n.host}:{n.port}", "state": n.state,
                          "slots": n.slots, "slots_used": n.used_cpus, "memory": n.memory,
                          "memory_used": n.used_memory, "gpus": n.gpus,
                          "gpus_used": n.used_gpus,
                          "load": round(n.load, 2), "running": n.running,
                          "results_waiting": n.waiting, "oldest_result_age": age,
                          "claims": per, "arch": n.ad.get("arch"), "attrs": n.attrs,
                          "seen_ago": round(now - n.last_seen, 1) if n.last_seen else None})
        share = self.shares()
        subs = [{"submitter": s.id, "user": s.user, "host": s.host, "pid": s.pid,
                 "connected": s.connected,
                 "claims": len(self.claims_of_submitter(s.id)),
                 "slots": self._sub_held.get(s.id, 0),
                 "idle": sum(r.count for r in s.requests.values()),
                 "share": round(share.get(s.user, 0.0), 2)}
                for s in self.submitters.values()]
        return {"nodes": nodes, "submitters": subs}

    def queue(self) -> dict:
        clusters = []
        for s in self.submitters.values():
            for c in s.clusters:
                clusters.append(dict(c, submitter=s.id, user=s.user, host=s.host,
                                     connected=s.connected))
        return {"clusters": clusters}

    def owner_of(self, cluster: int) -> Optional[Submitter]:
        for s in self.submitters.values():
            if any(c.get("id") == cluster for c in s.clusters):
                return s
        return None
