"""Real processes on loopback: `max_retries` keeps counting across a kill -9 and resume.

Issue 12: the completions lived only in memory, so a resumed submit counted
`max_retries` from 0 again and ran a failing job more often than its file allows
(and its attempt numbers started over, colliding with the old taskfiles). The
journal keeps them now; tests/test_submit_core.py checks the core, this the whole
path: the runner reading its journal and the nodes holding the run it re-attaches.
"""

from __future__ import annotations

import os
import signal

from .cluster import runs, shared_ledger, wait_for


def test_max_retries_counts_the_runs_before_a_kill9_and_resume(two_nodes, tmp_path):
    """Two jobs that fail (exit 3) with max_retries = 2: three runs each in all. The
    submitter is killed -9 while each job's second run is on a node; the same command
    run again re-attaches those runs and allows each job one run more, not two more."""
    work = tmp_path / "w"
    work.mkdir()
    ledger = shared_ledger()
    (work / "job.sh").write_text(f"#!/bin/sh\necho $JRS_JOB_ID >> {ledger}\nsleep 1.5\n"
                                 "exit 3\n")
    os.chmod(work / "job.sh", 0o755)
    (work / "c.condor").write_text("executable = job.sh\nmax_retries = 2\nlog = c.log\n"
                                   "queue 2\n")
    p = two_nodes.submit("c.condor", cwd=work)
    wait_for(lambda: len(runs(ledger)) == 2 and min(runs(ledger).values()) >= 2, timeout=60)
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = runs(ledger)
    assert set(before.values()) == {2}, before  # each job's second run is on its node
    code, _out, err = two_nodes.run_submit("c.condor", cwd=work, timeout=90)
    assert code == 1, err + two_nodes.logs()
    assert "resuming cluster" in err, err
    assert ": 2 jobs, 0 done, 2 failed" in err, err
    after = runs(ledger)
    assert len(after) == 2 and set(after.values()) == {3}, after  # 1 + max_retries each
    log = (work / "c.log").read_text()
    assert log.count("Normal termination (return value 3)") == 6, log
    assert not (work / ".c.condor.jrs").exists()
