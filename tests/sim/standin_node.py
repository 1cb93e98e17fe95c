"""A stand-in for the pure node core (jrs/node/core.py, helper E), same events and actions.

Used only until the real `NodeCore` is on main: it carries the claims book,
admission and task states of `jrs/node/daemon.py` as they were, so the
simulation's node shell (tests/sim/node.py) and everything around it could be
built and run against the real Pool first. `tests/sim/node.py` takes the real
core as soon as `jrs.node.core` exists; nothing else imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

LAUNCH_GRACE = 10.0
STARTED_AFTER = 0.05


@dataclass
class ToMaster:
    msg: dict


@dataclass
class ToSession:
    sid: str
    msg: dict


@dataclass
class SaveClaims:
    claims: list


@dataclass
class Prepare:
    ticket: RunTicket


@dataclass
class Launch:
    key: str
    path: str


@dataclass
class Kill:
    key: str
    path: str


@dataclass
class MarkLost:
    key: str
    path: str
    reason: str
    pid: Optional[int] = None
    pid_start: Optional[int] = None


@dataclass
class Deliver:
    sid: str
    key: str


@dataclass
class Remove:
    key: str
    path: str
    box: str
    delivered: bool
    background: bool = False


@dataclass
class RemoveBox:
    box: str


@dataclass
class AnnounceLater:
    key: str
    delay: float


@dataclass
class Log:
    level: str
    text: str


@dataclass
class Capacity:
    name: str
    slots: int
    memory: int
    gpus: int
    attrs: dict


@dataclass
class RunTicket:
    sid: str
    msg: dict
    key: str
    box: str
    path: str
    reason: Optional[str] = None


@dataclass
class _Claim:
    claim: str
    submitter: str
    user: str
    cpus: int
    memory: int
    gpus: list
    job: Optional[str] = None
    releasing: bool = False

    def to_json(self) -> dict:
        return {"claim": self.claim, "submitter": self.submitter, "user": self.user,
                "cpus": self.cpus, "memory": self.memory, "gpus": self.gpus}


@dataclass
class _Task:
    key: str
    sid: str
    job: str
    attempt: int
    claim: str
    path: str
    box: str
    created: float = 0.0
    state: object = None
    delivering: bool = False
    kill_requested: bool = False


class NodeCore:
    def __init__(self, cap: Capacity, tasks_dir: str, sandbox_dir: str, boot: str,
                 retain: float = 7 * 86400.0) -> None:
        self.cap = cap
        self.tasks_dir, self.sandbox_dir = tasks_dir, sandbox_dir
        self.boot = boot
        self.claims: dict = {}
        self.tasks: dict = {}
        self.sessions: set = set()
        self.master = False

    # ------------------------------------------------------------ start-up

    def restore_claims(self, saved: list) -> list:
        for c in saved or []:
            self.claims[c["claim"]] = _Claim(c["claim"], c["submitter"], c["user"],
                                             int(c["cpus"]), int(c["memory"]), list(c["gpus"]))
        return []

    def recover(self, st, alive: bool, now: float) -> list:
        spec = st.spec
        task = _Task(st.key, str(spec.get("submitter", "")), str(spec.get("job", "")),
                     int(spec.get("attempt", 0)), str(spec.get("claim", "")), st.path,
                     str(spec.get("sandbox", "")), created=now, state=st)
        if st.delivered:
            return [Remove(task.key, task.path, task.box, delivered=False)]
        self.tasks[task.key] = task
        out: list = []
        if not st.finished:
            if st.boot and st.boot != self.boot:
                out.append(MarkLost(task.key, task.path, "the node rebooted while the job ran"))
            elif alive:
                pass
            elif st.executor_pid is None:
                out.append(Launch(task.key, task.path))
            else:
                out.append(MarkLost(task.key, task.path, "its executor died", st.pid,
                                    st.pid_start))
        claim = self.claims.get(task.claim)
        if claim is not None and not st.finished:
            claim.job = task.key
        return out

    # ------------------------------------------------------------ the master

    def hello(self) -> dict:
        return {"type": "node-hello", "name": self.cap.name, "slots": self.cap.slots,
                "memory": self.cap.memory, "gpus": self.cap.gpus, "attrs": self.cap.attrs,
                "claims": [c.to_json() for c in self.claims.values()]}

    def report(self, now: float) -> dict:
        running = sum(1 for t in self.tasks.values() if not self._finished(t))
        return {"type": "node-report", "load": 0.0, "running": running,
                "claims": list(self.claims)}

    def master_up(self) -> list:
        self.master = True
        return []

    def master_down(self) -> list:
        self.master = False
        return []

    def from_master(self, msg: dict, now: float) -> list:
        kind = msg["type"]
        if kind == "claim-offer":
            return self._offer(msg)
        if kind == "claim-drop":
            return self._drop(msg["claim"], kill=msg.get("kill") is True)
        if kind == "ping":
            return [ToMaster({"type": "pong", "seq": msg["seq"]})]
        return []

    def _free(self) -> tuple:
        used_gpus = {g for c in self.claims.values() for g in c.gpus}
        return (self.cap.slots - sum(c.cpus for c in self.claims.values()),
                self.cap.memory - sum(c.memory for c in self.claims.values()),
                [g for g in range(self.cap.gpus) if g not in used_gpus])

    def _offer(self, msg: dict) -> list:
        cid = msg["claim"]
        if cid in self.claims:
            return [ToMaster({"type": "claim-ok", "claim": cid, "gpu_ids": self.claims[cid].gpus})]
        cpus, mem, gpus = int(msg["cpus"]), int(msg["memory"]), int(msg["gpus"])
        free_cpus, free_mem, free_gpus = self._free()
        if cpus < 0 or mem < 0 or gpus < 0 or cpus > free_cpus or mem > free_mem \
                or gpus > len(free_gpus):
            return [ToMaster({"type": "claim-refused", "claim": cid, "reason": "no room"})]
        self.claims[cid] = _Claim(cid, msg["submitter"], msg["user"], cpus, mem,
                                  free_gpus[:gpus])
        return [self._save(), ToMaster({"type": "claim-ok", "claim": cid,
                                        "gpu_ids": free_gpus[:gpus]})]

    def _save(self) -> SaveClaims:
        return SaveClaims([c.to_json() for c in self.claims.values()])

    def _drop(self, cid: str, kill: bool) -> list:
        claim = self.claims.get(cid)
        if claim is None:
            return []
        task = self.tasks.get(claim.job or "")
        if task is not None and not self._finished(task):
            claim.releasing = True
            return [Kill(task.key, task.path)] if kill else []
        del self.claims[cid]
        return [self._save(), ToMaster({"type": "claim-released", "claim": cid})]

    # ------------------------------------------------------------ sessions

    @staticmethod
    def _key(sid: str, job: str, attempt: object) -> str:
        return f"{sid[:16]}-{job}.{attempt}"

    def attach(self, sid: str, msg: dict, now: float) -> list:
        self.sessions.add(sid)
        unknown = [item for item in msg["jobs"]
                   if isinstance(item, list) and len(item) == 2
                   and self._key(sid, str(item[0]), item[1]) not in self.tasks]
        out: list = [ToSession(sid, {"type": "attached", "unknown": unknown})]
        for task in self.tasks.values():
            if task.sid == sid and self._finished(task) and not task.delivering:
                task.delivering = True
                out.append(Deliver(sid, task.key))
        return out

    def session_closed(self, sid: str) -> list:
        self.sessions.discard(sid)
        return []

    def from_session(self, sid: str, msg: dict, now: float) -> list:
        kind = msg["type"]
        if kind == "ack":
            task = self.tasks.get(self._key(sid, msg["job"], msg["attempt"]))
            if task is not None and self._finished(task):
                del self.tasks[task.key]
                return [Remove(task.key, task.path, task.box, delivered=True)]
        elif kind == "kill":
            task = self.tasks.get(self._key(sid, msg["job"], msg["attempt"]))
            if task is not None and not self._finished(task):
                task.kill_requested = True
                return [Kill(task.key, task.path)]
        elif kind == "release":
            claim = self.claims.get(msg["claim"])
            if claim is not None and claim.submitter == sid:
                return self._drop(claim.claim, kill=False)
        return []

    def run_offered(self, sid: str, msg: dict) -> RunTicket:
        key = self._key(sid, msg["job"], msg["attempt"])
        t = RunTicket(sid, msg, key, f"{self.sandbox_dir}/{key}", f"{self.tasks_dir}/{key}.task")
        t.reason = self._refusal(sid, msg, key)
        return t

    def _refusal(self, sid: str, msg: dict, key: str) -> Optional[str]:
        claim = self.claims.get(msg["claim"])
        if claim is None or claim.submitter != sid:
            return "unknown claim (it may have been dropped)"
        if claim.releasing:
            return "claim is being released"
        if key in self.tasks:
            return "duplicate"
        busy = self.tasks.get(claim.job or "")
        if busy is not None and not self._finished(busy):
            return "the claim is busy with another job"
        if int(msg["spec"].get("cpus", 1)) > claim.cpus:
            return "the job asks for more cpus than the claim has"
        return None

    def run_received(self, ticket: RunTicket, now: float) -> list:
        if ticket.reason is None:
            ticket.reason = self._refusal(ticket.sid, ticket.msg, ticket.key)
        job, attempt = ticket.msg["job"], ticket.msg["attempt"]
        if ticket.reason == "duplicate":
            return [ToSession(ticket.sid, {"type": "started", "job": job, "attempt": attempt})]
        if ticket.reason is not None:
            return [ToSession(ticket.sid, {"type": "rejected", "job": job, "attempt": attempt,
                                           "reason": ticket.reason})]
        return [Prepare(ticket)]

    def task_spec(self, ticket: RunTicket, identity, snapshot: dict, now: float) -> dict:
        msg, spec = ticket.msg, ticket.msg["spec"]
        claim = self.claims[msg["claim"]]
        return {"job": msg["job"], "attempt": msg["attempt"], "submitter": ticket.sid,
                "claim": claim.claim, "node": self.cap.name,
                "argv": [str(spec.get("executable"))] + [str(a) for a in
                                                         spec.get("arguments", [])],
                "cwd": ticket.box, "env": {}, "sandbox": ticket.box, "snapshot": snapshot,
                "created": now}

    def created(self, ticket: RunTicket, err: Optional[str], now: float) -> list:
        job, attempt = ticket.msg["job"], ticket.msg["attempt"]
        claim = self.claims.get(ticket.msg["claim"])
        if err is None and claim is None:
            err = "claim dropped while the task was made"
        if err is not None:
            return [RemoveBox(ticket.box),
                    ToSession(ticket.sid, {"type": "rejected", "job": job, "attempt": attempt,
                                           "reason": f"cannot make the task: {err}"})]
        task = _Task(ticket.key, ticket.sid, job, attempt, claim.claim, ticket.path, ticket.box,
                     created=now)
        self.tasks[task.key] = task
        claim.job = task.key
        return [Launch(task.key, task.path), AnnounceLater(task.key, STARTED_AFTER)]

    def launch_failed(self, key: str, err: str, now: float) -> list:
        task = self.tasks.get(key)
        if task is None:
            return []
        return [MarkLost(key, task.path, f"cannot start its executor: {err}")]

    def announce(self, key: str) -> list:
        task = self.tasks.get(key)
        if task is None or self._finished(task) or task.sid not in self.sessions:
            return []
        return [ToSession(task.sid, {"type": "started", "job": task.job,
                                     "attempt": task.attempt})]

    # ------------------------------------------------------------ job ends

    @staticmethod
    def _finished(task: _Task) -> bool:
        return task.state is not None and task.state.finished

    def checks(self) -> list:
        return [(t.key, t.path) for t in self.tasks.values() if not self._finished(t)]

    def probe(self, key: str, alive: bool, state, now: float) -> list:
        task = self.tasks.get(key)
        if task is None or self._finished(task):
            return []
        if alive:
            return [Kill(key, task.path)] if task.kill_requested else []
        if state is not None:
            task.state = state
            if state.finished:
                return self._ended(task)
            if state.executor_pid is None:
                if now - task.created > LAUNCH_GRACE:
                    task.created = now
                    return [Launch(key, task.path)]
                return []
            return [MarkLost(key, task.path, "its executor died", state.pid, state.pid_start)]
        return []

    def loaded(self, key: str, state, now: float) -> list:
        task = self.tasks.get(key)
        if task is None or self._finished(task):
            return []
        task.state = state
        return self._ended(task) if state.finished else []

    def _ended(self, task: _Task) -> list:
        out: list = []
        claim = self.claims.get(task.claim)
        if claim is not None and claim.job == task.key:
            claim.job = None
            if claim.releasing:
                out += self._drop(claim.claim, kill=False)
        if task.sid in self.sessions and not task.delivering:
            task.delivering = True
            out.append(Deliver(task.sid, task.key))
        return out

    def delivery_done(self, key: str, sid: str, ok: bool) -> list:
        task = self.tasks.get(key)
        if task is not None:
            task.delivering = False
        return []

    def result_of(self, key: str) -> dict:
        st = self.tasks[key].state
        end = st.exit or {}
        result = {"node": self.cap.name, "exit_code": end.get("code"),
                  "signal": end.get("signal"), "started": end.get("started"),
                  "ended": end.get("ended"), "removed": st.killed is not None}
        if end.get("e") == "lost":
            result["reason"] = end.get("reason")
            result["lost"] = True
        return result

    def tick(self, now: float) -> list:
        return []
