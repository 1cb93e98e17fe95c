"""R1 (review): what one job on a reused executor leaves for the next one."""

from __future__ import annotations

import time

from jrs.node import taskfile

from .test_executor import _alive, _done, _task, launcher, wait_for  # noqa: F401


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
        import os
        import signal
        os.kill(daemon, signal.SIGKILL)
    assert not alive, "the first job's daemon outlived it, into the next job's time"
