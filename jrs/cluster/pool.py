"""The pool as the master sees it, and every decision it makes (sans-IO).

Calls describe what happened (a node said hello, a submitter sent demand, a
second passed); each returns a list of `(peer kind, peer id, message)` for the
role code to send. Nothing here is persistent except through the peers: a
restarted master rebuilds this from node and submitter hellos.

Fair share: each user's share of the pool's slots is its weight over the sum
of weights of users that want slots, water-filled so nobody is given more than
it asks for. Claims are handed out by progressive filling (the user furthest
below its share first), so free slots are never left idle; when a user is
below its share and nothing is free, users above theirs are asked to give
claims back, which their submitters do at job boundaries (running jobs are
never killed). A request that fits no node as things stand gets a node
reserved for it, so big requests cannot be starved by a stream of small ones.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Optional

from ..condor import classad

NODE_TIMEOUT = float(os.environ.get("JRS_NODE_TIMEOUT", "6"))
SUBMITTER_LEASE = float(os.environ.get("JRS_SUBMITTER_LEASE", "300"))
UNMATCHABLE_GRACE = 3.0


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
    last_seen: float = 0.0
    load: float = 0.0
    running: int = 0
    reserved_for: Optional[str] = None

    def used(self, claims: dict) -> tuple:
        mine = [c for c in claims.values() if c.node == self.name]
        return (sum(c.cpus for c in mine), sum(c.memory for c in mine),
                sum(c.gpus for c in mine))


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



def _int(value: object, default: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return max(0, int(value))


class Pool:
    def __init__(self, node_list: list, now: float = 0.0) -> None:
        self.nodes: dict[str, Node] = {}
        for entry in node_list:
            self.nodes[entry.name] = Node(entry.name, entry.endpoint.host, entry.endpoint.port)
        self.submitters: dict[str, Submitter] = {}
        self.claims: dict[str, Claim] = {}
        self.revoked: set = set()
        self.started = now

    # ------------------------------------------------------------ nodes

    def node_hello(self, name: str, msg: dict, now: float) -> list:
        node = self.nodes.get(name)
        if node is None:
            raise KeyError(name)
        node.slots, node.memory, node.gpus = (_int(msg["slots"]), _int(msg["memory"]),
                                              _int(msg["gpus"]))
        node.attrs = {str(k): v for k, v in dict(msg["attrs"]).items()}
        ad = {k.lower(): v for k, v in node.attrs.items()}
        ad.update(cpus=node.slots, memory=node.memory, gpus=node.gpus, name=name)
        node.ad = ad
        node.state, node.last_seen = "up", now
        out = [("node", name, {"type": "welcome"})]
        for c in msg["claims"]:
            cid = str(c["claim"])
            if cid in self.revoked:
                out.append(("node", name, {"type": "claim-drop", "claim": cid}))
                continue
            self.claims[cid] = Claim(cid, name, str(c["submitter"]), str(c["user"]),
                                     _int(c["cpus"]), _int(c["memory"]),
                                     len(c.get("gpus") or []), active=True)
        return out + self.negotiate(now)

    def node_report(self, name: str, msg: dict, now: float) -> list:
        node = self.nodes[name]
        node.last_seen, node.state = now, "up"
        node.load = float(msg["load"])
        node.running = _int(msg["running"])
        held = {str(c) for c in msg["claims"]}
        gone = [cid for cid, c in self.claims.items()
                if c.node == name and c.active and cid not in held]
        for cid in gone:
            del self.claims[cid]
        # A node back from a partition on its old connection still holds claims we took
        # from it when it went silent; their jobs were rerun elsewhere.
        out = [("node", name, {"type": "claim-drop", "claim": cid})
               for cid in sorted(held & self.revoked)]
        return out + (self.negotiate(now) if gone else [])

    def claim_answer(self, name: str, msg: dict, now: float) -> list:
        claim = self.claims.get(str(msg["claim"]))
        if claim is None or claim.node != name:
            if msg["type"] == "claim-ok":  # an offer we forgot (restart): let it go
                return [("node", name, {"type": "claim-drop", "claim": msg["claim"]})]
            return []
        if msg["type"] == "claim-refused":
            del self.claims[claim.id]
            return []
        claim.active = True
        node = self.nodes[name]
        return [("submitter", claim.submitter,
                 {"type": "claim", "claim": claim.id, "node": name, "host": node.host,
                  "port": node.port, "cpus": claim.cpus, "memory": claim.memory,
                  "gpus": claim.gpus, "key": claim.key})]

    def claim_released(self, name: str, cid: str, now: float) -> list:
        claim = self.claims.get(cid)
        if claim is not None and claim.node == name:
            del self.claims[cid]
            return self.negotiate(now)
        return []

    # ------------------------------------------------------------ submitters

    def submitter_hello(self, msg: dict, now: float) -> list:
        sid = str(msg["submitter"])
        sub = self.submitters.get(sid)
        if sub is None:
            sub = self.submitters[sid] = Submitter(sid, str(msg["user"]), str(msg["host"]),
                                                   _int(msg["pid"]))
        sub.connected, sub.last_seen, sub.pid = True, now, _int(msg["pid"])
        known = {str(c) for c in msg["claims"]}
        out = []
        for c in self.claims.values():  # claims granted while it was away
            if c.submitter == sid and c.active and c.id not in known:
                node = self.nodes[c.node]
                out.append(("submitter", sid, {
                    "type": "claim", "claim": c.id, "node": c.node, "host": node.host,
                    "port": node.port, "cpus": c.cpus, "memory": c.memory, "gpus": c.gpus,
                    "key": c.key}))
        return out

    def submitter_gone(self, sid: str, now: float) -> list:
        """Its claims go back to the pool as their jobs end (results wait on the nodes
        for a resumed submitter, which needs no claim to collect them)."""
        sub = self.submitters.get(sid)
        out = []
        if sub is not None:
            sub.connected, sub.last_seen = False, now
            sub.requests = {}
        for c in [c for c in self.claims.values() if c.submitter == sid]:
            out.append(("node", c.node, {"type": "claim-drop", "claim": c.id, "kill": False}))
        return out + self.negotiate(now)

    def set_demand(self, sid: str, requests: list, now: float) -> list:
        sub = self.submitters[sid]
        previous = sub.requests
        new = {}
        for r in requests:
            key = str(r["key"])
            old = sub.requests.get(key)
            text = r.get("requirements") or ""
            if old is not None and old.requirements_text == text:
                old.count = _int(r["count"])
                new[key] = old
                continue
            tree, bad = None, None
            if text:
                try:
                    tree = classad.parse(text)
                except classad.ClassAdError as exc:
                    bad = f"requirements: {exc}"
            ad = {str(k).lower(): v for k, v in dict(r.get("ad") or {}).items()}
            weight = r.get("weight", 1.0)
            weight = float(weight) if isinstance(weight, (int, float)) and weight > 0 else 1.0
            new[key] = Request(key, _int(r["count"]), max(1, _int(r["cpus"], 1)),
                               _int(r["memory"]), _int(r["gpus"]), tree, text, ad,
                               weight, unmatchable=None)
            if bad:
                new[key].unmatchable = bad
        sub.requests = new
        out = [("submitter", sid, {"type": "unmatchable", "key": k, "reason": r.unmatchable})
               for k, r in new.items() if r.unmatchable and k not in previous]
        return out + self.negotiate(now)

    def release(self, sid: str, cid: str, now: float) -> list:
        claim = self.claims.get(cid)
        if claim is None or claim.submitter != sid:
            return []
        return [("node", claim.node, {"type": "claim-drop", "claim": cid})]

    # ------------------------------------------------------------ time

    def tick(self, now: float) -> list:
        out: list = []
        for node in self.nodes.values():
            if node.state == "up" and now - node.last_seen > NODE_TIMEOUT:
                node.state = "down"
                lost = [c for c in self.claims.values() if c.node == node.name]
                by_sub: dict = {}
                for c in lost:
                    by_sub.setdefault(c.submitter, []).append(c.id)
                    self.revoked.add(c.id)
                    del self.claims[c.id]
                for sid, ids in by_sub.items():
                    out.append(("submitter", sid, {"type": "node-lost", "node": node.name,
                                                   "claims": ids}))
        for sub in list(self.submitters.values()):
            if not sub.connected and now - sub.last_seen > SUBMITTER_LEASE:
                del self.submitters[sub.id]  # `jrs q` forgets it
        return out + self.negotiate(now)

    # ------------------------------------------------------------ matching

    def _fits_ever(self, node: Node, r: Request) -> bool:
        return r.cpus <= node.slots and r.memory <= node.memory and r.gpus <= node.gpus

    def _matches(self, node: Node, r: Request) -> bool:
        if r.requirements is None:
            return True
        return classad.matches(r.requirements, r.ad, node.ad)

    def _room(self, node: Node, r: Request) -> bool:
        cpus, mem, gpus = node.used(self.claims)
        return (cpus + r.cpus <= node.slots and mem + r.memory <= node.memory
                and gpus + r.gpus <= node.gpus)

    def _why_never(self, r: Request, now: float) -> Optional[str]:
        known = [n for n in self.nodes.values() if n.state != "never"]
        if not known or (len(known) < len(self.nodes) and now - self.started < UNMATCHABLE_GRACE):
            return None
        if any(self._fits_ever(n, r) and self._matches(n, r) for n in known):
            return None
        if not any(self._fits_ever(n, r) for n in known):
            big = max(known, key=lambda n: n.slots)
            return (f"it asks for {r.cpus} cpus, {r.memory} MiB, {r.gpus} GPUs and no node "
                    f"is that big (largest: {big.name} with {big.slots} slots, "
                    f"{big.memory} MiB, {big.gpus} GPUs)")
        return (f"requirements ({r.requirements_text}) match none of the "
                f"{len(known)} nodes")

    def _held(self) -> dict:
        held: dict = {}
        for c in self.claims.values():
            held[c.user] = held.get(c.user, 0) + c.cpus
        return held

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

    def submitter_shares(self) -> dict:
        """Each user's share split equally among that user's submitters (water-filled)."""
        per_user = self.shares()
        out: dict = {}
        for user, total in per_user.items():
            subs = [s for s in self.submitters.values() if s.user == user]
            want = {s.id: self._sub_want(s) for s in subs}
            out.update(self._water_fill(total, want, {s.id: 1.0 for s in subs}))
        return out

    def _sub_want(self, sub: Submitter) -> int:
        asks = sum(r.count * r.cpus for r in sub.requests.values() if not r.unmatchable)
        return asks + sum(c.cpus for c in self.claims.values() if c.submitter == sub.id)

    def shares(self) -> dict:
        """Each user's fair share of the slots of the nodes that are up (water-filled)."""
        total = sum(n.slots for n in self.nodes.values() if n.state == "up")
        held = self._held()
        want: dict = {}
        weight: dict = {}
        for sub in self.submitters.values():
            amount = self._sub_want(sub)
            if amount:
                want[sub.user] = want.get(sub.user, 0) + amount
                w = max([r.weight for r in sub.requests.values()] or [1.0])
                weight[sub.user] = max(weight.get(sub.user, 0), w)
        for user, amount in held.items():
            want.setdefault(user, amount)
            weight.setdefault(user, 1.0)
        return self._water_fill(total, want, weight)

    def negotiate(self, now: float) -> list:
        out: list = []
        for sub in self.submitters.values():
            for r in sub.requests.values():
                if r.unmatchable is None and r.count:
                    why = self._why_never(r, now)
                    if why:
                        r.unmatchable = why
                        out.append(("submitter", sub.id,
                                    {"type": "unmatchable", "key": r.key, "reason": why}))
        up = [n for n in self.nodes.values() if n.state == "up"]
        share = self.submitter_shares()
        held: dict = {}
        for c in self.claims.values():
            held[c.submitter] = held.get(c.submitter, 0) + c.cpus
        pending = {(s.id, r.key): r.count - self._pending_for(s.id, r)
                   for s in self.submitters.values() if s.connected
                   for r in s.requests.values() if r.count and not r.unmatchable}
        blocked: set = set()
        for n in up:
            if n.reserved_for and not any(
                    k[0] == n.reserved_for and v > 0 for k, v in pending.items()):
                n.reserved_for = None
        while True:
            cands = [(held.get(s, 0) / share[s] if share.get(s) else 1e9 + held.get(s, 0), s, k)
                     for (s, k), left in pending.items() if left > 0 and (s, k) not in blocked]
            if not cands:
                break
            _, sid, key = min(cands)
            sub = self.submitters[sid]
            r = sub.requests[key]
            node = self._pick(up, r, sid)
            if node is None:
                blocked.add((sid, key))
                if held.get(sid, 0) < share.get(sid, 0) - 1e-9:
                    self._reserve(up, r, sid)  # below its share: hold a node for it
                continue
            cid = os.urandom(12).hex()
            self.claims[cid] = Claim(cid, node.name, sid, sub.user, r.cpus, r.memory, r.gpus,
                                     key=r.key)
            if node.reserved_for == sid:
                node.reserved_for = None
            held[sid] = held.get(sid, 0) + r.cpus
            pending[(sid, key)] -= 1
            out.append(("node", node.name, {"type": "claim-offer", "claim": cid,
                                             "submitter": sid, "user": sub.user,
                                             "cpus": r.cpus, "memory": r.memory,
                                             "gpus": r.gpus}))
        return out + self._give_back(share, held, blocked)

    def _pending_for(self, sid: str, r: Request) -> int:
        """Offers not yet answered by their node count against a request."""
        return sum(1 for c in self.claims.values()
                   if c.submitter == sid and not c.active and c.key == r.key)

    def _pick(self, up: list, r: Request, sid: str) -> Optional[Node]:
        best = None
        for n in up:
            if n.reserved_for not in (None, sid):
                continue
            if self._room(n, r) and self._matches(n, r) and (
                    best is None or n.load + n.used(self.claims)[0]
                    < best.load + best.used(self.claims)[0]):
                best = n
        return best

    def _reserve(self, up: list, r: Request, sid: str) -> None:
        """Hold back the best node for a request nothing can take now (anti-starvation)."""
        if any(n.reserved_for == sid for n in up):
            return
        fits = [n for n in up if n.reserved_for is None and self._fits_ever(n, r)
                and self._matches(n, r)]
        if not fits:
            return
        n = max(fits, key=lambda n: n.slots - n.used(self.claims)[0])
        if n.slots - n.used(self.claims)[0] < r.cpus:
            n.reserved_for = sid

    def _give_back(self, share: dict, held: dict, blocked: set) -> list:
        """Ask submitters above their share to let claims go at their next job boundary."""
        starving = {s for s, _ in blocked if held.get(s, 0) < math.floor(share.get(s, 0))}
        reserved = {n.name: n.reserved_for for n in self.nodes.values() if n.reserved_for}
        out = []
        for sub in self.submitters.values():
            over = 0
            if starving and sub.id not in starving:
                over = max(0, math.floor(held.get(sub.id, 0) - math.ceil(share.get(sub.id, 0))))
            if not over and any(c.submitter == sub.id and reserved.get(c.node) not in
                                (None, sub.id) for c in self.claims.values()):
                over = 1  # it holds a slot on a node kept for a starving big request
            if over != sub.give_back and sub.connected:
                sub.give_back = over
                out.append(("submitter", sub.id, {"type": "give-back", "count": over}))
        return out

    # ------------------------------------------------------------ views

    def status(self, now: float) -> dict:
        nodes = []
        for n in self.nodes.values():
            cpus, mem, gpus = n.used(self.claims)
            per: dict = {}
            for c in self.claims.values():
                if c.node == n.name:
                    per[c.user] = per.get(c.user, 0) + 1
            nodes.append({"name": n.name, "address": f"{n.host}:{n.port}", "state": n.state,
                          "slots": n.slots, "slots_used": cpus, "memory": n.memory,
                          "memory_used": mem, "gpus": n.gpus, "gpus_used": gpus,
                          "load": round(n.load, 2), "running": n.running,
                          "claims": per, "arch": n.ad.get("arch"), "attrs": n.attrs,
                          "seen_ago": round(now - n.last_seen, 1) if n.last_seen else None})
        share = self.shares()
        subs = [{"submitter": s.id, "user": s.user, "host": s.host, "pid": s.pid,
                 "connected": s.connected,
                 "claims": sum(1 for c in self.claims.values() if c.submitter == s.id),
                 "slots": sum(c.cpus for c in self.claims.values() if c.submitter == s.id),
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
