"""Real processes on loopback: the submitter killed or signalled while its jobs run,
then resumed; a queue count that changes from one expansion to the next."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from .cluster import Cluster, check_outputs, runs, shared_ledger, sweep, wait_for


def check_story(work: Path, n: int) -> None:
    """Each job ran once, ended normally once (one 005, return value 0), nothing killed."""
    check_outputs(work, n)
    log = (work / "c.log").read_text()
    for event in ("000", "005"):
        procs = re.findall(rf"^{event} \(\d+\.(\d+)\.000\)", log, re.M)
        assert sorted(map(int, procs)) == list(range(n)), (event, procs)
    assert log.count("Normal termination (return value 0)") == n
    assert "Abnormal termination" not in log and "Job was aborted" not in log


@pytest.fixture
def two_nodes(pyz, tmp_path):
    c = Cluster(pyz, tmp_path, slots=[2, 2]).start()
    yield c
    c.stop()


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
