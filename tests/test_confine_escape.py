"""A job's `setsid`, double-forked daemon never outlives the job, on every path
(issue 13, item 3): a one-shot executor (`jrs executor TASKFILE`), a reused one, and
an executor killed with SIGKILL while its job runs (then the daemon and the
launcher reap what it left). In every identity mode of a root node (per-job uids
with and without cgroups, same-named accounts without cgroups) and on a non-root
node. The next job of the same uid (or account) finds nothing of it.

Real processes throughout: jrs.pyz executors, nodes, submitters, and accounts made
by the test (removed after).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from jrs.node import taskfile, unit

from .cluster import Cluster, NonRootCluster
from .cluster import process_alive as _alive
from .test_confine import _procs_of
from .test_executor import wait_for


def _shared_dir() -> Path:
    """A directory every job identity may write (pytest's tmp_path is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="jrs-escape-", dir="/tmp"))
    os.chmod(d, 0o777)
    return d


def _escape_script(d: Path, mark: str) -> str:
    """Start `sleep MARK` in a session of its own through a double fork (its parent
    exits at once, so it is an orphan: in no process group and below no pid of the
    job), note its pid in d/survivor."""
    return (f"sh -c 'setsid sh -c \"echo \\$\\$ > {d}/survivor; exec sleep {mark}\" "
            "</dev/null >/dev/null 2>&1 &'")


@pytest.fixture
def account():
    """A plain local account (a same-named account's or a non-root node's user)."""
    name = "jrsx" + secrets.token_hex(3)
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        uid = pwd.getpwnam(name).pw_uid
        for pid in _procs_of(uid):  # (by pid: only what runs as the account made here)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["userdel", name], capture_output=True)


def _mark() -> str:
    return f"{300 + secrets.randbelow(10 ** 6) / 10 ** 4:.4f}"


def _spec_for(mode: str, acct, tag: str) -> dict:
    uid = 1879990100 + secrets.randbelow(1000)
    if mode == "self":
        return {}
    if mode == "account":
        return {"uid": acct.pw_uid, "gid": acct.pw_gid, "groups": [acct.pw_gid],
                "per_job_uid": False}
    spec = {"uid": uid, "gid": uid, "per_job_uid": True, "tmp_dirs": ["/tmp"]}
    if mode == "per-job uid + cgroup":
        spec.update(cgroup=unit.prepare_root(tag), cgroup_leaf="job")
    return spec


@pytest.mark.parametrize("mode", ["self", "account", "per-job uid", "per-job uid + cgroup"])
def test_a_one_shot_executor_ends_a_double_forked_daemon_with_its_job(pyz, tmp_path, account,
                                                                       mode):
    """`jrs executor TASKFILE` (the one-shot path): the job starts a setsid'ed daemon
    through a double fork and exits 0. When the executor returns the daemon is gone:
    the one-shot executor is a child subreaper too, so the daemon was its descendant
    and went with the job (as a same-named account or the node's own account it has
    neither a cgroup nor a per-job uid that could have reached it)."""
    d = _shared_dir()
    tag = "t" + secrets.token_hex(6)
    spec = _spec_for(mode, account, tag)
    try:
        path = tmp_path / "one.task"
        taskfile.create(str(path), dict({
            "argv": ["/bin/sh", "-c", _escape_script(d, _mark()) + "; sleep 0.3; exit 0"],
            "env": {"PATH": "/usr/bin:/bin"}, "job": "1.0", "attempt": 1, "kill_grace": 1,
            "cwd": "/"}, **spec))
        r = subprocess.run([sys.executable, str(pyz), "executor", str(path)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        st = taskfile.load(str(path))
        assert st.exit["code"] == 0
        survivor = int((d / "survivor").read_text())
        alive = _alive(survivor)
        if alive:
            os.kill(survivor, signal.SIGKILL)
        assert not alive, f"{mode}: the job's double-forked daemon outlived its executor"
    finally:
        for path in spec.get("cgroup", {}).values():
            for p in (os.path.join(path, "job"), path):
                try:
                    os.rmdir(p)
                except OSError:
                    pass
        shutil.rmtree(d, ignore_errors=True)


def _job(work: Path, d: Path, mark: str) -> None:
    """First run: start the double-forked daemon, then sleep (its executor is killed
    meanwhile). The rerun (the same uid or account): note what of the first run it
    can still find."""
    (work / "job.sh").write_text(
        "#!/bin/sh\n"
        f"id -u >> {d}/uids\n"
        f"if [ -e {d}/first ]; then\n"
        f"  pgrep -u $(id -u) -f 'sleep {mark}' > {d}/seen; echo rc=$? >> {d}/seen\n"
        "  exit 0\n"
        "fi\n"
        f"touch {d}/first\n"
        f"{_escape_script(d, mark)}\n"
        "sleep 300\n")
    os.chmod(work / "job.sh", 0o755)
    (work / "c.condor").write_text("executable = job.sh\noutput = out\nerror = err\nqueue\n")


MODES = ["per-job uid + cgroups", "per-job uid, --cgroup=none",
         "same-named account, --cgroup=none", "non-root node"]


@pytest.mark.parametrize("mode", MODES)
def test_an_executor_killed_while_its_job_runs_leaves_nothing_of_the_job(pyz, account, mode):
    """A job starts a setsid'ed daemon through a double fork and sleeps; its executor
    is killed with SIGKILL. The daemon must go (the job's cgroup, else its per-job uid,
    else the launcher: a child subreaper that the dead executor's orphans come to),
    the job is reported lost and runs again under the same uid or account (a range of
    one uid), and that run finds nothing of the first."""
    base = Path(tempfile.mkdtemp(prefix="jrs-escape-", dir="/tmp"))
    os.chmod(base, 0o755)
    d = _shared_dir()
    mark = _mark()
    if mode == "non-root node":
        c = NonRootCluster(pyz, base, account)
    else:
        c = Cluster(pyz, base, slots=[1])
        first = int(c.uid_ranges[0].split("-")[0])
        c.uid_ranges[0] = f"{first}-{first}"  # one uid: the rerun gets the same
    extra = {"per-job uid + cgroups": [], "per-job uid, --cgroup=none": ["--cgroup=none"],
             "same-named account, --cgroup=none": ["--cgroup=none", "--same-user-accounts"],
             "non-root node": []}[mode]
    survivor = None
    try:
        c.start_master()
        c.start_node(0, *extra)
        c.wait_up(1)
        work = base / "w"
        work.mkdir()
        _job(work, d, mark)
        env = None
        cmd_user = None
        if mode == "same-named account, --cgroup=none":  # the submitter is the account
            cmd_user = account
            shutil.copytree(c.conf, work / "conf")
            for p in (work, *work.iterdir(), *(work / "conf").iterdir()):
                os.chown(p, account.pw_uid, account.pw_gid)
            env = dict(c.env, JRS_CACHE=str(work / "cache"))
            p = subprocess.Popen(["runuser", "-u", account.pw_name, "--", "/usr/bin/python3",
                                  str(c.pyz), "submit", "-c", str(work / "conf"),
                                  "--no-progress", "c.condor"], cwd=work, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            c._submits.append(p)
        else:
            p = c.submit("c.condor", cwd=work)
        wait_for(lambda: (d / "survivor").exists() and (d / "survivor").read_text().strip(),
                 timeout=60, what="the job's daemon")
        survivor = int((d / "survivor").read_text())
        assert _alive(survivor)
        tasks = list((base / "node0" / "tasks").glob("*.task"))
        assert len(tasks) == 1, tasks
        st = taskfile.load(str(tasks[0]))
        assert st.executor_pid and taskfile.same_process(st.executor_pid, st.executor_start)
        os.kill(st.executor_pid, signal.SIGKILL)
        wait_for(lambda: not _alive(survivor), timeout=15,
                 what=f"{mode}: the end of the daemon of a job whose executor died")
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err + c.logs()
        if mode == "per-job uid + cgroups":  # the daemon's reap removed the cgroup the
            assert st.cgroup_leaf and st.spec["cgroup"]  # dead executor recorded
            kept = [os.path.join(r, st.cgroup_leaf) for r in st.spec["cgroup"].values()]
            wait_for(lambda: not any(os.path.exists(k) for k in kept), timeout=10,
                     what=f"the dead executor's cgroups {kept} removed")
        uids = (d / "uids").read_text().split()
        assert len(uids) == 2 and uids[0] == uids[1], uids  # the same identity both times
        if cmd_user is not None or mode == "non-root node":
            assert uids[0] == str(account.pw_uid)
        assert (d / "seen").read_text().split() == ["rc=1"], (d / "seen").read_text()
    finally:
        if survivor is not None and _alive(survivor):
            os.kill(survivor, signal.SIGKILL)
        c.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(d, ignore_errors=True)
        time.sleep(0.1)
