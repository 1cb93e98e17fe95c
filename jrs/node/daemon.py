"""The node daemon: claims from the master, jobs from submitters, results back.

It keeps no job in memory that is not also in a taskfile, so `kill -9` loses
nothing: on start it scans the taskfiles, re-adopts live executors, and
delivers results that arrived while it was down (at least once; the submitter
deduplicates by job and attempt). The daemon only enforces capacity through
claims: it never accepts a claim it has no room for, nor runs more than one
job on a claim.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Optional

from .. import records
from ..wire import files as wirefiles
from ..wire.aio import Channel, ConnectionClosed, Server, connect
from ..wire.errors import WireError
from ..wire.messages import error
from ..wire.reconnect import Backoff, keep_connected
from . import identity, sandbox, taskfile, unit
from .confine import Confinement, make_state_dir
from .launcher import Launcher

log = logging.getLogger("jrs.node")
HEARTBEAT = 1.0
CHECK_EVERY = 1.0
LAUNCH_GRACE = 10.0
# "started" goes out only once a job has run this long: a job that ends sooner is
# announced by its "finished" alone, one message less per short job
STARTED_AFTER = 0.05
_JOB_ID = re.compile(r"[0-9]{1,18}\.[0-9]{1,18}")  # CLUSTER.PROC, as the submitter names jobs
PEER_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, OSError)


@dataclass
class Claim:
    claim: str
    submitter: str
    user: str
    cpus: int
    memory: int
    gpus: list
    job: Optional[str] = None  # task key running on it
    releasing: bool = False

    def to_json(self) -> dict:
        return {"claim": self.claim, "submitter": self.submitter, "user": self.user,
                "cpus": self.cpus, "memory": self.memory, "gpus": self.gpus}


@dataclass
class Task:
    key: str
    submitter: str
    job: str
    attempt: int
    claim: str
    path: str
    sandbox: str
    created: float = field(default_factory=time.monotonic)
    ident: dict = field(default_factory=dict)  # the spec's identity fields (uid release)
    state: Optional[taskfile.TaskState] = None
    delivering: bool = False
    kill_requested: bool = False
    started_timer: Optional[asyncio.TimerHandle] = None
    session: str = ""  # sha256 of the attach token of the session that ran it


@dataclass
class Capacity:
    name: str
    slots: int
    memory: int
    gpus: int
    attrs: dict


class NodeDaemon:
    def __init__(self, config, capacity: Capacity, state_dir: str, launcher: Launcher,
                 allow_root_jobs: bool = False, confine: Optional[Confinement] = None) -> None:
        self.config = config
        self.cap = capacity
        self.state_dir = state_dir
        self.tasks_dir = os.path.join(state_dir, "tasks")
        # no confinement given (`submit --local`): jobs run as whoever runs us
        self.confine = confine or Confinement.as_self(os.path.join(state_dir, "sandbox"))
        self.sandbox_dir = self.confine.execute_dir
        self.claims_path = os.path.join(state_dir, "claims.json")
        self.launcher = launcher
        self.root = None
        self.claims: dict[str, Claim] = {}
        self.tasks: dict[str, Task] = {}
        self.sessions: dict[tuple, Channel] = {}  # (submitter, session hash) -> channel
        self.master: Optional[Channel] = None
        self.notify_address = "\0jrs-node-%d-%s" % (os.getpid(), os.urandom(4).hex())
        self.boot = taskfile.boot_id()
        self.stopping = asyncio.Event()
        self._background: set = set()

    def _spawn(self, coro) -> None:
        """Run `coro` in the background, keeping a reference until it ends."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ----------------------------------------------------------- start-up

    async def run(self, root: bytes, host: str, port: int) -> None:
        """Serve until SIGTERM or SIGINT."""
        await self.start(root, host, port)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        await self.stopping.wait()
        self.stop()

    async def start(self, root: bytes, host: str, port: int) -> tuple:
        """Recover, listen, and start the master session; return the bound address."""
        self.root = root
        make_state_dir(self.state_dir)
        make_state_dir(self.tasks_dir)
        self._load_claims()
        self._recover()
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(self.notify_address)
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._on_notify, sock)
        self._sock = sock
        self._server = Server(root, "node", self._serve_submitter,
                              peer_roles=frozenset({"submit"}))
        where = await self._server.start(host, port)
        log.warning("node %s listening on %s:%s with %d slots, %d MiB, %d GPUs; state in %s",
                    self.cap.name, where[0], where[1], self.cap.slots, self.cap.memory,
                    self.cap.gpus, self.state_dir)
        self._tasks = [asyncio.ensure_future(self._master_loop()),
                       asyncio.ensure_future(self._check_loop())]
        return where

    def stop(self) -> None:
        """Stop serving; running jobs keep running under their executors."""
        for t in self._tasks:
            t.cancel()
        self._server.close()
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        self.launcher.close()
        self.confine.close()

    def _load_claims(self) -> None:
        try:
            with open(self.claims_path) as f:
                saved = json.load(f)
            for c in saved:
                self.claims[c["claim"]] = Claim(c["claim"], c["submitter"], c["user"],
                                                int(c["cpus"]), int(c["memory"]), list(c["gpus"]))
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s: unreadable, starting without claims: %s", self.claims_path, exc)

    def _save_claims(self) -> None:
        tmp = self.claims_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump([c.to_json() for c in self.claims.values()], f)
        os.replace(tmp, self.claims_path)

    def _recover(self) -> None:
        """Rebuild the job table from the taskfiles after a restart."""
        for path in records.iter_dir(self.tasks_dir, taskfile.SUFFIX):
            try:
                st = taskfile.load(path)
            except (ValueError, OSError) as exc:
                log.warning("%s: set aside: %s", path, exc)
                os.replace(path, path + ".bad")
                continue
            spec = st.spec
            task = Task(st.key, str(spec.get("submitter", "")), str(spec.get("job", "")),
                        int(spec.get("attempt", 0)), str(spec.get("claim", "")), path,
                        str(spec.get("sandbox", "")), state=st, ident=_ident_fields(spec),
                        session=str(spec.get("session", "")))
            self.confine.policy.hold(spec)  # its uid stays taken until the taskfile goes
            if st.delivered:
                token = self.confine.hold(task.ident, task.path)
                self._cleanup(task)
                self.confine.release(token)
                continue
            self.tasks[task.key] = task
            if not st.finished:
                if st.boot and st.boot != self.boot:
                    self._mark_lost(task, "the node rebooted while the job ran")
                elif taskfile.owner_alive(path):
                    log.info("re-adopted running job %s", task.key)
                elif st.executor_pid is None:
                    self.launcher.launch(path)  # we died between writing it and launching
                else:
                    self._executor_died(task)
            claim = self.claims.get(task.claim)
            if claim is not None and not self._finished(task):
                claim.job = task.key

    # ----------------------------------------------------------- the master

    async def _master_loop(self) -> None:
        ep = self.config.master
        await keep_connected(self._open_master, self._serve_master, backoff=Backoff(0.2, 5.0),
                             on_down=lambda exc: log.info("master %s: %s", ep, exc))

    async def _open_master(self) -> Channel:
        ep = self.config.master
        ch = await connect(ep.host, ep.port, self.root, "node", peer_roles=frozenset({"master"}))
        try:
            ch.send({"type": "node-hello", "name": self.cap.name, "slots": self.cap.slots,
                     "memory": self.cap.memory, "gpus": self.cap.gpus, "attrs": self.cap.attrs,
                     "claims": [c.to_json() for c in self.claims.values()]})
            reply = await asyncio.wait_for(ch.recv(), 10)
            if not isinstance(reply, dict) or reply.get("type") != "welcome":
                why = reply.get("message") if isinstance(reply, dict) else reply
                log.warning("master %s refused this node: %s", ep, why)
                raise WireError(f"refused: {why!r:.200}")
        except BaseException:
            ch.close()
            raise
        return ch

    async def _serve_master(self, ch: Channel) -> None:
        self.master = ch
        beat = asyncio.ensure_future(self._heartbeat(ch))
        try:
            while True:
                msg = await ch.recv()
                if isinstance(msg, dict):
                    self._from_master(ch, msg)
        finally:
            beat.cancel()
            if self.master is ch:
                self.master = None
            ch.close()

    async def _heartbeat(self, ch: Channel) -> None:
        while True:
            running = sum(1 for t in self.tasks.values() if t.state is None or not t.state.finished)
            ch.send({"type": "node-report", "load": os.getloadavg()[0], "running": running,
                     "claims": list(self.claims)})
            await asyncio.sleep(HEARTBEAT)

    def _from_master(self, ch: Channel, msg: dict) -> None:
        kind = msg["type"]
        try:
            if kind == "claim-offer":
                ch.send(self._offer(msg))
            elif kind == "claim-drop":
                self._drop_claim(msg["claim"], kill=msg.get("kill") is not False)
            elif kind == "ping":
                ch.send({"type": "pong", "seq": msg["seq"]})
        except PEER_ERRORS as exc:
            ch.send(error("bad-message", str(exc), kind))

    def _free(self) -> tuple:
        used_cpus = sum(c.cpus for c in self.claims.values())
        used_mem = sum(c.memory for c in self.claims.values())
        used_gpus = {g for c in self.claims.values() for g in c.gpus}
        free_gpus = [g for g in range(self.cap.gpus) if g not in used_gpus]
        return self.cap.slots - used_cpus, self.cap.memory - used_mem, free_gpus

    def _offer(self, msg: dict) -> dict:
        cid = msg["claim"]
        if cid in self.claims:
            return {"type": "claim-ok", "claim": cid, "gpu_ids": self.claims[cid].gpus}
        cpus, mem, gpus = int(msg["cpus"]), int(msg["memory"]), int(msg["gpus"])
        free_cpus, free_mem, free_gpus = self._free()
        if cpus < 0 or mem < 0 or gpus < 0 or cpus > free_cpus or mem > free_mem \
                or gpus > len(free_gpus):
            return {"type": "claim-refused", "claim": cid,
                    "reason": f"no room: free {free_cpus} slots, {free_mem} MiB, "
                              f"{len(free_gpus)} GPUs"}
        self.claims[cid] = Claim(cid, msg["submitter"], msg["user"], cpus, mem, free_gpus[:gpus])
        self._save_claims()
        return {"type": "claim-ok", "claim": cid, "gpu_ids": free_gpus[:gpus]}

    def _drop_claim(self, cid: str, kill: bool) -> None:
        claim = self.claims.get(cid)
        if claim is None:
            return
        if claim.job and claim.job in self.tasks and not self._finished(self.tasks[claim.job]):
            claim.releasing = True
            if kill:
                self._kill(self.tasks[claim.job])
            return
        del self.claims[cid]
        self._save_claims()
        if self.master is not None:
            self.master.send({"type": "claim-released", "claim": cid})

    # ----------------------------------------------------------- submitters

    async def _serve_submitter(self, ch: Channel) -> None:
        first = await asyncio.wait_for(ch.recv(), 30)
        if not isinstance(first, dict) or first.get("type") != "attach":
            ch.send(error("protocol", "the first message must be attach"))
            return
        sub = first["submitter"]
        # The submitter id is public (`jrs status`); the token proves the session. A task
        # is seen, collected, acked or killed only by a session with the token that ran it.
        session = session_hash(first.get("token"))
        me = (sub, session)
        self.sessions[me] = ch
        try:
            unknown = []
            for item in first["jobs"]:
                if not (isinstance(item, list) and len(item) == 2):
                    continue
                if self._mine(sub, session, str(item[0]), item[1]) is None:
                    unknown.append(item)
            ch.send({"type": "attached", "unknown": unknown})
            for task in list(self.tasks.values()):
                if task.submitter == sub and task.session == session and self._finished(task):
                    self._spawn(self._deliver(task))
            while True:
                msg = await ch.recv()
                if not isinstance(msg, dict):
                    raise WireError("file data outside a transfer")
                try:
                    await self._from_submitter(ch, sub, msg, session)
                except PEER_ERRORS as exc:
                    ch.send(error("bad-message", str(exc)[:200], msg.get("type")))
        finally:
            if self.sessions.get(me) is ch:
                del self.sessions[me]

    @staticmethod
    def _key(sub: str, job: str, attempt: object) -> str:
        return f"{sub[:16]}-{job}.{attempt}"

    def _mine(self, sub: str, session: str, job: str, attempt: object) -> Optional[Task]:
        """The task of this submitter's session, or None (another session's is not there)."""
        task = self.tasks.get(self._key(sub, job, attempt))
        if task is None or task.submitter != sub or task.session != session:
            return None
        return task

    async def _from_submitter(self, ch: Channel, sub: str, msg: dict,
                              session: str = "") -> None:
        kind = msg["type"]
        if kind == "run":
            await self._run(ch, sub, msg, session)
        elif kind == "ack":
            task = self._mine(sub, session, msg["job"], msg["attempt"])
            if task is not None and self._finished(task):
                # Forget it now; the files go in the background, off this session's path.
                # Dying before they are gone only means delivering the result again.
                del self.tasks[task.key]
                taskfile.append_event(task.path, {"e": "delivered", "t": time.time()},
                                      sync=False)  # the taskfile goes next: no fsync
                token = self.confine.hold(task.ident, task.path)  # the uid, once all is gone
                if sandbox.remove_if_small(task.sandbox):
                    self._unlink_taskfile(task)
                    self.confine.release(token)
                else:
                    fut = asyncio.get_running_loop().run_in_executor(None, self._cleanup, task)
                    fut.add_done_callback(lambda _f: self.confine.release(token))
                    self._spawn(fut)
        elif kind == "kill":
            task = self._mine(sub, session, msg["job"], msg["attempt"])
            if task is not None:
                self._kill(task)
        elif kind == "release":
            claim = self.claims.get(msg["claim"])
            if claim is not None and claim.submitter == sub:
                self._drop_claim(claim.claim, kill=False)
        elif kind in ("pong", "error"):
            pass
        else:
            ch.send(error("unexpected", f"a node does not take {kind!r}", kind))

    async def _run(self, ch: Channel, sub: str, msg: dict, session: str = "") -> None:
        job, attempt, spec = msg["job"], msg["attempt"], msg["spec"]
        heads = wirefiles.check_headers(msg["files"])
        key = self._key(sub, job, attempt)
        claim = self.claims.get(msg["claim"])
        reason = None
        if not _JOB_ID.fullmatch(str(job)) or not isinstance(attempt, int) or attempt < 0:
            reason = "bad job id (CLUSTER.PROC and an attempt of 0 or more)"
        elif claim is None or claim.submitter != sub:
            reason = "unknown claim (it may have been dropped)"
        elif claim.releasing:
            reason = "claim is being released"
        elif key in self.tasks and self.tasks[key].session != session:
            reason = "the job belongs to another session"
        elif key in self.tasks:
            reason = "duplicate"
        elif claim.job is not None and claim.job in self.tasks \
                and not self._finished(self.tasks[claim.job]):
            reason = "the claim is busy with another job"
        elif int(spec.get("cpus", 1)) > claim.cpus:
            reason = f"the job asks for {spec.get('cpus')} cpus; the claim has {claim.cpus}"
        box: Optional[sandbox.Box] = None
        ident: Optional[identity.Identity] = None
        if reason is None:
            try:
                for h in heads:
                    sandbox.safe_name(h["name"])
                ident = self.confine.policy.identity_for(claim.user)
                box = sandbox.create(self.sandbox_dir, key, ident.uid, ident.gid)
            except (sandbox.BadName, identity.NoUids, OSError) as exc:
                reason = str(exc)
                if ident is not None:
                    self.confine.policy.release(ident)
                    ident = None

        def open_file(head: dict):
            if reason is not None or box is None:
                return None
            return box.open_input(head)

        try:
            await wirefiles.receive(ch, heads, open_file)
        except BaseException:
            if box is not None:
                box.discard()
            if ident is not None:
                self.confine.policy.release(ident)
            raise
        if reason == "duplicate":
            ch.send({"type": "started", "job": job, "attempt": attempt})
            return
        if reason is not None or box is None or ident is None:
            ch.send({"type": "rejected", "job": job, "attempt": attempt, "reason": reason})
            return
        try:
            tspec = self._task_spec(sub, claim, job, attempt, spec, box, ident, key)
            tspec["session"] = session
        except (sandbox.BadName, KeyError, TypeError, ValueError, OSError) as exc:
            box.discard()
            self.confine.policy.release(ident)
            ch.send({"type": "rejected", "job": job, "attempt": attempt,
                     "reason": f"bad job: {exc}"})
            return
        path = os.path.join(self.tasks_dir, key + taskfile.SUFFIX)
        task = Task(key, sub, job, attempt, claim.claim, path, box.path,
                    ident=_ident_fields(tspec), session=session)
        self.tasks[key] = task
        claim.job = key
        taskfile.create(path, tspec)
        self.launcher.launch(path)
        task.started_timer = asyncio.get_running_loop().call_later(
            STARTED_AFTER, self._announce, task)

    def _announce(self, task: Task) -> None:
        """Tell the submitter its job is running (if it has not ended already)."""
        task.started_timer = None
        ch = self.sessions.get((task.submitter, task.session))
        if ch is not None and not self._finished(task):
            ch.send({"type": "started", "job": task.job, "attempt": task.attempt})

    def _task_spec(self, sub: str, claim: Claim, job: str, attempt: int, spec: dict,
                   handle: sandbox.Box, ident: identity.Identity, key: str) -> dict:
        box = handle.path
        shared = bool(spec.get("shared_fs"))
        exe = str(spec["executable"])
        exe_name = None
        if spec.get("transfer_executable") and not shared:
            exe_name = sandbox.safe_name(os.path.basename(exe))
            exe = os.path.join(box, exe_name)
        sandbox.check_output_list(spec.get("transfer_output_files"))
        snap = handle.hand_over(exe_name)
        argv = [exe] + [str(a) for a in spec.get("arguments", [])]
        cwd = str(spec.get("iwd")) if shared else box
        env = sandbox.job_environment(dict(spec.get("environment", {})),
                                      dict(spec.get("getenv", {})), box, job,
                                      claim.cpus, claim.gpus, box if ident.per_job else None)
        if shared:
            stdin, stdout, stderr = spec.get("input"), spec.get("output"), spec.get("error")
        else:
            # no `output`/`error` in the submit file: HTCondor discards the stream, so do we
            stdin = os.path.join(box, sandbox.STDIN) if spec.get("input") else None
            stdout = os.path.join(box, sandbox.STDOUT) if spec.get("output") else None
            stderr = os.path.join(box, sandbox.STDERR) if spec.get("error") else None
        out = {"job": job, "attempt": attempt, "submitter": sub, "claim": claim.claim,
               "node": self.cap.name, "argv": argv, "cwd": cwd, "env": env, "stdin": stdin,
               "stdout": stdout, "stderr": stderr, "sandbox": box, "shared_fs": shared,
               "transfer_output_files": spec.get("transfer_output_files"),
               "when_to_transfer_output": spec.get("when_to_transfer_output", "ON_EXIT"),
               "snapshot": snap, "kill_grace": 5,
               "notify": self.notify_address, "created": time.time()}
        out.update(self.confine.spec_fields(ident, key))
        if ident.uid is not None:
            env["USER"] = env["LOGNAME"] = ident.name
        if ident.note:
            log.info("job %s: %s; runs as %s", key, ident.note, ident.name)
        return out

    # ----------------------------------------------------------- job ends

    def _finished(self, task: Task) -> bool:
        return task.state is not None and task.state.finished

    def _on_notify(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            task = self.tasks.get(data.decode(errors="replace"))
            if task is not None and not self._finished(task):
                self._reload(task)

    def _reload(self, task: Task) -> None:
        try:
            task.state = taskfile.load(task.path)
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable: %s", task.path, exc)
            return
        if task.state.finished:
            self._job_ended(task)

    def _job_ended(self, task: Task) -> None:
        if task.started_timer is not None:
            task.started_timer.cancel()  # "finished" says it all
            task.started_timer = None
        claim = self.claims.get(task.claim)
        if claim is not None and claim.job == task.key:
            claim.job = None
            if claim.releasing:
                self._drop_claim(claim.claim, kill=False)
        self._spawn(self._deliver(task))

    def _mark_lost(self, task: Task, reason: str) -> None:
        taskfile.append_event(task.path, {"e": "lost", "reason": reason, "t": time.time()})
        task.state = taskfile.load(task.path)
        log.warning("job %s lost: %s", task.key, reason)

    def _executor_died(self, task: Task) -> None:
        st = task.state
        reason = f"its executor (pid {st.executor_pid}) died"
        job_unit = unit.Unit.from_spec(st.spec, task.key)
        if st.pid and taskfile.same_process(st.pid, st.pid_start):
            job_unit.pgid = st.pid
            reason += f" while the job's process {st.pid} still ran (killed it)"
        job_unit.reap()  # all of its unit, and a per-job uid's files and IPC
        self._mark_lost(task, reason)

    async def _check_loop(self) -> None:
        """Once a second: catch executors that ended or died without telling us."""
        while True:
            await asyncio.sleep(CHECK_EVERY)
            self.confine.poll()  # per-job uids whose executors have finished reaping
            for task in list(self.tasks.values()):
                if self._finished(task):
                    continue
                if taskfile.owner_alive(task.path):
                    if task.kill_requested:
                        self._kill(task)
                    continue
                self._reload(task)
                st = task.state
                if st is None or st.finished:
                    continue
                if st.executor_pid is None:
                    if time.monotonic() - task.created > LAUNCH_GRACE:
                        task.created = time.monotonic()
                        self.launcher.launch(task.path)
                    continue
                self._executor_died(task)
                self._job_ended(task)

    def _kill(self, task: Task) -> None:
        task.kill_requested = True
        try:
            st = taskfile.load(task.path)
        except (OSError, ValueError):
            return
        if st.finished:
            return
        if st.executor_pid is None:
            taskfile.append_event(task.path, {"e": "killed", "signal": signal.SIGTERM,
                                              "t": time.time()})
        elif taskfile.same_process(st.executor_pid, st.executor_start):
            try:
                os.kill(st.executor_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    # ----------------------------------------------------------- delivery

    def _result(self, task: Task) -> tuple:
        st = task.state
        spec = st.spec
        end = st.exit or {}
        result = {"node": self.cap.name, "exit_code": end.get("code"),
                  "signal": end.get("signal"), "rusage": end.get("rusage"),
                  "started": end.get("started", st.running_since), "ended": end.get("ended"),
                  "removed": st.killed is not None}
        if end.get("e") == "exec-failed":
            result["reason"] = end.get("reason")
            result["errno"] = end.get("errno")
            result["exec_failed"] = True
        elif end.get("e") == "lost":
            result["reason"] = end.get("reason")
            result["lost"] = True
        plan = None
        if not spec.get("shared_fs") and spec.get("sandbox"):
            success = end.get("code") == 0
            exe = os.path.basename(str(spec["argv"][0]))
            plan = sandbox.collect(spec, spec.get("when_to_transfer_output") != "ON_SUCCESS"
                                   or success, frozenset({exe}))
            if plan.missing and end.get("e") == "exit":
                result["missing"] = plan.missing
            if plan.refused:
                result["refused"] = {k: v[:200] for k, v in list(plan.refused.items())[:100]}
            if plan.over:
                result["outputs_over_limit"] = plan.over
        return result, plan

    async def _deliver(self, task: Task) -> None:
        ch = self.sessions.get((task.submitter, task.session))
        if ch is None or task.delivering:
            return
        task.delivering = True
        plan = None
        try:
            result, plan = self._result(task)
            items = plan.items if plan is not None else []
            heads = plan.heads if plan is not None else []
            await ch.send_files({"type": "finished", "job": task.job, "attempt": task.attempt,
                                 "result": result, "files": heads}, items)
        except (ConnectionClosed, OSError, WireError) as exc:
            log.info("could not deliver %s yet: %s", task.key, exc)
        finally:
            task.delivering = False
            if plan is not None:
                plan.close()

    @classmethod
    def _cleanup(cls, task: Task) -> None:
        if task.sandbox:
            sandbox.remove(task.sandbox)
        cls._unlink_taskfile(task)

    @staticmethod
    def _unlink_taskfile(task: Task) -> None:
        try:
            os.unlink(task.path)
        except FileNotFoundError:
            pass


def session_hash(token: object) -> str:
    """What a task keeps of its session's attach token: sha256 of it ("" without one)."""
    if not isinstance(token, str) or not token:
        return ""
    return hashlib.sha256(token.encode()).hexdigest()


def _ident_fields(spec: dict) -> dict:
    return {"uid": spec.get("uid"), "per_job_uid": bool(spec.get("per_job_uid"))}
