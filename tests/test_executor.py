"""Reused executors: one executor runs many jobs over its life, one at a time, each
from its own locked taskfile, and is still what lets the node daemon die.

Real launcher and executor processes (the launcher the node daemon starts), jobs
as real processes; the end-to-end test kills a real node daemon with SIGKILL while
a reused executor runs its second or later job.
"""

from __future__ import annotations

import collections
import os
import re
import secrets
import signal
import tempfile
import time
from pathlib import Path

import pytest

from jrs.node import taskfile, unit
from jrs.node.launcher import Launcher

from .cluster import Cluster, process_alive


def wait_for(pred, timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached in {timeout} s")


def _task(d: Path, name: str, script: str, **spec) -> str:
    path = d / f"{name}.task"
    taskfile.create(str(path), dict({"argv": ["/bin/sh", "-c", script], "env": {"PATH":
                                     "/usr/bin:/bin"}, "job": "1.0", "attempt": 1,
                                     "kill_grace": 1}, **spec))
    return str(path)


def _done(path: str) -> bool:
    return taskfile.load(path).finished and not taskfile.owner_alive(path)


def _children(pid: int) -> list:
    """(pid, state) of every process whose parent is `pid`."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append((int(p.name), fields[0]))
    return out


@pytest.fixture
def launcher():
    lr = Launcher()
    yield lr
    lr.close()


def test_one_executor_runs_jobs_one_after_another(launcher, tmp_path):
    """Three jobs handed out one after another go to the same (idle) executor; each
    has its own taskfile, lock and exit record; the executor never runs two at once."""
    paths = [_task(tmp_path, f"j{i}", f"exit {i}") for i in range(3)]
    pids = []
    for i, path in enumerate(paths):
        launcher.launch(path)
        wait_for(lambda p=path: _done(p), what=f"job {i}")
        st = taskfile.load(path)
        assert st.exit["code"] == i
        pids.append(st.executor_pid)
        time.sleep(0.1)  # it tells the launcher it is idle after unlocking the taskfile
    assert len(set(pids)) == 1, pids
    assert process_alive(pids[0])  # idle, waiting for the next job
    # two at once: the busy executor is not handed the second, a new one is forked
    a = _task(tmp_path, "a", "sleep 0.5")
    b = _task(tmp_path, "b", "sleep 0.5")
    launcher.launch(a)
    launcher.launch(b)
    wait_for(lambda: _done(a) and _done(b))
    ea, eb = taskfile.load(a).executor_pid, taskfile.load(b).executor_pid
    assert ea != eb and pids[0] in (ea, eb)


def test_a_kill_binds_to_the_taskfile_not_to_the_executors_pid(launcher, tmp_path):
    """A TERM sent for a job that already ended (the daemon's kill arriving late) does
    not touch the next job of the same executor; a kill recorded in the current
    job's taskfile ends only that job, and the executor goes on to the next."""
    first = _task(tmp_path, "first", "exit 0")
    launcher.launch(first)
    wait_for(lambda: _done(first))
    ex = taskfile.load(first).executor_pid
    time.sleep(0.1)
    second = _task(tmp_path, "second", "sleep 30")
    launcher.launch(second)
    wait_for(lambda: taskfile.load(second).pid is not None)
    st = taskfile.load(second)
    assert st.executor_pid == ex
    # what the daemon does for a kill of `first`: record it there, TERM its executor
    taskfile.append_event(first, {"e": "killed", "signal": signal.SIGTERM, "t": time.time()})
    os.kill(ex, signal.SIGTERM)
    time.sleep(0.5)
    assert taskfile.same_process(st.pid, st.pid_start) and not taskfile.load(second).finished
    # now a kill of `second`
    taskfile.append_event(second, {"e": "killed", "signal": signal.SIGTERM, "t": time.time()})
    os.kill(ex, signal.SIGTERM)
    wait_for(lambda: _done(second), timeout=10)
    assert taskfile.load(second).exit["signal"] == signal.SIGTERM
    assert not taskfile.same_process(st.pid, st.pid_start)
    time.sleep(0.1)
    third = _task(tmp_path, "third", "exit 3")
    launcher.launch(third)
    wait_for(lambda: _done(third))
    assert taskfile.load(third).exit["code"] == 3 and taskfile.load(third).executor_pid == ex
    # a kill recorded before its executor took the job: it never starts
    mark = tmp_path / "ran"
    fourth = _task(tmp_path, "fourth", f"touch {mark}")
    taskfile.append_event(fourth, {"e": "killed", "signal": signal.SIGTERM, "t": time.time()})
    launcher.launch(fourth)
    wait_for(lambda: _done(fourth))
    assert taskfile.load(fourth).exit["signal"] == signal.SIGTERM and not mark.exists()


def test_executors_go_when_their_launcher_goes_and_finish_their_job_first(tmp_path):
    """The daemon died (its launcher reads EOF and exits): an idle executor exits at
    once; a busy one finishes its job, records the end, and then exits."""
    lr = Launcher()
    try:
        quick = _task(tmp_path, "quick", "exit 0")
        lr.launch(quick)
        wait_for(lambda: _done(quick))
        idle = taskfile.load(quick).executor_pid
        time.sleep(0.1)
        slow = _task(tmp_path, "slow", "sleep 1.5; exit 7")
        lr.launch(slow)
        wait_for(lambda: taskfile.load(slow).pid is not None)
        assert taskfile.load(slow).executor_pid == idle  # the idle one took it
        other = _task(tmp_path, "other", "exit 0")
        lr.launch(other)
        wait_for(lambda: _done(other))
        spare = taskfile.load(other).executor_pid
        assert spare != idle
        time.sleep(0.1)
    finally:
        lr.close()
    wait_for(lambda: not process_alive(spare), timeout=5, what="the idle executor's exit")
    assert process_alive(idle) and not taskfile.load(slow).finished
    wait_for(lambda: _done(slow), timeout=10)
    assert taskfile.load(slow).exit["code"] == 7
    wait_for(lambda: not process_alive(idle), timeout=5,
             what="the busy executor's exit after its job")


def test_orphans_of_a_job_are_reaped_by_its_executor(launcher, tmp_path):
    """A job that double-forks and exits: the grandchild comes to the executor (a child
    subreaper), not to PID 1, and leaves no zombie when it ends."""
    out = tmp_path / "stat"
    path = _task(tmp_path, "df", f"sh -c '(sleep 0.3; exec cat /proc/self/stat > {out}) &'; "
                 "sleep 1")
    launcher.launch(path)
    wait_for(lambda: _done(path))
    ex = taskfile.load(path).executor_pid
    parent = int(out.read_text().rsplit(")", 1)[1].split()[1])
    assert parent == ex  # the orphan's parent was the executor
    time.sleep(0.2)
    assert not [c for c in _children(ex) if c[1] == "Z"]


def test_a_contained_uid_is_visited_only_when_it_may_have_left_something(tmp_path):
    """The clean-up fast path's test: a temporary directory not modified since the job
    began and no IPC of the uid means no child has to become the uid; a new entry in
    one (or in a known sticky directory below it) means one must."""
    uid = 1879900000 + secrets.randbelow(90000)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    (tmp / ".X11-unix").mkdir()
    os.chmod(tmp / ".X11-unix", 0o1777)  # a sticky world-writable directory of any name
    old = time.time() - 60
    for d in (tmp / ".X11-unix", tmp):
        os.utime(d, (old, old))
    u = unit.Unit({}, "x", uid, uid, True, 10)
    since = time.time()
    roots = (str(tmp), str(tmp_path / "missing"))
    assert not u.needs_uid_visit(since, roots)
    (tmp / ".X11-unix" / "X9").write_text("")  # a socket the job left in a sticky dir
    assert u.needs_uid_visit(since, roots)
    os.utime(tmp / ".X11-unix", (old, old))
    assert not u.needs_uid_visit(since, roots)
    (tmp / "f").write_text("")
    assert u.needs_uid_visit(since, roots)
    assert u.needs_uid_visit(0.0, ())  # no start time: always


def sweep(work: Path, n: int, seconds: float) -> Path:
    """n jobs that append "JOBID EXECUTOR-PID" to a ledger and sleep."""
    work.mkdir(exist_ok=True)
    shared = Path(tempfile.mkdtemp(prefix="jrs-ledger-", dir="/tmp"))
    os.chmod(shared, 0o755)
    ledger = shared / "ledger"
    ledger.touch()
    os.chmod(ledger, 0o666)
    (work / "job.sh").write_text(f"#!/bin/sh\necho $JRS_JOB_ID $PPID >> {ledger}\n"
                                 f"sleep {seconds}\necho done $JRS_JOB_ID\n")
    os.chmod(work / "job.sh", 0o755)
    (work / "c.condor").write_text("executable = job.sh\noutput = out/$(Process)\n"
                                   f"log = c.log\nqueue {n}\n")
    return ledger


def test_daemon_kill9_while_a_reused_executor_runs_a_later_job(pyz, tmp_path):
    """One slot, jobs one after another on the same executor; kill -9 of the node
    daemon while that executor runs its second (or later) job, restart: the job
    finishes, its result is delivered once, no job runs twice, and the old executors
    are gone."""
    # a node away longer than JRS_NODE_TIMEOUT is rightly lost (its jobs rerun): not this test
    c = Cluster(pyz, tmp_path, slots=[1])
    c.env["JRS_NODE_TIMEOUT"] = "30"  # (Cluster sets 3 s; its `env` cannot override it)
    c.start()
    try:
        work = tmp_path / "w"
        ledger = sweep(work, 8, 0.6)
        p = c.submit("c.condor", cwd=work)

        def on_a_reused_executor() -> bool:  # the running job's executor ran one before
            lines = [line.split() for line in ledger.read_text().splitlines()]
            return len(lines) >= 2 and lines[-1][1] in {pid for _, pid in lines[:-1]}

        # reuse is not promised (under load a new executor may be forked), but on one
        # slot it is the rule: one of the first jobs runs on a reused executor
        wait_for(on_a_reused_executor, timeout=60, what="a job on a reused executor")
        lines = [line.split() for line in ledger.read_text().splitlines()]
        assert len(lines) < 8, lines
        executor = int(lines[-1][1])
        k = len(lines)
        c.kill9(c.nodes[0])
        time.sleep(0.3)
        c.start_node(0)
        _out, err = p.communicate(timeout=90)
        assert p.returncode == 0, err + c.logs()
        got = [line.split() for line in ledger.read_text().splitlines()]
        counts = collections.Counter(job for job, _ in got)
        assert len(counts) == 8 and set(counts.values()) == {1}, got
        for i in range(8):
            assert (work / "out" / str(i)).read_text().strip() == f"done 1.{i}"
        log = (work / "c.log").read_text()
        ends = re.findall(r"^005 \(001\.(\d+)\.000\)", log, re.M)
        assert sorted(map(int, ends)) == list(range(8)), ends  # each result once
        assert int(got[k][1]) != executor  # after the restart: a new daemon's executor
        wait_for(lambda: not process_alive(executor), timeout=5, what="the old executor's exit")
    finally:
        c.stop()


def test_without_cgroups_the_executor_kills_every_descendant_of_its_job(launcher, tmp_path):
    """A job that runs as the node's own account with no cgroup (a non-root node): a
    setsid'ed, double-forked child outlives the job's process group; the executor, a
    child subreaper, finds it among its own descendants and kills it when the job
    ends, without walking /proc."""
    secs = f"{300 + secrets.randbelow(10 ** 6) / 10 ** 4:.4f}"
    out = tmp_path / "pid"
    path = _task(tmp_path, "escape", f"sh -c 'setsid sleep {secs} & echo $! > {out}'; "
                 "sleep 0.3; exit 0")
    launcher.launch(path)
    wait_for(lambda: _done(path))
    assert taskfile.load(path).exit["code"] == 0
    left = int(out.read_text())
    time.sleep(0.1)
    assert not process_alive(left), left
