"""A node in the simulation: its host (disk, executors, boot id) and the node daemon's shell.

The shell does what `jrs/node/daemon.py` does around the pure node core:
connects to the master, serves submitter sessions, and executes the core's
actions against the host's simulated disk and executors. Executors belong to
the host, not to the daemon: killing the daemon leaves jobs running and
writing their taskfiles, as `kill -9` of the real daemon does; crashing the
host kills them and changes the boot id.
"""

from __future__ import annotations

from typing import Optional

from jrs.node import taskfile

from .clock import Proc
from .net import Closed, End

STATE = "/state"
TASKS = f"{STATE}/tasks"
BOXES = f"{STATE}/sandbox"
CLAIMS = f"{STATE}/claims.json"
HEARTBEAT = 1.0
CHECK_EVERY = 1.0


class Host:
    """A machine: its disk outlives every process on it; a crash ends its jobs."""

    def __init__(self, world, name: str, slots: int, memory: int, disk) -> None:
        self.world = world
        self.name = name
        self.slots = slots
        self.memory = memory
        self.disk = disk
        self.boots = 1
        self.up = True
        self.jobs = Proc(world.sim, name, f"jobs@{name}")  # the executors' timers
        self.execs: dict = {}  # taskfile path -> Exec
        self.daemon: Optional[NodeProc] = None
        self._pids = 100

    @property
    def boot(self) -> str:
        return f"{self.name}-boot{self.boots}"

    def alive(self, path: str) -> bool:
        ex = self.execs.get(path)
        return ex is not None and not ex.done

    def launch(self, path: str) -> None:
        self.jobs.later(self.world.sim.uniform(0.001, 0.01), self._start, path)

    def _start(self, path: str) -> None:
        if self.alive(path) or not self.disk.exists(path):
            return  # a second executor would not get the taskfile's lock
        try:
            st = taskfile.parse(path, self.disk.records(path))
        except ValueError:
            return
        if st.finished:
            return
        self._pids += 1
        ex = Exec(self, path, st.spec, self._pids)
        self.execs[path] = ex
        self.disk.append_unchecked(path, {"e": "executor", "pid": ex.pid, "start": 1,
                                          "boot": self.boot, "t": self.world.sim.now})
        if st.killed is not None:
            ex.end(None, int(st.killed), "killed")
            return
        ex.run()

    def kill(self, path: str) -> None:
        ex = self.execs.get(path)
        if ex is not None and not ex.done:
            ex.term()
        elif ex is None and self.disk.exists(path):
            self.disk.append_unchecked(path, {"e": "killed", "signal": 15,
                                              "t": self.world.sim.now})

    def crash(self) -> None:
        """Power loss: daemon and jobs die, the disk stays, the boot id changes."""
        if self.daemon is not None:
            self.daemon.die(silent=True)
            self.daemon = None
        self.world.net.host_lost(self.name)
        self.jobs.die()
        for ex in self.execs.values():
            if not ex.done:
                ex.done = True
                self.world.exec_ended(ex, "lost")
        self.execs = {}
        self.boots += 1
        self.up = False

    def power_on(self) -> None:
        self.up = True
        self.jobs = Proc(self.world.sim, self.name, f"jobs@{self.name}")


class Exec:
    """One job's executor: runs the simulated program, writes its taskfile, notifies."""

    def __init__(self, host: Host, path: str, spec: dict, pid: int) -> None:
        self.host = host
        self.path = path
        self.spec = spec
        self.pid = pid
        self.done = False
        self.killing = False
        self.behavior = host.world.behavior_of(spec)
        self.started = 0.0
        self.timer = None

    def run(self) -> None:
        w = self.host.world
        self.started = w.sim.now
        self.host.disk.append_unchecked(self.path, {"e": "running", "pid": self.pid + 1000,
                                                    "start": 1, "t": self.started})
        w.exec_started(self)
        b = self.behavior
        self.timer = self.host.jobs.later(b.duration, self.end, b.exit_code, b.signal,
                                          "completed")

    def term(self) -> None:
        if self.killing:
            return
        self.killing = True
        self.host.disk.append_unchecked(self.path, {"e": "killed", "signal": 15,
                                                    "t": self.host.world.sim.now})
        if self.timer is not None:
            self.timer.cancel()
        self.host.jobs.later(self.host.world.sim.uniform(0.001, 0.2), self.end, None, 15,
                             "killed")

    def end(self, code: Optional[int], sig: Optional[int], how: str) -> None:
        if self.done:
            return
        self.done = True
        w = self.host.world
        now = w.sim.now
        if self.started:
            w.exec_ended(self, how)
            box = self.spec.get("sandbox") or ""
            if box:
                self.host.disk.replace_unchecked(f"{box}/.outputs", self.behavior.output)
        self.host.disk.append_unchecked(self.path, {
            "e": "exit", "code": code, "signal": sig, "rusage": None,
            "started": self.started or now, "ended": now, "t": now})
        daemon = self.host.daemon
        if daemon is not None and daemon.alive:
            daemon.later(w.sim.uniform(0.0001, 0.002), daemon.notified, self.path)


class NodeProc(Proc):
    """The node daemon's shell (jrs/node/daemon.py) around the real `NodeCore`."""

    def __init__(self, world, host: Host) -> None:
        super().__init__(world.sim, host.name, f"node@{host.name}")
        self.world = world
        self.hostobj = host
        self.disk = host.disk
        from jrs.node import core as nc
        self.nc = nc
        cap = nc.Capacity(host.name, host.slots, host.memory, 0, {})
        self.core = nc.NodeCore(cap, tasks_dir=TASKS, sandbox_dir=BOXES, boot=host.boot,
                                retain=world.shape.retain)
        self.sessions: dict = {}  # sid -> End
        self._sids = 0
        self.master: Optional[End] = None
        self.welcomed = False
        self.backoff = 0.2
        self.handlers = {cls: getattr(self, "_do_" + cls) for cls in (
            "ToMaster", "ToSession", "CloseSession", "SaveClaims", "Prepare", "Launch", "Kill",
            "MarkLost", "Deliver", "Remove", "RemoveBox", "AnnounceLater", "Log")}
        host.daemon = self
        self._restore()
        world.net.listen(self, host.name, self._accept)
        self._connect_master()
        self.later(CHECK_EVERY, self._check)

    def claims_held(self) -> list:
        return self.core.hello()["claims"]

    # ------------------------------------------------------------ actions

    def do(self, actions) -> None:
        for a in actions or []:
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

    def _do_CloseSession(self, a) -> None:
        end = self.sessions.pop(a.sid, None)
        if end is not None:
            end.close()
            self.do(self.core.session_closed(a.sid))

    def _do_SaveClaims(self, a) -> None:
        try:
            self.disk.replace(CLAIMS, a.claims)
        except OSError as exc:  # the core's tick has it written again each second
            self.do(self.core.save_failed(a.offered, str(exc)))
            return
        self.do(self.core.saved())
        if a.reply is not None:
            self._do_ToMaster(self.nc.ToMaster(a.reply))

    def _do_Prepare(self, a) -> None:
        t = a.ticket
        err = None
        try:
            spec = self.core.task_spec(t, None, {}, self.sim.now)
            self.disk.create(t.path, [dict(spec, v=1)])
        except OSError as exc:
            err = str(exc)
        self.do(self.core.created(t, err, self.sim.now))

    def _do_Launch(self, a) -> None:
        self.hostobj.launch(a.path)

    def _do_Kill(self, a) -> None:
        self.hostobj.kill(a.path)

    def _do_MarkLost(self, a) -> None:
        ex = self.hostobj.execs.get(a.path)
        if ex is not None and not ex.done:  # the orphaned job process is killed
            ex.term()
        try:
            self.disk.append(a.path, {"e": "lost", "reason": a.reason, "t": self.sim.now})
        except OSError as exc:
            self.world.log(self, f"cannot record {a.key} lost: {exc}")
            return
        self._reload(a.key, a.path)

    def _do_Deliver(self, a) -> None:
        ok = False
        task = self.core.task_of(a.key)
        end = self.sessions.get(a.sid)
        if task is not None and end is not None and end.open and task.state is not None:
            result = self.nc.result_of(task.state, self.hostobj.name)
            out = f"{task.sandbox}/.outputs"
            size = self.disk.read(out) if self.disk.exists(out) else 0
            files = [{"name": "_condor_stdout", "size": size, "mode": 0o644}] if size else []
            try:
                end.send(self.core.finished_msg(task, result, files), size=size)
                ok = True
            except Closed:
                pass
        self.do(self.core.delivery_done(a.key, a.sid, ok))

    def _do_Remove(self, a) -> None:
        if a.delivered:
            try:
                self.disk.append(a.path, {"e": "delivered", "t": self.sim.now})
            except OSError:
                pass  # dying before the files are gone only means delivering it again
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
        self._reload(path[len(TASKS) + 1:-len(taskfile.SUFFIX)], path)

    def _check(self) -> None:
        now = self.sim.now
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
            self.core.master_up()
            self._heartbeat(end)
            return
        self.do(self.core.from_master(msg, self.sim.now))

    def _heartbeat(self, end: End) -> None:
        if self.master is not end or not end.open:
            return
        try:
            end.send(self.core.report(self.sim.now, 0.0))
        except Closed:
            return
        self.later(HEARTBEAT, self._heartbeat, end)

    def _master_closed(self, end: End) -> None:
        if self.master is not end:
            return
        self.master, self.welcomed = None, False
        self.core.master_down()
        self.later(self.backoff, self._connect_master)

    # ------------------------------------------------------------ submitters

    def _accept(self, end: End) -> None:
        self._sids += 1
        sid = self._sids
        state = {"attached": False}

        def on_message(msg: dict) -> None:
            if not state["attached"]:
                state["attached"] = True
                self.sessions[sid] = end
                self.do(self.core.attach(sid, msg, self.sim.now))
            elif msg["type"] == "run":
                t = self.core.run_offered(sid, msg)
                if t.reason is None:
                    self.core.box_made(t)  # the data lands in the box with the message
                    try:
                        for h in t.heads:
                            self.disk.replace(f"{t.box}/{h['name']}", h["size"])
                    except OSError as exc:
                        self.core.refuse(t, f"cannot write {h['name']!r}: {exc}")
                self.do(self.core.run_received(t, self.sim.now))
            else:
                if msg["type"] == "kill":  # for the checker: a kill the submitter sent, here
                    self.world.kills.setdefault((self.name.split("@", 1)[1], str(msg["job"]),
                                                 msg["attempt"]), self.sim.now)
                self.do(self.core.from_session(sid, msg, self.sim.now))

        def on_close() -> None:
            if self.sessions.get(sid) is end:
                del self.sessions[sid]
            self.do(self.core.session_closed(sid))

        end.on_message, end.on_close = on_message, on_close
