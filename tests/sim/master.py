"""The master in the simulation: the real `Pool`, behind a shell as thin as the daemon's.

The shell only routes: a node's or submitter's message to the Pool method the
real master calls for it, the Pool's actions to the connections they name,
one `tick` a second. Its one file is the cluster-id counter, on its disk.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Optional

from jrs.cluster import pool as pool_mod
from jrs.wire.messages import error

from .clock import Proc
from .net import Closed, End

COUNTER = "/master/next-cluster"
TICK = 1.0


def make_pool(world, now: float):
    """The Pool as the daemon makes it, with ids from the simulation's generator."""
    params = inspect.signature(pool_mod.Pool).parameters
    kw = {}
    if "new_id" in params:
        kw["new_id"] = world.new_id
    for name, value in (("node_timeout", world.shape.node_timeout),
                        ("submitter_lease", world.shape.submitter_lease)):
        if name in params:
            kw[name] = value
    pool = pool_mod.Pool(world.node_entries, now, **kw)
    # every negotiation a demand skips is checked on copies of the books (Pool.check
    # reports a skip that changed what the round would do); off at scale (O(pool) each)
    pool.verify_skips = getattr(world, "verify_skips", True)
    return pool


class MasterProc(Proc):
    def __init__(self, world, host) -> None:
        super().__init__(world.sim, host.name, "master")
        self.world = world
        self.disk = host.disk
        self.started = self.sim.now
        self.pool = make_pool(world, self.sim.now)
        self.nodes: dict = {}
        self.submitters: dict = {}
        world.net.listen(self, world.master_address, self._accept)
        self.later(0.0, self._tick)  # the real ticker ticks at once, then every TICK

    # ------------------------------------------------------------ plumbing

    def send(self, actions: list) -> None:
        declared = set()
        for kind, ident, msg in actions:
            if kind == "submitter" and msg.get("type") == "node-lost":
                self.world.lost(ident, msg["node"], "the master declared it lost")
                for cid in msg.get("claims") or ():
                    self.world.revoked.setdefault(cid, self.sim.now)
                if msg["node"] not in declared:
                    declared.add(msg["node"])
                    self.world.declared_lost(self, msg["node"])
            end = (self.nodes if kind == "node" else self.submitters).get(ident)
            if end is not None:
                try:
                    end.send(msg)
                except Closed:
                    pass  # the peer's close handler cleans up

    def _tick(self) -> None:
        self.send(self.pool.tick(self.sim.now))
        self.world.check_pool(self.pool)
        self.later(TICK, self._tick)

    def _accept(self, end: End) -> None:
        state = {"role": None, "id": None}

        def on_message(msg: dict) -> None:
            if state["role"] is None:
                self._first(end, state, msg)
            elif state["role"] == "node":
                self._from_node(end, state["id"], msg)
            else:
                self._from_submitter(end, state["id"], msg)

        def on_close() -> None:
            role, ident = state["role"], state["id"]
            if role == "node" and self.nodes.get(ident) is end:
                del self.nodes[ident]
                gone = getattr(self.pool, "node_gone", None)
                if gone is not None:
                    self.send(gone(ident, self.sim.now))
            elif role == "submitter" and self.submitters.get(ident) is end:
                del self.submitters[ident]
                self.send(self.pool.submitter_gone(ident, self.sim.now))

        end.on_message, end.on_close = on_message, on_close

    def _first(self, end: End, state: dict, msg: dict) -> None:
        now = self.sim.now
        kind = msg["type"]
        if kind == "node-hello":
            name = msg["name"]
            if name not in self.pool.nodes:
                end.send(error("unknown-node", f"{name} is not in the master's node.list"))
                return
            old = self.nodes.get(name)
            if old is not None:
                old.close()
            state["role"], state["id"] = "node", name
            self.nodes[name] = end
            self.send(self.pool.node_hello(name, msg, now))
        elif kind == "submitter-hello":
            sid = msg["submitter"]
            token = msg.get("token")
            digest = hashlib.sha256(token.encode()).hexdigest() if token else None
            check = getattr(self.pool, "session_ok", None)
            if check is not None and not check(sid, digest):
                end.send(error("session", "this submitter id belongs to another session"))
                end.close()
                return
            old = self.submitters.get(sid)
            if old is not None:
                old.close()
            state["role"], state["id"] = "submitter", sid
            self.submitters[sid] = end
            actions = self.pool.submitter_hello(msg, now)
            end.send(self.pool.welcome(msg))
            self.send(actions)
            self._progress(sid, msg.get("clusters") or [])
        else:
            end.send(error("protocol", f"may not start with {kind!r}"))

    def _progress(self, sid: str, clusters: list) -> None:
        setp = getattr(self.pool, "set_progress", None)
        clean = [c for c in clusters if isinstance(c, dict)]
        if setp is not None:
            setp(sid, clean)
        elif sid in self.pool.submitters:
            self.pool.submitters[sid].clusters = clean

    def _from_node(self, end: End, name: str, msg: dict) -> None:
        now = self.sim.now
        kind = msg["type"]
        if kind == "node-report":
            self.send(self.pool.node_report(name, msg, now))
        elif kind in ("claim-ok", "claim-refused"):
            self.send(self.pool.claim_answer(name, msg, now))
        elif kind == "claim-released":
            self.send(self.pool.claim_released(name, msg["claim"], now))
        elif kind == "ping":  # as jrs/cluster/master.py: after the drops of the report
            end.send({"type": "pong", "seq": msg["seq"]})

    def _from_submitter(self, end: End, sid: str, msg: dict) -> None:
        now = self.sim.now
        kind = msg["type"]
        if kind == "new-cluster":
            end.send({"type": "cluster", "id": self._take_cluster()})
        elif kind == "demand":
            self.send(self.pool.set_demand(sid, msg["requests"], now))
        elif kind == "release":
            self.send(self.pool.release(sid, msg["claim"], now, kill=msg.get("kill") is True))
        elif kind == "progress":
            self._progress(sid, msg["clusters"])

    def _take_cluster(self) -> int:
        value: Optional[int] = None
        if self.disk.exists(COUNTER):
            value = int(self.disk.read(COUNTER))
        value = value or 1
        self.disk.replace(COUNTER, value + 1)  # written before the id is handed out
        return value

    def describe(self) -> str:
        return f"master with {len(self.pool.claims)} claims"
