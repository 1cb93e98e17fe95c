"""The kept scan for world-writable directories (node/scancache.py): taken at a
restart only when it is this node's own scan (same key), young enough, and a file
root alone could have written; anything else means a fresh scan."""

from __future__ import annotations

import os

import pytest

from jrs.node import scancache, unit

ANSWER = b"T /tmp/team/scratch\0S /var/x/pub\0"


@pytest.fixture
def d(tmp_path):
    p = tmp_path / "scan"
    p.mkdir(mode=0o700)
    return str(p)


def test_a_young_scan_of_the_same_key_is_taken(d):
    k = scancache.key(unit.scan_args((1000, 2000)), 65534, 65534)
    scancache.save(k, ANSWER, scancache.now() - 5, d)
    data, age = scancache.load(k, 60, d)
    assert data == ANSWER and 5 <= age < 10
    assert unit.parse_scan(data) == (("/tmp/team/scratch",), ("/var/x/pub",))
    assert oct(os.stat(os.path.join(d, k)).st_mode & 0o777) == "0o600"


def test_another_scan_is_another_key():
    base = scancache.key(unit.scan_args((1000, 2000)), 65534, 65534)
    assert scancache.key(unit.scan_args((1000, 2001)), 65534, 65534) != base  # uid range
    assert scancache.key(unit.scan_args((1000, 2000)), 65533, 65534) != base  # identity
    assert scancache.key(unit.scan_args((1000, 2000)), 65534, 65534) == base


def test_an_old_scan_or_one_of_another_key_is_not_taken(d):
    k = scancache.key(unit.scan_args((1000, 2000)), 65534, 65534)
    scancache.save(k, ANSWER, scancache.now() - 100, d)
    assert scancache.load(k, 60, d) is None  # older than a period
    assert scancache.load(k, 200, d) is not None
    other = scancache.key(unit.scan_args((3000, 4000)), 65534, 65534)
    os.rename(os.path.join(d, k), os.path.join(d, other))  # the name, not the head
    assert scancache.load(other, 200, d) is None
    scancache.save(k, ANSWER, scancache.now() + 100, d)  # from the future: not ours
    assert scancache.load(k, 200, d) is None


@pytest.mark.parametrize("spoil", ["file group-writable", "dir world-writable", "symlink",
                                   "fifo", "not our magic", "too big"])
def test_a_file_root_alone_could_not_have_written_is_not_taken(d, tmp_path, spoil):
    k = scancache.key(unit.scan_args((1000, 2000)), 65534, 65534)
    scancache.save(k, ANSWER, scancache.now(), d)
    path = os.path.join(d, k)
    assert scancache.load(k, 60, d) is not None
    if spoil == "file group-writable":
        os.chmod(path, 0o620)
    elif spoil == "dir world-writable":
        os.chmod(d, 0o777)
    elif spoil == "symlink":
        real = tmp_path / "elsewhere"
        os.rename(path, real)
        os.symlink(real, path)
    elif spoil == "fifo":
        os.unlink(path)
        os.mkfifo(path, 0o600)
    elif spoil == "not our magic":
        with open(path, "r+b") as f:
            f.write(b"xrs")
    else:
        with open(path, "ab") as f:
            f.truncate(unit.SCAN_BYTES + 4096)
    assert scancache.load(k, 60, d) is None


def test_old_and_surplus_files_are_pruned(d):
    for i in range(scancache.KEEP + 5):
        scancache.save(f"k{i:04d}", ANSWER, scancache.now(), d)
        os.utime(os.path.join(d, f"k{i:04d}"), (1000 + i, 1000 + i) if i < 3 else None)
    scancache.save("last", ANSWER, scancache.now(), d)
    names = set(os.listdir(d))
    assert len(names) <= scancache.KEEP and "last" in names
    assert not names & {"k0000", "k0001", "k0002"}  # a day old: gone first


def test_the_next_scan_is_due_a_period_after_the_kept_one(monkeypatch):
    from jrs.node import confine, identity

    monkeypatch.setenv("JRS_SCAN_EVERY", "1800")
    conf = confine.Confinement(identity.Policy("self", self_name="x"), "/x", {}, 1, "t")
    conf.scan_finished(1000.0, age=600.0)
    assert conf.scan_at == 1000.0 + 1200.0 and conf.scans == 1
    conf.scan_finished(5000.0)
    assert conf.scan_at == 5000.0 + 1800.0 and conf.scans == 2


def test_a_restarted_daemon_takes_the_kept_scan_and_dates_the_next_scan_from_it(monkeypatch):
    """The daemon's start-up scan (`NodeDaemon._rescan`) with a kept scan 600 s old: no
    scan process, and the next scan due a period after the kept one, not after the
    restart (the end-to-end test in test_confine_deep cannot tell these apart: the kept
    scan is only seconds old there)."""
    import asyncio
    import time
    import types

    from jrs.node import confine, identity
    from jrs.node.daemon import NodeDaemon

    monkeypatch.setenv("JRS_SCAN_EVERY", "1800")
    conf = confine.Confinement(identity.Policy("self", self_name="x"), "/x", {}, 1, "t")
    asked, spawned = [], []

    def load(k: str, max_age: float, directory: str = scancache.DIR):
        asked.append(max_age)
        return ANSWER, 600.0

    async def no_scan(*args, **_k):
        spawned.append(args)
        raise OSError("no scan process in this test")

    monkeypatch.setattr(scancache, "load", load)
    monkeypatch.setattr(asyncio, "create_subprocess_exec", no_scan)
    before = time.monotonic()
    asyncio.run(NodeDaemon._rescan(types.SimpleNamespace(confine=conf)))
    assert asked == [1800.0] and spawned == [] and conf.scans == 1
    assert before + 1200 <= conf.scan_at <= time.monotonic() + 1200
    asked.clear()
    asyncio.run(NodeDaemon._rescan(types.SimpleNamespace(confine=conf)))  # a due rescan
    assert asked == [] and spawned and conf.scans == 2  # scans, takes no kept one again


def test_a_scan_that_closed_its_output_is_waited_for_not_killed(monkeypatch):
    """A scan whose output has ended is exiting: the daemon waits for its exit (a kill
    at that moment polls and reaps it before asyncio's watcher does, which then reports
    255, and the complete scan was taken as cut short and not kept: CI saw the restarted
    node scan again). The stand-in scan closes its output and exits 0.3 s later."""
    import asyncio
    import types

    from jrs.node import confine, identity
    from jrs.node.daemon import NodeDaemon

    script = ("import os, sys, time; sys.stdout.buffer.write(b'T /tmp/team\\0'); "
              "sys.stdout.flush(); os.close(1); time.sleep(0.3)")
    saved = []
    monkeypatch.setattr(unit, "scan_args", lambda _uids=(0, -1): ["-I", "-S", "-c", script])
    monkeypatch.setattr(unit, "scan_pythons", lambda python=None: ["/usr/bin/python3"])
    monkeypatch.setattr(scancache, "load", lambda *_a, **_k: None)
    monkeypatch.setattr(scancache, "save", lambda k, data, started, **_k: saved.append(data))
    conf = confine.Confinement(identity.Policy("self", self_name="x"), "/x", {}, 1, "t")
    asyncio.run(NodeDaemon._rescan(types.SimpleNamespace(confine=conf)))
    assert saved == [b"T /tmp/team\0"] and conf.scans == 1
