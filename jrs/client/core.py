"""The submitter's protocol and policy as a pure state machine.

`SubmitCore` takes events (a message from the master or a node, a link that
came up or broke, a transfer that ended, a timer with `now` passed in, a remove
request) and returns actions (send to the master, send to a node, start a
transfer of a job's inputs, receive a job's outputs, a journal record, a job
event, a progress line). It reads no clock, opens no file and touches no
socket, so every decision can be tested by feeding it events (tests/
test_submit_core.py) and driven by a simulation; `runner.py` is the shell that
executes the actions. Message handlers are found through one table per peer.

Decisions that live here:
- claims: a free claim takes the next idle job of its kind, else goes back;
  a claim whose job was running when an earlier run of this submit was killed
  is re-attached, never released while its job runs (releasing it could kill the
  job), and retired after it;
- node messages are validated here (nested payloads too); a bad one is logged as
  a bounded excerpt, its job held, the result acknowledged and that node's
  session reset, and the submit goes on;
- outputs land only where the job asked for them (`transfer.output_plan`), within
  the per-job limits (files, bytes), else the job is held (HTCondor's code 33);
- retry state (attempt numbers, completions) is journaled, so a resumed run
  keeps counting `max_retries` and never reuses an attempt number;
- a removal (Ctrl-C, `jrs rm`) is journaled before its kills go out, and a resumed
  run applies it again: a job being removed ends REMOVED whatever happens to its
  run (killed, lost with its node, refused), never back in the queue;
- a run killed that we did not ask to kill (`removed` in its result: its claim was
  revoked, its node declared dead) is a lost run, not the job's own exit;
- a claim a result says is gone (`claim_gone`: the node let it go with the job, or
  cannot vouch for it back from a stop) is retired, never given the next job (its
  run would be refused "unknown claim");
- a run whose claim the master revoked (its welcome's `killed`, its `node-lost`) on a
  node we still reach is killed there by us, and the node's answer decides: killed, a
  lost run; ended on its own first, its result stands (rerun at once, a slow node ran
  it twice, sim S1); only a run on a node we cannot reach is abandoned at once;
- a node that refuses a run for its own trouble (`cause: "node"`: its disk, its
  launcher) is rested, not blamed on the job: none of its claims are used for a
  pause that doubles with each such refusal in a row (REST_FIRST up to REST_MAX)
  and ends with a job that starts there; the job runs elsewhere or later, and is
  held only after MAX_NODE_REJECTIONS such refusals (a job no node can take);
- a refusal because the claim went or was taken meanwhile (`cause: "claim"`: dropped,
  being released, busy, the run arriving twice) is a race, not the job's fault: it
  runs again uncounted, as a lost run (MAX_LOST_RUNS bounds a node that says so of
  every run), not toward the MAX_REJECTIONS that hold a job;
- the lost runs and refusals of each job are journaled with its requeue, so a
  resumed run (however often) keeps counting toward those bounds.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Optional

from ..condor import classad
from ..plain import dataclass, field
from . import journal as J
from . import transfer
from .jobs import DONE, FAILED, HELD, IDLE, REMOVED, RUNNING, Queue, Rec, Summary, request_key

MAX_SHOWN_FAILURES = 20
MAX_REJECTIONS = 5  # a job every node refuses to start is held, not bounced forever
# refusals for the node's own trouble (cause "node") are spaced by the node's rest: this
# many (at least 1+2+4+...+60 s apart on one node) hold a job that no node can take
MAX_NODE_REJECTIONS = 10
# runs rerun uncounted (lost with or by their node, killed by a revocation we never
# heard of): a node that says so of every run would otherwise rerun a job forever, at
# network speed, two journal records a run; after this many the job is held
MAX_LOST_RUNS = 20
REST_FIRST, REST_MAX = 1.0, 60.0  # seconds a node is rested after such a refusal (doubling)
STRIKES, STRIKE_WINDOW = 3, 60.0  # protocol breaks of one node before we stop using it
# a fall of a demand count is told when beyond 1/DEMAND_SLACK of its want (`_demand_matters`)
DEMAND_SLACK = 32
DEMAND_RETRY = 5.0  # seconds before a demand the master refused for a limit goes again
EXCERPT = 120
HOLD_OUTPUT_LIMIT = 33  # HTCondor's hold code for exceeding MAX_TRANSFER_OUTPUT_MB
HOLD_TRANSFER_OUTPUT = 12  # HTCondor's TransferOutputError


def excerpt(value: object, limit: int = EXCERPT) -> str:
    """A peer-chosen value for a log line: escaped and bounded."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def token(key: bytes, peer: str) -> str:
    """Contract 1: what proves to `peer` (a node name, or "master") that we hold `key`."""
    return hashlib.blake2b(b"jrs-session:" + peer.encode(), key=key, digest_size=32).hexdigest()


# ------------------------------------------------------------------ actions


@dataclass
class ToMaster:
    msg: dict


@dataclass
class ToNode:
    node: str
    msg: dict


@dataclass
class Connect:
    """Keep a link to this node (re-established by the shell when it breaks)."""

    node: str
    host: str
    port: int


@dataclass
class Disconnect:
    """Stop connecting to this node for the rest of the run."""

    node: str


@dataclass
class ResetNode:
    """Close this node's session (it sent something we cannot follow); reconnect."""

    node: str
    why: str


@dataclass
class StartRun:
    """Read the job's inputs and send `run` plus their data as one unit; then call
    `run_sent` (or `input_failed`). Dropped by the shell when the link is down: the
    core sends it again from `node_up`."""

    node: str
    msg: dict
    job: Any


@dataclass
class ReceiveOutputs:
    """The data frames that follow a `finished`: write each head to its destination
    (None: drain and discard), then call `outputs_done` with the same `ref`."""

    node: str
    ref: tuple
    plan: list  # [(head, destination path or None)]


@dataclass
class Record:
    rec: dict


@dataclass
class Event:
    """A job event log entry: EventLog method `kind` with `args`, in log `path`."""

    path: str
    kind: str
    args: tuple


@dataclass
class Say:
    text: str


# ------------------------------------------------------------------ state


@dataclass
class CoreConfig:
    cluster: int
    submitter: str
    user: str
    host: str
    session_key: bytes
    total: int
    protected: frozenset = frozenset()  # paths outputs never land on (submit file, journal)
    max_output_files: int = transfer.MAX_OUTPUT_FILES
    max_output_bytes: Optional[int] = None
    give_up: float = 20.0
    submit_file: str = ""
    # a directory's real path (the shell's, cached; None: paths as spelled): outputs
    # are compared with the protected files by real path (transfer.output_plan)
    realdir: Optional[Callable[[str], str]] = None


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
    # released once its job ends, never given another: re-attached from an earlier run,
    # dropped by the master meanwhile (its welcome), or gone with the job on its node
    retire: bool = False


@dataclass
class NodeState:
    host: str
    port: int
    up: bool = False
    failing_since: Optional[float] = None
    sent: set = field(default_factory=set)  # (proc, attempt) whose run reached the node
    pending: set = field(default_factory=set)  # (proc, attempt) whose run is still to go
    strikes: list = field(default_factory=list)  # when its sessions broke the protocol
    banned: bool = False  # kept breaking it: not used for the rest of this run
    rest_until: float = float("-inf")  # refused a run for its own trouble: unused until then
    rest_streak: int = 0  # such refusals in a row (no job started there since)
    probe: Optional[tuple] = None  # (proc, attempt): the run sent back from a rest

    def forget(self, ref: tuple) -> None:
        """The run `ref` (proc, attempt) is no longer this node's, sent or to go."""
        self.sent.discard(ref)
        self.pending.discard(ref)


class SubmitCore:
    def __init__(self, cfg: CoreConfig, queue: Queue, previous: Optional[J.Previous] = None
                 ) -> None:
        self.cfg = cfg
        self.cluster = cfg.cluster
        self.queue = queue
        self.previous = previous
        self.claims: dict[str, ClaimState] = {}
        self.nodes: dict[str, NodeState] = {}
        self.unmatchable: dict[str, str] = {}
        self.give_back = 0
        self.removing: set = set()
        # (proc, attempt) -> until when: runs the master took the claim of, killed (or to
        # be killed) by us on their node, whose answer decides (`_abandon`)
        self.revoking: dict = {}
        self.remove_reason: Optional[str] = None  # the whole cluster is being removed
        self._remove_why: dict = {}  # proc -> reason, for jobs removed one by one
        self.now = float("-inf")  # the latest time an event brought (node rests)
        self._demand_sent: Optional[list] = None
        self._demand_refused_until: Optional[float] = None  # a `limit` error: wait till then
        self._last_progress = -1e18
        self._receiving: dict = {}  # ref -> (rec or None, result)
        self._out: list = []
        self._sizes: list = []
        self._logs: set = set()  # every job event log: outputs never land on one
        self._submitted_upto = previous.submitted_upto if previous else -1
        self._was_running = set(previous.running) if previous else set()
        self.MASTER: dict[str, Callable[[dict, float], None]] = {
            "claim": self._claim, "unmatchable": self._unmatchable_msg,
            "give-back": self._give_back, "node-lost": self._node_lost_msg, "rm": self._rm,
            "error": self._master_error, "welcome": self._ignore_master,
            "cluster": self._ignore_master, "pong": self._ignore_master}
        self.NODE: dict[str, Callable[[str, dict, float], None]] = {
            "started": self._started, "rejected": self._rejected, "attached": self._attached,
            "finished": self._finished, "error": self._node_error,
            "pong": self._ignore_node}

    # ------------------------------------------------------------ helpers

    def _emit(self, action) -> None:
        self._out.append(action)

    def _take(self) -> list:
        out, self._out = self._out, []
        return out

    def token(self, peer: str) -> str:
        return token(self.cfg.session_key, peer)

    def job_id(self, proc: int) -> str:
        return f"{self.cluster}.{proc}"

    def _event(self, rec: Rec, kind: str, *args) -> None:
        path = rec.job.path("log")
        if path:
            self._emit(Event(path, kind, (self.cluster, rec.proc, *args)))

    @property
    def finished(self) -> bool:
        return self.queue.finished

    # ------------------------------------------------------------ start

    def start(self, now: float, running_jobs: list = ()) -> list:
        """Re-attach the jobs an interrupted run left running (`running_jobs`: their Job
        objects, read back from the spool by the shell), apply again a removal it had
        begun, then put claims to work."""
        self.now = max(self.now, now)
        prev = self.previous
        if prev and prev.running:
            adopted = 0
            for job in running_jobs:
                info = prev.running.get(job.process)
                if info is None:
                    continue
                attempt, node, claim, host, port = info
                rec = self.queue.adopt(job, attempt, node, claim)
                adopted += 1
                if job.path("log"):
                    self._logs.add(job.path("log"))
                ns = self._node(node, host, port)
                if ns is None:  # a journal without the node's address: run it again
                    self._requeue(rec)
                    continue
                ns.sent.add((rec.proc, attempt))
                if claim:
                    self.claims[claim] = ClaimState(
                        claim, node, ns.host, ns.port, job.request_cpus,
                        job.request_memory or 0, job.request_gpus, rec.key, rec.proc,
                        retire=True)
            self._emit(Say(f"jrs submit: resuming cluster {self.cluster}: {len(prev.final)} "
                           f"jobs already final, {adopted} to collect from the nodes"))
        for ids, reason in (prev.removes if prev else ()):
            # a removal the killed run had begun: finish it (its kills go out on node_up)
            self._remove(list(ids), str(reason), journal=False)
        if self.remove_reason is not None:
            self._emit(Say(f"jrs submit: cluster {self.cluster} was being removed "
                           f"({self.remove_reason}); finishing the removal"))
        self.pump()
        return self._take()

    def _node(self, name: str, host: Optional[str], port: Optional[int]
              ) -> Optional[NodeState]:
        ns = self.nodes.get(name)
        if ns is None:
            if not host or not isinstance(port, int):
                return None
            ns = self.nodes[name] = NodeState(host, port)
            self._emit(Connect(name, host, port))
        return ns

    # ------------------------------------------------------------ master

    def hello(self, pid: int) -> dict:
        return {"type": "submitter-hello", "submitter": self.cfg.submitter,
                "user": self.cfg.user, "host": self.cfg.host, "pid": pid,
                "claims": sorted(self.claims), "clusters": [self.cluster_info()],
                "token": self.token("master")}

    def master_up(self, welcome: Optional[dict] = None) -> list:
        """A master session began; `welcome` is its answer to our hello. Claims it names
        as dropped are given up at once (sim D6: kept, each took a job whose run the node
        refused "unknown claim"). A welcome without the field (an older master): as before."""
        self._demand_sent = None
        self._demand_refused_until = None
        if isinstance(welcome, dict) and isinstance(welcome.get("dropped"), list):
            killed = welcome.get("killed")
            self._not_held(welcome["dropped"], killed if isinstance(killed, list) else [])
            self.pump()
        self._send_demand()
        return self._take()

    def _not_held(self, dropped: list, killed: list) -> None:
        """The master no longer holds these claims for us. A free one is forgotten. One
        whose job the node was told to kill is abandoned as on a lost node (`_abandon`:
        killed there by us too, if we reach it, and run again elsewhere, uncounted).
        One whose job goes on (kill False: the node lets the claim go when the job ends)
        keeps it: the result comes as usual, and the claim is retired, never used again.
        A killed one whose node we reach keeps its claim retired too, while its kill is
        in flight (`_abandon`)."""
        kills = {cid for cid in killed if isinstance(cid, str)}
        for cid in dropped:
            c = self.claims.get(cid) if isinstance(cid, str) else None
            if c is None:
                continue
            rec = self.queue.live.get(c.proc) if c.proc is not None else None
            if rec is None or rec.state != RUNNING or rec.claim != cid:
                del self.claims[cid]
            elif cid in kills:
                if not self._abandon(rec, c.node, "its claim was revoked by the master"):
                    del self.claims[cid]
                else:
                    c.retire = True
            else:
                c.retire = True

    def from_master(self, msg: dict, now: float) -> list:
        self.now = max(self.now, now)
        handler = self.MASTER.get(str(msg.get("type")))
        if handler is None:
            self._emit(Say(f"jrs submit: unexpected message from the master: "
                           f"{excerpt(msg.get('type'))}"))
        else:
            handler(msg, now)
        self.pump()
        return self._take()

    def _ignore_master(self, msg: dict, now: float) -> None:
        pass

    def _master_error(self, msg: dict, now: float) -> None:
        """Said, and, for a demand refused over one of the master's per-host limits
        (other sessions of our host hold its share: R8), the demand goes again after
        DEMAND_RETRY seconds, whatever changed meanwhile: the master kept nothing of it,
        and an unchanged demand is otherwise never sent again (the submit hung for good
        though the other sessions had gone)."""
        self._emit(Say(f"jrs submit: the master says: {excerpt(msg.get('message'))}"))
        if msg.get("code") == "limit" and msg.get("re") == "demand":
            self._demand_sent = None
            self._demand_refused_until = self.now + DEMAND_RETRY

    def _claim(self, msg: dict, now: float) -> None:
        cid = str(msg["claim"])
        c = self.claims.get(cid)
        if c is not None:  # re-offered after a reconnect (or one we re-attached): update
            c.host, c.port = str(msg["host"]), int(msg["port"])
            c.cpus, c.memory, c.gpus = int(msg["cpus"]), int(msg["memory"]), int(msg["gpus"])
            return
        c = ClaimState(cid, str(msg["node"]), str(msg["host"]), int(msg["port"]),
                       int(msg["cpus"]), int(msg["memory"]), int(msg["gpus"]),
                       str(msg.get("key") or ""))
        if self._node(c.node, c.host, c.port) is None:
            # a node we have no address for: a slot we cannot use goes back at once
            self._emit(ToMaster({"type": "release", "claim": cid, "kill": False}))
            return
        self.claims[cid] = c

    def _unmatchable_msg(self, msg: dict, now: float) -> None:
        key, reason = str(msg["key"]), str(msg["reason"])
        self.unmatchable[key] = reason
        self._emit(Say(f"jrs submit: no node can ever run jobs of cluster {self.cluster} "
                       f"with request {key}: {reason}"))
        for rec in [r for r in self.queue.idle if r.key == key]:
            self._final(rec, Summary(HELD, node=None, reason=f"no node can run it: {reason}"))

    def _give_back(self, msg: dict, now: float) -> None:
        self.give_back = int(msg["count"])

    def _node_lost_msg(self, msg: dict, now: float) -> None:
        self.node_lost(str(msg["node"]), "the master lost contact with it", release=False)

    def _rm(self, msg: dict, now: float) -> None:
        count = self._remove(list(msg["ids"]), "via jrs rm")
        self._emit(ToMaster({"type": "removed", "re": msg.get("re") or "", "count": count}))

    # ------------------------------------------------------------ demand

    def demand(self) -> list:
        """The demand message if it changed (the shell calls this coalesced)."""
        self._send_demand()
        return self._take()

    def _send_demand(self) -> None:
        if self.remove_reason is not None:
            requests: list = []
        else:
            free: dict = {}
            for c in self.claims.values():
                if c.proc is None and self._usable(c):
                    free[c.key] = free.get(c.key, 0) + 1
            requests = []
            for key, (count, job) in self.queue.idle_by_key().items():
                if key in self.unmatchable:
                    continue
                want = count - free.get(key, 0)
                ad = {"RequestCpus": job.request_cpus, "RequestMemory": job.request_memory or 0,
                      "RequestGpus": job.request_gpus, "Owner": self.cfg.user,
                      "ClusterId": self.cluster}
                ad.update({k: classad.literal(v) for k, v in (job.attributes or {}).items()})
                requests.append({"key": key, "count": max(0, want), "cpus": job.request_cpus,
                                 "memory": job.request_memory or 0, "gpus": job.request_gpus,
                                 "requirements": job.requirements or "", "ad": ad,
                                 "weight": 2.0 ** (job.priority / 10.0)})
        if self._demand_refused_until is not None:
            if requests and self.now < self._demand_refused_until:
                return  # refused for a limit: not again before its time (`tick` sends it)
            self._demand_refused_until = None
        if self._demand_matters(requests):
            self._demand_sent = requests
            self._emit(ToMaster({"type": "demand", "requests": requests}))

    def _demand_matters(self, requests: list) -> bool:
        """Must the master hear these counts, or is what it was last told close enough?

        A backlogged submitter's count drops by one at every job start, and each demand
        costs the master a payload check and a test (`Pool.set_demand`): sent every time,
        the master's work would follow job starts x pool size, not what changed (#12). So
        a fall of a count is held back while it is small against the want it is part of:
        `sent - now <= (claims held for the key + now) // DEMAND_SLACK`. All else is
        told at once (the shell coalesces), always with the exact counts of the moment:
        - a key appears or disappears, or anything but a count changes (requirements,
          ad, weight: the master's matching and weights);
        - a count rises (a retry, a lost node, a claim let go): so what the master was
          told is never below the truth, and no job waits on a count too low;
        - a count reaches 0: the master stops offering slots for it at once;
        - a fall beyond the slack, which also catches a count falling near what it
          holds (the slack shrinks with the want, to exact below DEMAND_SLACK jobs).
        What a stale-high count (at most the slack above the truth) does:
        - offers: only while some node has a free slot, at most the slack more than the
          jobs left; a claim that finds no idle job of its key is released at once
          (`pump`): a slot lost for one round trip, never held;
        - fair shares: the master's want for the submitter (held + asked) is at most
          1/DEMAND_SLACK too high; that moves its share only while the want is below
          the water level (at or above it the share is the level either way), and
          moves the others' shares by no more than that in all;
        - give-backs depend on shares, claims held and who waits; who waits (a count
          above the offers pending) is exact whenever the count is 0;
        - liveness: nothing waits on a held-back fall; every rise and every 0 is sent."""
        sent = self._demand_sent
        if sent is None or len(sent) != len(requests):
            return True
        before = {r["key"]: r for r in sent}
        held: dict = {}
        for c in self.claims.values():
            held[c.key] = held.get(c.key, 0) + 1
        for r in requests:
            old = before.get(r["key"])
            if old is None:
                return True
            now, then = r["count"], old["count"]
            if now == then:
                if r != old:
                    return True
                continue
            if now > then or now == 0:
                return True
            if then - now > (held.get(r["key"], 0) + now) // DEMAND_SLACK:
                return True
            if {**r, "count": then} != old:
                return True
        return False

    # ------------------------------------------------------------ dispatch

    def pump(self) -> None:
        """Put free claims to work, give back or release the ones not needed."""
        self._materialize()
        for c in list(self.claims.values()):
            if c.proc is not None:
                continue
            if self.give_back > 0 or c.retire or self.remove_reason is not None:
                if not c.retire:
                    self.give_back = max(0, self.give_back - 1)
                self._release(c)
                continue
            if not self._usable(c):
                continue  # kept unused (given back when asked): a banned node's slots
            rec = self.queue.next_for(c.key) if c.key else self._any_fitting(c)
            if rec is None:
                if self.queue.idle_by_key().get(c.key) is None:
                    self._release(c)
                continue
            self._start(c, rec)
            self._materialize()

    def _start(self, c: ClaimState, rec: Rec) -> None:
        c.proc = rec.proc
        self.queue.start(rec, c.node, c.id)
        self._emit(Record(J.run_record(rec.proc, rec.attempt, c.node, c.id, c.host, c.port)))
        ns = self._node(c.node, c.host, c.port)
        if ns.rest_streak:  # back from a rest: one run probes it, its other claims wait
            ns.rest_until = self.now + REST_MAX
            ns.probe = (rec.proc, rec.attempt)
        ns.pending.add((rec.proc, rec.attempt))
        if ns.up:
            self._emit(self._run_action(c.node, rec))

    def _run_action(self, node: str, rec: Rec) -> StartRun:
        return StartRun(node, {"type": "run", "claim": rec.claim, "job": self.job_id(rec.proc),
                               "attempt": rec.attempt}, rec.job)

    def _any_fitting(self, c: ClaimState) -> Optional[Rec]:
        for rec in self.queue.idle:
            j = rec.job
            if j.request_cpus <= c.cpus and (j.request_memory or 0) <= c.memory \
                    and j.request_gpus <= c.gpus and not j.requirements:
                self.queue.take(rec)
                c.key = request_key(j)
                return rec
        return None

    def _release(self, c: ClaimState, kill: bool = False) -> None:
        """Give a claim back: through its node when we are connected to it (the quickest
        way the slot is free again), else through the master. Never kills its job
        unless `kill` (the job was given up on and runs again elsewhere)."""
        self.claims.pop(c.id, None)
        ns = self.nodes.get(c.node)
        msg = {"type": "release", "claim": c.id, "kill": kill}
        if ns is not None and ns.up and not kill:
            self._emit(ToNode(c.node, msg))
        else:
            self._emit(ToMaster(msg))

    def _materialize(self) -> None:
        new = self.queue.fill()
        if new:
            self._log_submitted(new)

    def _log_submitted(self, new: list) -> None:
        """Each new job's submit event once, across resumes; held at once if unmatchable."""
        if not new:
            return
        logged = self._submitted_upto
        for rec in new:
            log = rec.job.path("log")
            if log:
                self._logs.add(log)
            if rec.proc > logged and rec.proc not in self._was_running:
                self._event(rec, "submitted", self.cfg.host)
        top = max(rec.proc for rec in new)
        if top > self._submitted_upto:
            self._submitted_upto = top
            self._emit(Record(J.submitted_record(top)))
        for rec in new:
            if rec.key in self.unmatchable and rec.state == IDLE:
                self._final(rec, Summary(HELD, reason=f"no node can run it: "
                                                      f"{self.unmatchable[rec.key]}"))

    # ------------------------------------------------------------ links

    def node_up(self, node: str, now: float) -> list:
        """A link (re)connected: attach (naming the runs it should know), then send the
        runs that never reached it and the kills it may have missed."""
        self.now = max(self.now, now)
        ns = self.nodes.get(node)
        if ns is None:
            return []
        ns.up, ns.failing_since = True, None
        live = self.queue.live

        def current(item) -> bool:
            rec = live.get(item[0])
            return rec is not None and rec.state == RUNNING and rec.attempt == item[1] \
                and rec.node == node

        ns.sent = {i for i in ns.sent if current(i)}
        ns.pending = {i for i in ns.pending if current(i)}
        self._emit(ToNode(node, {"type": "attach", "submitter": self.cfg.submitter,
                                 "jobs": [[self.job_id(p), a] for p, a in sorted(ns.sent)],
                                 "token": self.token(node)}))
        for p, _a in sorted(ns.pending):
            self._emit(self._run_action(node, live[p]))
        for p in sorted(self.removing | {p for p, _a in self.revoking}):
            rec = live.get(p)
            if rec is not None and rec.node == node and (p, rec.attempt) in ns.sent and (
                    p in self.removing or (p, rec.attempt) in self.revoking):
                self._emit(ToNode(node, {"type": "kill", "job": self.job_id(p),
                                         "attempt": rec.attempt}))
        self.pump()
        return self._take()

    def node_down(self, node: str, now: float, why: str, protocol: bool = False) -> list:
        """A link broke or could not be made; `protocol`: the node broke the protocol
        (a bad transfer header, a result we reset the session for). A node that does so
        STRIKES times within STRIKE_WINDOW seconds is not used again by this run: its
        jobs run elsewhere, so no peer can hold the submit in a reconnect loop."""
        self.now = max(self.now, now)
        ns = self.nodes.get(node)
        if ns is not None:
            ns.up = False
            if ns.failing_since is None:
                ns.failing_since = now
        for ref in [r for r in self._receiving if r[0] == node]:
            del self._receiving[ref]  # the node delivers it again
        if protocol and ns is not None and not ns.banned:
            ns.strikes = [t for t in ns.strikes if now - t < STRIKE_WINDOW] + [now]
            if len(ns.strikes) >= STRIKES:
                self._ban(node, ns, why)
        self.pump()
        return self._take()

    def _ban(self, node: str, ns: NodeState, why: str) -> None:
        ns.banned = True
        self._emit(Disconnect(node))
        lost = [r for r in self.queue.live.values() if r.state == RUNNING and r.node == node]
        self._emit(Say(f"jrs submit: node {node} broke the protocol {len(ns.strikes)} times "
                       f"(last: {excerpt(why)}); not using it any more, rerunning its "
                       f"{len(lost)} jobs elsewhere"))
        for rec in lost:
            self._free_claim_of(rec)
            self._requeue(rec)
        ns.sent.clear()
        ns.pending.clear()

    def _usable(self, c: ClaimState) -> bool:
        """Not a banned node's claim, nor one of a node resting after a refusal (kept
        unused meanwhile: released, the Pool would offer the same broken slot at once)."""
        ns = self.nodes.get(c.node)
        return ns is None or (not ns.banned and self.now >= ns.rest_until)

    def run_sent(self, node: str, proc: int, attempt: int) -> list:
        ns = self.nodes.get(node)
        if ns is not None and (proc, attempt) in ns.pending:
            ns.pending.discard((proc, attempt))
            ns.sent.add((proc, attempt))
        return self._take()

    def input_failed(self, node: str, proc: int, attempt: int, reason: str,
                     prefix: str = "cannot read input: ") -> list:
        """The run of `proc` could not be sent (its input unreadable, its description
        too big for one message): the job fails with `prefix` + `reason`."""
        rec = self.queue.live.get(proc)
        ns = self.nodes.get(node)
        if ns is not None:
            ns.pending.discard((proc, attempt))
        if rec is not None and rec.state == RUNNING and rec.attempt == attempt:
            self._result(rec, {"exec_failed": True, "node": node,
                               "reason": f"{prefix}{reason}"})
        self.pump()
        return self._take()

    def tick(self, now: float) -> list:
        """Time passes: give up on nodes unreachable too long, end the rest of nodes
        that refused runs (`pump` uses their claims again); progress to the master."""
        self.now = max(self.now, now)
        for name, ns in list(self.nodes.items()):
            if not ns.up and not ns.banned and ns.failing_since is not None \
                    and now - ns.failing_since > self.cfg.give_up:
                ns.failing_since = now
                self.node_lost(name, f"unreachable for {self.cfg.give_up:.0f}s", release=True)
        if self.revoking:
            self._revoking_overdue(now)
        if self._demand_refused_until is not None and now >= self._demand_refused_until:
            self._send_demand()
        if now - self._last_progress >= 1.0:
            self._last_progress = now
            self._emit(ToMaster({"type": "progress", "clusters": [self.cluster_info()]}))
        self.pump()
        return self._take()

    def node_lost(self, name: str, why: str, release: bool) -> None:
        """Rerun the node's jobs elsewhere. When only we cannot reach it (`release`), the
        master still counts our claims there: hand them back through it, killing their
        jobs (they run again elsewhere)."""
        lost = [r for r in self.queue.live.values() if r.state == RUNNING and r.node == name]
        say = len(self._out)
        ns = self.nodes.get(name)
        waiting = 0
        for rec in lost:
            if release:
                self._lost_run(rec, name, f"node lost: {excerpt(why)}")
            elif self._abandon(rec, name, f"node lost: {excerpt(why)}"):
                waiting += 1
        if lost:  # (said before what it explains)
            wait = (f", {waiting} of them once the node confirms their kill (at most "
                    f"{self.cfg.give_up:.0f}s: a run that ended meanwhile keeps its result)"
                    if waiting else "")
            self._out.insert(say, Say(f"jrs submit: node {name} lost ({why}); "
                                         f"rerunning its {len(lost)} jobs elsewhere{wait}"))
        for c in [c for c in self.claims.values() if c.node == name]:
            if release:
                self._release(c, kill=True)
            else:
                del self.claims[c.id]
        if ns is not None:  # what is still asked of the node: only the kills in flight
            ns.sent = {i for i in ns.sent if i in self.revoking}
            ns.pending = {i for i in ns.pending if i in self.revoking}

    def _abandon(self, rec: Rec, node: str, why: str) -> bool:
        """The master took `rec`'s claim and told the node to kill it (or lost the node).
        While the run may be there (it reached the node, or its link is up) and the node
        may still answer, we kill the run there ourselves and let the node's answer
        decide (True): killed, it is a lost run and runs again (`_result`); ended on its
        own first, its result stands. Rerunning it at once would run it twice when the
        node is slow but alive (sim S1, revoke 802139: the run ended exit 0 after its
        rerun had started), or when a resumed submitter has not reached the node yet
        (R7, revoke 135). A link that is down has the kill sent when it is back
        (`node_up`). The wait is bounded (`cfg.give_up`, `tick`): a node that neither
        answers nor goes away (a hung daemon keeps its TCP link) has its run given up
        then. A run that cannot be on the node (never all sent, the link down) or whose
        node is banned runs again at once, uncounted (False). A job being removed ends
        REMOVED at once either way (its kill is out; nothing runs it again)."""
        ns = self.nodes.get(node)
        ref = (rec.proc, rec.attempt)
        removing = rec.proc in self.removing or self.remove_reason is not None
        if ns is not None and not ns.banned and not removing and (ns.up or ref in ns.sent):
            if ns.up:
                self._emit(ToNode(node, {"type": "kill", "job": self.job_id(rec.proc),
                                         "attempt": rec.attempt}))
            self.revoking[ref] = self.now + self.cfg.give_up
            return True
        if ns is not None:
            ns.forget(ref)
        self._lost_run(rec, node, why)
        return False

    def _revoking_overdue(self, now: float) -> None:
        """Runs whose node did not answer our kill within `give_up`: run them again."""
        for ref, until in list(self.revoking.items()):
            if now < until:
                continue
            del self.revoking[ref]
            rec = self.queue.live.get(ref[0])
            if rec is None or rec.state != RUNNING or rec.attempt != ref[1]:
                continue
            ns = self.nodes.get(rec.node or "")
            if ns is not None:
                ns.forget(ref)
            self._emit(Say(f"jrs submit: node {rec.node} did not answer the kill of job "
                           f"{self.job_id(rec.proc)} in {self.cfg.give_up:.0f}s; running "
                           f"it again elsewhere"))
            self._free_claim_of(rec)
            self._lost_run(rec, rec.node, "its node did not answer the kill of a revoked run")

    # ------------------------------------------------------------ node messages

    def from_node(self, node: str, msg: dict, now: float) -> list:
        self.now = max(self.now, now)
        handler = self.NODE.get(str(msg.get("type")))
        if handler is None:
            self._emit(Say(f"jrs submit: node {node} sent an unexpected "
                           f"{excerpt(msg.get('type'), 40)}"))
        else:
            handler(node, msg, now)
        self.pump()
        return self._take()

    def _ignore_node(self, node: str, msg: dict, now: float) -> None:
        pass

    def _node_error(self, node: str, msg: dict, now: float) -> None:
        self._emit(Say(f"jrs submit: node {node}: {excerpt(msg.get('message'))}"))

    def _rec(self, node: str, job: object, attempt: object) -> Optional[Rec]:
        """The running job a node's message names, or None (unknown, final, stale)."""
        if not isinstance(job, str) or not isinstance(attempt, int):
            return None
        cluster, _, proc = job.partition(".")
        if cluster != str(self.cluster) or not proc.isdigit() or len(proc) > 18:
            return None
        rec = self.queue.live.get(int(proc))
        if rec is None or rec.state != RUNNING or rec.attempt != attempt or rec.node != node:
            return None
        return rec

    def _started(self, node: str, msg: dict, now: float) -> None:
        rec = self._rec(node, msg["job"], msg["attempt"])
        if rec is not None:
            self._healthy(node, rec)
            self._announce(rec, node, None)
            if rec.proc in self.removing or (rec.proc, rec.attempt) in self.revoking:
                self._emit(ToNode(node, {"type": "kill", "job": msg["job"],
                                         "attempt": rec.attempt}))

    def _rejected(self, node: str, msg: dict, now: float) -> None:
        rec = self._rec(node, msg["job"], msg["attempt"])
        if rec is None:
            return
        reason = str(msg.get("reason") or "")
        c = self.claims.get(rec.claim or "")
        if c is not None:
            c.proc = None
            self._release(c)  # a claim the node will not run on is of no use to us
        ns = self.nodes.get(node)
        if ns is not None:
            ns.forget((rec.proc, rec.attempt))
        if msg.get("cause") == "claim":  # the claim went meanwhile: a race, not the job's
            self._lost_run(rec, node, f"refused: {excerpt(reason)}")  # bounded, uncounted
            return
        if msg.get("cause") == "node":  # the node's own trouble, not the job's
            if ns is not None:
                self._rest(node, ns, reason, now)
            rec.node_rejections += 1
            count, limit, what = rec.node_rejections, MAX_NODE_REJECTIONS, " for their own trouble"
        else:
            rec.rejections += 1
            count, limit, what = rec.rejections, MAX_REJECTIONS, ""
        if rec.proc in self.removing or self.remove_reason is not None:
            self._requeue(rec)  # ends REMOVED
        elif count >= limit:
            self._final(rec, Summary(HELD, node=node, reason=f"refused by the nodes {count} "
                                                            f"times{what}; last: "
                                                            f"{excerpt(reason)}"))
        else:
            self._requeue(rec)

    def _rest(self, node: str, ns: NodeState, reason: str, now: float) -> None:
        """A node refused a run for its own trouble: leave it alone for a while."""
        ns.rest_streak += 1
        pause = min(REST_MAX, REST_FIRST * 2.0 ** (ns.rest_streak - 1))
        ns.rest_until = now + pause
        self._emit(Say(f"jrs submit: node {node} cannot take jobs now ({excerpt(reason)}); "
                       f"not using it for {pause:.0f}s"))

    def _healthy(self, node: str, rec: Rec) -> None:
        """A job started on a node at rest: if it is the run that probed the node after
        its rest, its claims are all used again, and its next refusal is rested from the
        shortest pause. A run sent before the refusal proves nothing about the trouble
        it reported: each such start ended the rest, and a node whose disk failed half
        its writes refused one job 10 times within 1.3 s, holding it (sim B, backlog
        221, 582, 867)."""
        ns = self.nodes.get(node)
        if ns is not None and ns.rest_streak and ns.probe == (rec.proc, rec.attempt):
            ns.rest_streak, ns.rest_until, ns.probe = 0, float("-inf"), None

    def _attached(self, node: str, msg: dict, now: float) -> None:
        unknown = msg["unknown"]
        for item in unknown[:len(self.queue.live) + 1]:
            if not (isinstance(item, list) and len(item) == 2):
                continue
            rec = self._rec(node, item[0], item[1])
            if rec is None:
                continue
            ns = self.nodes.get(node)
            if ns is not None:
                ns.sent.discard((rec.proc, rec.attempt))
            c = self.claims.get(rec.claim or "")
            if c is not None:
                c.proc = None
                self._release(c)
            self._emit(Say(f"jrs submit: node {node} does not know job "
                           f"{self.job_id(rec.proc)} any more; running it again"))
            self._lost_run(rec, node, "the node did not know it any more")

    def _finished(self, node: str, msg: dict, now: float) -> None:
        job, attempt = msg["job"], msg["attempt"]
        rec = self._rec(node, job, attempt)
        ref = (node, job, attempt)
        files = msg["files"]
        try:  # what the wire layer made sure follows (its transfer_size), for a drain
            self._sizes = [sum(f["size"] for f in files)] if files else []
        except (TypeError, KeyError):  # not a transfer the wire took: cannot follow it
            self._emit(ResetNode(node, "a result whose data cannot be followed"))
            return
        if msg.get("claim_gone") is True:
            self._claim_gone(rec)
        if isinstance(files, list) and len(files) > self.cfg.max_output_files:
            self._bad_result(node, rec, job, attempt, f"{len(files)} output files exceed the "
                             f"limit of {self.cfg.max_output_files}", HOLD_OUTPUT_LIMIT)
            return
        try:
            heads = transfer.check_output_heads(msg["files"], self.cfg.max_output_files)
            result = transfer.check_result(msg["result"])
        except transfer.BadResult as exc:
            self._bad_result(node, rec, job, attempt, str(exc), HOLD_TRANSFER_OUTPUT)
            return
        over = msg["result"].get("outputs_over_limit")
        if rec is not None and isinstance(over, str) and not result["removed"] \
                and rec.proc not in self.removing and self.remove_reason is None:
            self._bad_result(node, rec, job, attempt, f"its outputs exceed the node's limit: "
                             f"{excerpt(over)}", HOLD_OUTPUT_LIMIT,
                             held=f"its outputs exceed the limit on {node}: {excerpt(over)}")
            return
        if rec is None:
            plan = [(h, None) for h in heads]  # stale or repeated: drain, discard, ack
        else:
            limit = self.cfg.max_output_bytes
            total = sum(h["size"] for h in heads)
            if limit is not None and total > limit:
                self._bad_result(node, rec, job, attempt,
                                 f"output of {total} bytes exceeds the limit of "
                                 f"{limit} bytes (JRS_MAX_TRANSFER_OUTPUT_MB)",
                                 HOLD_OUTPUT_LIMIT, log_excerpt=False)
                return
            plan = transfer.output_plan(rec.job, heads, self.cfg.protected | self._logs,
                                        self.cfg.realdir)
        self._receiving[ref] = (rec, dict(result, node=node))
        self._emit(ReceiveOutputs(node, ref, plan))

    def _claim_gone(self, rec: Optional[Rec]) -> None:
        """The node says the claim this result's run was on is gone: it let the claim go
        with the job (the master's session of ours closed, or the master told it to
        drop the claim) or since, or it cannot vouch for it (back from a stop, before
        the master confirmed its claims). The claim is retired: released once the
        result is in (a no-op at a node that dropped it), never given a job. Kept in
        use, its next run was refused "unknown claim", one wasted input transfer and
        an uncounted rerun (issue 12: sim large 7, revoke 4). A stale result (`rec`
        None) names no claim of ours; a node of before the field never says it."""
        c = self.claims.get(rec.claim or "") if rec is not None else None
        if c is not None and c.proc == rec.proc:
            c.retire = True

    def _bad_result(self, node: str, rec: Optional[Rec], job: str, attempt: int, why: str,
                    code: int, log_excerpt: bool = True, held: Optional[str] = None) -> None:
        """Hold the job (if it is one we wait for; `held` the reason, if not a bad result),
        drain and discard the data the wire says follows, then acknowledge, so the node
        forgets the result. A job over the node's output limit is held so too (HTCondor's
        code 33), its outputs not written: the node stopped collecting. No reset: a
        closed session would lose the ack (and the node would deliver again), and the
        job being final, a drain that never ends (sizes announced but never sent) holds
        up only this node's session, not the submit."""
        self._emit(Say(f"jrs submit: node {node} sent a bad result for {excerpt(job, 40)}: "
                       f"{why if not log_excerpt else excerpt(why)}"))
        if rec is not None:
            self._free_claim_of(rec)
            self._final(rec, Summary(HELD, node=node, reason=held or f"bad result from "
                                                                     f"{node}: {why[:200]}"),
                        code)
        ref = (node, job, attempt)
        self._receiving[ref] = (None, {})
        self._emit(ReceiveOutputs(node, ref, [({"name": "", "size": s}, None)
                                              for s in self._sizes]))

    def outputs_done(self, ref: tuple, error: Optional[str]) -> list:
        """The data of a `finished` went to disk (`error` None), or could not be written
        on this host (a permanent local error: the job is held, no reconnect)."""
        entry = self._receiving.pop(ref, None)
        node, job, attempt = ref
        if entry is not None:
            rec, result = entry
            if rec is not None and rec.state == RUNNING and rec.attempt == attempt:
                if error is not None:
                    self._free_claim_of(rec)
                    self._final(rec, Summary(HELD, node=node, reason=f"cannot write its "
                                                                     f"output: {error}"),
                                HOLD_TRANSFER_OUTPUT)
                else:
                    if not result.get("lost") and not result.get("exec_failed"):
                        self._announce(rec, node, result.get("started"))
                    self._result(rec, result)
            self._emit(ToNode(node, {"type": "ack", "job": job, "attempt": attempt}))
        self.pump()
        return self._take()

    def _announce(self, rec: Rec, node: str, t: Optional[float]) -> None:
        """The execute event (001), once per attempt, whichever message brings it."""
        if rec.announced == rec.attempt:
            return
        rec.announced = rec.attempt
        self._event(rec, "executing", node, t)

    def _free_claim_of(self, rec: Rec) -> None:
        c = self.claims.get(rec.claim or "")
        if c is not None and c.proc == rec.proc:
            c.proc = None

    def _result(self, rec: Rec, result: dict) -> None:
        self._free_claim_of(rec)
        ns = self.nodes.get(rec.node or "")
        if ns is not None:
            ns.forget((rec.proc, rec.attempt))
        node = result.get("node")
        removing = rec.proc in self.removing or self.remove_reason is not None
        if result.get("lost"):
            self._emit(Say(f"jrs submit: job {self.job_id(rec.proc)} was lost on {node}: "
                           f"{excerpt(result.get('reason'))}; running it again"))
            self._lost_run(rec, node, f"lost: {excerpt(result.get('reason'))}")
            return
        if removing:
            self._final(rec, Summary(REMOVED, result.get("exit_code"), result.get("signal"),
                                     node, self._removal_reason(rec)))
            return
        if not result.get("exec_failed"):
            self._healthy(rec.node or "", rec)
        if result.get("removed"):  # killed, not by us: its claim was revoked (node lost)
            self._emit(Say(f"jrs submit: job {self.job_id(rec.proc)} was killed on {node} "
                           f"(its claim was revoked); running it again"))
            c = self.claims.pop(rec.claim or "", None)
            if c is not None:  # the node dropped it with the job, at the master's word: a
                # run there is refused "unknown claim" (a wasted transfer). The master
                # hears we are done with it (a no-op if it dropped it, as it did)
                self._emit(ToMaster({"type": "release", "claim": c.id, "kill": False}))
            self._lost_run(rec, node, "killed, not by us")
            return
        state = self.queue.outcome(rec, result)
        if state == HELD:
            reason = result.get("reason") or (
                f"output files not created: {', '.join(result.get('missing') or [])}")
            self._final(rec, Summary(HELD, None, None, node, reason, rec.job.path("error")))
            return
        self._event(rec, "terminated", result)
        if state == IDLE:
            self._requeue(rec)
            return
        self._final(rec, Summary(state, result.get("exit_code"), result.get("signal"), node,
                                 None, rec.job.path("error")))

    def _requeue(self, rec: Rec) -> None:
        """Back to the queue to run again, unless it is being removed: then it ends
        REMOVED (nothing would ever run it, and the submit would never end)."""
        self.revoking.pop((rec.proc, rec.attempt), None)
        if rec.proc in self.removing or self.remove_reason is not None:
            self._final(rec, Summary(REMOVED, node=rec.node, reason=self._removal_reason(rec)))
            return
        self.queue.requeue(rec)
        self._emit(Record(J.requeue_record(rec.proc, rec.attempt, rec.completions,
                                           rec.lost_runs, rec.rejections,
                                           rec.node_rejections)))

    def _lost_run(self, rec: Rec, node: Optional[str], why: str) -> None:
        """A run that ended without an end of the job's own: run it again, uncounted,
        up to MAX_LOST_RUNS times (a hostile or broken node must not make the submit
        last forever), then hold it with the reason."""
        rec.lost_runs += 1
        if rec.lost_runs >= MAX_LOST_RUNS and rec.proc not in self.removing \
                and self.remove_reason is None:
            self._final(rec, Summary(HELD, node=node, reason=f"its run was lost "
                                                             f"{rec.lost_runs} times; last "
                                                             f"on {node}: {why}"))
            return
        self._requeue(rec)

    def _removal_reason(self, rec: Rec) -> str:
        return self._remove_why.get(rec.proc) or self.remove_reason or "removed"

    def _final(self, rec: Rec, s: Summary, code: int = 0) -> None:
        if s.state == REMOVED:
            self._event(rec, "aborted", s.reason or "removed")
        elif s.state == HELD:
            self._event(rec, "held", s.reason or "held", code)
        self.revoking.pop((rec.proc, rec.attempt), None)
        self.queue.finish(rec, s)
        self._emit(Record(J.end_record(rec.proc, rec.attempt, s)))
        self.removing.discard(rec.proc)
        self._remove_why.pop(rec.proc, None)

    # ------------------------------------------------------------ removal

    def remove(self, ids: list, reason: str) -> list:
        self._remove(ids, reason)
        self.pump()
        return self._take()

    def _remove(self, ids: list, reason: str, journal: bool = True) -> int:
        """Remove the jobs `ids` name ("C" the whole cluster, "C.P" one job). Journaled
        first (`journal`), so a run killed meanwhile applies it again on resume."""
        count = 0
        procs: Optional[set] = set()
        for text in ids:
            cluster, _, proc = str(text).partition(".")
            if cluster != str(self.cluster):
                continue
            if not proc:
                procs = None
                break
            if proc.isdigit() and len(proc) <= 18:
                procs.add(int(proc))
        if procs is not None and not procs:
            return 0
        if journal:
            self._emit(Record(J.remove_record(
                [str(self.cluster)] if procs is None
                else [self.job_id(p) for p in sorted(procs)], reason)))
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
                if procs is not None:
                    self._remove_why.setdefault(rec.proc, reason)
                ns = self.nodes.get(rec.node or "")
                if ns is not None and ns.up:
                    self._emit(ToNode(rec.node, {"type": "kill", "job": self.job_id(rec.proc),
                                                 "attempt": rec.attempt}))
        if procs is not None:
            count += self.queue.remove_procs(procs, reason)
        return count

    # ------------------------------------------------------------ the end

    def finish(self) -> list:
        """Every job is final: give the claims back, say so to the master."""
        for c in list(self.claims.values()):
            self._release(c)
        self._emit(ToMaster({"type": "progress", "clusters": [self.cluster_info()]}))
        return self._take()

    def leave(self) -> list:
        """SIGTERM/SIGHUP: jobs keep running; give back only the claims without a job."""
        for c in [c for c in self.claims.values() if c.proc is None]:
            self._release(c)
        return self._take()

    def cluster_info(self) -> dict:
        counts = self.queue.counts
        return {"id": self.cluster, "file": self.cfg.submit_file, "total": self.cfg.total,
                "idle": counts[IDLE], "running": counts[RUNNING], "done": counts[DONE],
                "failed": counts[FAILED], "held": counts[HELD], "removed": counts[REMOVED]}

    def summary(self, wall: float) -> tuple:
        """(closing text, exit status)."""
        q = self.queue
        c = q.counts
        total = self.cfg.total
        bad = [(p, s) for p, s in sorted(q.final.items()) if s.state in (FAILED, HELD)]
        lines = [f"cluster {self.cluster}: {total} jobs, {c[DONE]} done, "
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
        return "\n".join(lines), (0 if c[DONE] == total else 1)
