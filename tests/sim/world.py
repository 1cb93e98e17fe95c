"""One simulated cluster, built from a shape and a seed, run to its end and checked.

`run(seed, shape)` builds the master (the real Pool), the nodes (hosts with
disks and executors, the node shell around the node core) and the
submitters (the runner's shell around the submitter core), injects faults
for a while, runs until every submit has ended (or the liveness deadline
passed), lets the cluster go quiet, and returns a `Result` whose `failures`
list is empty when every invariant held (see tests/sim/check.py).
"""

from __future__ import annotations

import hashlib
import json
import traceback
from dataclasses import dataclass, field
from typing import Optional

from jrs.config import Endpoint, NodeEntry

from . import check, faults
from .clock import Sim
from .disk import Disk
from .master import MasterProc
from .net import Network
from .node import Host, NodeProc
from .shapes import SHAPES, Shape
from .submitter import SubmitterProc

HEARD = ("node-report", "node-hello")  # what tells the Pool a node is alive
LIVENESS = 600.0  # every submit ends within this after the last fault
QUIET = 75.0  # every submit done and the last fault over: no claim may be left after this
# (more than the Pool's submitter lease of the shapes plus a node time-out)
SWITCHES: dict = {}  # test-only defect switches in force for a run (see tests/sim/bugs.py)


@dataclass
class Behavior:
    duration: float
    exit_code: Optional[int]
    signal: Optional[int]
    output: int


@dataclass
class SubmitSpec:
    name: str
    user: str
    host: str
    sid: str
    total: int
    text: str
    max_retries: Optional[int]
    cpus: int
    priority: int
    start: float
    key: Optional[bytes] = None  # the session key of a run not journaled yet


@dataclass
class Execution:
    sid: str
    job: str
    attempt: int
    node: str
    cpus: int
    start: float
    end: Optional[float] = None
    how: str = "running"  # completed | killed | lost
    code: Optional[int] = None
    signal: Optional[int] = None


@dataclass
class Result:
    seed: int
    shape: str
    failures: list = field(default_factory=list)
    steps: int = 0
    sim_time: float = 0.0
    digest: str = ""
    faults: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    trace: list = field(default_factory=list)
    fault_kinds: tuple = ()

    @property
    def ok(self) -> bool:
        return not self.failures

    def replay(self) -> str:
        sw = "".join(f" --switch {s}" for s in sorted(SWITCHES))
        left = [k for k in SHAPES[self.shape].faults if k not in self.fault_kinds]
        out = f" --without {','.join(left)}" if left else ""
        return f"python -m tests.sim --seed {self.seed} --shape {self.shape}{out}{sw}"


class World:
    def __init__(self, seed: int, shape: Shape) -> None:
        self.seed = seed
        self.shape = shape
        self.sim = Sim(seed)
        self.rng = self.sim.rng
        self.net = Network(self.sim)
        self.failures: list = []
        self.trace: list = []
        self.digest = hashlib.sha256()
        self.disks: dict = {}
        self.master_address = "master:7083"
        names = [f"n{i + 1}:7082" for i in range(len(shape.nodes))]
        self.node_entries = [NodeEntry(Endpoint(n.split(":")[0], 7082)) for n in names]
        self.node_addresses = {n: (n.split(":")[0], 7082) for n in names}
        self.hosts: dict = {}
        for n, slots in zip(names, shape.nodes):
            self.hosts[n] = Host(self, n, slots, 1 << 20, self._disk(n))
        self._disk("master")
        self.net.host_up = lambda h: self.hosts[h].up if h in self.hosts else True
        self.master: Optional[MasterProc] = None
        self.specs: list = []
        self.subs: dict = {}  # name -> SubmitterProc (the current one)
        self.done: dict = {}  # name -> time it ended
        self.behaviors: dict = {}
        self.execs: list = []
        self.running: dict = {}  # node -> list of Execution
        self.journals: dict = {}  # sid -> [records in write order]
        self.fault_log: list = []
        self.last_fault = 0.0
        self.demand_held = 0  # falls the submitters' demand hold-back kept (submitter.py)
        self.interrupted: set = set()  # submitter names removed by Ctrl-C
        self.losses: list = []  # (t, sid, node): that submitter lost that node's jobs
        # (sid, job, attempt) -> how many journal records the submitter had written when
        # that run's `finished` first reached it
        self.results: dict = {}
        # What a submitter could not have known of a run's result (check.py, "no run again
        # after a success"): the facts each is judged by, as the simulation saw them
        self.unreachable: list = []  # (t, sid, node): its link down for give_up by then
        self.revocations: list = []  # (t, sid, node, claims or None): it learned then that
        # the master revoked its claims there (None: all, its node-lost; else the welcome's
        # `killed`)
        self.unknown: dict = {}  # (sid, job, attempt) -> when a node first answered
        # `attached` with that run unknown
        self.acked: dict = {}  # (sid, job, attempt) -> when the submitter first sent its ack
        self.forgiven: list = []  # (submit, job, attempt, succeeded, why): runs that ended on
        # their own, rerun uncounted: the submitter could not have known (check._unknowable)
        self.claim_node: dict = {}  # claim -> node, from journals and claim grants
        self.revoked: dict = {}  # claim -> when the master revoked it (its node-lost)
        self.kills: dict = {}  # (node, job, attempt) -> when a submitter's kill reached it
        # (master process, node) -> when the latest hellos and reports of the node that
        # reached that master were ready (sent, plus the network's delay)
        self.heard: dict = {}
        self.master_stalls: list = []  # (master process, from, to) of each of its stalls
        self.net.on_deliver = self._delivered
        self._ids = 0
        self._make_specs()

    # ------------------------------------------------------------ building

    def _disk(self, host: str) -> Disk:
        d = Disk(host)
        d.bind(lambda: self.sim.now, self.rng)
        self.disks[host] = d
        return d

    def new_id(self) -> str:
        return f"{self.rng.getrandbits(96):024x}"

    def _make_specs(self) -> None:
        sh = self.shape
        for i, (user, lo, hi, prio, start) in enumerate(sh.submitters):
            name = f"{user}{i + 1}"
            host = f"s{i + 1}"
            disk = self._disk(host)
            total = self.rng.randint(lo, hi)
            retries = self.rng.choice(sh.max_retries)
            cpus = self.rng.choice(sh.cpus)
            lines = ["executable = /bin/simjob", "transfer_executable = false",
                     "arguments = $(Process)", "output = out.$(Process)",
                     f"request_cpus = {cpus}", f"priority = {prio}"]
            if retries is not None:
                lines.append(f"max_retries = {retries}")
            lines.append(f"queue {total}")
            spec = SubmitSpec(name, user, host, self.new_id(), total, "\n".join(lines) + "\n",
                              retries, cpus, prio, start)
            self.specs.append(spec)
            path = f"/home/{name}/.job.condor.jrs"
            self.journals[spec.sid] = []
            disk.watchers.append(self._journal_watcher(path, spec.sid))

    def _journal_watcher(self, path: str, sid: str):
        def watch(p: str, rec: dict) -> None:
            if p == path:
                self.journals[sid].append((self.sim.now, rec))
                if rec.get("e") == "run":
                    self.claim_node[rec["claim"]] = rec["node"]
        return watch

    def start(self) -> None:
        self.master = MasterProc(self, _Host("master", self.disks["master"]))
        for host in self.hosts.values():
            self.new_node(host)
        for spec in self.specs:
            self.sim.after(spec.start, self.start_submitter, spec)

    def new_node(self, host):
        """A node daemon starts on `host`: the node daemon's shell around the real core."""
        return NodeProc(self, host)

    def start_submitter(self, spec: SubmitSpec) -> None:
        if spec.name in self.done:
            return
        self.subs[spec.name] = SubmitterProc(self, spec)

    # ------------------------------------------------------------ callbacks from parts

    def log(self, proc, text: str) -> None:
        self.trace.append(f"t={self.sim.now:.3f} {proc.name}: {text}")

    def note(self, text: str) -> None:
        self.digest.update(f"{self.sim.now:.6f} {text}\n".encode())
        self.trace.append(f"t={self.sim.now:.3f} {text}")

    def fail(self, text: str) -> None:
        self.failures.append(f"t={self.sim.now:.3f}: {text}")

    def behavior_of(self, spec: dict) -> Behavior:
        key = (str(spec.get("submitter")), str(spec.get("job")), int(spec.get("attempt", 0)))
        b = self.behaviors.get(key)
        if b is None:
            sh = self.shape
            code, sig = 0, None
            r = self.rng.random()
            if r < sh.signal_chance:
                code, sig = None, 9
            elif r < sh.signal_chance + sh.fail_chance:
                code = self.rng.randint(1, 3)
            b = self.behaviors[key] = Behavior(self.rng.uniform(*sh.duration), code, sig,
                                               self.rng.randint(*sh.output))
        return b

    def input_size(self, spec: SubmitSpec, proc: int) -> int:
        return (proc * 7919) % (1 << 16)

    def _spec_of(self, sid: str) -> Optional[SubmitSpec]:
        for s in self.specs:
            if s.sid == sid:
                return s
        return None

    def exec_started(self, ex) -> None:
        spec = ex.spec
        sub = self._spec_of(str(spec.get("submitter")))
        cpus = sub.cpus if sub else 1
        e = Execution(str(spec.get("submitter")), str(spec.get("job")),
                      int(spec.get("attempt", 0)), ex.host.name, cpus, self.sim.now)
        ex.record = e
        self.execs.append(e)
        running = self.running.setdefault(ex.host.name, [])
        running.append(e)
        used = sum(r.cpus for r in running)
        if used > ex.host.slots:
            self.fail(f"node {ex.host.name} overcommitted: {used} cpus of jobs running on "
                      f"{ex.host.slots} slots ({', '.join(r.job for r in running)})")
        self.note(f"exec start {e.sid[:6]} {e.job}.{e.attempt} on {e.node}")

    def exec_ended(self, ex, how: str) -> None:
        e = getattr(ex, "record", None)
        if e is None:
            return
        e.end, e.how = self.sim.now, how
        if how == "completed":
            e.code, e.signal = ex.behavior.exit_code, ex.behavior.signal
        elif how == "killed":
            e.signal = 15
        running = self.running.get(ex.host.name, [])
        if e in running:
            running.remove(e)
        self.note(f"exec end {e.sid[:6]} {e.job}.{e.attempt} {how}")

    def lost(self, sid: str, node: str, why: str) -> None:
        """A submitter's runs on `node` may rerun: the master declared the node lost,
        the submitter gave up on it, or the node no longer knows them."""
        self.losses.append((self.sim.now, sid, node))
        self.note(f"loss {sid[:6]} {node}: {why}")

    def _delivered(self, end, msg: dict, ready: float) -> None:
        if msg.get("type") in HEARD and isinstance(end.peer.proc, MasterProc):
            readies = self.heard.setdefault((end.peer.proc, end.proc.host), [])
            readies.append(ready)
            del readies[:-32]  # the latest (a stall of the master queues up to ~10)

    def declared_lost(self, master, node: str) -> None:
        """The master declares `node` lost: it must have had no hello or report of it
        ready for the node time-out, counted in the master's own running time (sim
        finding C2: a master back from a stall declared live nodes lost, their reports
        unread). What waits for a stalled master counts as heard; what a partition
        holds or a reset loses does not."""
        now = self.sim.now
        readies = list(self.heard.get((master, node), ()))
        if self.net.partition_end(node, master.host) is None:
            for conn in self.net.conns:
                for end in (conn.a, conn.b):
                    if end.proc.host == node and end.peer.proc is master:
                        readies += [ready for ready, body in end.waiting()
                                    if ready <= now and isinstance(body, dict) and any(
                                        f'"type": "{t}"' in json.dumps(body)[:40]
                                        for t in HEARD)]
        check.declared_lost(self, master, node, readies)

    def submit_done(self, proc: SubmitterProc) -> None:
        self.done[proc.spec.name] = self.sim.now
        self.note(f"submit {proc.spec.name} done")

    def check_pool(self, pool) -> None:
        check.pool_consistent(self, pool)

    # ------------------------------------------------------------ running

    def finished(self) -> bool:
        return len(self.done) == len(self.specs)

    def run(self) -> Result:
        sim = self.sim
        self.start()
        nemesis = faults.Nemesis(self)
        nemesis.plan()
        deadline = lambda: max(self.last_fault, self.shape.fault_window) + LIVENESS  # noqa: E731
        try:
            while not self.finished() and sim.now < deadline():
                sim.run_until(min(deadline(), sim.now + 50.0), stop=self.finished)
                if not sim._heap:
                    break
            if not self.finished():
                check.liveness(self, deadline())
            else:
                done = sim.now
                while sim.now < max(done, self.last_fault) + QUIET and sim._heap:
                    sim.run_until(max(done, self.last_fault) + QUIET)  # faults may go on
                check.final(self)
        except Exception:
            self.fail("exception inside the simulation:\n" + traceback.format_exc())
        res = Result(self.seed, self.shape.name, list(self.failures) + list(self.net.problems),
                     sim.steps, sim.now, self.digest.hexdigest()[:16], list(self.fault_log),
                     {"execs": len(self.execs), "messages": self.net.delivered,
                      "demand_held": self.demand_held, "forgiven": len(self.forgiven)},
                     self.trace, tuple(self.shape.faults))
        return res


class _Host:
    def __init__(self, name: str, disk: Disk) -> None:
        self.name, self.disk = name, disk


def run(seed: int, shape="small", switches: Optional[set] = None,
        trace_messages: bool = False) -> Result:
    """Run one seed of one shape; `switches` turn test-only defects on (tests/sim/bugs.py)."""
    from . import bugs
    sh = SHAPES[shape] if isinstance(shape, str) else shape
    world = World(seed, sh)
    if trace_messages:
        world.net.tracer = lambda text: world.trace.append(f"t={world.sim.now:.3f} {text}")
    with bugs.enabled(switches or set()):
        SWITCHES.clear()
        SWITCHES.update(dict.fromkeys(switches or ()))
        return world.run()
