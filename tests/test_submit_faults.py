"""Real processes on loopback: what the cluster simulation found on the submitter side,
end to end. A node whose disk is full must not eat the jobs (finding D1); a job being
removed whose node is lost must end removed, not hang the submit (finding D3)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .cluster import Cluster, runs, shared_ledger, wait_for


def fill(directory: Path) -> None:
    """Write into `directory` until its file system is full."""
    with open(directory / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


@pytest.fixture
def full_disk_node(pyz, tmp_path):
    """Node 0's execute directory is a tiny tmpfs, filled once the node is up (so every
    sandbox write fails with ENOSPC); node 1 is healthy, with one slot."""
    c = Cluster(pyz, tmp_path, slots=[2, 1])
    box = c.execute / "node0"
    box.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0711", "jrs-full", str(box)],
                   check=True)
    try:
        c.start()
        fill(box)
        yield c
    finally:
        c.stop()
        subprocess.run(["umount", str(box)], check=True)


def test_a_node_with_a_full_disk_does_not_hold_the_jobs(full_disk_node, tmp_path):
    """D1: the full node refuses each run (`cause: node`); the jobs are not held for
    it ("refused by the nodes 5 times"): they all run on the healthy node, one by one,
    and the full node is rested between its refusals instead of re-offered at once."""
    c = full_disk_node
    work = tmp_path / "w"
    work.mkdir()
    (work / "in").write_bytes(b"x" * 64 * 1024)  # each run writes its input into the box
    ledger = shared_ledger()
    (work / "c.condor").write_text(
        "executable = /bin/sh\n"
        f"arguments = \"-c 'echo $(Process) >> {ledger}; sleep 0.5'\"\n"
        "transfer_input_files = in\nlog = c.log\nqueue 4\n")
    code, _out, err = c.run_submit("c.condor", cwd=work, timeout=90)
    assert code == 0, err + c.logs()
    assert ": 4 jobs, 4 done, 0 failed" in err, err
    assert "held" not in err and "not using it for" in err, err
    assert sorted(runs(ledger)) == ["0", "1", "2", "3"]
    refusals = err.count("cannot take jobs now")
    assert 1 <= refusals <= 8, err  # rested: a few refusals, not one per re-offer


def test_ctrl_c_while_the_node_is_lost_ends_the_submit(pyz, tmp_path):
    """D3: the node daemon dies (kill -9) while a job runs there, then Ctrl-C: the kill
    cannot reach the node; the master declares the node lost (JRS_NODE_TIMEOUT=3 s)
    and the job must end REMOVED. Before, it went back to the queue, the demand of a
    cluster being removed is empty, and the submit never ended."""
    c = Cluster(pyz, tmp_path, slots=[1]).start()
    try:
        work = tmp_path / "w"
        work.mkdir()
        ledger = shared_ledger()
        (work / "c.condor").write_text(
            "executable = /bin/sh\n"
            f"arguments = \"-c 'echo $(Process) >> {ledger}; sleep 4'\"\n"
            "log = c.log\nqueue\n")
        p = c.submit("c.condor", cwd=work)
        wait_for(lambda: len(runs(ledger)) == 1)
        c.kill9(c.nodes[0])
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        _out, err = p.communicate(timeout=40)
        assert p.returncode == 1, err + c.logs()
        assert ": 1 jobs, 0 done, 0 failed, 1 removed" in err, err
        assert time.monotonic() - t0 < 25, err  # the node-lost, not the 20 s give-up
        assert "Job was aborted" in (work / "c.log").read_text()
        assert not (work / ".c.condor.jrs").exists()
        assert os.path.exists(ledger) and sorted(runs(ledger)) == ["0"]
    finally:
        c.stop()


def test_a_run_killed_by_a_revocation_we_missed_runs_again(pyz, tmp_path):
    """D5: the submitter is killed -9, then the node daemon stops (SIGSTOP) past the
    master's node timeout: the master declares it lost and revokes its claim with kill,
    and its `node-lost` goes to a submitter that is gone. The rerun re-attaches the job;
    the node wakes, the master's claim-drop kills the job: the result says `removed`,
    signal 15, for a job nobody is removing. That is a lost run: it runs again and the
    submit ends done, not "killed by signal 15"."""
    c = Cluster(pyz, tmp_path, slots=[1]).start()
    try:
        work = tmp_path / "w"
        work.mkdir()
        ledger = shared_ledger()
        (work / "job.sh").write_text(  # the first run waits to be killed, a rerun ends at once
            f"#!/bin/sh\nif [ -s {ledger} ]; then echo again >> {ledger}; exit 0; fi\n"
            f"echo first >> {ledger}\nsleep 60\n")
        os.chmod(work / "job.sh", 0o755)
        (work / "c.condor").write_text("executable = job.sh\nlog = c.log\nqueue\n")
        p = c.submit("c.condor", cwd=work)
        wait_for(lambda: "first" in runs(ledger))
        c.kill9(p)
        c.nodes[0].send_signal(signal.SIGSTOP)
        try:
            # JRS_NODE_TIMEOUT is 3 s: the master declares the node lost (and revokes
            # its claim) while it sleeps
            wait_for(lambda: c.status()["nodes"][0]["state"] != "up", timeout=30)
        finally:
            c.nodes[0].send_signal(signal.SIGCONT)
        code, _out, err = c.run_submit("c.condor", cwd=work, timeout=60)
        assert code == 0, err + c.logs()
        assert ": 1 jobs, 1 done, 0 failed" in err and "signal 15" not in err, err
        assert "its claim was revoked" in err, err
        assert runs(ledger) == {"first": 1, "again": 1}
    finally:
        c.stop()
