"""The real node daemon's `finished` says `claim_gone` as its core builds it, after the
output scan (f10b158): a claim the master dropped while the scan ran is said gone in
the result that follows. The core's rule is tested in test_node_core_claim_gone and
the simulation's shell in test_sim_claim_gone; the daemon is the other shell, and no
real-process test could tell the field's absence there (the welcome covers the same
runs: test_submit_master_reset). In process: the daemon's core driven by the core
tests' helpers, its delivery (`_deliver_now`) run with the scan replaced by one during
which the master drops the claim, and the message it hands the channel read."""

from __future__ import annotations

import asyncio

from jrs.config import load
from jrs.node import core as nc
from jrs.node.core import Capacity
from jrs.node.daemon import NodeDaemon
from jrs.wire.connection import Connection
from jrs.wire.keys import root_key

from .cluster import Cluster
from .test_node_core import T0, attach, claim_id, finish, offer, start_job


class _Channel:
    def __init__(self) -> None:
        self.sent: list = []
        self.items: list = []
        self.conn = Connection(root_key(b"k" * 32), "node", is_client=False)  # (encode)

    async def send_files(self, msg, items, encoded=None) -> None:
        self.sent.append(msg)
        self.items.append(items)


def attached_daemon(pyz, tmp_path) -> NodeDaemon:
    """A real NodeDaemon whose core holds claim 1 of an attached session 1, its actions
    not executed (nothing of the host is touched): for driving its shell in process."""
    d = NodeDaemon(load(Cluster(pyz, tmp_path, slots=[1]).conf),
                   Capacity("n1", 1, 1000, 0, {}), str(tmp_path / "state"), None)
    d.execute = lambda actions: None
    d.core.master_up()
    offer(d.core, 1)
    attach(d.core, 1)
    return d


def _delivered(pyz, tmp_path, drop_during_scan: bool) -> dict:
    d = attached_daemon(pyz, tmp_path)
    core = d.core
    task = start_job(core)
    (deliver,) = [a for a in finish(core, task) if isinstance(a, nc.Deliver)]
    assert claim_id(1) in core.claims  # kept: the claim goes on to the next job

    async def scan(st):
        if drop_during_scan:  # the master drops it while the outputs are scanned
            core.from_master({"type": "claim-drop", "claim": claim_id(1), "kill": False},
                             T0 + 2)
        return nc.result_of(st, "n1"), None

    d._collect = scan
    ch = d.channels[deliver.sid] = _Channel()
    asyncio.run(d._deliver_now(deliver.sid, deliver.key))
    (msg,) = ch.sent
    return msg


def test_a_claim_dropped_during_the_output_scan_is_said_gone(pyz, tmp_path):
    msg = _delivered(pyz, tmp_path / "a", drop_during_scan=True)
    assert msg["type"] == "finished" and msg["claim_gone"] is True, msg
    kept = _delivered(pyz, tmp_path / "b", drop_during_scan=False)
    assert kept["type"] == "finished" and "claim_gone" not in kept, kept
