"""A reused executor keeps one cgroup (per hierarchy) for all its jobs instead of
making and removing one per job; before each job the cgroup must be empty (the last
job's processes gone, whatever put a process there meanwhile killed). The daemon,
reaping after an executor died, finds the job in the cgroup the executor recorded.
Real launcher, executors and jobs as root with per-job uids, in cgroups of this
machine (the unified hierarchy and v1's pids one)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from jrs.node import taskfile, unit
from jrs.node.launcher import Launcher

from .cluster import process_alive as _alive
from .test_executor import _done, _task, wait_for

HIER = unit.hierarchies()


@pytest.fixture
def cgroups():
    assert HIER["v2"] and HIER["pids"], f"this test needs cgroups: {HIER}"
    roots = unit.prepare_root("t" + secrets.token_hex(6))
    assert set(roots) == {"v2", "pids"}, roots
    yield roots
    for path in roots.values():
        for top, _dirs, _files in os.walk(path, topdown=False):
            for pid in Path(top, "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
        for top, _dirs, _files in os.walk(path, topdown=False):
            try:
                os.rmdir(top)
            except OSError:
                pass


@pytest.fixture
def shared():
    d = Path(tempfile.mkdtemp(prefix="jrs-cgx-", dir="/tmp"))
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _spec(cg: dict, n: int) -> dict:
    uid = 1879990000 + secrets.randbelow(10 ** 5)
    return {"uid": uid + n, "gid": uid + n, "per_job_uid": True, "cgroup": cg,
            "cgroup_leaf": f"job{n}", "cwd": "/", "tmp_dirs": ["/tmp"]}


def _report(d: Path, name: str) -> str:
    """The job's v2 cgroup and the processes in it, into d/name."""
    return (f"g=$(sed -n 's/^0:://p' /proc/self/cgroup); echo $g > {d}/{name}; "
            f"cat {HIER['v2']}$g/cgroup.procs >> {d}/{name}; echo self $$ >> {d}/{name}")


def test_jobs_of_a_reused_executor_share_its_cgroup_and_find_it_empty(cgroups, shared,
                                                                       tmp_path):
    lr = Launcher()
    try:
        d = shared
        first = _task(tmp_path, "a", _report(d, "a") + f"; setsid sleep 300 & echo $! > {d}/left",
                      **_spec(cgroups, 1))
        lr.launch(first)
        wait_for(lambda: _done(first), what="the first job")
        left = int((d / "left").read_text())
        st = taskfile.load(first)
        leaf = st.cgroup_leaf
        assert leaf and leaf.startswith(f"x{st.executor_pid}-"), leaf
        v2 = Path(cgroups["v2"]) / leaf
        assert v2.is_dir() and (Path(cgroups["pids"]) / leaf).is_dir()  # kept for the next
        assert not _alive(left)  # what the job left went with it
        assert not v2.joinpath("cgroup.procs").read_text().split()
        # something gets into the kept cgroup between two jobs: the next job's start
        # must find it and empty the cgroup before its job joins it
        intruder = subprocess.Popen(["sleep", "300"])
        (v2 / "cgroup.procs").write_text(str(intruder.pid))
        (Path(cgroups["pids"]) / leaf / "cgroup.procs").write_text(str(intruder.pid))
        second = _task(tmp_path, "b", _report(d, "b"), **_spec(cgroups, 2))
        lr.launch(second)
        wait_for(lambda: _done(second), what="the second job")
        assert intruder.wait(10) == -9  # killed before the job started
        st2 = taskfile.load(second)
        assert st2.executor_pid == st.executor_pid and st2.cgroup_leaf == leaf
        rel = (d / "b").read_text().split("\n", 1)[0]
        assert rel.endswith("/" + leaf), rel
        lines = (d / "b").read_text().split()
        me = int(lines[-1])
        procs = {int(p) for p in lines[1:-2]}
        assert me in procs and intruder.pid not in procs and len(procs) <= 2, lines
        assert taskfile.load(second).exit["code"] == 0
    finally:
        lr.close()
    # the executors exit with their launcher and take their cgroups with them
    wait_for(lambda: not _alive(st.executor_pid), timeout=10, what="the executor's exit")
    wait_for(lambda: not (Path(cgroups["v2"]) / leaf).exists() and
             not (Path(cgroups["pids"]) / leaf).exists(), timeout=5,
             what="the executor's cgroups removed")


def test_after_an_executor_died_the_daemon_reaps_the_cgroup_it_recorded(cgroups, shared,
                                                                        tmp_path):
    """An executor killed with SIGKILL while its job runs in the executor's own cgroup:
    the daemon's reap (Unit.from_spec with the leaf the executor recorded) kills what
    is in it and removes it; the spec's own leaf would have found nothing."""
    lr = Launcher()
    try:
        path = _task(tmp_path, "a", f"setsid sleep 300 & echo $! > {shared}/left; sleep 300",
                     **_spec(cgroups, 1))
        lr.launch(path)
        wait_for(lambda: (shared / "left").exists() and (shared / "left").read_text().strip()
                 and taskfile.load(path).pid is not None, what="the job")
        st = taskfile.load(path)
        left = int((shared / "left").read_text())
        os.kill(st.executor_pid, 9)
        wait_for(lambda: not taskfile.owner_alive(path), what="the executor's end")
        st = taskfile.load(path)
        assert st.cgroup_leaf and not st.finished
        u = unit.Unit.from_spec(st.spec, "key", st.cgroup_leaf)
        assert set(u.dirs.values()) == {os.path.join(p, st.cgroup_leaf)
                                        for p in cgroups.values()}
        assert u.reap()["clean"]
        for p in u.dirs.values():
            assert not os.path.exists(p)
        wait_for(lambda: not _alive(left), timeout=5, what="the job's daemon killed")
        assert not _alive(st.pid)
    finally:
        lr.close()


def test_200_jobs_on_reused_executors_each_find_their_cgroup_empty(cgroups, shared, tmp_path):
    """200 jobs one after another, each under its own per-job uid, each leaving a
    setsid'ed `sleep` behind: every job finds in its (reused) cgroup only its own two
    processes (the shell and the one counting), never what the one before left."""
    lr = Launcher()
    try:
        n = 200
        mark = f"{300 + secrets.randbelow(10 ** 6) / 10 ** 4:.4f}"
        script = (f"g=$(sed -n 's/^0:://p' /proc/self/cgroup); "
                  f"echo $(wc -l < {HIER['v2']}$g/cgroup.procs) $g >> {shared}/counts; "
                  f"setsid sleep {mark} </dev/null >/dev/null 2>&1 &")
        (shared / "counts").touch()
        os.chmod(shared / "counts", 0o666)  # every job's uid appends
        leaves = []
        for i in range(n):
            path = _task(tmp_path, f"j{i}", script, **_spec(cgroups, i))
            lr.launch(path)
            wait_for(lambda p=path: _done(p), what=f"job {i}")
            assert taskfile.load(path).exit["code"] == 0
            leaves.append(taskfile.load(path).cgroup_leaf)
        counts = [line.split() for line in (shared / "counts").read_text().splitlines()]
        assert len(counts) == n
        assert [c[0] for c in counts] == ["2"] * n, [c for c in counts if c[0] != "2"]
        assert len(set(leaves)) < n // 2, len(set(leaves))  # reused, not one per job
        assert subprocess.run(["pgrep", "-f", f"sleep {mark}"], capture_output=True
                              ).returncode == 1  # none of the 200 left anything running
    finally:
        lr.close()
