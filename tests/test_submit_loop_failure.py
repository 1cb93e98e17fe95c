"""Real processes on loopback: a loop of `jrs submit` that fails unexpectedly ends the
run loudly, leaving the jobs running and the journal in place (issue 12: "background
loops die silently ... the process lives on, doing nothing"; README "Signals": it says
so and exits 4 with the journal kept; the jobs go on, rerun to resume).

The failure is made from outside: the job spool is read lazily as the queue fills its
`max_idle` window, so damaging a line the reader has not reached makes the
materialization of that job raise inside whichever loop asked for it.
"""

from __future__ import annotations

import os

from .cluster import runs, shared_ledger, wait_for

JOBS = 24
PAD = "x" * 3000  # a spool line of ~3 KB: the reader's buffer is far behind line 16


def test_a_failing_loop_exits_4_keeps_the_journal_and_a_rerun_finishes(two_nodes, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    ledger = shared_ledger()
    (work / "job.sh").write_text(f"#!/bin/sh\necho $JRS_JOB_ID >> {ledger}\nsleep 0.4\n")
    os.chmod(work / "job.sh", 0o755)
    (work / "c.condor").write_text(
        f"executable = job.sh\nenvironment = \"PAD={PAD}\"\nmax_idle = 1\nlog = c.log\n"
        f"queue {JOBS}\n")
    p = two_nodes.submit("c.condor", cwd=work)
    spool = work / ".c.condor.jrs-jobs"
    wait_for(lambda: len(runs(ledger)) >= 2, timeout=60)
    lines = spool.read_bytes().split(b"\n")
    assert len(lines) == JOBS + 1 and len(lines[16]) > 3000
    at = sum(len(line) + 1 for line in lines[:16])
    good = lines[16]
    with open(spool, "r+b") as f:  # in place: the reader's open file sees it
        f.seek(at)
        f.write(b"{" * len(good))
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 4, err + two_nodes.logs()
    said = [line for line in err.splitlines() if "keep running" in line]
    assert len(said) == 1 and "again to resume" in said[0], err
    assert f"{spool}:17: a damaged spooled job" in said[0], err  # the file and its line
    assert "Traceback" not in err and "internal error" not in err, err
    assert (work / ".c.condor.jrs").exists()
    ran = runs(ledger)
    assert 2 <= len(ran) <= 16 and set(ran.values()) == {1}, ran
    with open(spool, "r+b") as f:  # mended: the same command run again finishes the run
        f.seek(at)
        f.write(good)
    code, _out, err = two_nodes.run_submit("c.condor", cwd=work, timeout=120)
    assert code == 0, err + two_nodes.logs()
    assert "resuming cluster" in err, err
    ran = runs(ledger)
    assert len(ran) == JOBS and set(ran.values()) == {1}, ran
    log = (work / "c.log").read_text()
    assert log.count("Normal termination (return value 0)") == JOBS
    assert not (work / ".c.condor.jrs").exists()


def test_a_resume_whose_spool_lost_jobs_says_so_instead_of_waiting_for_them(two_nodes,
                                                                            tmp_path):
    """A spool cut short (its last jobs gone: a damaged disk, a hand edit) left a resumed
    queue waiting for jobs no line holds: the run never ended. The resume counts the
    spool against the journal's total first."""
    work = tmp_path / "w"
    work.mkdir()
    ledger = shared_ledger()
    (work / "job.sh").write_text(f"#!/bin/sh\necho $JRS_JOB_ID >> {ledger}\nsleep 2\n")
    os.chmod(work / "job.sh", 0o755)
    (work / "c.condor").write_text("executable = job.sh\nmax_idle = 1\nqueue 6\n")
    p = two_nodes.submit("c.condor", cwd=work)
    wait_for(lambda: len(runs(ledger)) >= 1, timeout=60)
    p.kill()
    p.wait()
    spool = work / ".c.condor.jrs-jobs"
    lines = spool.read_bytes().split(b"\n")
    assert len(lines) == 7
    spool.write_bytes(b"\n".join(lines[:4]) + b"\n")
    code, _out, err = two_nodes.run_submit("c.condor", cwd=work, timeout=30)
    assert code == 2, err
    assert err.count("\n") == 1 and str(spool) in err and "holds 4 jobs" in err, err
    assert "has 6;" in err, err
    assert "--fresh" in err, err
    assert (work / ".c.condor.jrs").exists()  # nothing half-done: the journal is kept
