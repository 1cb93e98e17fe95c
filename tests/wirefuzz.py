"""A structure-aware fuzzer of the wire and of each role's message handling.

Random bytes die at the handshake magic or the MAC, so they test nothing behind
them. This fuzzer starts from what an honest peer sends: for every message type
of `jrs.wire.messages.SCHEMA` it generates a *valid* message (values of the
right shape, and where a role checks more than the schema, values that role
accepts: the claim, job and session of a live scenario), mutates it (a field
deleted, a type swapped, huge or negative numbers, deep nesting, long strings,
lone surrogates, duplicate keys, NaN, extra fields, lists over their bounds),
seals it with the session's real key, sometimes mutates the frames too (a bit
flipped after sealing, truncated, reordered, a data frame repeated or without
its header, a header whose size lies, an unknown frame kind) and feeds the
stream to a real sans-IO `Connection`. What comes out goes to the pure entry
points of the role that receives the type: the master's handler tables and its
`Pool`, the node core (`NodeCore`: admission of offers, sessions and runs) and
the submitter core (`SubmitCore`).

What it checks, per input: nothing raises but the documented errors (WireError
from the connection: close it; BadMessage events; the master's PayloadError;
the cores answer with actions); a refused message leaves the role's state as
it was; the connection stays in step after a refused message (a ping goes
through); the CPU time of each input is bounded. `Stats` counts how far the
inputs got, so a test can assert every handler was reached, accepted and
refused for a field-level reason. Seeded: the same seed gives the same inputs.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import math
import os
import random
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Optional

from jrs.client import core as C
from jrs.client.jobs import Queue
from jrs.cluster import master as M
from jrs.cluster.limits import Limits
from jrs.cluster.payload import PayloadError
from jrs.condor import expand_text
from jrs.node import core as N
from jrs.wire import schema as S
from jrs.wire.connection import BadMessage, Connection, Data, Message
from jrs.wire.errors import WireError
from jrs.wire.frames import MAX_MESSAGE, MAX_SEALED
from jrs.wire.keys import root_key
from jrs.wire.messages import SCHEMA, TRANSFER_TYPES, _fields

ROOT = root_key(b"f" * 32)
SUB = "ab" * 12            # a submitter id of the node core's shape
CID = "cd" * 12            # the claim the node core and the submitter core know
CID2, CID3 = "ef" * 12, "0a" * 12  # free claims of the node core
TOKEN = "1f" * 32          # a session token (node side)
NODE = "127.0.0.1:9618"    # the node's name in the master's node list
CLUSTER = 7
MAX_SECONDS = 1.0          # CPU time an input may cost, per MiB it has (and one more)
MAX_BYTES = 256 << 20      # memory one input may take at its peak (a frame is <= 16 MiB)

# Who receives each type, through which role entry point (several: sent to more than one).
RECEIVERS: dict = {
    "node-hello": ["master-node"], "node-report": ["master-node"],
    "claim-ok": ["master-node"], "claim-refused": ["master-node"],
    "claim-released": ["master-node"], "submitter-hello": ["master-sub"],
    "new-cluster": ["master-sub"], "demand": ["master-sub"], "release": ["master-sub", "node-s"],
    "progress": ["master-sub"], "removed": ["master-sub"], "query": ["master-tool"],
    "rm": ["master-tool", "submit-m"],
    "claim-offer": ["node-m"], "claim-drop": ["node-m"], "welcome": ["node-m", "submit-m"],
    "ping": ["node-m"], "pong": ["master-node", "node-m", "node-s", "submit-n", "submit-m"],
    "error": ["master-node", "master-sub", "node-m", "node-s", "submit-m", "submit-n"],
    "attach": ["node-s"], "run": ["node-s"], "kill": ["node-s"], "ack": ["node-s"],
    "claim": ["submit-m"], "unmatchable": ["submit-m"], "give-back": ["submit-m"],
    "node-lost": ["submit-m"], "cluster": ["submit-m"],
    "started": ["submit-n"], "rejected": ["submit-n"], "attached": ["submit-n"],
    "finished": ["submit-n"],
    # the tools print these; hello/echo/blob are the wire's own: checked by the schema
    "status-reply": [], "queue-reply": [], "rm-reply": [], "hello": [], "echo": [],
    "blob": [],
}
# Handlers that check fields beyond the schema: each must refuse some input itself.
ROLE_REFUSES = {
    ("master-node", "node-hello"), ("master-node", "node-report"),
    ("master-node", "claim-ok"), ("master-node", "claim-refused"),
    ("master-sub", "submitter-hello"), ("master-sub", "demand"),
    ("master-sub", "progress"),
    ("node-m", "claim-offer"), ("node-m", "claim-drop"),
    ("node-s", "attach"), ("node-s", "run"), ("node-s", "kill"), ("node-s", "ack"),
    ("node-s", "release"),
    ("submit-n", "finished"), ("submit-n", "started"), ("submit-n", "rejected"),
    ("submit-n", "attached"),
}

# Values a role accepts for a field of that name (the generator picks them often, so
# inputs get past the roles' own checks to the state behind them).
GOOD: dict = {
    "claim": [CID], "submitter": [SUB, SUB], "job": [f"{CLUSTER}.0"],
    "attempt": [1], "token": [TOKEN], "user": ["alice"], "node": ["n1", NODE],
    "name": [NODE, "in.txt"], "host": ["127.0.0.1"], "port": [9], "slots": [4],
    "memory": [1000, 10], "cpus": [1], "gpus": [0], "what": ["status", "queue", "x"],
    "key": ["1/0/0/"], "executable": ["/bin/true", "job.sh"], "size": [3, 0],
    "version": [1], "seq": [1], "pid": [1], "ids": [[f"{CLUSTER}.0"], ["1"]], "re": ["r1"],
    "id": [CLUSTER], "code": ["bad-message"], "requirements": ["TARGET.Cpus >= 1", ""],
}

# Values the schema takes but a role must refuse (paths out of the sandbox, ids of the
# wrong shape, counts no node has): a mutation puts one where a field of that name is.
EVIL: dict = {
    "job": ["/../../etc/x", "../7.0", "7.0/..", "7", "7.0.0", "-1.0", "7.0\n", "\u0667.0"],
    "attempt": [-1, 2 ** 40, 2 ** 53],
    "claim": ["../../x", "CD" * 12, "cd" * 11, "", "cd" * 12 + "\n"],
    "submitter": ["/x", "AB" * 12, "", "ab" * 12 + "/.."],
    "token": ["ZZ" * 32, "1f" * 31, ""], "user": ["a/b", "", "x\0y", "/"],
    "name": ["../x", "/etc/passwd", "a/../../b", "", ".", "a//b", "\0"],
    "executable": ["", "../x", "a\0b"], "cpus": [10 ** 6, 2 ** 40], "memory": [2 ** 50],
    "gpus": [10 ** 6], "slots": [2 ** 40], "size": [2 ** 41], "pid": [-1, 2 ** 40],
    "transfer_output_files": [["../x"], ["/etc/shadow"], ["a/../../b"]],
    "load": [-1e300], "count": [-1, 2 ** 40], "requirements": ["x" * 20000],
    "files": [[{"name": "a", "size": 1}, {"name": "a", "size": 1}]],
    "key": ["k" * 20000], "clusters": [[{"id": 1}] * 1025],
}

STRINGS = ["", "a", "in.txt", "d/e.txt", "..", "/etc/passwd", "../../x", "a\0b", "7.0",
           "_condor_stdout", "caf\u00e9", "\U0001f600", "x" * 300,
           "TARGET.Memory > 1", "0" * 24, "ab" * 12, "1f" * 32, "$(x)", "\n\r\t"]
NUMBERS = [0, 1, -1, 2, 7, 2 ** 31, 2 ** 53, 2 ** 53 + 1, -2 ** 53 - 1, 2 ** 63, 10 ** 30,
           -(10 ** 30), 0.5, -0.0, 1e308, 1e-308, float("nan"), float("inf"), float("-inf")]


# ------------------------------------------------------------------ generating


class Gen:
    """Valid values for a spec (small), and the mutations of a message."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.good = GOOD  # replaced by the scenario's (its claim ids)

    def value(self, spec: Any, name: str = "", depth: int = 0) -> Any:
        rnd = self.rnd
        if name in self.good and rnd.random() < 0.75:
            v = rnd.choice(self.good[name])
            try:
                spec.check(v, "", True)
                return v
            except S.MessageError:
                pass
        if isinstance(spec, S.Int):
            lo, hi = max(spec.lo, -3), min(spec.hi, 3)
            return rnd.choice([spec.lo, spec.hi, rnd.randint(lo, hi)]) if lo <= hi else spec.lo
        if isinstance(spec, S.Num):
            return rnd.choice([float(max(spec.lo, 0.0)), max(spec.lo, min(spec.hi, 1.5)),
                               max(spec.lo, 0)])
        if isinstance(spec, S.Str):
            ok = [s for s in STRINGS if len(s) <= spec.max_len]
            return rnd.choice(ok)
        if isinstance(spec, S.Bool):
            return rnd.random() < 0.5
        if spec is S.Null:
            return None
        if isinstance(spec, S.OneOf):
            return self.value(rnd.choice(spec.options), name, depth)
        if isinstance(spec, S.ListOf):
            n = 0 if depth > 3 else rnd.choice([0, 1, 1, 2, 3])
            return [self.value(spec.item, name[:-1] if name.endswith("s") else "", depth + 1)
                    for _ in range(min(n, spec.max_items))]
        if isinstance(spec, S.Tuple):
            return [self.value(s, n, depth + 1)
                    for s, n in zip(spec.items, ("job", "attempt", "", ""))]
        if isinstance(spec, S.Obj):
            return self.fields(spec.fields, depth + 1)
        if isinstance(spec, S.MapOf):
            n = 0 if depth > 3 else rnd.choice([0, 1, 2])
            out = {}
            for _ in range(min(n, spec.max_items)):
                out[self.value(spec.key, "", depth + 1)] = self.value(spec.value, "", depth + 1)
            return out
        if isinstance(spec, S._Types):
            kinds = [t for t in spec.types if t not in (dict, list)] or [type(None)]
            t = rnd.choice(kinds)
            return {int: 1, float: 0.5, str: "s", bool: True, type(None): None}[t]
        raise TypeError(f"no generator for {spec!r}")

    def fields(self, fields: list, depth: int = 0) -> dict:
        out = {}
        for name, spec, required in fields:
            if required or self.rnd.random() < 0.6:
                out[name] = self.value(spec, name, depth)
        return out

    def message(self, kind: str) -> dict:
        fields, _names = _fields(kind)
        msg = self.fields(fields)
        msg["type"] = kind
        if kind == "run":  # a spec the node admits, files that follow
            msg["spec"] = {"executable": "/bin/true", "arguments": ["x"], "cpus": 1,
                           "transfer_output_files": self.rnd.choice([None, ["out"], []])}
            msg["files"] = [{"name": "in.txt", "size": 3, "mode": 0o644}][:self.rnd.randint(0, 1)]
        if kind == "finished":
            msg["result"] = {"node": "n1", "exit_code": 0, "signal": None, "rusage": None,
                             "started": 1.0, "ended": 2.0, "removed": False}
            msg["files"] = [{"name": "_condor_stdout", "size": 2}][:self.rnd.randint(0, 1)]
        return msg

    # -------------------------------------------------------------- mutations

    def paths(self, value: Any, prefix: tuple = ()) -> list:
        """Every (container path) of the value, objects and lists, for mutating in place."""
        out = [prefix]
        if isinstance(value, dict):
            for k, v in value.items():
                out += self.paths(v, (*prefix, k))
        elif isinstance(value, list):
            for i, v in enumerate(value[:4]):  # (a list made huge by a mutation: its head)
                out += self.paths(v, (*prefix, i))
        return out

    def evil(self, msg: dict) -> bool:
        """Put a value of EVIL where a field of its name is (at any depth)."""
        spots = [p for p in self.paths(msg) if p and isinstance(p[-1], str) and p[-1] in EVIL]
        if not spots:
            return False
        path = self.rnd.choice(spots)
        parent = msg
        for k in path[:-1]:
            parent = parent[k]
        parent[path[-1]] = copy.deepcopy(self.rnd.choice(EVIL[path[-1]]))
        return True

    def mutate(self, msg: dict) -> tuple:
        """(message, how) with one or two mutations applied."""
        if self.rnd.random() < 0.4 and self.evil(msg):
            return msg, "evil"
        hows = []
        for _ in range(self.rnd.choice([1, 1, 1, 2])):
            targets = [p for p in self.paths(msg) if p and p != ("type",)]
            if not targets:
                msg["extra"] = self.junk()
                hows.append("extra")
                continue
            path = self.rnd.choice(targets)
            parent = msg
            for k in path[:-1]:
                parent = parent[k]
            last = path[-1]
            how = self.rnd.choice(["delete", "swap", "number", "string", "nest", "huge-list",
                                   "unicode", "extra", "null", "bool-int"])
            if how == "delete":
                del parent[last]
            elif how == "swap":
                parent[last] = self.junk()
            elif how == "number":
                parent[last] = self.rnd.choice(NUMBERS)
            elif how == "string":
                parent[last] = self.rnd.choice(["x" * self.rnd.choice([257, 4097, 65537,
                                                                        (1 << 20) + 1]),
                                                 self.rnd.choice(STRINGS)])
            elif how == "nest":
                v: Any = parent[last]
                for _ in range(self.rnd.choice([2, 50, 300])):
                    v = [v] if self.rnd.random() < 0.5 else {"a": v}
                parent[last] = v
            elif how == "huge-list":
                item = parent[last]  # a list grows by its own first item; small, so
                if isinstance(item, list) and item:  # the message stays sendable (16 MiB)
                    item = item[0]
                item = item if len(json.dumps(item)) < 200 else 0
                n = self.rnd.choice([1025, 4097, 10_001, 100_001])
                # the head (what a second mutation may change) is made of copies
                parent[last] = [copy.deepcopy(item) for _ in range(4)] + [item] * (n - 4)
            elif how == "unicode":
                parent[last] = self.rnd.choice(["\ud800", "\udfff x", "\u202e", "\x00",
                                                "\U0010ffff" * 100])
            elif how == "extra" and isinstance(parent, dict):
                parent["zz-" + self.rnd.choice(STRINGS)[:10]] = self.junk()
            elif how == "null":
                parent[last] = None
            else:
                parent[last] = True if not isinstance(parent[last], bool) else 1
            hows.append(how)
        return msg, "+".join(hows)

    def junk(self) -> Any:
        return self.rnd.choice([None, True, False, 0, -1, 2 ** 64, 1.5, float("nan"), "",
                                "s", [], [1, "a"], {}, {"a": {"b": []}}])


# ------------------------------------------------------------------ the roles


class _Channel:
    """What a master handler writes to: the messages it answers with (no socket)."""

    def __init__(self, role: str) -> None:
        self.sent: list = []
        self.peer = ("192.0.2.1", 5000)
        self.peer_role = role
        self.last_size = 0  # (the limiter's cost of a demand: its frame's bytes)
        self.last_units = 0  # (and its values: master.UNIT_BYTES each)

    def send(self, msg: dict) -> None:
        self.sent.append(msg)


def _state(*parts: Any) -> str:
    return repr(parts)


class Roles:
    """One live scenario per role: a master with the node up, a submitter and a live
    claim; a node core with a claim, an attached session and a running job; a submitter
    core whose job runs on a claim. Each message goes to its receivers' pure entry
    points; `Stats` learns what happened."""

    def __init__(self, stats: Stats, tmp: str, rnd: random.Random) -> None:
        self.stats = stats
        self.tmp = tmp
        self.rnd = rnd
        self.good = dict(GOOD)
        self._master()
        self._node()
        self._submitter()

    # -------------------------------------------------------------- set-up

    def _master(self) -> None:
        config = SimpleNamespace(nodes=[SimpleNamespace(
            name=NODE, endpoint=SimpleNamespace(host="127.0.0.1", port=9618))])
        # demand budgets out of the way: this clock never moves, so a spent one would
        # never refill (jrs/cluster/limits.py; tests/test_master_limits*.py test them)
        self.master = M.Master(config, M.ClusterCounter(self.tmp), clock=lambda: 100.0,
                               limits=Limits(demand_burst=1e18, host_demand_burst=1e18))
        pool = self.master.pool
        pool.new_id = lambda: "%024x" % self.rnd.getrandbits(96)  # seeded, same shape
        pool.node_hello(NODE, {"slots": 4, "memory": 1000, "gpus": 0, "attrs": {},
                               "claims": []}, 100.0)
        pool.session_ok(SUB, TOKEN)
        pool.submitter_hello({"submitter": SUB, "user": "alice", "host": "h", "pid": 1,
                              "claims": [], "clusters": []}, 100.0)
        offers = pool.set_demand(SUB, [{"key": "1/0/0/", "count": 2, "cpus": 1}], 100.0)
        cids = [m["claim"] for _k, _w, m in offers if m["type"] == "claim-offer"]
        assert cids, offers
        pool.claim_answer(NODE, {"type": "claim-ok", "claim": cids[0]}, 100.0)
        self.good["claim"] = [CID, CID2, CID3, *cids]
        pool.check()

    def _node(self) -> None:
        c = N.NodeCore(N.Capacity("n1", 4, 1000, 0, {}), "/state/tasks", "/state/sandbox",
                       boot="b", notify="@n")
        c.master_up()
        c.from_master({"type": "claim-offer", "claim": CID, "submitter": SUB,
                       "user": "alice", "cpus": 1, "memory": 10, "gpus": 0}, 0.0)
        for cid in (CID2, CID3):  # free claims: a run on one gets past admission
            c.from_master({"type": "claim-offer", "claim": cid, "submitter": SUB,
                           "user": "alice", "cpus": 1, "memory": 10, "gpus": 0}, 0.0)
        c.attach(1, {"type": "attach", "submitter": SUB, "jobs": [], "token": TOKEN}, 0.0)
        t = c.run_offered(1, {"type": "run", "claim": CID, "job": f"{CLUSTER}.0",
                              "attempt": 1, "spec": {"executable": "/bin/true"}, "files": []})
        assert t.reason is None, t.reason
        (prep,) = [a for a in c.run_received(t, 0.0) if isinstance(a, N.Prepare)]
        c.task_spec(prep.ticket, None, {}, 0.0)
        c.created(prep.ticket, None, 0.0)
        assert c.tasks
        self.node = c

    def _submitter(self) -> None:
        js = list(expand_text("executable = /bin/true\nqueue 3\n", self.tmp, cluster=CLUSTER))
        q = Queue(iter(js), len(js))
        cfg = C.CoreConfig(CLUSTER, SUB, "alice", "h", bytes(32), len(js))
        s = C.SubmitCore(cfg, q)
        s.start(0.0)
        s.from_master({"type": "claim", "claim": CID, "node": "n1", "host": "127.0.0.1",
                       "port": 9, "cpus": 1, "memory": 10, "gpus": 0, "key": "1/0/0/"}, 0.0)
        s.node_up("n1", 0.0)
        s.run_sent("n1", 0, 1)
        self.submit = s

    # -------------------------------------------------------------- snapshots

    def snapshot(self, role: str, kind: str = "") -> str:
        if role.startswith("master"):
            pool = self.master.pool
            # a refused submitter-hello binds no session either (W1); the sessions' LRU
            # order may move (a hello with the right token refreshes it), not their contents
            return _state(sorted((k, repr(sorted(v.items()) if k == "sessions" else v))
                                 for k, v in vars(pool).items() if k != "new_id"))
        if role.startswith("node"):
            c = self.node
            return _state(c.claims, c.tasks, c.sessions, c.bound, sorted(c.receiving))
        s = self.submit
        q = s.queue
        return _state(s.claims, s.nodes, s.unmatchable, s.give_back, sorted(s.removing),
                      sorted((p, r.state, r.attempt, r.node, r.claim) for p, r in q.live.items()),
                      sorted((p, repr(v)) for p, v in q.final.items()))

    # -------------------------------------------------------------- dispatch

    def deliver(self, msg: dict) -> None:
        for role in RECEIVERS.get(msg["type"], []):
            before = self.snapshot(role, msg["type"])
            refused = self._one(role, msg)
            self.stats.reached[(role, msg["type"])] += 1
            if refused:
                self.stats.refused[(role, msg["type"])] += 1
                after = self.snapshot(role, msg["type"])
                if after != before:
                    raise AssertionError(f"{role} refused {excerpt(msg)} ({refused}) but its "
                                         "state changed")
            else:
                self.stats.accepted[(role, msg["type"])] += 1
            self.invariants(role)
            if role.startswith("submit") and self.submit._rec("n1", f"{CLUSTER}.0", 1) is None:
                self._submitter()  # its job ended (as it should): the next input finds one

    def _one(self, role: str, msg: dict) -> Optional[str]:
        """Hand `msg` to one role; the reason when it was refused for a field, else None."""
        kind = msg["type"]
        if role.startswith("master"):
            return self._to_master(role, msg)
        if role == "node-m":
            return _node_refusal(self.node.from_master(msg, 1.0))
        if role == "node-s":
            if kind == "attach":
                acts = self.node.attach(2, msg, 1.0)
                refused = _node_refusal(acts)
                self.node.session_closed(2)
                return refused
            if kind == "run":
                t = self.node.run_offered(1, msg)
                if t.reason is None:  # admitted: its paths are the node's, one level down
                    c = self.node
                    assert os.path.dirname(t.box) == c.sandbox_dir, t.box
                    assert os.path.dirname(t.path) == c.tasks_dir, t.path
                    assert os.path.basename(t.box) == t.key not in ("", ".", ".."), t.key
                    c.box_made(t)  # the shell made the sandbox, the data arrived
                    for a in c.run_received(t, 1.0):
                        if isinstance(a, N.Prepare):  # the task is made and launched
                            c.task_spec(a.ticket, None, {}, 1.0)
                            c.created(a.ticket, None, 1.0)
                    return None
                acts = self.node.run_received(t, 1.0)
                return t.reason if t.fatal or t.reason.startswith("bad job") else \
                    _node_refusal(acts)
            return _node_refusal(self.node.from_session(1, msg, 1.0))
        if role == "submit-m":
            self.submit.from_master(msg, 1.0)
            return None
        # submit-n: a result naming no job of ours (or a bad one) changes nothing but the
        # job it names; a message naming another job is refused by _rec
        rec = self.submit._rec("n1", msg.get("job"), msg.get("attempt"))
        acts = self.submit.from_node("n1", msg, 1.0)
        for a in acts:
            if isinstance(a, C.ReceiveOutputs):
                self.submit.outputs_done(a.ref, None)
        said = " ".join(a.text for a in acts if isinstance(a, C.Say))
        if "bad result" in said:
            if rec is not None:  # held by design (a bad result of a job we wait for):
                self._submitter()  # start again from a running job
                return None
            return "bad result"
        if kind in ("started", "rejected", "finished") and rec is None:
            return "names no running job of ours"
        if kind == "attached":
            return None if any(isinstance(a, C.Say) for a in acts) else "nothing of ours"
        return None

    def _to_master(self, role: str, msg: dict) -> Optional[str]:
        master, pool = self.master, self.master.pool
        ch = _Channel({"master-node": "node", "master-sub": "submit"}.get(role, "tool"))
        kind = msg["type"]
        if role == "master-sub":  # a session the limiter knows, as the shell opens them
            master.limiter.open_session(ch, ch.peer[0], 100.0)
        try:
            if kind == "node-hello":
                master.send(pool.node_hello(NODE, msg, 100.0))
            elif kind == "submitter-hello":
                if pool.open_session(msg, 100.0) is None:
                    return "session"
            else:
                table = {"master-node": M.NODE, "master-sub": M.SUBMITTER,
                         "master-tool": M.TOOL}[role]
                who = {"master-node": NODE, "master-sub": SUB}.get(role, "")
                handler = table.get(kind)
                if handler is None:
                    return None
                result = handler(master, ch, who, msg)
                if asyncio.iscoroutine(result):
                    asyncio.run(result)
        except ValueError as exc:  # PayloadError, or a handler's own ValueError (as `rm`'s
            if type(exc) not in (PayloadError, ValueError):  # limit): both answered
                raise  # bad-message; a subclass (UnicodeError...) is a gap, not a check
            return str(exc)
        finally:
            master.limiter.close_session(ch)
        return None

    def invariants(self, role: str) -> None:
        if role.startswith("master"):
            self.master.pool.check()
            for cid in self.master.pool.claims:
                assert isinstance(cid, str) and len(cid) <= 128, cid
        elif role.startswith("node"):
            c = self.node
            for key, t in c.tasks.items():
                assert "/" not in key and key not in (".", ".."), key
                assert os.path.dirname(t.path) == c.tasks_dir, t.path
                assert os.path.dirname(t.sandbox) == c.sandbox_dir, t.sandbox
            for cid, claim in c.claims.items():
                N.check_id(cid, "claim")
                N.check_id(claim.submitter, "submitter")
            assert sum(cl.cpus for cl in c.claims.values()) <= c.cap.slots
        else:
            for c in self.submit.claims.values():
                assert isinstance(c.port, int) and isinstance(c.host, str), c


def _node_refusal(actions: list) -> Optional[str]:
    for a in actions:
        msg = getattr(a, "msg", None)
        if isinstance(msg, dict) and msg.get("type") == "error" and \
                msg.get("code") == "bad-message":
            return msg.get("message") or "bad-message"
        if isinstance(msg, dict) and msg.get("type") == "rejected" and \
                str(msg.get("reason", "")).startswith("bad job"):
            return msg["reason"]
    return None


def excerpt(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ------------------------------------------------------------------ the wire


@dataclass
class Stats:
    inputs: int = 0
    seconds_max: float = 0.0
    peak_max: int = 0
    known: Counter = field(default_factory=Counter)  # KNOWN findings hit
    events: Counter = field(default_factory=Counter)      # Message, BadMessage, Data, ...
    schema_refused: Counter = field(default_factory=Counter)  # type -> field-level refusals
    wire_errors: Counter = field(default_factory=Counter)  # first words of WireError texts
    mutations: Counter = field(default_factory=Counter)
    reached: Counter = field(default_factory=Counter)     # (role, type) -> handler calls
    accepted: Counter = field(default_factory=Counter)
    refused: Counter = field(default_factory=Counter)


def pair() -> tuple:
    client = Connection(ROOT, "submit", is_client=True)
    server = Connection(ROOT, "node", is_client=False)
    client.strict = False  # it plays a hostile peer: what it sends is not held to SCHEMA
    server.receive(client.initiate())
    client.receive(server.data_to_send())
    server.receive(client.data_to_send())  # its hello
    assert server.established
    return client, server


def encode(msg: dict, rnd: random.Random) -> bytes:
    text = json.dumps(msg, separators=(",", ":"))
    r = rnd.random()
    if r < 0.05 and len(text) > 2:  # a duplicate key, the later one winning
        text = text[:-1] + ',"type":' + json.dumps(rnd.choice(list(SCHEMA))) + "}"
    elif r < 0.08:  # a byte flipped before sealing: sealed with the right key, bad JSON
        raw = bytearray(text.encode("utf-8", "surrogatepass"))
        raw[rnd.randrange(len(raw))] ^= 1 << rnd.randrange(8)
        return bytes(raw)
    elif r < 0.09:  # nested beyond any parser's stack
        return b"[" * 200_000 + b"]" * 200_000
    return text.encode("utf-8", "surrogatepass")


FRAME_MUTATIONS = ["none"] * 12 + ["flip", "truncate", "reorder", "dup-data", "data-first",
                                   "short-data", "long-data", "kind", "empty", "length"]


def frames_for(client: Connection, payload: bytes, msg: dict, rnd: random.Random) -> tuple:
    """The frames of one message (and its data when the type announces some), sealed
    with the session's key, then perhaps mutated. (stream bytes, how, fatal expected)."""
    size = 0
    if msg.get("type") in TRANSFER_TYPES:
        try:
            size = sum(f["size"] for f in msg["files"]) if msg["type"] != "blob" \
                else msg["size"]
            if not isinstance(size, int) or size < 0 or size > 1 << 16:
                size = 0
        except (KeyError, TypeError):
            size = 0
    if len(payload) > MAX_MESSAGE:  # no sender seals it; a peer can still announce it
        return (MAX_SEALED + 1).to_bytes(4, "big") + payload[:1 << 16], "oversize"
    how = rnd.choice(FRAME_MUTATIONS)
    frames = [client._seal(payload, b"M")]
    data = [client._seal(b"x" * size, b"D")] if size else []
    if how == "flip":
        f = bytearray(frames[0])
        f[rnd.randrange(4, len(f))] ^= 1 << rnd.randrange(8)
        frames[0] = bytes(f)
    elif how == "truncate":
        frames[0] = frames[0][:rnd.randrange(1, len(frames[0]))]
    elif how == "reorder":
        frames.insert(0, client._seal(json.dumps({"type": "ping", "seq": 9}).encode(), b"M"))
        frames[0], frames[1] = frames[1], frames[0]
    elif how == "dup-data" and data:
        data = [*data, data[0]]
    elif how == "data-first":
        frames = [client._seal(b"stray", b"D"), *frames]
    elif how == "short-data" and size > 1:
        data = [client._seal(b"x" * (size - 1), b"D")]
    elif how == "long-data" and size:
        data = [client._seal(b"x" * (size + 1), b"D")]
    elif how == "kind":
        frames = [client._seal(payload, rnd.choice([b"Z", b"\x00", b"MM"]))]
    elif how == "empty":
        frames = [client._seal(b"")]
    elif how == "length":
        f = bytearray(frames[0])
        f[rnd.randrange(4)] ^= 1 << rnd.randrange(8)
        frames[0] = bytes(f)
    else:
        how = "none"
    return b"".join(frames + data), how


def run(seed: int, count: int, tmp: str, stats: Optional[Stats] = None,
        check: Optional[Callable[[Stats], None]] = None) -> Stats:
    """Feed `count` inputs; raise AssertionError (naming the seed and input) on a finding."""
    rnd = random.Random(seed)
    gen = Gen(rnd)
    stats = stats or Stats()
    roles = Roles(stats, tmp, rnd)
    gen.good = roles.good
    client, server = pair()
    kinds = sorted(SCHEMA)
    # the types whose handlers check more than the schema come more often: deeper
    weighted = kinds + [k for _r, k in sorted(ROLE_REFUSES)] * 5
    for i in range(count):
        if i % 150 == 149:  # deep states are reached from fresh scenarios too
            roles = Roles(stats, tmp, rnd)
            gen.good = roles.good
        kind = kinds[i % len(kinds)] if i < 3 * len(kinds) else rnd.choice(weighted)
        msg = gen.message(kind)
        mutation = "valid"
        if rnd.random() < 0.7:
            msg, mutation = gen.mutate(msg)
        stats.mutations[mutation.split("+")[0]] += 1
        payload = encode(msg, rnd)
        stream, frame_how = frames_for(client, payload, msg, rnd)
        where = _Where(f"seed {seed} input {i}: {kind} {mutation}/{frame_how}", msg)
        t0 = time.process_time()
        traced = i % 40 == 0
        if traced:  # memory, on a sample (tracing every input would cost 3x the time)
            tracemalloc.start()
        try:
            _feed(server, stream, rnd, roles, stats, where)
            dead = False
        except WireError as exc:
            stats.wire_errors[" ".join(str(exc).split()[:3])] += 1
            if str(exc).startswith("bad transfer header"):  # its size field: refused, and
                stats.schema_refused[kind] += 1  # the stream cannot be followed past it
            dead = True
        except AssertionError:
            raise
        except Exception as exc:  # the finding: name the input
            known = _known(exc)
            if known is None:
                raise AssertionError(f"{where}: {type(exc).__name__}: {exc}") from exc
            stats.known[known] += 1  # reported, owner fixing it: go on from a fresh start
            roles = Roles(stats, tmp, rnd)
            gen.good = roles.good
            dead = True
        partial = not dead and (server._dec.buffered or server._dec._need >= 0)
        if frame_how == "truncate" and not dead:
            assert partial, f"{where}: a truncated frame was taken as whole"
        if partial:  # a frame is still owed (truncated, or a length that lies): what
            dead = True  # follows would be read as its rest, a MAC failure
        if not dead:
            if server.receiving_transfer:  # a short transfer: the stream is owed data;
                dead = True  # a real peer would be closed for the next message
            else:
                echo = server.receive(client.send_message({"type": "ping", "seq": i}))
                assert echo == [Message({"type": "ping", "seq": i})], \
                    f"{where}: out of step after it: {echo}"
        if traced:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            stats.peak_max = max(stats.peak_max, peak)
            assert peak < MAX_BYTES, f"{where}: {peak >> 20} MiB at the peak"
        spent = time.process_time() - t0
        stats.seconds_max = max(stats.seconds_max, spent)
        allowed = MAX_SECONDS * (1 + len(stream) / (1 << 20))  # linear in what came
        assert spent < allowed, f"{where}: took {spent:.2f}s of CPU ({len(stream)} bytes)"
        stats.inputs += 1
        if dead:
            client, server = pair()
    if check is not None:
        check(stats)
    return stats


# Findings reported to their owners (/work/wt/API-W.md) and not fixed yet: (exception
# type, the function of jrs it was raised in) -> finding. The fuzzer notes them and
# goes on; tests/test_wire_fuzz.py pins each with a strict xfail, so the entry must go
# when its fix lands (the pinned test then passes and fails the suite as XPASS).
KNOWN = {
}


def _known(exc: BaseException) -> Optional[str]:
    tb = exc.__traceback__
    last = None
    while tb is not None:
        if "/jrs/" in tb.tb_frame.f_code.co_filename:
            last = tb.tb_frame.f_code.co_name
        tb = tb.tb_next
    return KNOWN.get((type(exc), last))


class _Where:
    """Names an input in a failure (its excerpt made only then: inputs may be huge)."""

    def __init__(self, text: str, msg: dict) -> None:
        self.text, self.msg = text, msg

    def __str__(self) -> str:
        return f"{self.text} {excerpt(self.msg)}"

    __format__ = lambda self, spec: str(self)  # noqa: E731


def _feed(server: Connection, stream: bytes, rnd: random.Random, roles: Roles, stats: Stats,
          where: _Where) -> None:
    cut = rnd.randrange(len(stream) + 1) if rnd.random() < 0.3 else len(stream)
    events = server.receive(stream[:cut])
    events += server.receive(stream[cut:])
    for e in events:
        stats.events[type(e).__name__] += 1
        if isinstance(e, BadMessage):
            kind = e.body.get("type") if isinstance(e.body, dict) else None
            if isinstance(kind, str) and kind in SCHEMA and _field_level(e.reason):
                stats.schema_refused[kind] += 1
        elif isinstance(e, Message):
            _clean(e.body, where)
            roles.deliver(e.body)
        elif not isinstance(e, Data):
            raise AssertionError(f"{where}: unexpected event {e!r}")


def _field_level(reason: str) -> bool:
    return "field" in reason or "missing" in reason


def _clean(value: Any, where: _Where, depth: int = 0) -> None:
    """What validation lets through: bounded depth, finite numbers, encodable text."""
    assert depth < 12, f"{where}: validated message nested {depth} deep"
    if isinstance(value, float):
        assert math.isfinite(value), f"{where}: non-finite number passed validation"
    elif isinstance(value, str):
        value.encode()  # a lone surrogate raises here: the roles would fail on it
    elif isinstance(value, dict):
        for k, v in value.items():
            _clean(k, where, depth + 1)
            _clean(v, where, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _clean(v, where, depth + 1)


def session_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
