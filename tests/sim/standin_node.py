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
            made_on = spec.get("boot")  # the stand-in does what E2 asks of the real core
            if (st.boot and st.boot != self.boot) or (
                    st.executor_pid is None and made_on and made_on != self.boot):
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
                "created": now, "boot": self.boot}

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
                  "signal": end.get("signal"), "rusage": end.get("rusage"),
                  "started": end.get("started"),
                  "ended": end.get("ended"), "removed": st.killed is not None}
        if end.get("e") == "lost":
            result["reason"] = end.get("reason")
            result["lost"] = True
        return result

    def tick(self, now: float) -> list:
        return []


# ---------------------------------------------------------------------- its shell

from jrs.node import taskfile  # noqa: E402

from .clock import Proc  # noqa: E402
from .net import Closed, End  # noqa: E402
from .node import BOXES, CHECK_EVERY, CLAIMS, HEARTBEAT, TASKS, Host, core_module  # noqa: E402


class StandinNodeProc(Proc):
    """The shell as it was around the stand-in core (until jrs.node.core is on main)."""

    def __init__(self, world, host: Host, real_core: bool) -> None:
        super().__init__(world.sim, host.name, f"node@{host.name}")
        self.world = world
        self.hostobj = host
        self.disk = host.disk
        self.mod = core_module(False)
        cap = self.mod.Capacity(host.name, host.slots, host.memory, 0, {})
        self.core = self.mod.NodeCore(cap, tasks_dir=TASKS, sandbox_dir=BOXES, boot=host.boot)
        self.sessions: dict = {}
        self.unsaved: Optional[list] = None
        self.master: Optional[End] = None
        self.welcomed = False
        self.backoff = 0.2
        self.handlers = {cls: getattr(self, "_do_" + cls) for cls in (
            "ToMaster", "ToSession", "SaveClaims", "Prepare", "Launch", "Kill", "MarkLost",
            "Deliver", "Remove", "RemoveBox", "AnnounceLater", "Log")}
        host.daemon = self
        self._restore()
        world.net.listen(self, host.name, self._accept)
        self._connect_master()
        self.later(CHECK_EVERY, self._check)

    # ------------------------------------------------------------ actions

    def do(self, actions: list) -> None:
        for a in actions:
            self.handlers[type(a).__name__](a)

    def _do_ToMaster(self, a) -> None:
        if self.master is not None and self.welcomed:
            try:
                self.master.send(a.msg)
            except Closed:
                pass

    def _do_ToSession(self, a) -> None:
        end = self.sessions.get(a.sid)
        if end is not None:
            try:
                end.send(a.msg)
            except Closed:
                pass

    def _do_SaveClaims(self, a) -> None:
        self.unsaved = a.claims
        self._save_claims()

    def _save_claims(self) -> None:
        """claims.json is rewritten until a write succeeds (retried each check)."""
        if self.unsaved is None:
            return
        try:
            self.disk.replace(CLAIMS, self.unsaved)
            self.unsaved = None
        except OSError as exc:
            self.world.log(self, f"cannot save claims: {exc}")

    def _do_Prepare(self, a) -> None:
        t = a.ticket
        err = None
        try:
            spec = self.core.task_spec(t, None, {}, self.sim.now)
            self.disk.create(t.path, [dict(spec, v=1)])
        except OSError as exc:
            err = str(exc)
            self.disk.unlink(t.path)
        self.do(self.core.created(t, err, self.sim.now))

    def _do_Launch(self, a) -> None:
        self.hostobj.launch(a.path)

    def _do_Kill(self, a) -> None:
        self.hostobj.kill(a.path)

    def _do_MarkLost(self, a) -> None:
        ex = self.hostobj.execs.get(a.path)
        if ex is not None and not ex.done:  # an orphaned job process: killed
            ex.term()
        try:
            self.disk.append(a.path, {"e": "lost", "reason": a.reason, "t": self.sim.now})
        except OSError as exc:
            self.world.log(self, f"cannot mark {a.key} lost: {exc}")
            return
        self._reload(a.key, a.path)

    def _do_Deliver(self, a) -> None:
        end = self.sessions.get(a.sid)
        ok = False
        if end is not None and end.open:
            result = self.core.result_of(a.key)
            box = f"{BOXES}/{a.key}"
            size = self.disk.read(f"{box}/.outputs") if self.disk.exists(f"{box}/.outputs") \
                else 0
            files = [{"name": "_condor_stdout", "size": size, "mode": 0o644}] if size else []
            job, _, attempt = a.key.partition("-")[2].rpartition(".")
            try:
                end.send({"type": "finished", "job": job, "attempt": int(attempt),
                          "result": result, "files": files}, size=size)
                ok = True
            except Closed:
                pass
        self.do(self.core.delivery_done(a.key, a.sid, ok))

    def _do_Remove(self, a) -> None:
        if a.delivered:
            try:
                self.disk.append(a.path, {"e": "delivered", "t": self.sim.now})
            except OSError:
                pass
        self.disk.unlink(a.path)
        self._remove_box(a.box)

    def _do_RemoveBox(self, a) -> None:
        self._remove_box(a.box)

    def _remove_box(self, box: str) -> None:
        for p in self.disk.listdir(box + "/"):
            self.disk.unlink(p)

    def _do_AnnounceLater(self, a) -> None:
        self.later(a.delay, lambda: self.do(self.core.announce(a.key)))

    def _do_Log(self, a) -> None:
        self.world.log(self, f"{a.level}: {a.text}")

    # ------------------------------------------------------------ start-up

    def _restore(self) -> None:
        saved = self.disk.read(CLAIMS) if self.disk.exists(CLAIMS) else []
        for warning in self.core.restore_claims(saved) or []:
            self.world.log(self, str(warning))
        for path in self.disk.listdir(TASKS + "/", ".task"):
            try:
                st = taskfile.parse(path, self.disk.records(path))
            except ValueError:
                self.disk.unlink(path)
                continue
            self.do(self.core.recover(st, self.hostobj.alive(path), self.sim.now))

    def _reload(self, key: str, path: str) -> None:
        if not self.disk.exists(path):
            return
        st = taskfile.parse(path, self.disk.records(path))
        self.do(self.core.loaded(key, st, self.sim.now))

    def notified(self, path: str) -> None:
        key = path[len(TASKS) + 1:-len(taskfile.SUFFIX)]
        self._reload(key, path)

    def _check(self) -> None:
        now = self.sim.now
        self._save_claims()
        for key, path in list(self.core.checks()):
            alive = self.hostobj.alive(path)
            st = None
            if not alive and self.disk.exists(path):
                st = taskfile.parse(path, self.disk.records(path))
            self.do(self.core.probe(key, alive, st, now))
        self.do(self.core.tick(now))
        self.later(CHECK_EVERY, self._check)

    # ------------------------------------------------------------ the master

    def _connect_master(self) -> None:
        self.world.net.connect(self, self.world.master_address, self._master_open,
                               self._master_failed)

    def _master_failed(self, why: str) -> None:
        self.later(self.backoff, self._connect_master)
        self.backoff = min(self.backoff * 2, 5.0)

    def _master_open(self, end: End) -> None:
        self.master, self.welcomed = end, False
        end.on_message = lambda msg: self._from_master(end, msg)
        end.on_close = lambda: self._master_closed(end)
        end.send(self.core.hello())

    def _from_master(self, end: End, msg: dict) -> None:
        if not self.welcomed:
            if msg["type"] != "welcome":
                end.close()
                self._master_closed(end)
                return
            self.welcomed = True
            self.backoff = 0.2
            self.do(self.core.master_up() or [])
            self._heartbeat(end)
            return
        self.do(self.core.from_master(msg, self.sim.now))

    def _heartbeat(self, end: End) -> None:
        if self.master is not end or not end.open:
            return
        try:
            end.send(self.core.report(self.sim.now))
        except Closed:
            return
        self.later(HEARTBEAT, self._heartbeat, end)

    def _master_closed(self, end: End) -> None:
        if self.master is not end:
            return
        self.master, self.welcomed = None, False
        self.do(self.core.master_down() or [])
        self.later(self.backoff, self._connect_master)

    # ------------------------------------------------------------ submitters

    def _accept(self, end: End) -> None:
        state = {"sid": None}

        def on_message(msg: dict) -> None:
            sid = state["sid"]
            if sid is None:
                if msg["type"] != "attach":
                    end.close()
                    return
                sid = state["sid"] = msg["submitter"]
                self.sessions[sid] = end
                self.do(self.core.attach(sid, msg, self.sim.now))
            elif msg["type"] == "run":
                ticket = self.core.run_offered(sid, msg)
                self.do(self.core.run_received(ticket, self.sim.now))
            else:
                self.do(self.core.from_session(sid, msg, self.sim.now))

        def on_close() -> None:
            sid = state["sid"]
            if sid is not None and self.sessions.get(sid) is end:
                del self.sessions[sid]
                self.do(self.core.session_closed(sid))

        end.on_message, end.on_close = on_message, on_close


    def claims_held(self) -> list:
        return self.core.hello()["claims"]
