"""`jrs submit --local` stopped by SIGTERM, then run again (real processes).

The throw-away cluster of `--local` ends with the submit, so SIGTERM cannot leave its
jobs running as it does on a real cluster (tests/test_submit_resume.py). It said it
had ("left cluster 1 with 2 jobs running; run `jrs submit FILE` again to resume",
naming a command without --local), and the rerun started from nothing: jobs that had
finished ran again and the job log told their story twice. Now it says what happened,
and the rerun keeps the finished jobs and runs the others again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .cluster import process_alive, runs, shared_ledger, wait_for


def _start_three(pyz, tmp_path, env=None, ignore_term=False):
    """A --local submit of 3 jobs: job 0 ends at once, jobs 1 and 2 sleep on their
    first run only (`ignore_term`: ignoring SIGTERM). Returns (work dir, ledger,
    process, the sleeping jobs' pids) once all three have started and job 0 has
    ended."""
    work = tmp_path / "w"
    work.mkdir()
    ledger = shared_ledger()
    marks = Path(tempfile.mkdtemp(prefix="jrs-marks-", dir="/tmp"))
    os.chmod(marks, 0o777)
    (work / "job.sh").write_text(
        f"#!/bin/sh\necho $JRS_JOB_ID >> {ledger}\n[ $1 = 0 ] && exit 0\n"
        f"[ -e {marks}/done.$1 ] && exit 0\ntouch {marks}/done.$1\n"
        f"echo $$ > {marks}/pid.$1\n" + ("trap '' TERM\n" if ignore_term else "")
        + "exec sleep 60\n")
    os.chmod(work / "job.sh", 0o755)
    (work / "c.condor").write_text("executable = job.sh\narguments = $(Process)\n"
                                   "log = c.log\nqueue 3\n")
    p = subprocess.Popen([sys.executable, str(pyz), "submit", "--local", "--no-progress",
                          "c.condor"], cwd=work, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for(lambda: len(runs(ledger)) == 3 and (work / "c.log").exists()
                 and (work / "c.log").read_text().count("\n005 ") + (
                     work / "c.log").read_text().startswith("005") >= 1
                 and all((marks / f"pid.{i}").exists() for i in (1, 2)), timeout=60)
        time.sleep(0.3)  # the pid files are complete
        pids = [int((marks / f"pid.{i}").read_text()) for i in (1, 2)]
    except BaseException:
        p.kill()
        p.communicate()
        raise
    return work, ledger, p, pids


def _rerun_keeps_the_finished(pyz, work, ledger) -> None:
    r = subprocess.run([sys.executable, str(pyz), "submit", "--local", "--no-progress",
                        "c.condor"], cwd=work, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert ": 3 jobs, 3 done, 0 failed" in r.stderr, r.stderr
    ran = runs(ledger)
    assert ran == {ran_id: (1 if ran_id.endswith(".0") else 2) for ran_id in ran} \
        and len(ran) == 3, ran  # the finished job 0 is not run again
    log = (work / "c.log").read_text()
    assert log.count("Normal termination (return value 0)") == 3, log
    assert log.count("Job submitted") == 3, log
    assert not (work / ".c.condor.jrs").exists()


def test_sigterm_of_a_local_submit_says_its_jobs_stopped_and_the_rerun_keeps_the_finished(
        pyz, tmp_path):
    work, ledger, p, pids = _start_three(pyz, tmp_path)
    try:
        p.send_signal(signal.SIGTERM)
        _out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 128 + signal.SIGTERM, err
    said = [line for line in err.splitlines() if "SIGTERM" in line]
    assert len(said) == 1, err
    assert "stopped the local cluster and its 2 running jobs" in said[0], err
    assert "jrs submit --local c.condor" in said[0] and "finished ones kept" in said[0], err
    wait_for(lambda: not any(process_alive(pid) for pid in pids), timeout=20)  # as it said
    assert (work / ".c.condor.jrs").exists()
    _rerun_keeps_the_finished(pyz, work, ledger)


def _local_dirs(tmp: Path) -> list:
    return [d.name for d in tmp.iterdir() if d.name.startswith("jrs-local-")]


def test_kill_9_of_a_local_submit_takes_its_jobs_and_directory_along(pyz, tmp_path):
    """Nothing could ever collect the jobs of a --local cluster whose submit died
    without stopping it: they ran on to their end as orphans and its directory stayed
    in /tmp. Its launcher owns the cluster now: at the submit's death it kills the
    jobs and removes the directory; the rerun keeps the finished job."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    work, ledger, p, pids = _start_three(pyz, tmp_path, dict(os.environ, TMPDIR=str(tmp)))
    assert _local_dirs(tmp), list(tmp.iterdir())
    p.kill()
    p.communicate(timeout=10)
    wait_for(lambda: not any(process_alive(pid) for pid in pids), timeout=20)
    wait_for(lambda: not _local_dirs(tmp), timeout=20)
    assert (work / ".c.condor.jrs").exists()
    _rerun_keeps_the_finished(pyz, work, ledger)


def test_kill_9_of_a_local_submit_removes_its_directory_only_once_its_jobs_are_gone(
        pyz, tmp_path):
    """The launcher waits for every executor before it removes the directory: jobs that
    ignore TERM run on through their grace (1 s here), in the directory, and only once
    their KILL has ended them does it go (removed at once, it went while they ran)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), JRS_KILL_GRACE="1")
    _work, _ledger, p, pids = _start_three(pyz, tmp_path, env, ignore_term=True)
    try:
        assert _local_dirs(tmp), list(tmp.iterdir())
        p.kill()
        deadline = time.monotonic() + 20
        while _local_dirs(tmp):
            assert time.monotonic() < deadline, "the directory stayed"
            time.sleep(0.01)
        alive = [pid for pid in pids if process_alive(pid)]
        assert alive == [], f"the directory went while jobs {alive} still ran"
        p.communicate(timeout=10)
    finally:
        for pid in pids:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if p.poll() is None:
            p.kill()
