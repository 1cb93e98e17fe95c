"""`jrs submit` at run time: the asyncio shell around the submitter core.

The submit process is the queue of its jobs. Every decision is the core's
(`core.SubmitCore`): this shell connects to the master and the nodes, feeds
the core what arrives and what time it is, and executes the actions it returns
through one table (`Submission.EXEC`): messages, transfers, journal records,
job events, progress lines. Everything the core must not forget goes to the
journal before the message that depends on it leaves, so `kill -9` and a rerun
of the same command resume the cluster.

Signals: Ctrl-C (SIGINT) removes the cluster's jobs (a second Ctrl-C leaves
them and exits 130); SIGTERM and SIGHUP leave the jobs running and the journal
in place, say so in one line and exit 128 + the signal (143, 129): rerun the same
command to resume. A background loop that fails for a reason the shell does not
expect is reported and ends the run with status 4, the journal kept (resume
works): nothing dies silently.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import pwd
import signal
import socket
import time
from typing import Callable, Iterator, Optional

from ..errors import EXIT_UNREACHABLE, JrsError
from ..wire import files as wirefiles
from ..wire.aio import BadPeerMessage, Channel, ConnectionClosed, connect
from ..wire.errors import AuthError, HandshakeClosed, MessageTooBig, WireError
from ..wire.messages import transfer_size
from ..wire.reconnect import Backoff, keep_connected
from . import core as C
from . import spool, transfer
from .eventlog import EventLogs
from .gate import Gate
from .jobs import Queue, resumed_queue
from .journal import Journal, Previous, spool_path
from .progress import Progress

log = logging.getLogger("jrs.submit")


RECEIVE_YIELD = 64  # returned files written between two yields to the event loop

class _SessionRefused(WireError):
    """The master answered our hello with a `limit` error (its sessions per host are
    taken): retried like a busy master, and reported as that, never as a wrong secret
    (R8; #13 rule 8)."""
NODE_GIVE_UP = float(os.environ.get("JRS_NODE_GIVE_UP", "20"))
CONNECT_TIMEOUT = float(os.environ.get("JRS_CONNECT_TIMEOUT", "15"))
EXIT_INTERNAL = 4
NET_ERRORS = (ConnectionClosed, WireError, OSError, asyncio.TimeoutError)


def user_name() -> str:
    """Contract 6: the account this process runs as, never LOGNAME/USER."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def refused_result(exc: BadPeerMessage) -> Optional[dict]:
    """A `finished` the wire's schema refused but whose job, attempt and data size can
    be told: handed to the core as it came (the core checks every field itself and
    holds the job with the reason), so the submit neither waits for it for ever nor
    runs again a job whose result is what it is (120,000 outputs stay 120,000)."""
    body = exc.body
    if body is None or body.get("type") != "finished":
        return None
    job, attempt = body.get("job"), body.get("attempt")
    if not isinstance(job, str) or len(job) > 64 or isinstance(attempt, bool) \
            or not isinstance(attempt, int):
        return None
    try:
        transfer_size(body)
    except ValueError:
        return None  # (the wire closed the link already)
    out = {"type": "finished", "job": job, "attempt": attempt,
           "result": body.get("result"), "files": body.get("files")}
    if body.get("claim_gone") is True:  # the claim went with the job: retired
        out["claim_gone"] = True
    return out


class NodeLink:
    """One authenticated connection to a node, re-established when it breaks (the
    wire's one reconnect-with-backoff loop). Every send goes through the Channel,
    which keeps a `run` and its data frames one unit: a control message sent
    meanwhile (ack, kill, release) follows the unit's last frame."""

    def __init__(self, sub: Submission, name: str, host: str, port: int) -> None:
        self.sub = sub
        self.name, self.host, self.port = name, host, port
        self.ch: Optional[Channel] = None
        self.reset = False
        self.task = sub.spawn(f"the link to node {name}", keep_connected(
            self._open, self._serve, backoff=Backoff(0.1, 2.0), on_down=self._down))

    def send(self, msg: dict) -> None:
        if self.ch is not None:
            self.ch.send(msg)

    async def _open(self) -> Channel:
        ch = await connect(self.host, self.port, self.sub.root, "submit",
                           peer_roles=frozenset({"node"}))
        ch.raise_bad = True  # a refused `finished` must reach the core, not vanish
        self.ch = ch
        self.sub.apply(self.sub.core.node_up(self.name, time.monotonic()))
        return ch

    async def _serve(self, ch: Channel) -> None:
        try:
            while not self.reset:
                try:
                    msg = await ch.recv()  # a bad transfer header raises WireError
                except BadPeerMessage as exc:
                    msg = refused_result(exc)  # the core holds its job, drains, acks
                    log.warning("node %s sent a bad message: %s", self.name,
                                C.excerpt(exc.reason, 120))
                    if msg is None:
                        raise  # any other bad message: the node breaks the protocol
                if not isinstance(msg, dict):
                    raise WireError("unexpected file data from the node")
                await self.sub.node_message(self, msg)
        finally:
            self.ch = None
            ch.close()

    def _down(self, exc: BaseException) -> None:
        log.info("lost node %s: %s", self.name, exc)
        protocol = self.reset or (isinstance(exc, WireError)
                                  and not isinstance(exc, HandshakeClosed))
        self.reset = False
        self.sub.apply(self.sub.core.node_down(self.name, time.monotonic(),
                                               str(exc) or type(exc).__name__, protocol))

    def close(self) -> None:
        self.task.cancel()
        if self.ch is not None:
            self.ch.close()


class Submission:
    def __init__(self, path: str, config, root: bytes, journal: Journal,
                 previous: Optional[Previous], progress: Progress, environ: dict,
                 file_hash: str, expand: Callable[[int], Iterator]) -> None:
        self.path = path
        self.config = config
        self.root = root
        self.journal = journal
        self.previous = previous
        self.progress = progress
        self.environ = environ
        self.file_hash = file_hash
        self.expand = expand
        self.id = previous.submitter if previous else os.urandom(12).hex()
        self.key = previous.key if previous and len(previous.key) == 32 else os.urandom(32)
        self.cluster = previous.cluster if previous else 0
        self.user = user_name()
        self.host = socket.getfqdn()
        self.master: Optional[Channel] = None
        self._welcome: Optional[dict] = None  # the master's answer to our last hello
        self.links: dict[str, NodeLink] = {}
        self.logs = EventLogs()
        self.exe_cache: dict = {}
        self.done = asyncio.Event()
        self.core: Optional[C.SubmitCore] = None
        self.started_at = time.monotonic()
        self._background: set = set()
        self._demand_scheduled = False
        self._demand_first = True
        self.failure: Optional[str] = None
        self.left: Optional[int] = None
        self.local = False  # the cluster is `--local`'s: it ends with this process
        self.interrupts = 0
        # a fresh run's actions wait here while its spool and journal become durable
        self.gate: Optional[Gate] = None
        self._durable: Optional[asyncio.Task] = None
        self.setup_error: Optional[BaseException] = None
        self.EXEC = {C.ToMaster: self._x_master, C.ToNode: self._x_node,
                     C.Connect: self._x_connect, C.ResetNode: self._x_reset,
                     C.Disconnect: self._x_disconnect,
                     C.StartRun: self._x_start_run, C.Record: self._x_record,
                     C.Event: self._x_event, C.Say: self._x_say}

    # ------------------------------------------------------------ supervision

    def spawn(self, name: str, coro) -> asyncio.Task:
        """A background task that cannot die silently: an unexpected error ends the run."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)

        def done(t: asyncio.Task) -> None:
            self._background.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None and self.failure is None:
                if isinstance(exc, JrsError):  # bad input (a damaged spool): its line
                    self.failure = str(exc)
                else:
                    log.error("%s failed", name, exc_info=exc)
                    self.failure = f"internal error: {name} failed: {type(exc).__name__}: {exc}"
                self.done.set()

        task.add_done_callback(done)
        return task

    # ------------------------------------------------------------ actions

    def apply(self, actions: list) -> None:
        for a in actions:
            self._exec(a)
        if actions:
            self.schedule_demand()
        if self.core is not None and self.core.finished:
            self.done.set()

    def _exec(self, a) -> None:
        if self.gate is not None:
            self.gate.put(a)
        else:
            self.EXEC[type(a)](a)

    def _run_action(self, a) -> None:
        self.EXEC[type(a)](a)

    def _x_master(self, a: C.ToMaster) -> None:
        if self.master is not None:
            try:
                self.master.send(a.msg)
            except Exception:  # the master loop notices the dead connection
                pass

    def _x_node(self, a: C.ToNode) -> None:
        link = self.links.get(a.node)
        if link is not None:
            link.send(a.msg)

    def _x_connect(self, a: C.Connect) -> None:
        if a.node not in self.links:
            self.links[a.node] = NodeLink(self, a.node, a.host, a.port)

    def _x_reset(self, a: C.ResetNode) -> None:
        link = self.links.get(a.node)
        log.warning("resetting the session with node %s: %s", a.node, a.why)
        if link is not None and link.ch is not None:
            link.reset = True
            link.ch.close()

    def _x_disconnect(self, a: C.Disconnect) -> None:
        link = self.links.get(a.node)
        if link is not None:
            link.close()

    def _x_start_run(self, a: C.StartRun) -> None:
        link = self.links.get(a.node)
        if link is not None and link.ch is not None:
            self.spawn(f"sending job {a.msg['job']} to {a.node}", self._send_run(link, a))

    def _x_record(self, a: C.Record) -> None:
        self.journal.append(a.rec)

    def _x_event(self, a: C.Event) -> None:
        elog = self.logs.get(a.path)
        if elog is not None:
            getattr(elog, a.kind)(*a.args)

    def _x_say(self, a: C.Say) -> None:
        self.progress.message(a.text)

    # ------------------------------------------------------------ transfers

    async def _send_run(self, link: NodeLink, a: C.StartRun) -> None:
        ch = link.ch
        job, proc, attempt = a.job, a.job.process, a.msg["attempt"]
        try:
            items = transfer.inputs(job)
            heads = wirefiles.describe(items)
            for (_, p), h in zip(items, heads):
                if h["size"] <= transfer.CACHE_LIMIT and p == transfer.executable_path(job) \
                        and p not in self.exe_cache:
                    with open(p, "rb") as f:
                        self.exe_cache[p] = f.read()
            spec = transfer.spec(job, self.environ)
        except OSError as exc:
            self.apply(self.core.input_failed(link.name, proc, attempt, str(exc)))
            return
        msg = dict(a.msg, spec=spec, files=heads)
        if ch is None or link.ch is not ch:
            return  # the link broke meanwhile: node_up sends it again
        try:
            # encoded first: a run no frame can carry (over 16 MiB, or over the wire's
            # cap on JSON values) fails its job in one line; sent, the sealer's WireError
            # closed the link and node_up sent the same run again, for ever
            encoded = ch.conn.encode(msg)
        except MessageTooBig as exc:
            self.apply(self.core.input_failed(
                link.name, proc, attempt, "the job's description is too big for one "
                f"message (its arguments, environment, input or output lists): {exc}",
                prefix=""))
            return
        try:
            await ch.send_files(msg, items, self.exe_cache, encoded=encoded)
        except NET_ERRORS as exc:
            ch.close()  # a unit cut short leaves the stream out of step: start over
            if isinstance(exc, OSError) and link.ch is ch and not isinstance(
                    exc, (ConnectionError, TimeoutError)):
                self.apply(self.core.input_failed(link.name, proc, attempt, str(exc)))
            return
        self.apply(self.core.run_sent(link.name, proc, attempt))

    async def node_message(self, link: NodeLink, msg: dict) -> None:
        actions = self.core.from_node(link.name, msg, time.monotonic())
        # everything else first: a drain that never ends (a bad result announcing 2**60
        # bytes) must hold up only this link, not the runs and claims the core decided
        self.apply([a for a in actions if not isinstance(a, C.ReceiveOutputs)])
        self.schedule_demand()
        for a in actions:
            if isinstance(a, C.ReceiveOutputs):
                error = await self._receive(link.ch, a.plan)
                self.apply(self.core.outputs_done(a.ref, error))
                self.schedule_demand()

    async def _receive(self, ch: Channel, plan: list) -> Optional[str]:
        """Drain a result's data frames into its files; a local write error (permission,
        disk full) is returned, not raised: it holds the job, it is no lost node.
        Empty files come with no data frame to wait for: it yields every
        RECEIVE_YIELD files, so 100,000 of them do not hold the event loop (the
        master's link, the other nodes) for seconds."""
        error = None
        for i, (head, dest) in enumerate(plan):
            if i % RECEIVE_YIELD == RECEIVE_YIELD - 1:
                await asyncio.sleep(0)
            left = head["size"]
            out = None
            if dest is not None and error is None:
                try:
                    out = transfer.OutputFile(dest)
                except OSError as exc:
                    error = f"{os.path.join(*dest)}: {exc.strerror or exc}"
            try:
                while left > 0:
                    chunk = await ch.recv()
                    if not isinstance(chunk, bytes) or len(chunk) > left:
                        raise WireError("file data did not match its header")
                    left -= len(chunk)
                    if out is not None:
                        try:
                            out.write(chunk)
                        except OSError as exc:
                            error = f"{os.path.join(*dest)}: {exc.strerror or exc}"
                            out.abort()
                            out = None
                if out is not None:
                    try:
                        out.commit()
                    except OSError as exc:
                        error = f"{os.path.join(*dest)}: {exc.strerror or exc}"
                    out = None
            finally:
                if out is not None:
                    out.abort()
        return error

    # ------------------------------------------------------------ the master

    def _hello(self) -> dict:
        if self.core is not None:
            return self.core.hello(os.getpid())
        return {"type": "submitter-hello", "submitter": self.id, "user": self.user,
                "host": self.host, "pid": os.getpid(), "claims": [], "clusters": [],
                "token": C.token(self.key, "master")}

    async def connect_master(self) -> None:
        """The first connection: a bounded wait, then exit 3 saying why."""
        ep = self.config.master
        deadline = time.monotonic() + CONNECT_TIMEOUT
        last = ""
        while True:
            try:
                self.master = await connect(ep.host, ep.port, self.root, "submit",
                                            peer_roles=frozenset({"master"}))
                try:
                    await self._greet()
                except BaseException:
                    self.master.close()
                    self.master = None
                    raise
                return
            except AuthError as exc:
                raise JrsError(f"the master at {ep} refused us: {exc} (is {self.config.directory}"
                               "/secret the cluster's secret?)", EXIT_UNREACHABLE)
            except _SessionRefused as exc:  # a limit of the master's: not the secret
                last = f"the master refused a session: {exc}"
            except WireError as exc:  # HandshakeClosed: busy, or it does not hold our secret
                last = (f"{exc}: every handshake was refused (is {self.config.directory}"
                        "/secret the cluster's secret, or is the master overloaded?)")
            except NET_ERRORS as exc:
                last = str(exc) or type(exc).__name__
            if time.monotonic() > deadline:
                raise JrsError(f"cannot reach the master at {ep} after {CONNECT_TIMEOUT:.0f}s: "
                               f"{last}", EXIT_UNREACHABLE)
            await asyncio.sleep(0.3)

    async def _greet(self) -> None:
        ch = self.master
        ch.send(self._hello())
        reply = await asyncio.wait_for(ch.recv(), 10)
        if isinstance(reply, dict) and reply.get("type") == "error" \
                and reply.get("code") == "limit":
            raise _SessionRefused(C.excerpt(reply.get("message"), 200))
        if not isinstance(reply, dict) or reply.get("type") != "welcome":
            what = reply.get("message") if isinstance(reply, dict) else reply
            raise WireError(f"unexpected answer {C.excerpt(what, 80)}")
        self._welcome = reply  # names the claims we listed that the master dropped
        if not self.cluster:
            ch.send({"type": "new-cluster"})
            while True:
                msg = await asyncio.wait_for(ch.recv(), 10)
                if isinstance(msg, dict) and msg.get("type") == "cluster":
                    self.cluster = int(msg["id"])
                    break

    async def master_loop(self) -> None:
        await keep_connected(self._open_master, self._serve_master, backoff=Backoff(0.5, 2.0),
                             on_down=lambda exc: log.info("lost the master: %s", exc))

    async def _open_master(self) -> Channel:
        if self.master is None:  # the first channel comes from connect_master
            ep = self.config.master
            self.master = await connect(ep.host, ep.port, self.root, "submit",
                                        peer_roles=frozenset({"master"}))
            try:
                await self._greet()
            except BaseException:
                self.master.close()
                self.master = None
                raise
        welcome, self._welcome = self._welcome, None
        self.apply(self.core.master_up(welcome))
        return self.master

    async def _serve_master(self, ch: Channel) -> None:
        try:
            while True:
                msg = await ch.recv()
                if isinstance(msg, dict):
                    self.apply(self.core.from_master(msg, time.monotonic()))
        finally:
            ch.close()
            if self.master is ch:
                self.master = None

    def schedule_demand(self) -> None:
        """Tell the master soon: at once the first time, then coalescing changes for 20 ms."""
        if not self._demand_scheduled and self.core is not None:
            self._demand_scheduled = True
            loop = asyncio.get_running_loop()
            if self._demand_first:
                self._demand_first = False
                loop.call_soon(self._send_demand)
            else:
                loop.call_later(0.02, self._send_demand)

    def _send_demand(self) -> None:
        self._demand_scheduled = False
        for a in self.core.demand():
            self._exec(a)

    # ------------------------------------------------------------ signals

    def interrupt(self) -> None:
        self.interrupts += 1
        if self.interrupts == 1:
            self.progress.message("jrs submit: Ctrl-C: removing the cluster's jobs "
                                  "(Ctrl-C again to leave them and exit; rerun to resume)")
            self.apply(self.core.remove([str(self.cluster)], "removed by Ctrl-C"))
        else:
            raise KeyboardInterrupt

    def leave(self, signum: int) -> None:
        self.left = signum
        self.done.set()

    # ------------------------------------------------------------ whole run

    async def _ticker(self) -> None:
        while True:
            self.progress.update(self.core.queue.counts, self.core.cfg.total)
            self.apply(self.core.tick(time.monotonic()))
            await asyncio.sleep(0.2)

    def _make_core(self, total: int, queue: Queue) -> None:
        jpath = os.path.abspath(self.journal.path)
        protected = frozenset({os.path.abspath(self.path), os.path.realpath(self.path), jpath,
                               spool_path(jpath)})
        cfg = C.CoreConfig(self.cluster, self.id, self.user, self.host, self.key, total,
                           protected, transfer.MAX_OUTPUT_FILES,
                           transfer.max_output_bytes(self.environ), NODE_GIVE_UP,
                           os.path.abspath(self.path),
                           functools.lru_cache(maxsize=4096)(os.path.realpath))
        self.core = C.SubmitCore(cfg, queue, self.previous)

    def resume(self, prev: Previous) -> list:
        """The core of an interrupted run, rebuilt from its journal and job spool
        (`resumed_queue`: final jobs, attempts, lost runs and refusals all carried);
        returns the jobs that were running, for the core to re-attach."""
        jobs_path = spool_path(self.journal.path)
        self.journal.reopen()
        running: list = []
        if prev.running:
            running = [j for j in spool.read(jobs_path) if j.process in prev.running]
        self._make_core(prev.total, resumed_queue(spool.read(jobs_path), prev.total, prev))
        return running

    async def run(self) -> int:
        prev = self.previous
        running: list = []
        if prev is not None:
            total = prev.total
            running = self.resume(prev)
            await self.connect_master()
        else:
            await self.connect_master()
            jobs_path = spool_path(self.journal.path)
            total = spool.write(jobs_path, self.expand(self.cluster), sync=False)
            self._make_core(total, resumed_queue(spool.read(jobs_path), total))
            # the spool's fdatasync and the journal's creation (fdatasync, fsync of the
            # directory) in a thread; the core's actions wait in the gate meanwhile
            self.gate = Gate(self._run_action, (C.ToMaster, C.Connect),
                             (C.Record, C.Event, C.Say))
            self._durable = asyncio.ensure_future(self._make_durable(jobs_path, total))
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self.interrupt)
        for s in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(s, self.leave, s)
        self.apply(self.core.start(time.monotonic(), running))
        tasks = [self.spawn("the master connection", self.master_loop()),
                 self.spawn("the ticker", self._ticker())]
        try:
            await self.done.wait()
        finally:
            for t in tasks:
                t.cancel()
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(s)
        if self._durable is not None:  # a signal may come first: what was held still goes
            await self._durable
        if self.setup_error is not None:
            raise self.setup_error
        if self.failure is not None or self.left is not None:
            return await self._stop_early()
        self.apply(self.core.finish())
        await self._close()
        self.journal.remove()
        text, status = self.core.summary(time.monotonic() - self.started_at)
        self.progress.update(self.core.queue.counts, total, force=True)
        self.progress.finish()
        self.progress.message(text)
        return status

    async def _make_durable(self, jobs_path: str, total: int) -> None:
        """The spool's data, then the journal naming it (and their names), on disk;
        then the held actions go, in order. A failure ends the run with that error,
        as when this was done before the core started (nothing ran: every run waited
        here)."""
        def work() -> None:
            spool.sync(jobs_path)
            self.journal.start(self.cluster, self.id, self.file_hash, total, self.key)

        try:
            await asyncio.get_running_loop().run_in_executor(None, work)
        except Exception as exc:  # (OSError: ENOSPC, EIO...) raised again by run()
            self.setup_error = exc
            self.done.set()
            return
        if self.gate is not None:
            self.gate.open()  # (actions the held ones cause queue behind them)
        self.gate = None
        if self.core is not None and self.core.finished:
            self.done.set()

    async def _stop_early(self) -> int:
        """Leave the jobs running, keep the journal, say how to resume."""
        if self.left is not None:
            self.apply(self.core.leave())
        await self._close()
        self.progress.finish()
        running = self.core.queue.counts["running"]
        if self.local:  # the throw-away cluster stops with this process, and its jobs
            how = (f"run `jrs submit --local {self.path}` again to run them again, the "
                   f"finished ones kept (journal {self.journal.path})")
            left = f"stopped the local cluster and its {running} running jobs"
        else:
            how = f"run `jrs submit {self.path}` again to resume (journal {self.journal.path})"
            left = f"{running} jobs keep running"
        if self.failure is not None:
            self.progress.message(f"jrs submit: {self.failure}; {left}; {how}")
            return EXIT_INTERNAL
        name = signal.Signals(self.left).name
        if not self.local:
            left = f"left cluster {self.cluster} with {running} jobs running"
        self.progress.message(f"jrs submit: {name}: {left}; {how}")
        return 128 + self.left

    async def _close(self) -> None:
        for link in list(self.links.values()):
            if link.ch is not None:
                try:
                    await asyncio.wait_for(link.ch.drain(), 5)
                except NET_ERRORS:
                    pass
        if self.master is not None:
            try:
                await asyncio.wait_for(self.master.drain(), 5)
            except NET_ERRORS:
                pass
        for link in self.links.values():
            link.close()
        if self.master is not None:
            self.master.close()
        for t in list(self._background):
            t.cancel()
        self.logs.close()
