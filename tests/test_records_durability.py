"""A journal or taskfile that was written survives a power cut under its name.

The file's own fdatasync covers its bytes, not its directory entry: a file just
created, or renamed into place, can vanish with a power cut unless its directory is
fsynced after the rename (records.write_new). A power cut cannot be had in a test,
so these record every os.fsync on a directory descriptor (the real call still runs)
and check that the file's own directory was synced after the file got its name."""

from __future__ import annotations

import os
import stat

import pytest

from jrs import records
from jrs.client import journal as J
from jrs.cluster.master import ClusterCounter
from jrs.node import taskfile


@pytest.fixture
def dir_syncs(monkeypatch):
    """(directory inode, names in it at that moment) for each os.fsync of a directory."""
    seen: list = []
    real = os.fsync

    def fsync(fd):
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            seen.append((st.st_ino, set(os.listdir(fd))))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def _synced_with(seen: list, path) -> bool:
    """Was `path`'s directory fsynced while `path` was there under its final name?"""
    ino = os.stat(os.path.dirname(path)).st_ino
    return any(d == ino and os.path.basename(path) in names for d, names in seen)


def test_a_new_taskfile_syncs_its_directory_after_the_rename(tmp_path, dir_syncs):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    path = str(tasks / "k-1.0.1.task")
    taskfile.create(path, {"job": "1.0", "attempt": 1})
    assert _synced_with(dir_syncs, path), dir_syncs
    assert os.listdir(tasks) == ["k-1.0.1.task"]  # the temp file went with the rename


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
