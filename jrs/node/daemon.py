"""The node daemon: the shell around `NodeCore` (sockets, files, the launcher).

All policy (claims, admission, task states, what to deliver and when) is in
`core.py`; this module feeds it events and executes the actions it returns,
through a table from action type to method. It keeps no job in memory that is
not also in a taskfile, so `kill -9` loses nothing: on start it scans the
taskfiles, re-adopts live executors, and delivers results that arrived while it
was down (at least once; the submitter deduplicates by job and attempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import stat
import time
import traceback
from typing import Awaitable, Callable, Dict, Optional

from .. import records
from ..errors import ConfigError
from ..wire import files as wirefiles
from ..wire.aio import Channel, ConnectionClosed, Server, connect
from ..wire.errors import MessageTooBig, WireError
from ..wire.hosts import host_key
from ..wire.peerlog import PeerLog, excerpt
from ..wire.reconnect import Backoff, keep_connected
from . import core as nc
from . import identity, sandbox, scancache, taskfile, unit
from .budget import (
    SESSION_COST,
    MessageBudget,
    data_cost,
    message_cost,
    refused_cost,
    work_cost,
)
from .confine import Confinement, make_state_dir, scan_every
from .core import Capacity, NodeCore
from .launcher import Launcher
from .stopwatch import StopWatch

__all__ = ["Capacity", "NodeDaemon"]

log = logging.getLogger("jrs.node")
HEARTBEAT = 1.0
CHECK_EVERY = 1.0
BIG_HEADER = 1000  # files in a `finished` whose message is encoded off the event loop


def _stall_after() -> float:
    """How long a gap between ticks means we were stopped: half the master's node
    timeout when JRS_NODE_TIMEOUT sets one (tests shorten it), else the core's default."""
    try:
        timeout = float(os.environ.get("JRS_NODE_TIMEOUT", ""))
    except ValueError:
        return nc.STALL_AFTER
    return min(nc.STALL_AFTER, max(timeout / 2, 2 * CHECK_EVERY))


def _kill_grace() -> float:
    """JRS_KILL_GRACE, else the core's 5 s: what a killed job's unit has between TERM and
    KILL. Refused (naming it) unless 0 to 3600 seconds: a typo must not leave jobs that
    ignore TERM running for good, nor skip their grace."""
    text = os.environ.get("JRS_KILL_GRACE", "")
    if not text:
        return nc.KILL_GRACE
    try:
        grace = float(text)
    except ValueError:
        grace = -1.0
    if not 0 <= grace <= 3600:
        raise ConfigError(f"JRS_KILL_GRACE={text}: want a number of seconds from 0 to 3600")
    return grace


async def forever(name: str, step: Callable[[], Awaitable[None]], every: float) -> None:
    """Run `step` every `every` seconds for good: a step that raises is logged with its
    traceback and the loop goes on (a background loop must never die silently)."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:  # anything at all: log it, keep the node working
            log.error("%s failed (continuing):\n%s", name, traceback.format_exc().rstrip())
        await asyncio.sleep(every)


class _Sink:
    """An input file being received: a write error is kept (and the rest of the data
    dropped) instead of killing the session, so the run can be refused cleanly."""

    def __init__(self, f, name: str) -> None:
        self.f = f
        self.name = name
        self.error: Optional[str] = None

    def write(self, chunk: bytes) -> None:
        if self.error is None:
            try:
                self.f.write(chunk)
            except OSError as exc:
                self.error = f"cannot write {self.name[:60]!r}: {exc.strerror or exc}"

    def close(self) -> None:
        try:
            self.f.close()
        except OSError as exc:
            if self.error is None:
                self.error = f"cannot write {self.name[:60]!r}: {exc.strerror or exc}"


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    return str(exc) or type(exc).__name__


class NodeDaemon:
    def __init__(self, config, capacity: Capacity, state_dir: str, launcher: Launcher,
                 allow_root_jobs: bool = False, confine: Optional[Confinement] = None,
                 retain: float = nc.DEFAULT_RETAIN) -> None:
        # allow_root_jobs: kept for callers (`submit --local`); without a confinement
        # every job runs as whoever runs the daemon anyway
        self.config = config
        self.cap = capacity
        self.state_dir = state_dir
        self.tasks_dir = os.path.join(state_dir, "tasks")
        # no confinement given (`submit --local`): jobs run as whoever runs us
        self.confine = confine or Confinement.as_self(os.path.join(state_dir, "sandbox"))
        self.sandbox_dir = self.confine.execute_dir
        self.claims_path = os.path.join(state_dir, "claims.json")
        self.launcher = launcher
        # a non-root node's jobs may stop their executors (same uid): see stopwatch.py
        self.stops: Optional[StopWatch] = StopWatch() if os.geteuid() != 0 else None
        self.root = None
        self.notify_address = "\0jrs-node-%d-%s" % (os.getpid(), os.urandom(4).hex())
        self.core = NodeCore(capacity, self.tasks_dir, self.sandbox_dir,
                             boot=taskfile.boot_id(), notify=self.notify_address, retain=retain,
                             stall_after=_stall_after(), kill_grace=_kill_grace())
        self.channels: Dict[int, Channel] = {}
        self.master: Optional[Channel] = None
        self.stopping = asyncio.Event()
        self._ids = itertools.count(1)
        self.budget = MessageBudget()  # how fast submitter sessions are read (budget.py)
        self._refusing: Dict[int, bool] = {}  # session -> the run it reads is refused
        self.peerlog = PeerLog(log)  # lines about a session: a few a minute per host
        self._background: set = set()
        self._tasks: list = []
        self._do: Dict[type, Callable] = {
            nc.ToMaster: self._to_master, nc.ToSession: self._to_session,
            nc.CloseSession: self._close_session, nc.SaveClaims: self._save_claims,
            nc.Prepare: self._prepare, nc.Launch: self._launch, nc.Kill: self._kill,
            nc.MarkLost: self._mark_lost, nc.Deliver: self._deliver, nc.Remove: self._remove,
            nc.RemoveBox: self._remove_box, nc.AnnounceLater: self._announce_later,
            nc.Log: self._log,
        }
        # what a submitter session may send; everything but `run` (which carries data)
        # goes straight to the core
        self._session_handlers: Dict[str, Callable] = {"run": self._on_run}

    def execute(self, actions: list) -> None:
        """Carry out the core's actions, in order."""
        for action in actions:
            self._do[type(action)](action)

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
        self._tasks = [asyncio.ensure_future(forever("the master session", self._master_loop,
                                                     1.0)),
                       asyncio.ensure_future(forever("the job check", self._check_once,
                                                     CHECK_EVERY))]
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
        _tighten(self.claims_path)
        try:
            with open(self.claims_path) as f:
                saved = json.load(f)
        except FileNotFoundError:
            return
        except (ValueError, OSError) as exc:
            log.warning("%s: unreadable, starting without claims: %s", self.claims_path, exc)
            return
        for warning in self.core.restore_claims(saved):
            log.warning("%s: %s", self.claims_path, warning)

    def _recover(self) -> None:
        """Rebuild the job table from the taskfiles after a restart."""
        for path in records.iter_dir(self.tasks_dir, taskfile.SUFFIX):
            # probe before reading: an executor appends its exit record before it lets
            # go of its lock, so "not alive" then "not finished" means it really died
            # (read first, a job ending in between looked dead and was run again)
            alive = taskfile.owner_alive(path)
            try:
                st = taskfile.load(path)
            except (ValueError, OSError) as exc:
                log.warning("%s: set aside: %s", path, exc)
                os.replace(path, path + ".bad")
                continue
            self.confine.policy.hold(st.spec)  # its uid stays taken until the taskfile goes
            self.execute(self.core.recover(st, alive, time.time()))

    # ----------------------------------------------------------- the master

    async def _master_loop(self) -> None:
        ep = self.config.master
        await keep_connected(self._open_master, self._serve_master, backoff=Backoff(0.2, 5.0),
                             on_down=lambda exc: log.info("master %s: %s", ep, exc))

    async def _open_master(self) -> Channel:
        """Connect to the master and say hello; the channel once it welcomed us."""
        ep = self.config.master
        ch = await connect(ep.host, ep.port, self.root, "node", peer_roles=frozenset({"master"}))
        try:
            ch.send(self.core.hello())
            reply = await asyncio.wait_for(ch.recv(), 10)
            if not isinstance(reply, dict) or reply.get("type") != "welcome":
                why = reply.get("message") if isinstance(reply, dict) else reply
                log.warning("master %s refused this node: %s", ep, str(why)[:200])
                raise WireError(f"refused: {why!r:.200}")
        except BaseException:
            ch.close()
            raise
        return ch

    async def _serve_master(self, ch: Channel) -> None:
        self.master = ch
        self.core.master_up()
        beat = asyncio.ensure_future(forever("the heartbeat", self._beat, HEARTBEAT))
        try:
            while True:
                msg = await ch.recv()
                if isinstance(msg, dict):
                    self.execute(self.core.from_master(msg, time.time()))
        finally:
            beat.cancel()
            if self.master is ch:
                self.master = None
                self.core.master_down()
            ch.close()

    async def _beat(self) -> None:
        if self.master is not None:
            self.master.send(self.core.report(time.time(), os.getloadavg()[0]))

    def _to_master(self, a: nc.ToMaster) -> None:
        if self.master is not None:
            self.master.send(a.msg)

    def _save_claims(self, a: nc.SaveClaims) -> None:
        tmp = self.claims_path + ".tmp"
        try:
            _write_private(tmp, json.dumps(a.claims).encode())
            os.replace(tmp, self.claims_path)
        except OSError as exc:  # the core has `tick` write it again each second
            self.execute(self.core.save_failed(a.offered, _why(exc)))
            return
        self.execute(self.core.saved())
        if a.reply is not None and self.master is not None:
            self.master.send(a.reply)

    # ----------------------------------------------------------- submitters

    async def _serve_submitter(self, ch: Channel) -> None:
        sid = next(self._ids)
        self.channels[sid] = ch
        self.budget.open(sid, host_key(ch.peer), time.monotonic())

        def charge(cost: float) -> Awaitable[None]:
            return self._charge(sid, ch, cost)

        # a frame the wire refused and answered costs more (R10: unknown types flooded
        # past the budget, 83 % of a core); a read's data frames, their `data_cost`
        # (R10: 1-byte frames after one `run`, 54 %), swallowed ones of a refused header too
        ch.on_bad = lambda size: charge(refused_cost(size, ch.last_units))
        ch.on_data = lambda frames, nbytes: charge(data_cost(
            frames, nbytes, nbytes if self._refusing.get(sid) else ch.last_discarded))
        ch.before_read = lambda: self._owed(sid)  # a host's debt holds all its sessions
        ch.on_costly = lambda size, units: self._prepay(sid, ch, size, units)
        try:
            first = await asyncio.wait_for(ch.recv(), 30)
            self.execute(self.core.attach(sid, first, time.time()))
            # (an attach may be big; the session it opened costs too: SESSION_COST)
            await charge(message_cost(ch.last_size, 0, ch.last_units) + SESSION_COST)
            while sid in self.core.sessions:
                msg = await ch.recv()
                if not isinstance(msg, dict):
                    raise WireError("file data outside a transfer")
                files = msg.get("files")  # a run's headers: each costs its check
                await charge(message_cost(ch.last_size,
                                          len(files) if isinstance(files, list) else 0,
                                          ch.last_units))
                handler = self._session_handlers.get(msg["type"])
                if handler is not None:
                    await handler(sid, ch, msg)
                else:
                    self.execute(self.core.from_session(sid, msg, time.time()))
        except asyncio.TimeoutError:
            pass
        finally:
            self.channels.pop(sid, None)
            self._refusing.pop(sid, None)
            self.budget.close(sid)
            self.execute(self.core.session_closed(sid))

    async def _owed(self, sid: int) -> None:
        """Before each read of session `sid`, its first included: wait while it or its
        host is in debt (`MessageBudget.owed`), so a host's new sessions cannot decode
        for free what its older ones ran up."""
        while True:
            wait = self.budget.owed(sid, time.monotonic())
            if wait <= 0.0:
                return
            await asyncio.sleep(wait)

    async def _prepay(self, sid: int, ch: Channel, size: int, units: int) -> None:
        """A frame of many values (`Channel.on_costly`), before it is decoded: once
        neither the session nor its host is in debt, its bytes and units are charged,
        and the decode waits for them too. Charged after the decode, each session of a
        host decoded one such frame free, all at the same moment."""
        await self._owed(sid)
        await self._charge(sid, ch, message_cost(size, 0, units) - 1.0)

    async def _charge(self, sid: int, ch: Channel, cost: float) -> None:
        """`cost` messages' worth of session `sid` read (or done for it); wait, not
        reading it, while its budget is in debt (a flood: its sender waits, nothing is
        dropped)."""
        wait = self.budget.charge(sid, time.monotonic(), cost)
        if wait > 0.0:
            if self.budget.waits(sid) == 1:  # said once (an honest session never
                self.peerlog.info(ch.peer, "submitter session %d from %s is over its "
                                  "message budget: read at its rate from now on",
                                  sid, excerpt(ch.peer, 64))  # waits: test_node_budget)
            await asyncio.sleep(wait)

    def _to_session(self, a: nc.ToSession) -> None:
        # a plain send never lands inside a transfer: the channel holds it until the
        # unit's last frame is queued (contract 4)
        ch = self.channels.get(a.sid)
        if ch is not None:
            ch.send(a.msg)

    def _close_session(self, a: nc.CloseSession) -> None:
        ch = self.channels.get(a.sid)
        if ch is not None:
            ch.close()

    async def _on_run(self, sid: int, ch: Channel, msg: dict) -> None:
        """A run: its data goes into a fresh sandbox (or nowhere, if refused), then the
        core decides; the task exists only once its taskfile does."""
        t = self.core.run_offered(sid, msg)
        if t.reason is None:
            try:
                self._make_box(t)
            except (OSError, ValueError) as exc:
                self.core.refuse(t, f"cannot make the sandbox: {_why(exc)}")
        sinks: list = []
        made = [0.0]  # CPU seconds spent creating its files (charged: budget.work_cost)
        self._refusing[sid] = t.reason is not None  # its data goes nowhere (data_cost)

        def open_file(head: dict):
            if t.reason is not None:
                self._refusing[sid] = True
                return None
            start = time.process_time()
            try:
                sink = _Sink(self._open_input(t, head), head["name"])
            except (OSError, ValueError) as exc:
                self.core.refuse(t, f"cannot write {head['name'][:60]!r}: {_why(exc)}")
                return None
            finally:
                made[0] += time.process_time() - start
            sinks.append(sink)
            return sink

        try:
            await wirefiles.receive(ch, t.heads, open_file)
        except BaseException:
            self._close_box(t)
            self.execute(self.core.run_aborted(t))
            raise
        # (_refusing stays: the run's last frames are charged at the next read)
        for sink in sinks:
            if sink.error is not None:
                self.core.refuse(t, sink.error)
                break
        if t.reason is not None:
            self._close_box(t)
        try:
            self.execute(self.core.run_received(t, time.time()))
        finally:
            self._close_box(t)  # handed over already if it became a task
        if made[0]:  # paid before the session's next message is read
            await self._charge(sid, ch, work_cost(made[0]))

    # sandbox operations: contract 5, they go through sandbox.py

    def _make_box(self, t: nc.RunTicket) -> None:
        """The job's identity, and its sandbox owned by it from the start."""
        try:
            ident = self.confine.policy.identity_for(t.user)
        except identity.NoUids as exc:
            raise OSError(str(exc)) from None
        try:
            box = sandbox.create(self.sandbox_dir, t.key, ident.uid, ident.gid)
        except BaseException:
            self.confine.policy.release(ident)
            raise
        t.shell = (box, ident)
        t.ident = nc.ident_fields(ident.to_spec())
        self.core.box_made(t)

    def _open_input(self, t: nc.RunTicket, head: dict):
        return t.shell[0].open_input(head)

    @staticmethod
    def _close_box(t: nc.RunTicket) -> None:
        if t.shell is not None:
            t.shell[0].close()

    def _prepare(self, a: nc.Prepare) -> None:
        """The I/O that makes a run a task; any failure refuses the run."""
        t = a.ticket
        box, ident = t.shell
        err = None
        try:
            exe = t.exe_in_box
            snap = box.hand_over(os.path.basename(exe) if exe else None)
            fields = self.confine.spec_fields(ident, t.key)
            spec = self.core.task_spec(t, fields, snap, time.time(),
                                       home=box.path if ident.per_job else None)
            if ident.note:
                log.info("job %s: %s; runs as %s", t.key, ident.note, ident.name)
            taskfile.create(t.path, spec)
        except (OSError, ValueError) as exc:
            err = _why(exc)
            box.close()
        self.execute(self.core.created(t, err, time.time()))

    def _launch(self, a: nc.Launch) -> None:
        try:
            self.launcher.launch(a.path)
        except (OSError, ValueError) as exc:
            self.execute(self.core.launch_failed(a.key, _why(exc), time.time()))

    def _announce_later(self, a: nc.AnnounceLater) -> None:
        asyncio.get_running_loop().call_later(
            a.delay, lambda: self.execute(self.core.announce(a.key)))

    def _log(self, a: nc.Log) -> None:
        (log.warning if a.level == "warning" else log.info)("%s", a.text)

    # ----------------------------------------------------------- job ends

    def _on_notify(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(4096)
            except OSError:  # drained (BlockingIOError) or gone
                return
            key = data.decode(errors="replace")
            if self.core.task_of(key) is not None:
                self._reload(key)

    def _reload(self, key: str) -> None:
        task = self.core.task_of(key)
        if task is None:
            return
        try:
            st = taskfile.load(task.path)
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable: %s", task.path, exc)
            return
        self.execute(self.core.loaded(key, st, time.time()))

    async def _check_once(self) -> None:
        """Catch executors that ended or died without telling us; expire old results."""
        self.confine.poll()  # per-job uids whose executors have finished reaping
        if self.confine.scan_due(time.monotonic()):
            self._spawn(self._rescan())
        checks = self.core.checks()
        if self.stops is not None:
            self.stops.keep(k for k, _ in checks)
            self._launcher_stopped()
        for key, path in checks:
            alive = taskfile.owner_alive(path)
            if alive and self.stops is not None:
                self._executor_stopped(key, path)
            st = None
            if not alive:
                try:
                    st = taskfile.load(path)
                except (OSError, ValueError) as exc:
                    log.warning("%s: unreadable: %s", path, exc)
            self.execute(self.core.probe(key, alive, st, time.time()))
        self.execute(self.core.tick(time.time()))

    def _executor_stopped(self, key: str, path: str) -> None:
        """A non-root node: kill a job's executor found stopped at STOPPED_FOR checks in
        a row (the job did it, or `kill -STOP -1`): the job is then lost and reruns."""
        assert self.stops is not None
        ex = self.stops.executor(key)
        if ex is None:
            try:
                st = taskfile.load(path)
            except (OSError, ValueError):
                return
            if st.executor_pid is None:
                return
            self.stops.learn(key, st.executor_pid, st.executor_start)
            ex = (st.executor_pid, st.executor_start)
        pid, start = ex
        if self.stops.seen(key, unit.process_state(pid) == "T") and \
                taskfile.same_process(pid, start):
            log.warning("job %s: its executor (pid %d) is stopped (SIGSTOP; the job runs as "
                        "this node's own account and may signal it): killed it, the job is "
                        "lost and reruns", key, pid)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def _launcher_stopped(self) -> None:
        """A non-root node: a stopped launcher (a job's SIGSTOP) would start no job;
        it runs no job code, so it is simply continued."""
        proc = self.launcher.proc
        if proc is not None and proc.poll() is None and unit.process_state(proc.pid) == "T":
            log.warning("the launcher (pid %d) was stopped (SIGSTOP, by a job?): continued it",
                        proc.pid)
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGCONT)

    async def _rescan(self) -> None:
        """Where a job's uid may leave files: the scan (unit.scan_world_writable) as an
        unprivileged child, niced and bounded; killed if the daemon stops meanwhile."""
        import subprocess

        proc = None
        age = 0.0
        try:
            uid, gid = self.confine.scan_identity()
            argv = unit.scan_args(self.confine.job_uids())
            key = scancache.key(argv, uid, gid)
            kept = None if self.confine.scans else scancache.load(key, scan_every())
            if kept is not None:  # this node's own scan, from before its restart
                age = kept[1]
                log.info("%s (the scan of %.0f s ago, kept in %s)",
                         self.confine.scanned(kept[0]), age, scancache.DIR)
                return
            started = scancache.now()
            for exe in unit.scan_pythons():
                try:
                    proc = await asyncio.create_subprocess_exec(
                        exe, *argv, user=uid, group=gid,
                        extra_groups=[], cwd="/", env={}, stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                    break
                except OSError:
                    continue
            got: list = []
            complete = False
            if proc is not None and proc.stdout is not None:
                deadline = time.monotonic() + unit.SCAN_WALL
                try:  # all of it, to its end (one read() is one pipe chunk, 8 KiB or so)
                    await asyncio.wait_for(_read_to_end(proc.stdout, got, unit.SCAN_BYTES),
                                           unit.SCAN_WALL)
                    # At its output's end it is exiting: wait for that (a kill now would
                    # poll() and reap it first, and asyncio's watcher report 255)
                    await asyncio.wait_for(proc.wait(), max(1.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    pass  # what it found by then counts
                if proc.returncode is None:  # late or over SCAN_BYTES (it would block), or leaving
                    proc.kill()
                complete = await proc.wait() == 0
            data = b"".join(got)
            if complete:  # (a cut-short one is not kept: the next start scans again)
                scancache.save(key, data, started)  # before the log line, which says it is
            log.info("%s%s", self.confine.scanned(data), "" if complete else
                     " (cut short: not kept for a restart)")
        except Exception as exc:  # never the daemon's end: the last lists stay
            log.warning("cannot look for world-writable directories: %s", _why(exc))
        finally:
            if proc is not None and proc.returncode is None:
                proc.kill()
            self.confine.scan_finished(time.monotonic(), age)

    def _mark_lost(self, a: nc.MarkLost) -> None:
        if taskfile.owner_alive(a.path):  # an executor took it meanwhile: not lost
            self._reload(a.key)
            return
        try:
            if taskfile.load(a.path).finished:  # it ended meanwhile: its result stands
                self._reload(a.key)
                return
        except (OSError, ValueError):
            pass
        reason = a.reason
        alive = bool(a.pid) and taskfile.same_process(a.pid, a.pid_start)
        if alive:
            reason += f" while the job's process {a.pid} still ran (killed it)"
        if a.reap or alive:
            try:
                st = taskfile.load(a.path)
                spec, leaf = st.spec, st.cgroup_leaf
            except (OSError, ValueError):
                spec, leaf = {}, None
            job_unit = unit.Unit.from_spec(spec, a.key, leaf)  # (a reused executor's cgroups)
            if alive:
                job_unit.pgid = a.pid
            job_unit.reap()  # all of its unit, and a per-job uid's files and IPC
        try:
            taskfile.append_event(a.path, {"e": "lost", "reason": reason, "t": time.time()})
        except OSError as exc:
            log.warning("%s: cannot record the job lost: %s", a.path, _why(exc))
            return
        log.warning("job %s lost: %s", a.key, reason)
        self._reload(a.key)

    def _kill(self, a: nc.Kill) -> None:
        try:
            st = taskfile.load(a.path)
        except (OSError, ValueError):
            return
        if st.finished:
            return
        # the kill binds to the taskfile, not to the executor's pid: an executor runs many
        # jobs over its life and acts on a TERM only if its current taskfile says `killed`
        if st.killed is None:
            try:
                taskfile.append_event(a.path, {"e": "killed", "signal": signal.SIGTERM,
                                               "t": time.time()})
            except OSError as exc:
                log.warning("%s: cannot record the kill: %s", a.path, _why(exc))
                return
        if st.executor_pid is not None and taskfile.same_process(st.executor_pid,
                                                                 st.executor_start):
            try:
                os.kill(st.executor_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    # ----------------------------------------------------------- delivery

    async def _collect(self, st) -> tuple:
        """(result, outputs) of a finished job: the core's result, the sandbox's checked
        files (sandbox.collect: through directory fds, no links; close it after).

        The scan runs in the executor's thread pool, not in the event loop: a job
        with 100,000 output files took 14.7 s to scan on a loaded machine, the
        heartbeats stopped meanwhile and the master declared the node lost with every
        claim on it. A sandbox whose scan is bounded by a few entries
        (sandbox.small_to_collect) is scanned inline: the hop to a thread and back
        costs ~0.3 ms of CPU per job, more than such a scan. The task stays
        `delivering` in the core until this is back, so the core starts no second
        delivery of it meanwhile."""
        result = nc.result_of(st, self.cap.name)
        plan = nc.output_plan(st)
        if plan is None:
            return result, None
        if sandbox.small_to_collect(st.spec):  # (most jobs) a thread hop costs more
            found = sandbox.collect(st.spec, plan.transfer, plan.skip)
            nc.add_outputs(result, plan, found.missing, found.refused, found.over)
            return result, found
        fut = asyncio.get_running_loop().run_in_executor(
            None, sandbox.collect, st.spec, plan.transfer, plan.skip)
        try:
            found = await asyncio.shield(fut)
        except asyncio.CancelledError:  # (the daemon stops) the scan's fds close when done
            fut.add_done_callback(_close_collected)
            raise
        nc.add_outputs(result, plan, found.missing, found.refused, found.over)
        return result, found

    def _deliver(self, a: nc.Deliver) -> None:
        self._spawn(self._deliver_now(a.sid, a.key))

    async def _deliver_now(self, sid: int, key: str) -> None:
        ok = False
        found = None
        try:
            task = self.core.task_of(key)
            ch = self.channels.get(sid)
            if task is None or ch is None or task.state is None:
                return
            result, found = await self._collect(task.state)
            items = found.items if found is not None else []
            # built after the scan: a claim dropped meanwhile is said gone (claim_gone)
            msg = self.core.finished_msg(task, result,
                                         found.heads if found is not None else [])
            try:
                encoded = await self._encode(ch, msg)
            except MessageTooBig as exc:
                # no frame can carry it (names full of commas count as JSON values:
                # connection.MAX_UNITS): its job is held saying so, no output is sent;
                # retried, it failed the same way on every attach, for ever
                log.warning("%s: the result's outputs are not sent: %s", key, exc)
                msg, items = too_big_result(msg, exc), []
                encoded = await self._encode(ch, msg)
            await ch.send_files(msg, items, encoded=encoded)  # message and data: one unit
            ok = True
        except (ConnectionClosed, OSError, WireError) as exc:
            log.info("could not deliver %s yet: %s", key, exc)
        finally:
            if found is not None:
                found.close()
            self.execute(self.core.delivery_done(key, sid, ok))

    @staticmethod
    async def _encode(ch: Channel, msg: dict) -> bytes:
        """`msg` encoded (MessageTooBig if no frame can carry it): off the event loop for a
        big header list, whose json takes seconds under load."""
        if len(msg["files"]) > BIG_HEADER:
            return await asyncio.get_running_loop().run_in_executor(None, ch.conn.encode, msg)
        return ch.conn.encode(msg)

    def _remove(self, a: nc.Remove) -> None:
        if a.delivered:
            try:  # the taskfile goes next: no fsync
                taskfile.append_event(a.path, {"e": "delivered", "t": time.time()}, sync=False)
            except OSError:
                pass  # dying before the files are gone only means delivering it again
        # the uid goes back once the sandbox is gone and the executor (which reaps the
        # uid after the result went out) has exited
        token = self.confine.hold(a.ident, a.path) if a.ident else None
        if a.delivered and sandbox.remove_if_small(a.box):
            self._unlink(a.path)
            self.confine.release(token)
            return
        fut = asyncio.get_running_loop().run_in_executor(None, self._remove_files, a.box,
                                                         a.path)
        fut.add_done_callback(lambda _f: self.confine.release(token))
        self._spawn(fut)

    def _remove_box(self, a: nc.RemoveBox) -> None:
        sandbox.remove(a.box)
        self._release(a.ident)

    def _release(self, ident: Optional[dict]) -> None:
        """A run's sandbox is gone (it never had an executor): its uid may be reused."""
        if ident:
            self.confine.policy.release(ident)

    @classmethod
    def _remove_files(cls, box: str, path: str) -> None:
        if box:
            sandbox.remove(box)
        cls._unlink(path)

    @staticmethod
    def _unlink(path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _close_collected(fut: asyncio.Future) -> None:
    if not fut.cancelled() and fut.exception() is None:
        fut.result().close()


def too_big_result(msg: dict, exc: Exception) -> dict:
    """The `finished` to send instead of `msg`, which no frame can carry: no files, no
    missing or refused lists, `outputs_over_limit` saying why (the submitter holds the
    job with it, as for a sandbox over the output limits); the rest of the result (the
    exit code, the rusage) as it was."""
    result = {k: v for k, v in msg["result"].items() if k not in ("missing", "refused")}
    if isinstance(result.get("reason"), str):
        result["reason"] = result["reason"][:1000]
    result["outputs_over_limit"] = ("the result's description is too big for one message, "
                                    f"so no output was sent back: {exc}")
    return dict(msg, result=result, files=[])


def _write_private(path: str, data: bytes) -> None:
    """Write `path` (in our 0700 state directory) mode 0600 whatever the umask: a
    leftover from a crash is truncated and its mode set again."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _tighten(path: str) -> None:
    """A file of ours written wider than 0600 (claims.json by an older node) is made
    0600 at start."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o177:
        os.chmod(path, 0o600)
        log.warning("%s: mode %04o made 0600", path, stat.S_IMODE(st.st_mode))


async def _read_to_end(stream: asyncio.StreamReader, into: list, limit: int) -> None:
    """Append what `stream` gives to `into` until its end or `limit` bytes (what was
    read stays in `into` when the caller's time-out cancels this)."""
    n = 0
    while n < limit:
        chunk = await stream.read(min(1 << 16, limit - n))
        if not chunk:
            return
        into.append(chunk)
        n += len(chunk)
