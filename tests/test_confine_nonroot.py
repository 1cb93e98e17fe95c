"""A non-root node runs every job as its own account, so a job may signal the node's
processes. What the node does about a job that stops its executor (kills it: the job
is lost and reruns) or its launcher (continues it). Real processes: the node daemon
runs as an account this test makes."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from jrs.node.stopwatch import StopWatch

from .cluster import NonRootCluster
from .cluster import process_alive as _alive
from .test_confine_escape import _shared_dir, account  # noqa: F401


def test_a_stopped_executor_is_killed_after_two_checks_in_a_row():
    w = StopWatch()
    assert not w.seen("a", True) and not w.seen("a", False)  # a STOP/CONT blip: forgiven
    assert not w.seen("a", True) and w.seen("a", True)  # two in a row: kill
    assert not w.seen("a", True)  # once
    w.learn("a", 5, 1)
    w.learn("b", 6, 1)
    assert w.keep(["b"]) == ["a"] and w.executor("a") is None and w.executor("b") == (6, 1)


def _cluster(pyz, acct, script: str, queue: int = 1):
    base = Path(tempfile.mkdtemp(prefix="jrs-nonroot-", dir="/tmp"))
    os.chmod(base, 0o755)
    c = NonRootCluster(pyz, base, acct)
    c.start()
    work = base / "w"
    work.mkdir()
    (work / "job.sh").write_text(script)
    os.chmod(work / "job.sh", 0o755)
    (work / "c.condor").write_text("executable = job.sh\nlog = c.log\noutput = out.$(Process)\n"
                                   f"error = err.$(Process)\nqueue {queue}\n")
    return c, base, work


def test_a_job_that_stops_its_executor_is_lost_and_runs_again(pyz, account):  # noqa: F811
    """The job SIGSTOPs its executor (its parent) and sleeps: the node kills the stopped
    executor, the job is reported lost and runs again (that run ends at once), and
    nothing of the first run is left. Without the check the submit never ends."""
    d = _shared_dir()
    c, base, work = _cluster(pyz, account, "#!/bin/sh\n"
                             f"echo $$ >> {d}/runs\n"
                             f"if [ -e {d}/first ]; then exit 0; fi\n"
                             f"touch {d}/first\nkill -STOP $PPID\nexec sleep 300\n")
    try:
        code, _out, err = c.run_submit("c.condor", cwd=work, timeout=90)
        assert code == 0, err + c.logs()
        first, _second = (int(p) for p in (d / "runs").read_text().split())
        assert not _alive(first)  # the first run's process (its `sleep 300`) is gone
        assert "is stopped" in (base / "node0.log").read_text()
        assert "lost" in err
        log = (work / "c.log").read_text()
        assert len(re.findall(r"^005 ", log, re.M)) == 1  # one end: the rerun's
    finally:
        c.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(d, ignore_errors=True)


def test_a_job_that_stops_the_launcher_does_not_stop_the_node(pyz, account):  # noqa: F811
    """The first job SIGSTOPs the launcher (its executor's parent) and ends; the next
    job needs the launcher: the node continues it, and both jobs end."""
    d = _shared_dir()
    c, base, work = _cluster(pyz, account, "#!/bin/sh\n"
                             f"if [ ! -e {d}/first ]; then touch {d}/first; "
                             "kill -STOP $(ps -o ppid= -p $PPID); fi\n"
                             f"echo ran >> {d}/runs\n", queue=3)
    try:
        code, _out, err = c.run_submit("c.condor", cwd=work, timeout=90)
        assert code == 0, err + c.logs()
        assert (d / "runs").read_text().split() == ["ran"] * 3
        assert "was stopped (SIGSTOP, by a job?): continued it" in (
            base / "node0.log").read_text()
        pid = c.nodes[0].pid
        assert _alive(pid)
    finally:
        c.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(d, ignore_errors=True)
