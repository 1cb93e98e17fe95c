"""R1 (review): what one job on a reused executor leaves for the next one."""

from __future__ import annotations

import os
import secrets
import signal
import time

from jrs.node import taskfile, unit

from .cluster import process_alive as _alive
from .test_executor import _done, _task, launcher, wait_for  # noqa: F401


def test_a_setsid_daemon_of_a_job_does_not_outlive_it_on_a_reused_executor(launcher,  # noqa: F811
                                                                           tmp_path):
    """A job (no cgroup, no per-job uid: a non-root node's mode) starts a daemon in a
    session of its own through a double fork, then exits. The daemon is neither in the
    job's process group nor a descendant of the job's pid any more: it is a child of the
    executor (a child subreaper). The job's end must still end it before the executor
    takes the next job (which it could signal, trace or race for files)."""
    pidfile = tmp_path / "daemon.pid"
    first = _task(tmp_path, "j1", f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 60' "
                  "</dev/null >/dev/null 2>&1 & sleep 0.3")
    launcher.launch(first)
    wait_for(lambda: _done(first), what="the first job")
    daemon = int(pidfile.read_text())
    ex = taskfile.load(first).executor_pid
    time.sleep(0.1)
    second = _task(tmp_path, "j2", "sleep 0.2")
    launcher.launch(second)
    wait_for(lambda: _done(second), what="the second job")
    assert taskfile.load(second).executor_pid == ex  # reused
    alive = _alive(daemon)
    if alive:
        os.kill(daemon, signal.SIGKILL)
    assert not alive, "the first job's daemon outlived it, into the next job's time"


def test_a_file_a_uid_left_in_an_unknown_sticky_directory_goes_before_the_uid_is_reused(
        tmp_path):
    """A per-job uid writes a file into a sticky world-writable directory below /tmp whose
    name is not in KNOWN_STICKY (an admin's /tmp/scratch, 1777). /tmp's own mtime does not
    change, so neither the fast path (`needs_uid_visit`) nor `remove_owned` looks there:
    the file survives, and the next job given that uid (another submitter's) owns it."""
    uid = 1879900000 + secrets.randbelow(90000)
    tmp = tmp_path / "tmp"
    scratch = tmp / "scratch"
    scratch.mkdir(parents=True)
    os.chmod(scratch, 0o1777)
    old = time.time() - 60
    for d in (scratch, tmp):
        os.utime(d, (old, old))
    u = unit.Unit({}, "x", uid, uid, True, 10)
    since = time.time()
    left = scratch / "secret"
    left.write_text("job A's data")
    os.chown(left, uid, uid)
    assert os.stat(tmp).st_mtime < since  # only the scratch directory changed
    visit = u.needs_uid_visit(since, (str(tmp),))
    unit.remove_owned(uid, roots=(str(tmp),), since=since)
    assert visit and not left.exists()
