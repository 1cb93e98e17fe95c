"""A stand-in for the pure submitter core (jrs/client/core.py, helper D), same events/actions.

Used only until the real `SubmitCore` is on main: the dispatch policy of
`jrs/client/runner.py` (claims reused for the next job of the same kind,
give-back at job boundaries, node-lost reruns, removal) on the real
`jobs.Queue`, minus the claim leaks issue 12 lists. The simulation's
submitter shell (tests/sim/submitter.py) takes the real core as soon as
`jrs.client.core` exists; nothing else imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from jrs.client.jobs import DONE, FAILED, HELD, IDLE, REMOVED, RUNNING, Summary, request_key


@dataclass
class ToMaster:
    msg: dict


@dataclass
class ToNode:
    node: str
    msg: dict


@dataclass
class Connect:
    node: str
    host: str
    port: int


@dataclass
class StartRun:
    node: str
    claim: str
    proc: int
    attempt: int
    job: object


@dataclass
class Record:
    rec: dict


@dataclass
class Say:
    text: str


@dataclass
class Done:
    pass


@dataclass
class Config:
    cluster: int
    submitter: str
    user: str
    host: str
    total: int
    give_up: float = 20.0
    nodes: dict = field(default_factory=dict)  # name -> (host, port), for resumed links
    attempts: dict = field(default_factory=dict)  # proc -> last attempt run (journal)
    completions: dict = field(default_factory=dict)  # proc -> retries used (journal)


@dataclass
class _Claim:
    id: str
    node: str
    host: str
    port: int
    cpus: int
    memory: int
    gpus: int
    key: str
    proc: Optional[int] = None


@dataclass
class _Link:
    up: bool = False
    failing_since: Optional[float] = None
    sent: set = field(default_factory=set)


class SubmitCore:
    def __init__(self, cfg: Config, queue, previous) -> None:
        self.cfg = cfg
        self.queue = queue
        self.previous = previous
        self.claims: dict = {}
        self.links: dict = {}
        self.unmatchable: dict = {}
        self.give_back = 0
        self.removing: set = set()
        self.remove_reason: Optional[str] = None
        self._demand_sent: Optional[list] = None
        self._done = False
        self._out: list = []

    # ------------------------------------------------------------ helpers

    def _emit(self, *actions) -> None:
        self._out.extend(actions)

    def _take(self) -> list:
        out, self._out = self._out, []
        return out

    def _link(self, node: str, host: str, port: int) -> _Link:
        link = self.links.get(node)
        if link is None:
            link = self.links[node] = _Link()
            self._emit(Connect(node, host, port))
        return link

    @property
    def finished(self) -> bool:
        return self.queue.finished

    # ------------------------------------------------------------ start

    def start(self, now: float) -> list:
        for rec in list(self.queue.live.values()):
            if rec.state == RUNNING and rec.node:
                where = self.cfg.nodes.get(rec.node)
                if where is not None:
                    self._link(rec.node, *where).sent.add((rec.proc, rec.attempt))
        self._pump()
        return self._take()

    def master_hello(self) -> dict:
        return {"type": "submitter-hello", "submitter": self.cfg.submitter,
                "user": self.cfg.user, "host": self.cfg.host, "pid": 1,
                "claims": list(self.claims), "clusters": [self._cluster_info()]}

    def master_up(self, now: float) -> list:
        self._demand_sent = None
        return self.demand()

    def _cluster_info(self) -> dict:
        c = self.queue.counts
        return {"id": self.cfg.cluster, "file": "sim", "total": self.cfg.total,
                "idle": c[IDLE], "running": c[RUNNING], "done": c[DONE], "failed": c[FAILED],
                "held": c[HELD], "removed": c[REMOVED]}

    # ------------------------------------------------------------ the master

    def from_master(self, msg: dict, now: float) -> list:
        kind = msg["type"]
        if kind == "claim":
            self._got_claim(msg)
        elif kind == "unmatchable":
            self.unmatchable[msg["key"]] = msg["reason"]
            for rec in [r for r in self.queue.idle if r.key == msg["key"]]:
                self._final(rec, Summary(HELD, reason=f"no node can run it: {msg['reason']}"))
        elif kind == "give-back":
            self.give_back = int(msg["count"])
        elif kind == "node-lost":
            self._node_lost(str(msg["node"]), "the master lost contact with it")
        elif kind == "rm":
            count = self._remove(list(msg["ids"]), "via jrs rm")
            self._emit(ToMaster({"type": "removed", "re": msg.get("re") or "", "count": count}))
        self._pump()
        return self._take()

    def _got_claim(self, msg: dict) -> None:
        cid = str(msg["claim"])
        if cid in self.claims:
            return
        c = _Claim(cid, str(msg["node"]), str(msg["host"]), int(msg["port"]), int(msg["cpus"]),
                   int(msg["memory"]), int(msg["gpus"]), str(msg.get("key") or ""))
        for rec in self.queue.live.values():  # a claim our adopted job still runs on
            if rec.state == RUNNING and rec.claim == cid:
                c.proc = rec.proc
        self.claims[cid] = c
        self._link(c.node, c.host, c.port)

    # ------------------------------------------------------------ dispatch

    def _pump(self) -> None:
        self._materialize()
        for c in list(self.claims.values()):
            if c.proc is not None:
                continue
            if self.give_back > 0 or self.remove_reason is not None:
                self.give_back = max(0, self.give_back - 1)
                self._release(c)
                continue
            rec = self.queue.next_for(c.key) if c.key else self._any_fitting(c)
            if rec is None:
                if self.queue.idle_by_key().get(c.key) is None:
                    self._release(c)
                continue
            c.proc = rec.proc
            if rec.proc in self.cfg.attempts:  # resumed: attempts and retries go on
                rec.attempt = max(rec.attempt, self.cfg.attempts.pop(rec.proc))
                rec.completions = max(rec.completions, self.cfg.completions.pop(rec.proc, 0))
            self.queue.start(rec, c.node, c.id)
            self._emit(Record({"e": "run", "proc": rec.proc, "attempt": rec.attempt,
                               "node": c.node, "claim": c.id}))
            if self.links[c.node].up:
                self._emit(StartRun(c.node, c.id, rec.proc, rec.attempt, rec.job))
            self._materialize()
        if self.queue.finished and not self._done:
            self._done = True
            for c in list(self.claims.values()):
                self._release(c)
            self._emit(ToMaster({"type": "progress", "clusters": [self._cluster_info()]}),
                       Done())

    def _any_fitting(self, c: _Claim):
        for rec in self.queue.idle:
            j = rec.job
            if j.request_cpus <= c.cpus and (j.request_memory or 0) <= c.memory \
                    and j.request_gpus <= c.gpus and not j.requirements:
                self.queue.idle.remove(rec)
                c.key = request_key(j)
                return rec
        return None

    def _release(self, c: _Claim) -> None:
        self.claims.pop(c.id, None)
        link = self.links.get(c.node)
        if link is not None and link.up:
            self._emit(ToNode(c.node, {"type": "release", "claim": c.id}))
        else:
            self._emit(ToMaster({"type": "release", "claim": c.id}))

    def _materialize(self) -> None:
        new = self.queue.fill()
        if not new:
            return
        self._emit(Record({"e": "submitted", "proc": max(r.proc for r in new)}))
        for rec in new:
            if rec.key in self.unmatchable:
                self._final(rec, Summary(HELD, reason="no node can run it"))

    def demand(self) -> list:
        if self.remove_reason is not None or self._done:
            requests: list = []
        else:
            free: dict = {}
            for c in self.claims.values():
                if c.proc is None:
                    free[c.key] = free.get(c.key, 0) + 1
            requests = []
            for key, (count, job) in self.queue.idle_by_key().items():
                if key in self.unmatchable:
                    continue
                requests.append({"key": key, "count": max(0, count - free.get(key, 0)),
                                 "cpus": job.request_cpus, "memory": job.request_memory or 0,
                                 "gpus": job.request_gpus, "requirements": "", "ad": {},
                                 "weight": 2.0 ** (job.priority / 10.0)})
        if requests == self._demand_sent:
            return []
        self._demand_sent = requests
        return [ToMaster({"type": "demand", "requests": requests})]

    # ------------------------------------------------------------ nodes

    def node_up(self, node: str, now: float) -> list:
        link = self.links[node]
        link.up, link.failing_since = True, None
        live = self.queue.live
        link.sent = {(p, a) for p, a in link.sent
                     if p in live and live[p].state == RUNNING and live[p].attempt == a}
        jobs = [[f"{self.cfg.cluster}.{p}", a] for p, a in sorted(link.sent)]
        self._emit(ToNode(node, {"type": "attach", "submitter": self.cfg.submitter,
                                 "jobs": jobs}))
        for rec in live.values():
            if rec.state == RUNNING and rec.node == node and (rec.proc, rec.attempt) \
                    not in link.sent and rec.claim in self.claims:
                self._emit(StartRun(node, rec.claim, rec.proc, rec.attempt, rec.job))
        return self._take()

    def node_down(self, node: str, now: float, why: str) -> list:
        link = self.links.get(node)
        if link is not None:
            link.up = False
            if link.failing_since is None:
                link.failing_since = now
        return self._take()

    def run_sent(self, node: str, proc: int, attempt: int) -> list:
        self.links[node].sent.add((proc, attempt))
        return []

    def tick(self, now: float) -> list:
        for node, link in self.links.items():
            if not link.up and link.failing_since is not None \
                    and now - link.failing_since > self.cfg.give_up:
                link.failing_since = now
                self._node_lost(node, "unreachable", release=True)
        self._pump()
        self._emit(ToMaster({"type": "progress", "clusters": [self._cluster_info()]}))
        return self._take()

    def _rec(self, job: object, attempt: object):
        if not isinstance(job, str) or "." not in job:
            return None
        cluster, _, proc = job.partition(".")
        if cluster != str(self.cfg.cluster) or not proc.isdigit():
            return None
        rec = self.queue.live.get(int(proc))
        if rec is None or rec.state != RUNNING or rec.attempt != attempt:
            return None
        return rec

    def from_node(self, node: str, msg: dict, now: float) -> list:
        kind = msg["type"]
        if kind == "finished":
            rec = self._rec(msg["job"], msg["attempt"])
            if rec is not None:
                self._result(rec, dict(msg["result"], node=node))
            self._emit(ToNode(node, {"type": "ack", "job": msg["job"],
                                     "attempt": msg["attempt"]}))
        elif kind == "started":
            rec = self._rec(msg["job"], msg["attempt"])
            if rec is not None and rec.proc in self.removing:
                self._emit(ToNode(node, {"type": "kill", "job": msg["job"],
                                         "attempt": rec.attempt}))
        elif kind == "rejected":
            rec = self._rec(msg["job"], msg["attempt"])
            if rec is not None:
                c = self.claims.get(rec.claim or "")
                if c is not None:
                    self._release(c)
                self._requeue(rec, "refused")
        elif kind == "attached":
            for item in msg["unknown"]:
                rec = self._rec(item[0], item[1]) if isinstance(item, list) and len(item) == 2 \
                    else None
                if rec is not None and rec.node == node:
                    c = self.claims.get(rec.claim or "")
                    if c is not None and c.proc == rec.proc:
                        c.proc = None
                    self._requeue(rec, "lost")
        self._pump()
        return self._take()

    def _result(self, rec, result: dict) -> None:
        c = self.claims.get(rec.claim or "")
        if c is not None and c.proc == rec.proc:
            c.proc = None
        if result.get("lost"):
            self._requeue(rec, "lost")
            return
        if rec.proc in self.removing or (result.get("removed") and self.remove_reason):
            self._final(rec, Summary(REMOVED, result.get("exit_code"), result.get("signal"),
                                     result.get("node"), self.remove_reason or "removed"))
            return
        state = self.queue.outcome(rec, result)
        if state == IDLE:
            self._requeue(rec)
            return
        self._final(rec, Summary(state, result.get("exit_code"), result.get("signal"),
                                 result.get("node"), result.get("reason")))

    def _requeue(self, rec, why: str = "") -> None:
        """Back to the queue; `why` ("lost", "refused") when the run does not count.
        A job being removed is final instead (runner.py requeued it: the submit hung)."""
        if rec.proc in self.removing or self.remove_reason is not None:
            self._final(rec, Summary(REMOVED, reason=self.remove_reason or "removed"))
            return
        self.queue.requeue(rec, count_attempt=False)
        self._emit(Record(dict({"e": "requeue", "proc": rec.proc}, **({why: True} if why
                                                                       else {}))))

    def _final(self, rec, s: Summary) -> None:
        self.queue.finish(rec, s)
        self._emit(Record({"e": "end", "proc": rec.proc, "attempt": rec.attempt,
                           "state": s.state, "code": s.exit_code, "signal": s.signal,
                           "node": s.node, "reason": s.reason, "error": s.error}))
        self.removing.discard(rec.proc)

    def _node_lost(self, name: str, why: str, release: bool = False) -> None:
        for rec in [r for r in self.queue.live.values() if r.state == RUNNING and r.node == name]:
            self._requeue(rec, "lost")
        for c in [c for c in self.claims.values() if c.node == name]:
            del self.claims[c.id]
            if release:
                self._emit(ToMaster({"type": "release", "claim": c.id}))

    # ------------------------------------------------------------ removal

    def remove(self, ids: list, reason: str, now: float) -> list:
        self._remove(ids, reason)
        self._pump()
        return self._take()

    def _remove(self, ids: list, reason: str) -> int:
        count = 0
        whole = any(str(t) == str(self.cfg.cluster) for t in ids)
        if not whole:
            return 0
        self.remove_reason = reason
        count += self.queue.remove_unmaterialized(reason)
        for rec in list(self.queue.live.values()):
            count += 1
            if rec.state == IDLE:
                self._final(rec, Summary(REMOVED, reason=reason))
            elif rec.state == RUNNING:
                self.removing.add(rec.proc)
                link = self.links.get(rec.node or "")
                if link is not None and link.up:
                    self._emit(ToNode(rec.node, {"type": "kill",
                                                 "job": f"{self.cfg.cluster}.{rec.proc}",
                                                 "attempt": rec.attempt}))
        return count
