"""`jrs submit` at run time: the asyncio shell that moves a cluster through the pool.

The submit process is the queue of its jobs. It asks the master for claims,
talks to nodes directly, and reuses a claim for the next job of the same kind
as soon as one ends, without asking the master again. Everything it must not
forget goes to the journal first, so `kill -9` and a rerun of the same command
resume the cluster.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Optional

from ..condor import classad, expand_file
from ..errors import EXIT_UNREACHABLE, JrsError
from ..wire import files as wirefiles
from ..wire.aio import Channel, ConnectionClosed, connect
from ..wire.errors import WireError
from ..wire.reconnect import Backoff, keep_connected
from . import transfer
from .eventlog import EventLogs
from .jobs import DONE, FAILED, HELD, IDLE, REMOVED, RUNNING, Queue, Rec, Summary, request_key
from .journal import Journal, Previous
from .progress import Progress

log = logging.getLogger("jrs.submit")
NODE_GIVE_UP = float(os.environ.get("JRS_NODE_GIVE_UP", "20"))
CONNECT_TIMEOUT = float(os.environ.get("JRS_CONNECT_TIMEOUT", "15"))
MAX_SHOWN_FAILURES = 20


@dataclass
class ClaimState:
    id: str
    node: str
    host: str
    port: int
    cpus: int
    memory: int
    gpus: int
    key: str
    proc: Optional[int] = None
    give_back: bool = False


class NodeLink:
    """One authenticated connection to a node, re-established when it breaks."""

    def __init__(self, sub: Submission, name: str, host: str, port: int) -> None:
        self.sub = sub
        self.name, self.host, self.port = name, host, port
        self.ch: Optional[Channel] = None
        self.ready = asyncio.Event()
        self.failing_since: Optional[float] = None
        self.sent: set = set()  # (proc, attempt) whose run reached a connection
        self.task = asyncio.ensure_future(self._loop())

    async def _loop(self) -> None:
        await keep_connected(self._open, self._serve, backoff=Backoff(0.1, 2.0),
                             on_down=lambda exc: self._failing(str(exc) or type(exc).__name__))

    async def _open(self) -> Channel:
        ch = await connect(self.host, self.port, self.sub.root, "submit",
                           peer_roles=frozenset({"node"}))
        self.failing_since = None
        live = self.sub.queue.live
        self.sent = {(p, a) for p, a in self.sent
                     if p in live and live[p].state == RUNNING and live[p].attempt == a}
        jobs = [[f"{self.sub.cluster}.{p}", a] for p, a in sorted(self.sent)]
        ch.send({"type": "attach", "submitter": self.sub.id, "jobs": jobs})
        self.ch = ch
        self.ready.set()
        return ch

    async def _serve(self, ch: Channel) -> None:
        try:
            while True:
                msg = await ch.recv()
                if not isinstance(msg, dict):
                    raise WireError("unexpected file data from the node")
                await self.sub.from_node(self, msg)
        except (ConnectionClosed, WireError, OSError) as exc:
            log.info("lost node %s: %s", self.name, exc)
            raise
        finally:
            self.ready.clear()
            self.ch = None
            ch.close()

    def _failing(self, why: str) -> None:
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        elif now - self.failing_since > NODE_GIVE_UP:
            self.failing_since = now
            self.sub.node_lost(self.name, f"unreachable for {NODE_GIVE_UP:.0f}s ({why})",
                               release=True)

    def close(self) -> None:
        self.task.cancel()
        if self.ch is not None:
            self.ch.close()


class Submission:
    def __init__(self, path: str, config, root: bytes, journal: Journal, total: int,
                 previous: Optional[Previous], progress: Progress, environ: dict,
                 file_hash: str) -> None:
        self.path = path
        self.config = config
        self.root = root
        self.journal = journal
        self.total = total
        self.previous = previous
        self.progress = progress
        self.environ = environ
        self.file_hash = file_hash
        self.id = previous.submitter if previous else os.urandom(12).hex()
        self.cluster = previous.cluster if previous else 0
        self.user = getpass.getuser()
        self.host = socket.getfqdn()
        self.master: Optional[Channel] = None
        self.claims: dict[str, ClaimState] = {}
        self.links: dict[str, NodeLink] = {}
        self.logs = EventLogs()
        self.unmatchable: dict[str, str] = {}
        self.give_back = 0
        self.removing: set = set()
        self.remove_reason: Optional[str] = None
        self.exe_cache: dict = {}
        self.done = asyncio.Event()
        self._demand_sent: Optional[list] = None
        self._demand_scheduled = False
        self.started_at = time.monotonic()
        self._background: set = set()
        self.interrupts = 0

    def spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------ the master

    async def connect_master(self) -> None:
        """The first connection: a bounded wait, then exit 3 saying why."""
        ep = self.config.master
        deadline = time.monotonic() + CONNECT_TIMEOUT
        last = ""
        while True:
            try:
                self.master = await connect(ep.host, ep.port, self.root, "submit",
                                            peer_roles=frozenset({"master"}))
                await self._hello()
                return
            except WireError as exc:
                raise JrsError(f"the master at {ep} refused us: {exc} (is {self.config.directory}"
                               "/secret the cluster's secret?)", EXIT_UNREACHABLE)
            except (OSError, asyncio.TimeoutError, ConnectionClosed) as exc:
                last = str(exc) or type(exc).__name__
            if time.monotonic() > deadline:
                raise JrsError(f"cannot reach the master at {ep} after {CONNECT_TIMEOUT:.0f}s: "
                               f"{last}", EXIT_UNREACHABLE)
            await asyncio.sleep(0.3)

    async def _hello(self) -> None:
        ch = self.master
        ch.send({"type": "submitter-hello", "submitter": self.id, "user": self.user,
                 "host": self.host, "pid": os.getpid(), "claims": list(self.claims),
                 "clusters": [self._cluster_info()] if self.cluster else []})
        reply = await asyncio.wait_for(ch.recv(), 10)
        if not isinstance(reply, dict) or reply.get("type") != "welcome":
            raise WireError(f"unexpected answer {reply!r:.80}")
        if not self.cluster:
            ch.send({"type": "new-cluster"})
            while True:
                msg = await asyncio.wait_for(ch.recv(), 10)
                if isinstance(msg, dict) and msg.get("type") == "cluster":
                    self.cluster = int(msg["id"])
                    break
                if isinstance(msg, dict):
                    await self.from_master(msg)

    async def master_loop(self) -> None:
        await keep_connected(self._open_master, self._serve_master, backoff=Backoff(0.5, 2.0),
                             on_down=lambda exc: log.info("lost the master: %s", exc))

    async def _open_master(self) -> Channel:
        if self.master is None:  # the first channel comes from connect_master
            ep = self.config.master
            self.master = await connect(ep.host, ep.port, self.root, "submit",
                                        peer_roles=frozenset({"master"}))
            try:
                await self._hello()
            except BaseException:
                self.master.close()
                self.master = None
                raise
            self._demand_sent = None
            self.schedule_demand()
        return self.master

    async def _serve_master(self, ch: Channel) -> None:
        try:
            while True:
                msg = await ch.recv()
                if isinstance(msg, dict):
                    await self.from_master(msg)
        finally:
            ch.close()
            if self.master is ch:
                self.master = None

    def to_master(self, msg: dict) -> None:
        if self.master is not None:
            try:
                self.master.send(msg)
            except Exception:  # the loop notices the dead connection
                pass

    async def from_master(self, msg: dict) -> None:
        kind = msg.get("type")
        if kind == "claim":
            self._got_claim(msg)
        elif kind == "unmatchable":
            self._unmatchable(str(msg["key"]), str(msg["reason"]))
        elif kind == "give-back":
            self.give_back = int(msg["count"])
            self.pump()
        elif kind == "node-lost":
            self.node_lost(str(msg["node"]), "the master lost contact with it")
        elif kind == "rm":
            count = self.remove(list(msg["ids"]), "via jrs rm")
            self.to_master({"type": "removed", "re": msg["re"], "count": count})
        elif kind == "error":
            log.warning("master: %s", msg.get("message"))

    def _got_claim(self, msg: dict) -> None:
        cid = str(msg["claim"])
        if cid in self.claims:
            return
        key = str(msg.get("key") or "")
        c = ClaimState(cid, str(msg["node"]), str(msg["host"]), int(msg["port"]),
                       int(msg["cpus"]), int(msg["memory"]), int(msg["gpus"]), key)
        self.claims[cid] = c
        if c.node not in self.links:
            self.links[c.node] = NodeLink(self, c.node, c.host, c.port)
        self.pump()

    def _unmatchable(self, key: str, reason: str) -> None:
        self.unmatchable[key] = reason
        self.progress.message(f"jrs submit: no node can ever run jobs of cluster "
                              f"{self.cluster} with request {key}: {reason}")
        for rec in [r for r in self.queue.idle if r.key == key]:
            self._final(rec, Summary(HELD, node=None, reason=f"no node can run it: {reason}"))
        self.pump()

    # ------------------------------------------------------------ demand

    def schedule_demand(self) -> None:
        """Tell the master soon: at once the first time, then coalescing changes for 20 ms."""
        if not self._demand_scheduled:
            self._demand_scheduled = True
            loop = asyncio.get_running_loop()
            if self._demand_sent is None:
                loop.call_soon(self._send_demand)
            else:
                loop.call_later(0.02, self._send_demand)

    def _send_demand(self) -> None:
        self._demand_scheduled = False
        if self.remove_reason is not None:
            requests = []
        else:
            free = {}
            for c in self.claims.values():
                if c.proc is None:
                    free[c.key] = free.get(c.key, 0) + 1
            requests = []
            for key, (count, job) in self.queue.idle_by_key().items():
                if key in self.unmatchable:
                    continue
                want = count - free.get(key, 0)
                ad = {"RequestCpus": job.request_cpus, "RequestMemory": job.request_memory or 0,
                      "RequestGpus": job.request_gpus, "Owner": self.user,
                      "ClusterId": self.cluster}
                ad.update({k: classad.literal(v) for k, v in (job.attributes or {}).items()})
                requests.append({"key": key, "count": max(0, want), "cpus": job.request_cpus,
                                 "memory": job.request_memory or 0, "gpus": job.request_gpus,
                                 "requirements": job.requirements or "", "ad": ad,
                                 "weight": 2.0 ** (job.priority / 10.0)})
        if requests != self._demand_sent:
            self._demand_sent = requests
            self.to_master({"type": "demand", "requests": requests})

    # ------------------------------------------------------------ dispatch

    def pump(self) -> None:
        """Put free claims to work, give back or release the ones not needed."""
        self._materialize()
        for c in list(self.claims.values()):
            if c.proc is not None:
                continue
            if self.give_back > 0 or c.give_back or self.remove_reason is not None:
                self.give_back = max(0, self.give_back - 1)
                self._release(c)
                continue
            rec = self.queue.next_for(c.key) if c.key else self._any_fitting(c)
            if rec is None:
                if not any(r.key == c.key for r in self.queue.idle) \
                        and self.queue.idle_by_key().get(c.key) is None:
                    self._release(c)
                continue
            c.proc = rec.proc
            self.queue.start(rec, c.node, c.id)
            self.journal.run(rec.proc, rec.attempt, c.node, c.id)
            self.spawn(self._send_run(c, rec))
            self._materialize()
        self.schedule_demand()
        if self.queue.finished:
            self.done.set()

    def _any_fitting(self, c: ClaimState) -> Optional[Rec]:
        for rec in self.queue.idle:
            j = rec.job
            if j.request_cpus <= c.cpus and (j.request_memory or 0) <= c.memory \
                    and j.request_gpus <= c.gpus and not j.requirements:
                self.queue.idle.remove(rec)
                c.key = request_key(j)
                return rec
        return None

    def _release(self, c: ClaimState) -> None:
        self.claims.pop(c.id, None)
        link = self.links.get(c.node)
        if link is not None and link.ch is not None:
            try:
                link.ch.send({"type": "release", "claim": c.id})
                return
            except Exception:
                pass
        self.to_master({"type": "release", "claim": c.id})

    def _materialize(self) -> None:
        """Fill the idle window; log each new job's submit event once, across resumes."""
        new = self.queue.fill()
        if not new:
            return
        prev = self.previous
        logged = prev.submitted_upto if prev else -1
        for rec in new:
            elog = self.logs.get(rec.job.path("log"))
            if elog is not None and rec.proc > logged and not (prev and rec.proc in prev.running):
                elog.submitted(self.cluster, rec.proc, self.host)
        self.journal.submitted(max(rec.proc for rec in new))
        for rec in new:
            if rec.key in self.unmatchable:
                self._final(rec, Summary(HELD, reason=f"no node can run it: "
                                                      f"{self.unmatchable[rec.key]}"))

    async def _send_run(self, c: ClaimState, rec: Rec) -> None:
        link = self.links[c.node]
        job = rec.job
        attempt = rec.attempt
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
            self._result(link, rec, attempt, {"exec_failed": True, "node": c.node,
                                              "reason": f"cannot read input: {exc}"})
            return
        while rec.state == RUNNING and rec.attempt == attempt:
            await link.ready.wait()
            ch = link.ch
            try:
                await ch.send_files({"type": "run", "claim": c.id,
                                     "job": f"{self.cluster}.{rec.proc}", "attempt": attempt,
                                     "spec": spec, "files": heads}, items, self.exe_cache)
                link.sent.add((rec.proc, attempt))
                return
            except (ConnectionClosed, OSError, WireError, AttributeError):
                await asyncio.sleep(0.1)  # sent again once the link is back

    # ------------------------------------------------------------ node messages

    def _rec(self, job: object, attempt: object) -> Optional[Rec]:
        if not isinstance(job, str) or "." not in job:
            return None
        cluster, _, proc = job.partition(".")
        if cluster != str(self.cluster) or not proc.isdigit():
            return None
        rec = self.queue.live.get(int(proc))
        if rec is None or rec.state != RUNNING or rec.attempt != attempt:
            return None
        return rec

    async def from_node(self, link: NodeLink, msg: dict) -> None:
        kind = msg.get("type")
        if kind == "finished":
            await self._finished(link, msg)
        elif kind == "started":
            rec = self._rec(msg["job"], msg["attempt"])
            if rec is not None:
                self._announce(rec, link.name, None)
                if rec.proc in self.removing:
                    link.ch.send({"type": "kill", "job": msg["job"], "attempt": rec.attempt})
        elif kind == "rejected":
            rec = self._rec(msg["job"], msg["attempt"])
            log.info("node %s rejected %s: %s", link.name, msg["job"], msg.get("reason"))
            if rec is not None:
                self.claims.pop(rec.claim or "", None)
                self._requeue(rec)
        elif kind == "attached":
            for item in msg["unknown"]:
                rec = self._rec(item[0], item[1]) if isinstance(item, list) and len(item) == 2 \
                    else None
                if rec is not None and rec.node == link.name:
                    self.claims.pop(rec.claim or "", None)
                    self._requeue(rec)
        elif kind == "error":
            log.warning("node %s: %s", link.name, msg.get("message"))
        self.pump()

    async def _finished(self, link: NodeLink, msg: dict) -> None:
        heads = wirefiles.check_headers(msg["files"])
        rec = self._rec(msg["job"], msg["attempt"])
        receiver = transfer.Receiver(rec.job) if rec is not None else None
        try:
            await wirefiles.receive(link.ch, heads,
                                    receiver.open if receiver else (lambda h: None))
        except BaseException:
            if receiver:
                receiver.abort()
            raise
        if rec is not None:
            receiver.commit()
            result = msg["result"]
            if not result.get("lost") and not result.get("exec_failed"):
                started = result.get("started")  # a short job's only news is its end
                self._announce(rec, link.name,
                               float(started) if isinstance(started, (int, float)) else None)
            self._result(link, rec, rec.attempt, dict(result, node=link.name))
        link.ch.send({"type": "ack", "job": msg["job"], "attempt": msg["attempt"]})

    def _announce(self, rec: Rec, node: str, t: Optional[float]) -> None:
        """The execute event (001), once per attempt, whichever message brings it."""
        if rec.announced == rec.attempt:
            return
        rec.announced = rec.attempt
        elog = self.logs.get(rec.job.path("log"))
        if elog is not None:
            elog.executing(self.cluster, rec.proc, node, t)

    def _result(self, link: NodeLink, rec: Rec, attempt: int, result: dict) -> None:
        c = self.claims.get(rec.claim or "")
        if c is not None and c.proc == rec.proc:
            c.proc = None
        if result.get("lost"):
            self.progress.message(f"jrs submit: job {self.cluster}.{rec.proc} was lost on "
                                  f"{result.get('node')}: {result.get('reason')}; running it "
                                  "again")
            self._requeue(rec)
            return
        node = result.get("node")
        elog = self.logs.get(rec.job.path("log"))
        if rec.proc in self.removing or (result.get("removed") and self.remove_reason):
            self._final(rec, Summary(REMOVED, result.get("exit_code"), result.get("signal"),
                                     node, self.remove_reason or "removed"))
            return
        state = self.queue.outcome(rec, result)
        if state == HELD:
            reason = result.get("reason") or (
                f"output files not created: {', '.join(result.get('missing') or [])}")
            self._final(rec, Summary(HELD, None, None, node, reason,
                                     rec.job.path("error")))
            return
        if elog is not None:
            elog.terminated(self.cluster, rec.proc, result)
        if state == IDLE:
            self._requeue(rec)
            return
        self._final(rec, Summary(state, result.get("exit_code"), result.get("signal"), node,
                                 None, rec.job.path("error")))

    def _requeue(self, rec: Rec) -> None:
        self.queue.requeue(rec, count_attempt=False)
        self.journal.requeue(rec.proc)

    def _final(self, rec: Rec, s: Summary) -> None:
        elog = self.logs.get(rec.job.path("log"))
        if elog is not None:
            if s.state == REMOVED:
                elog.aborted(self.cluster, rec.proc, s.reason or "removed")
            elif s.state == HELD:
                elog.held(self.cluster, rec.proc, s.reason or "held")
        self.queue.finish(rec, s)
        self.journal.end(rec.proc, rec.attempt, s)
        self.removing.discard(rec.proc)

    def node_lost(self, name: str, why: str, release: bool = False) -> None:
        """Rerun the node's jobs elsewhere. When only we cannot reach it (`release`), the
        master still counts our claims there: hand them back through it, so the node
        frees the slots and stops the jobs that now run elsewhere."""
        lost = [r for r in self.queue.live.values() if r.state == RUNNING and r.node == name]
        if lost:
            self.progress.message(f"jrs submit: node {name} lost ({why}); "
                                  f"rerunning its {len(lost)} jobs elsewhere")
        for rec in lost:
            self._requeue(rec)
        for c in [c for c in self.claims.values() if c.node == name]:
            del self.claims[c.id]
            if release:
                self.to_master({"type": "release", "claim": c.id})
        self.pump()

    # ------------------------------------------------------------ removal

    def remove(self, ids: list, reason: str) -> int:
        count = 0
        procs: Optional[set] = set()
        for text in ids:
            cluster, _, proc = str(text).partition(".")
            if cluster != str(self.cluster):
                continue
            if not proc:
                procs = None
                break
            if proc.isdigit():
                procs.add(int(proc))
        if procs is not None and not procs:
            return 0
        if procs is None:
            self.remove_reason = reason
            count += self.queue.remove_unmaterialized(reason)
        for rec in list(self.queue.live.values()):
            if procs is not None and rec.proc not in procs:
                continue
            count += 1
            if rec.state == IDLE:
                self._final(rec, Summary(REMOVED, reason=reason))
            elif rec.state == RUNNING:
                self.removing.add(rec.proc)
                link = self.links.get(rec.node or "")
                if link is not None and link.ch is not None:
                    link.ch.send({"type": "kill", "job": f"{self.cluster}.{rec.proc}",
                                  "attempt": rec.attempt})
        if procs is not None and self.queue.total:  # single jobs not materialized yet
            for p in procs:
                if p not in self.queue.live and p not in self.queue.final and p < self.total:
                    self.queue.final[p] = Summary(REMOVED, reason=reason)
                    self.queue.counts[IDLE] -= 1
                    self.queue.counts[REMOVED] += 1
                    count += 1
        self.pump()
        return count

    def interrupt(self) -> None:
        self.interrupts += 1
        if self.interrupts == 1:
            self.progress.message("jrs submit: Ctrl-C: removing the cluster's jobs "
                                  "(Ctrl-C again to leave them and exit; rerun to resume)")
            self.remove([str(self.cluster)], "removed by Ctrl-C")
        else:
            raise KeyboardInterrupt

    # ------------------------------------------------------------ whole run

    def _cluster_info(self) -> dict:
        q = getattr(self, "queue", None)
        counts = q.counts if q else {}
        return {"id": self.cluster, "file": os.path.abspath(self.path), "total": self.total,
                "idle": counts.get(IDLE, 0), "running": counts.get(RUNNING, 0),
                "done": counts.get(DONE, 0), "failed": counts.get(FAILED, 0),
                "held": counts.get(HELD, 0), "removed": counts.get(REMOVED, 0)}

    async def _ticker(self) -> None:
        beat = 0
        while True:
            self.progress.update(self.queue.counts, self.total)
            beat += 1
            if beat % 5 == 0:
                self.to_master({"type": "progress", "clusters": [self._cluster_info()]})
            await asyncio.sleep(0.2)

    async def run(self) -> int:
        await self.connect_master()
        prev = self.previous
        if prev is None:
            self.journal.start(self.cluster, self.id, self.file_hash, self.total)
        else:
            self.journal.reopen()
        env = self.environ
        self.queue = Queue(expand_file(self.path, cluster=self.cluster, environ=env),
                           self.total, skip=prev.final if prev else None)
        if prev and prev.running:
            for job in expand_file(self.path, cluster=self.cluster, environ=env):
                info = prev.running.get(job.process)
                if info is not None:
                    attempt, node, claim = info
                    self.queue.adopt(job, attempt, node, claim)
                    entry = next((n for n in self.config.nodes if n.name == node), None)
                    if entry is not None and node not in self.links:
                        self.links[node] = NodeLink(self, node, entry.endpoint.host,
                                                    entry.endpoint.port)
                    if node in self.links:
                        self.links[node].sent.add((job.process, attempt))
            self.progress.message(f"jrs submit: resuming cluster {self.cluster}: "
                                  f"{len(prev.final)} jobs already final, "
                                  f"{len(prev.running)} to collect from the nodes")
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self.interrupt)
        loop.add_signal_handler(signal.SIGTERM, self.interrupt)
        tasks = [asyncio.ensure_future(self.master_loop()),
                 asyncio.ensure_future(self._ticker())]
        self.pump()
        try:
            await self.done.wait()
        finally:
            for t in tasks:
                t.cancel()
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
        for c in list(self.claims.values()):
            self._release(c)
        self.to_master({"type": "progress", "clusters": [self._cluster_info()]})
        for link in self.links.values():
            if link.ch is not None:
                await link.ch.drain()
        if self.master is not None:
            await self.master.drain()
        for link in self.links.values():
            link.close()
        if self.master is not None:
            self.master.close()
        self.logs.close()
        self.progress.update(self.queue.counts, self.total, force=True)
        self.progress.finish()
        self.journal.remove()
        return self.summary()

    def summary(self) -> int:
        q = self.queue
        c = q.counts
        wall = time.monotonic() - self.started_at
        bad = [(p, s) for p, s in sorted(q.final.items()) if s.state in (FAILED, HELD)]
        lines = [f"cluster {self.cluster}: {self.total} jobs, {c[DONE]} done, "
                 f"{c[FAILED] + c[HELD]} failed, {c[REMOVED]} removed in {wall:.1f}s"
                 + (f" ({self.remove_reason})" if self.remove_reason else "")]
        for p, s in bad[:MAX_SHOWN_FAILURES]:
            if s.signal:
                what = f"killed by signal {s.signal}"
            elif s.state == HELD:
                what = f"held: {s.reason}"
            else:
                what = f"exit code {s.exit_code}"
            where = f" on {s.node}" if s.node else ""
            err = f"; stderr: {s.error}" if s.error else ""
            lines.append(f"  {self.cluster}.{p} {what}{where}{err}")
        if len(bad) > MAX_SHOWN_FAILURES:
            lines.append(f"  ... and {len(bad) - MAX_SHOWN_FAILURES} more")
        self.progress.message("\n".join(lines))
        return 0 if c[DONE] == self.total else 1
