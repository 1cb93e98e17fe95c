"""A journal or taskfile that was written survives a power cut under its name.

The file's own fdatasync covers its bytes, not its directory entry: a file just
created, or renamed into place, can vanish with a power cut unless its directory is
fsynced after the rename (records.write_new). A power cut cannot be had in a test,
so these record every os.fsync on a directory descriptor (the real call still runs)
and check that the file's own directory was synced after the file got its name.

A taskfile's bytes and name are synced by its executor before the job starts, not by
the node daemon's create (inline in its event loop, where the syncs cost 4-8 ms a
job, the loop stopped for every slot): the executor tests run executor.run, the
function the launcher's executors and `jrs executor` run, in a forked child and
check that the taskfile itself was fdatasynced and then its directory synced, with
the taskfile in it, before the job's process was started."""

from __future__ import annotations

import json
import os
import stat
import traceback

import pytest

from jrs import records
from jrs.client import journal as J
from jrs.cluster.master import ClusterCounter
from jrs.node import executor, taskfile


@pytest.fixture
def dir_syncs(monkeypatch):
    """("sync", directory inode, names in it at that moment) for each os.fsync of a
    directory, ("data", file inode, []) for each os.fdatasync or os.fsync of a file."""
    seen: list = []
    real, real_data = os.fsync, os.fdatasync

    def fsync(fd):
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            seen.append(("sync", st.st_ino, set(os.listdir(fd))))
        else:
            seen.append(("data", st.st_ino, set()))
        return real(fd)

    def fdatasync(fd):
        seen.append(("data", os.fstat(fd).st_ino, set()))
        return real_data(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return seen


def _synced_with(seen: list, path) -> bool:
    """Was `path`'s directory fsynced while `path` was there under its final name?"""
    ino = os.stat(os.path.dirname(path)).st_ino
    return any(d == ino and os.path.basename(path) in names for _, d, names in seen)


def _task(tasks, name: str = "k-1.0.1") -> str:
    tasks.mkdir(exist_ok=True)
    path = str(tasks / f"{name}.task")
    taskfile.create(path, {"argv": ["/bin/sh", "-c", "exit 3"], "env": {"PATH": "/usr/bin:/bin"},
                           "job": "1.0", "attempt": 1, "kill_grace": 1})
    return path


def test_the_daemons_taskfile_create_leaves_the_syncs_to_the_executor(tmp_path, dir_syncs):
    """The node daemon creates taskfiles inline in its event loop: no sync there, of
    the bytes or the name (the rename leaves no temp file)."""
    tasks = tmp_path / "tasks"
    _task(tasks)
    assert dir_syncs == []
    assert os.listdir(tasks) == ["k-1.0.1.task"]
    assert taskfile.load(str(tasks / "k-1.0.1.task")).spec["job"] == "1.0"


def _run_executor(path: str, bound: bool, dir_syncs: list, tmp_path) -> list:
    """Run executor.run(path) in a forked child (it sets signal handlers and waits
    for any child: not in pytest's own process); return, in order, ("sync", inode,
    names) for each directory fsync and ("start",) when the job's process is about
    to be started (executor._spawn), as the child saw them."""
    out = str(tmp_path / "events.json")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            real_spawn = executor._spawn

            def spawn(spec, killer):
                dir_syncs.append(("start",))
                return real_spawn(spec, killer)

            executor._spawn = spawn
            del dir_syncs[:]  # only what the executor does
            executor.run(path, bound=bound)
            with open(out, "w") as f:
                json.dump([[e[0], *e[1:2], sorted(e[2]) if len(e) > 2 else []]
                           for e in dir_syncs], f)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with open(out) as f:
        return json.load(f)


@pytest.mark.parametrize("bound", [False, True], ids=["one-shot", "reused"])
def test_the_executor_syncs_the_taskfiles_directory_before_the_job_starts(
        tmp_path, dir_syncs, bound):
    """The name must be durable before the job can have effects: a power cut after
    the job started must not make the node forget it (fails without the executor's
    sync: nothing else syncs the directory before the start)."""
    path = _task(tmp_path / "tasks")
    events = _run_executor(path, bound, dir_syncs, tmp_path)
    starts = [i for i, e in enumerate(events) if e[0] == "start"]
    assert len(starts) == 1, events
    ino = os.stat(os.path.dirname(path)).st_ino
    synced = [i for i, e in enumerate(events[:starts[0]])
              if e[0] == "sync" and e[1] == ino and os.path.basename(path) in e[2]]
    assert synced, events
    own = os.stat(path).st_ino  # its bytes first (the daemon no longer syncs them)
    assert any(e[0] == "data" and e[1] == own for e in events[:synced[0]]), events
    assert taskfile.load(path).exit["code"] == 3  # the job did run, after the sync


def test_a_new_journal_syncs_its_directory_after_the_rename(tmp_path, dir_syncs):
    path = str(tmp_path / "state" / "sub.jrs-journal")
    jour = J.Journal(path)
    jour.start(7, "sub1", "h", 1, bytes(32))
    jour.close()
    assert _synced_with(dir_syncs, path), dir_syncs
    assert J.read(path).cluster == 7


def test_write_new_without_sync_syncs_nothing(tmp_path, dir_syncs):
    """`sync=False` (files a crash may lose) pays for no directory sync either."""
    records.write_new(str(tmp_path / "x"), [{"e": "a"}], sync=False)
    assert dir_syncs == []


def test_the_masters_id_ceiling_uses_the_same_directory_sync(tmp_path, dir_syncs):
    counter = ClusterCounter(str(tmp_path))
    counter.take()
    assert _synced_with(dir_syncs, str(tmp_path / "next-cluster")), dir_syncs


def test_a_taskfile_a_power_cut_left_empty_is_set_aside_and_the_node_serves(pyz, tmp_path):
    """The daemon's create syncs nothing (the executor does, before the job starts):
    a power cut between the two can leave a taskfile empty or torn under its name.
    Its job never ran; the restarted node sets it aside (`.bad`, a warning naming it)
    and runs jobs as before."""
    from .cluster import Cluster

    c = Cluster(pyz, tmp_path, slots=[1])
    tasks = tmp_path / "node0" / "tasks"
    tasks.mkdir(parents=True, mode=0o700)
    (tmp_path / "node0").chmod(0o700)
    empty = tasks / "0123456789abcdef-1.0.1.task"
    empty.write_bytes(b"")
    torn = tasks / "0123456789abcdef-1.1.1.task"
    torn.write_bytes(b'{"kind":"jrs-task","argv":["/bin/tr')
    work = tmp_path / "w"
    work.mkdir()
    work.chmod(0o755)
    tmp_path.chmod(0o755)
    (work / "j.condor").write_text("executable = /bin/echo\narguments = fine\n"
                                   "output = o.txt\nqueue\n")
    try:
        c.start()
        code, _out, err = c.run_submit("j.condor", cwd=work)
        assert code == 0, err + c.logs()
        assert (work / "o.txt").read_text() == "fine\n"
        for f in (empty, torn):
            assert not f.exists() and f.with_name(f.name + ".bad").exists()
            assert f"{f}: set aside" in (tmp_path / "node0.log").read_text(), c.logs()
    finally:
        c.stop()
