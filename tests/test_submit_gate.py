"""A fresh submit makes its spool and journal durable in a thread while the core
starts (jrs/client/gate.py): the master hears the demand at once, but no job is
sent to a node, and no record is written, before the journal is on disk; only
local writes are overtaken, by messages to the master.

The unit tests drive the Gate alone; the end-to-end test runs the real runner
(in this process, so its journal's creation can be slowed down and watched)
against a real master and node on loopback.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

from jrs.client import core as C
from jrs.client.gate import Gate

from .cluster import Cluster


def test_early_kinds_overtake_only_local_writes_and_order_is_kept():
    ran: list = []
    g = Gate(ran.append, (C.ToMaster, C.Connect), (C.Record, C.Event, C.Say))
    demand = C.ToMaster({"type": "demand"})
    link = C.Connect("n1", "127.0.0.1", 1)
    rec = C.Record({"e": "submitted"})
    event = C.Event("log", "submitted", ())
    more = C.ToMaster({"type": "demand", "n": 2})
    run = C.StartRun("n1", {"job": "1.0"}, None)
    to_node = C.ToNode("n1", {"type": "kill"})
    later = C.ToMaster({"type": "release"})
    g.put(demand)
    g.put(link)
    assert ran == [demand, link]  # nothing held: at once
    g.put(rec)
    g.put(event)
    g.put(more)  # overtakes the held local writes
    assert ran == [demand, link, more]
    g.put(run)
    g.put(later)  # a run is held: the master hears nothing before the node does
    g.put(to_node)
    assert ran == [demand, link, more] and not g.is_open
    g.open()
    assert ran == [demand, link, more, rec, event, run, later, to_node] and g.is_open
    after = C.Record({"e": "final"})
    g.put(after)
    assert ran[-1] is after  # open: at once
    g.open()  # twice: nothing happens
    assert len(ran) == 9


def test_actions_put_while_the_held_ones_run_queue_behind_them():
    ran: list = []
    first = C.Record({"n": 1})
    second = C.Record({"n": 2})
    caused = C.ToMaster({"caused": True})

    def run(a):
        ran.append(a)
        if a is first:
            g.put(caused)  # an early kind, but `second` is still held: behind it

    g = Gate(run, (C.ToMaster,), (C.Record,))
    g.put(first)
    g.put(second)
    g.open()
    assert ran == [first, second, caused]


def test_no_run_leaves_before_the_journal_is_durable(pyz, tmp_path):
    """The real runner, its Journal.start slowed to 0.8 s: the demand reaches the
    master meanwhile (the overlap that saves the latency), every run and every journal
    record waits for the journal, and the job still ends with its output."""
    from jrs.client import journal as journal_mod
    from jrs.client.progress import Progress
    from jrs.client.runner import Submission
    from jrs.config import load
    from jrs.roles.submit import checked_jobs
    from jrs.wire.keys import root_key

    c = Cluster(pyz, tmp_path, slots=[1]).start()
    try:
        work = tmp_path / "w"
        work.mkdir()
        (work / "e.condor").write_text("executable = /bin/echo\narguments = hi\n"
                                       "output = e.out\nqueue 2\n")
        path = str(work / "e.condor")
        stamps: dict = {}
        order: list = []

        class SlowJournal(journal_mod.Journal):
            def start(self, *args) -> None:
                assert threading.current_thread() is not threading.main_thread()
                time.sleep(0.8)
                super().start(*args)
                stamps["durable"] = time.monotonic()

        journal = SlowJournal(journal_mod.default_path(path, None))
        environ = dict(os.environ)
        config = load(c.conf)

        async def go() -> int:
            sub = Submission(path, config, root_key(config.secret), journal, None,
                             Progress(False), environ, journal_mod.file_hash(path),
                             lambda cluster: checked_jobs(path, cluster, environ))
            for kind in (C.ToMaster, C.StartRun, C.Record):
                def wrapped(a, _run=sub.EXEC[kind], _kind=kind):
                    order.append((_kind.__name__, time.monotonic()))
                    _run(a)
                sub.EXEC[kind] = wrapped
            return await sub.run()

        cwd = os.getcwd()
        os.chdir(work)
        try:
            status = asyncio.run(go())
        finally:
            journal.close()
            os.chdir(cwd)
        assert status == 0
        assert (work / "e.out").read_text() == "hi\n"
        durable = stamps["durable"]
        runs = [t for k, t in order if k == "StartRun"]
        records = [t for k, t in order if k == "Record"]
        early = [t for k, t in order if k == "ToMaster" and t < durable]
        assert len(runs) == 2 and min(runs) > durable, (order, durable)
        assert records and min(records) > durable, (order, durable)
        assert early, f"the demand waited for the journal: {order}, {durable}"
    finally:
        c.stop()
