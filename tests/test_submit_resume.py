"""Real processes on loopback: the submitter killed or signalled while its jobs run,
then resumed; a queue count that changes from one expansion to the next."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from .cluster import check_outputs, runs, shared_ledger, sweep, wait_for


def check_story(work: Path, n: int) -> None:
    """Each job ran once, ended normally once (one 005, return value 0), nothing killed."""
    check_outputs(work, n)
    log = (work / "c.log").read_text()
    for event in ("000", "005"):
        procs = re.findall(rf"^{event} \(\d+\.(\d+)\.000\)", log, re.M)
        assert sorted(map(int, procs)) == list(range(n)), (event, procs)
    assert log.count("Normal termination (return value 0)") == n
    assert "Abnormal termination" not in log and "Job was aborted" not in log


def test_resume_after_kill9_reattaches_running_jobs(two_nodes, tmp_path):
    """Issue 12: 12 jobs of 1.5 s on 2 x 2 slots, kill -9 after 4 s, rerun 0.5 s later:
    the jobs that were running are collected, never killed, every job runs once."""
    work = tmp_path / "w"
    ledger = sweep(work, 12, 1.5)
    p = two_nodes.submit("c.condor", cwd=work)
    time.sleep(4)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (work / ".c.condor.jrs").exists()
    collected = len(list((work / "out").glob("*"))) if (work / "out").exists() else 0
    assert len(runs(ledger)) - collected >= 1, "no job was running when the submitter died"
    time.sleep(0.5)
    code, _out, err = two_nodes.run_submit("c.condor", cwd=work)
    assert code == 0, err + two_nodes.logs()
    assert "resuming cluster" in err and "killed by signal" not in err
    counts = runs(ledger)
    assert len(counts) == 12 and set(counts.values()) == {1}, counts
    check_story(work, 12)
    assert not (work / ".c.condor.jrs").exists() and not (work / ".c.condor.jrs-jobs").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_leaves_jobs_running_and_resume_collects_them(two_nodes, tmp_path, signum):
    work = tmp_path / "w"
    ledger = sweep(work, 6, 2.5)
    p = two_nodes.submit("c.condor", cwd=work)
    wait_for(lambda: len(runs(ledger)) >= 4)
    p.send_signal(signum)
    _out, err = p.communicate(timeout=30)
    assert p.returncode == 128 + signum, err
    said = [line for line in err.splitlines() if "left cluster" in line]
    assert len(said) == 1 and "jobs running" in said[0] and "again to resume" in said[0], err
    journal = work / ".c.condor.jrs"
    assert journal.exists() and os.stat(journal).st_mode & 0o777 == 0o600
    st = two_nodes.status()
    assert sum(n["slots_used"] for n in st["nodes"]) == 4  # still running
    code, _out, err = two_nodes.run_submit("c.condor", cwd=work)
    assert code == 0, err + two_nodes.logs()
    counts = runs(ledger)
    assert len(counts) == 6 and set(counts.values()) == {1}, counts
    check_story(work, 6)


def test_a_random_queue_count_is_expanded_once(two_nodes, tmp_path):
    """Issue 12: the count comes from the one expansion that runs, whatever it draws."""
    work = tmp_path / "w"
    work.mkdir()
    ledger = shared_ledger()
    (work / "r.condor").write_text(
        "executable = /bin/sh\n"
        f"arguments = \"-c 'echo $(Process) >> {ledger}'\"\n"
        "log = r.log\nN = $RANDOM_INTEGER(3,30)\nqueue $(N)\n")
    for _ in range(3):
        ledger.write_text("")
        code, _out, err = two_nodes.run_submit("r.condor", cwd=work, timeout=90)
        assert code == 0, err + two_nodes.logs()
        done = runs(ledger)
        n = len(done)
        assert set(done.values()) == {1} and sorted(map(int, done)) == list(range(n))
        assert f": {n} jobs, {n} done, 0 failed" in err, err


def slow_to_die(work: Path, n: int) -> Path:
    """Jobs that take 2 s to die on SIGTERM (a clean-up), exiting 3: a kill lands at
    the node well before the killed run's result can reach the submitter."""
    work.mkdir(exist_ok=True)
    ledger = shared_ledger()
    (work / "job.sh").write_text(f"#!/bin/sh\ntrap 'sleep 2; exit 3' TERM\n"
                                 f"echo $JRS_JOB_ID >> {ledger}\n"
                                 "sleep 60 & wait\necho done $JRS_JOB_ID\n")
    os.chmod(work / "job.sh", 0o755)
    (work / "c.condor").write_text("executable = job.sh\noutput = out/$(Process)\n"
                                   f"log = c.log\nqueue {n}\n")
    return ledger


def test_ctrl_c_cut_short_by_kill9_is_finished_by_the_rerun(two_nodes, tmp_path):
    """Sim finding D4 (seed small 65): Ctrl-C removes the cluster, the submitter is
    killed -9 before the killed runs' results arrive; the same command run again must
    finish the removal: the jobs end REMOVED (exit status 1, 'removed' in the job log),
    none is judged by its exit (code 3: 'failed') nor run again."""
    work = tmp_path / "w"
    ledger = slow_to_die(work, 3)
    p = two_nodes.submit("c.condor", cwd=work)
    wait_for(lambda: len(runs(ledger)) >= 3)
    p.send_signal(signal.SIGINT)
    time.sleep(0.5)  # the kills are out; the jobs clean up for 2 s
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (work / ".c.condor.jrs").exists()
    code, _out, err = two_nodes.run_submit("c.condor", cwd=work, timeout=60)
    assert code == 1, err + two_nodes.logs()
    assert "finishing the removal" in err, err
    assert ": 3 jobs, 0 done, 0 failed, 3 removed" in err, err
    assert set(runs(ledger).values()) == {1}, runs(ledger)  # none ran again
    log = (work / "c.log").read_text()
    assert log.count("Job was aborted") == 3 and "return value 3" not in log, log
    assert not (work / ".c.condor.jrs").exists()
