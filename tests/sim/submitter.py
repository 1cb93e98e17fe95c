"""A `jrs submit` in the simulation: the shell of the runner around the submitter core.

What the shell of `jrs/client/runner.py` does, against simulated parts: it
reads the journal back (with the real `journal.read`), expands the submit text
with the real expander into the real `jobs.Queue`, asks the master for a
cluster id on a fresh run, keeps one link per node and one to the master
(reconnecting with backoff), and executes the core's actions: messages,
runs sent with their input as one transfer, journal records appended to the
host's disk. `Done` ends the process as the runner does: the journal is
removed and the links close after what was sent.
"""

from __future__ import annotations

import contextlib
from typing import Optional

from jrs.client import core, transfer
from jrs.client import journal as journal_mod
from jrs.client.jobs import resumed_queue
from jrs.condor import expand_text

from .clock import Proc
from .net import Closed, End

TICK = 1.0
DEMAND_DELAY = 0.02


class _DiskRecords:
    """`records.read` over a simulated disk, for the real `journal.read`."""

    def __init__(self, disk) -> None:
        self.disk = disk

    def read(self, path: str):
        if not self.disk.exists(path):
            raise FileNotFoundError(path)
        return self.disk.records(path), 0


@contextlib.contextmanager
def _journal_on(disk):
    saved = journal_mod.records
    journal_mod.records = _DiskRecords(disk)
    try:
        yield
    finally:
        journal_mod.records = saved


def _count_held_falls(sub, world) -> None:
    """Count, in `world.demand_held`, the demands the core held back with a count fallen.

    Test-side instrumentation only (the core is not changed): the core's own
    `_demand_matters` decides, its answer is returned unchanged, and a False for
    counts below the ones last sent is a fall the hold-back kept from the master
    (tests/test_sim_reach.py proves the `backlog` shape reaches it)."""
    matters = sub._demand_matters

    def counted(requests: list) -> bool:
        told = matters(requests)
        if not told:
            sent = {r["key"]: r["count"] for r in sub._demand_sent or ()}
            if any(r["count"] < sent.get(r["key"], 0) for r in requests):
                world.demand_held += 1
        return told
    sub._demand_matters = counted


class SubmitterProc(Proc):
    def __init__(self, world, spec) -> None:
        super().__init__(world.sim, spec.host, f"submit@{spec.name}")
        self.world = world
        self.spec = spec
        self.disk = world.disks[spec.host]
        self.journal = f"/home/{spec.name}/.job.condor.jrs"
        self.mod = core
        self.core = None
        self.master: Optional[End] = None
        self.welcomed = False
        self._welcome: Optional[dict] = None  # the master's answer to our last hello
        self.links: dict = {}  # node -> End or None
        self.wanted: dict = {}  # node -> (host, port)
        self.backoff: dict = {}
        self.down_since: dict = {}  # node -> since when its link is down (for the checker)
        self._demand_due = False
        self.exited = False
        self._started: Optional[tuple] = None
        with _journal_on(self.disk):
            self.previous = journal_mod.read(self.journal)
        # A rerun before the journal was written is a fresh run: the runner would draw a new
        # id and key; here the spec keeps one id, so it keeps one key too (same effect).
        if spec.key is None:
            spec.key = world.rng.getrandbits(256).to_bytes(32, "big")
        self.key = self.previous.key if self.previous and len(self.previous.key) == 32 \
            else spec.key
        self.cluster = self.previous.cluster if self.previous else 0
        self.handlers = {cls: getattr(self, "_do_" + cls) for cls in (
            "ToMaster", "ToNode", "Connect", "ResetNode", "StartRun", "ReceiveOutputs",
            "Record", "Event", "Say")}
        if self.previous is not None:  # resumed: the core first, so the hello has its token
            self._make_core()
        self._connect_master()

    # ------------------------------------------------------------ actions

    def do(self, actions: list) -> None:
        if not actions and self.core is not None and not self.core.finished:
            return  # nothing happened: no demand to coalesce (runner.apply)
        for a in actions or []:
            if self.exited:
                return
            self.handlers[type(a).__name__](a)
        if self.core is None or self.exited:
            return
        if self.core.finished:
            self._finish()
            return
        if not self._demand_due:
            self._demand_due = True
            self.later(DEMAND_DELAY, self._demand)

    def _demand(self) -> None:
        self._demand_due = False
        if self.welcomed:
            self.do(self.core.demand())

    def _do_ToMaster(self, a) -> None:
        msg = a.msg
        node = self.world.claim_node.get(msg.get("claim"))
        if msg.get("type") == "release" and msg.get("kill") and node is not None:
            self.world.lost(self.spec.sid, node, "given up")
        if self.master is not None and self.welcomed:
            try:
                self.master.send(a.msg)
            except Closed:
                pass

    def _do_ToNode(self, a) -> None:
        end = self.links.get(a.node)
        if end is not None:
            try:
                end.send(a.msg)
            except Closed:
                return
            if a.msg.get("type") == "ack":  # it had the result: a node forgetting it is ours
                self.world.acked.setdefault((self.spec.sid, a.msg["job"], a.msg["attempt"]),
                                            self.sim.now)

    def _do_Connect(self, a) -> None:
        if a.node not in self.wanted:
            self.wanted[a.node] = (a.host, a.port)
            self.links[a.node] = None
            self.backoff[a.node] = 0.1
            self._connect_node(a.node)

    def _do_ResetNode(self, a) -> None:
        end = self.links.get(a.node)
        if end is not None:
            end.reset()
            self._node_closed(a.node, end, "reset by the core")

    def _do_StartRun(self, a) -> None:
        end = self.links.get(a.node)
        if end is None or not end.open:
            return  # the core sends it again once the link is back
        proc, attempt = a.job.process, a.msg["attempt"]
        size = self.world.input_size(self.spec, proc)
        msg = dict(a.msg, spec=transfer.spec(a.job, {}),
                   files=[{"name": "input", "size": size, "mode": 0o644}] if size else [])
        try:
            end.send(msg, size=size)  # the run and its data: one unit
        except Closed:
            return
        self.do(self.core.run_sent(a.node, proc, attempt))

    def _do_ReceiveOutputs(self, a) -> None:
        """The data came with the `finished` unit; writing it locally cannot fail here."""
        self.do(self.core.outputs_done(a.ref, None))

    def _do_Record(self, a) -> None:
        rec = a.rec
        if rec.get("e") == "cluster" or not self.disk.exists(self.journal):
            self.disk.create(self.journal, [rec])
        else:
            self.disk.append(self.journal, rec)

    def _do_Event(self, a) -> None:
        pass

    def _do_Say(self, a) -> None:
        self.world.log(self, a.text)

    def _finish(self) -> None:
        """Every job is final: the claims go back, links close after what was sent,
        the journal goes (the runner's end of `run`)."""
        for a in self.core.finish():
            self.handlers[type(a).__name__](a)
        self.exited = True
        self.disk.unlink(self.journal)
        for end in [self.master, *list(self.links.values())]:
            if end is not None:
                end.close()
        self.alive = False
        self.world.submit_done(self)

    # ------------------------------------------------------------ the master

    def _connect_master(self) -> None:
        self.world.net.connect(self, self.world.master_address, self._master_open,
                               lambda why: self.later(0.5, self._connect_master))

    def _master_open(self, end: End) -> None:
        self.master, self.welcomed = end, False
        end.on_message = lambda msg: self._from_master(end, msg)
        end.on_close = lambda: self._master_closed(end)
        if self.core is not None:
            end.send(self.core.hello(1))
        else:  # a fresh run asks for its cluster id first (runner._hello without a core)
            end.send({"type": "submitter-hello", "submitter": self.spec.sid,
                      "user": self.spec.user, "host": self.spec.host, "pid": 1, "claims": [],
                      "clusters": [], "token": self.mod.token(self.key, "master")})

    def _from_master(self, end: End, msg: dict) -> None:
        if not self.welcomed:
            if msg["type"] != "welcome":
                end.close()
                return
            self.welcomed, self._welcome = True, msg
            if self.core is None and not self.cluster:
                end.send({"type": "new-cluster"})
                return
            self._booted()
            return
        if self.core is None:
            if msg["type"] == "cluster":
                self.cluster = int(msg["id"])
                self._booted()
            return
        if msg["type"] == "claim":
            self.world.claim_node[msg["claim"]] = msg["node"]
        elif msg["type"] == "node-lost":
            # the master's loss counts from its sending (its kills go out then) and again
            # from here: a submitter stalled meanwhile may have sent the node a run since
            self.world.lost(self.spec.sid, msg["node"], "the master's node-lost reached it")
            self.world.revocations.append((self.sim.now, self.spec.sid, msg["node"], None))
        self.do(self.core.from_master(msg, self.sim.now))

    def _booted(self) -> None:
        if self.core is None:
            self._make_core()
        if self._started is not None:  # the runner starts the core once the master is up
            running, self._started = self._started[0], None
            self.do(self.core.start(self.sim.now, running))
            self.later(TICK, self._tick)
        welcome, self._welcome = self._welcome, None
        killed = (welcome or {}).get("killed")
        if isinstance(killed, list) and killed:  # the master revoked these while we were away
            self.world.revocations.append((self.sim.now, self.spec.sid, None,
                                           frozenset(c for c in killed if isinstance(c, str))))
        self.do(self.core.master_up(welcome))

    def _make_core(self) -> None:
        spec, prev = self.spec, self.previous
        key = self.key
        if prev is None:
            self.disk.create(self.journal, [{"e": "cluster", "id": self.cluster,
                                             "submitter": spec.sid, "hash": "sim",
                                             "total": spec.total, "key": key.hex()}])
        jobs = expand_text(spec.text, "/tmp", cluster=self.cluster)
        queue = resumed_queue(jobs, spec.total, prev)
        running = []
        if prev and prev.running:
            running = [j for j in expand_text(spec.text, "/tmp", cluster=self.cluster)
                       if j.process in prev.running]
        cfg = self.mod.CoreConfig(self.cluster, spec.sid, spec.user, spec.host, key,
                                  spec.total, give_up=self.world.shape.give_up,
                                  submit_file=f"/home/{spec.name}/job.condor")
        self.core = self.mod.SubmitCore(cfg, queue, prev)
        _count_held_falls(self.core, self.world)
        self._started = (running,)

    def _tick(self) -> None:
        for node, since in list(self.down_since.items()):
            # a link down for give_up: the submitter may give its runs there up (the core's
            # `tick`); a fact for the checker, recorded at (or before) that decision
            if since is not None and self.sim.now - since > self.world.shape.give_up - 1e-6:
                self.world.unreachable.append((self.sim.now, self.spec.sid, node))
                self.down_since[node] = None  # once a period: nothing is sent there meanwhile
        self.do(self.core.tick(self.sim.now))
        self.later(TICK, self._tick)

    def _master_closed(self, end: End) -> None:
        if self.master is not end:
            return
        self.master, self.welcomed = None, False
        self.later(0.5, self._connect_master)

    # ------------------------------------------------------------ nodes

    def _connect_node(self, node: str) -> None:
        self.world.net.connect(self, node, lambda end: self._node_open(node, end),
                               lambda why: self._node_failed(node, why))

    def _node_failed(self, node: str, why: str) -> None:
        if node not in self.down_since:
            self.down_since[node] = self.sim.now
        self.do(self.core.node_down(node, self.sim.now, why))
        delay = self.backoff[node]
        self.backoff[node] = min(delay * 2, 2.0)
        self.later(delay, self._connect_node, node)

    def _node_open(self, node: str, end: End) -> None:
        self.links[node] = end
        self.down_since.pop(node, None)
        self.backoff[node] = 0.1
        end.on_message = lambda msg: self._from_node(node, msg)
        end.on_close = lambda: self._node_closed(node, end, "connection lost")
        self.do(self.core.node_up(node, self.sim.now))

    def _from_node(self, node: str, msg: dict) -> None:
        if msg["type"] == "attached" and msg["unknown"]:
            self.world.lost(self.spec.sid, node, "the node does not know some runs")
            for item in msg["unknown"]:
                if isinstance(item, list) and len(item) == 2:
                    self.world.unknown.setdefault((self.spec.sid, str(item[0]), item[1]),
                                                  self.sim.now)
        elif msg["type"] == "finished":
            self.world.results.setdefault((self.spec.sid, msg["job"], msg["attempt"]),
                                          len(self.world.journals[self.spec.sid]))
        self.do(self.core.from_node(node, msg, self.sim.now))

    def _node_closed(self, node: str, end: End, why: str) -> None:
        if self.links.get(node) is not end:
            return
        self.links[node] = None
        self._node_failed(node, why)

    @property
    def started(self) -> bool:
        """The runner takes Ctrl-C as "remove" only once its core has started."""
        return self.core is not None and self._started is None

    def interrupt(self) -> None:
        """Ctrl-C: remove the cluster's jobs (the runner's first Ctrl-C)."""
        if self.started:
            self.do(self.core.remove([str(self.cluster)], "removed by Ctrl-C"))
