"""The submit shell (client/runner.py): identity, supervision, the action table."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pwd

from jrs.client import core as C
from jrs.client import journal as J
from jrs.client import runner, spool
from jrs.client.jobs import FAILED, HELD
from jrs.condor import expand_text


def test_user_name_comes_from_the_uid_not_the_environment(monkeypatch):
    """Issue 13 (contract 6): `LOGNAME=other jrs submit` must not run jobs as `other`."""
    monkeypatch.setenv("LOGNAME", "other")
    monkeypatch.setenv("USER", "other")
    assert runner.user_name() == pwd.getpwuid(os.getuid()).pw_name != "other"


def _submission() -> runner.Submission:
    return runner.Submission("f.condor", None, b"", None, None, None, {}, "", None)


def test_every_action_of_the_core_has_an_executor():
    async def go():
        return _submission()

    sub = asyncio.run(go())
    actions = {obj for obj in vars(C).values()
               if isinstance(obj, type) and (dataclasses.is_dataclass(obj)
                                             or "_plain_fields" in vars(obj))  # jrs/plain.py
               and obj.__module__ == C.__name__
               and obj not in (C.CoreConfig, C.ClaimState, C.NodeState)}
    # ReceiveOutputs is executed inline by the link that read the `finished`
    assert set(sub.EXEC) | {C.ReceiveOutputs} == actions


def test_a_failing_background_loop_ends_the_run_instead_of_dying_silently():
    async def go():
        sub = _submission()

        async def broken():
            await asyncio.sleep(0)
            raise ValueError("lazy expansion blew up")

        sub.spawn("the ticker", broken())
        await asyncio.wait_for(sub.done.wait(), 5)
        return sub.failure

    failure = asyncio.run(go())
    assert failure is not None and "the ticker" in failure and "ValueError" in failure


def test_the_runners_resume_carries_attempts_lost_runs_and_refusals(tmp_path):
    """R4's gap: the real runner rebuilds its queue from the journal on resume; the pure
    core tests and the simulation build theirs themselves, so nothing failed when the
    runner's copy dropped `counts=` (lost runs and refusals would then count from 0 at
    every resume: a node that loses every run plus a resume loop reruns a job for ever)
    or `restore=` (max_retries would count from 0 again). Here the journal and the job
    spool are real files, rebuilt by `Submission.resume` as `jrs submit` does, and the
    carried counts still decide: one more lost run holds job 0, one more failing exit
    ends job 1 FAILED instead of running it a fourth time."""
    sub_file = tmp_path / "j.condor"
    text = "executable = /bin/false\nmax_retries = 2\nqueue 2\n"
    sub_file.write_text(text)
    jpath = str(tmp_path / "j.jrs-journal")
    spool.write(J.spool_path(jpath), expand_text(text, str(tmp_path), cluster=7))
    jour = J.Journal(jpath)
    jour.start(7, "sub1", "h", 2, bytes(range(32)))
    jour.append(J.requeue_record(0, 4, 0, lost=C.MAX_LOST_RUNS - 1, refused=1,
                                 refused_node=2))
    jour.append(J.requeue_record(1, 3, 3))  # ran 3 times = 1 + max_retries, all failed
    jour.close()
    prev = J.read(jpath)

    async def go():
        sub = runner.Submission(str(sub_file), None, b"", J.Journal(jpath), prev, None, {},
                                "h", None)
        assert sub.resume(prev) == []
        sub.journal.close()
        return sub.core

    core = asyncio.run(go())
    core.start(0.0, [])
    recs = dict(core.queue.live)
    assert (recs[0].attempt, recs[0].completions, recs[0].lost_runs, recs[0].rejections,
            recs[0].node_rejections) == (4, 0, C.MAX_LOST_RUNS - 1, 1, 2)
    assert (recs[1].attempt, recs[1].completions) == (3, 3)
    # drive both to their next end through the core, on a fresh claim each
    started = {}
    for cid in ("c1", "c2"):
        acts = core.from_master({"type": "claim", "claim": cid, "node": "n1",
                                 "host": "127.0.0.1", "port": 9, "cpus": 1, "memory": 100,
                                 "gpus": 0, "key": next(iter(recs.values())).key}, 0.0)
        acts += core.node_up("n1", 0.0)
        for a in acts:
            if isinstance(a, C.StartRun):
                started[a.msg["job"]] = a.msg["attempt"]
                core.run_sent("n1", a.job.process, a.msg["attempt"])
    assert started == {"7.0": 5, "7.1": 4}  # attempt numbers are never reused
    base = {"signal": None, "rusage": {"utime": 0.0, "stime": 0.0}, "started": 1.0,
            "ended": 2.0, "removed": False}
    for job, extra in (("7.0", {"exit_code": None, "lost": True, "reason": "reboot"}),
                       ("7.1", {"exit_code": 1})):
        acts = core.from_node("n1", {"type": "finished", "job": job,
                                     "attempt": started[job], "result": dict(base, **extra),
                                     "files": []}, 0.0)
        for r in acts:
            if isinstance(r, C.ReceiveOutputs):
                core.outputs_done(r.ref, None)
    assert core.queue.final[0].state == HELD
    assert f"lost {C.MAX_LOST_RUNS} times" in core.queue.final[0].reason
    assert core.queue.final[1].state == FAILED and core.queue.final[1].exit_code == 1


def test_many_empty_returned_files_do_not_hold_the_event_loop(tmp_path):
    """Empty files come with no data frame, so writing them never waits on the wire:
    `_receive` yields every RECEIVE_YIELD files, and a task beside it runs meanwhile
    (without the yield it ran 0 times during 3,000 files). All files are written."""
    plan = [({"name": f"f{i}", "size": 0}, (str(tmp_path), f"f{i}")) for i in range(3000)]
    ticks = []

    async def main() -> tuple:
        done = False

        async def beside() -> None:
            while not done:
                ticks.append(1)
                await asyncio.sleep(0)

        t = asyncio.ensure_future(beside())
        await asyncio.sleep(0)
        ticks.clear()
        error = await runner.Submission._receive(None, None, plan)  # no frame is read
        n = len(ticks)
        done = True
        await t
        return error, n

    error, n = asyncio.run(main())
    assert error is None and len(os.listdir(tmp_path)) == 3000
    assert n >= 3000 // runner.RECEIVE_YIELD - 1, n
