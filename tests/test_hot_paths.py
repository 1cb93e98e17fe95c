"""The per-job hot paths made cheaper for the cluster benchmark (bench/cluster.py
--cpu-breakdown): each shortcut gives the same answer as the long way.

- the node daemon collects a small sandbox's outputs inline (no thread hop), a big
  one or one with transfer_output_files still off its event loop;
- the executor's search for world-writable directories below a temporary directory
  (unit._sticky_in, redone whenever that directory changed) lstats only what the
  listing says is a directory.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from jrs.node import sandbox, unit


def test_only_a_small_automatic_sandbox_is_collected_inline(tmp_path):
    box = tmp_path / "box"
    box.mkdir()
    for i in range(64):
        (box / f"f{i}").write_text("x")
    spec = {"sandbox": str(box)}
    assert sandbox.small_to_collect(spec)
    (box / "f64").write_text("x")  # one entry more than the limit
    assert not sandbox.small_to_collect(spec)
    os.unlink(box / "f64")
    (box / "d").mkdir()  # (64 + a directory: 65 entries)
    assert not sandbox.small_to_collect(spec)
    os.rmdir(box / "d")
    # a list may name a directory of any size: never inline, however small the top
    assert not sandbox.small_to_collect(dict(spec, transfer_output_files=["f1"]))
    assert not sandbox.small_to_collect(dict(spec, transfer_output_files=[]))
    assert not sandbox.small_to_collect({"sandbox": str(tmp_path / "gone")})
    assert not sandbox.small_to_collect({})
    assert sandbox.small_to_collect({"sandbox": str(box)}, limit=64)
    assert not sandbox.small_to_collect({"sandbox": str(box)}, limit=63)


def _fresh(root: Path) -> list:
    unit._sticky_cache.pop(str(root), None)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return sorted(unit._sticky_in(str(root), os.fstat(fd), fd))
    finally:
        os.close(fd)


def test_world_writable_directories_below_a_temporary_one_are_all_found(tmp_path):
    """Files, links (to a world-writable directory too) and closed directories are not
    world-writable directories; sticky or not, down to 8 levels, and found again
    (the cache dropped) once the directory gained one."""
    root = tmp_path / "tmp"
    root.mkdir()
    (root / "file").write_text("x")
    os.mkfifo(root / "fifo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    elsewhere.chmod(0o1777)
    (root / "link").symlink_to(elsewhere)
    (root / "closed").mkdir()
    (root / "closed" / "inner").mkdir()
    (root / "closed" / "inner").chmod(0o1777)  # below a closed one: not reached
    x11 = root / ".X11-unix"
    x11.mkdir()
    x11.chmod(0o1777)
    deep = x11
    for i in range(9):
        deep = deep / f"d{i}"
        deep.mkdir()
        deep.chmod(0o777)
    found = _fresh(root)
    want = [str(x11)] + [str(x11.joinpath(*[f"d{j}" for j in range(i + 1)]))
                         for i in range(7)]  # 8 levels: .X11-unix and d0-d6
    assert found == sorted(want)
    # cached: the same answer while nothing changed; a new one is found at once
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert sorted(unit._sticky_in(str(root), os.fstat(fd), fd)) == found
        time.sleep(0.01)
        (root / "scratch").mkdir()
        (root / "scratch").chmod(0o1777)
        assert sorted(unit._sticky_in(str(root), os.fstat(fd), fd)) == sorted(
            [*found, str(root / "scratch")])
    finally:
        os.close(fd)



def _visit(u, since, roots) -> bool:
    return u.needs_uid_visit(since, roots)


def test_the_clean_up_check_follows_a_temporary_directory_replaced_or_linked(tmp_path):
    """needs_uid_visit walks each root through no link once per executor, then an lstat
    finding the same directory stands for the walk. A root renamed away and made again
    is the new directory (an entry in it: a visit); a root that became a link is
    skipped, as the walk skips it; a root replaced between its stat and the listing of
    its world-writable subdirectories counts as changed."""
    import secrets

    uid = 1879900000 + secrets.randbelow(90000)
    u = unit.Unit({}, "x", uid, uid, True, 10)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    old = time.time() - 60
    os.utime(tmp, (old, old))
    roots = (str(tmp),)
    since = time.time()
    assert not _visit(u, since, roots)
    assert str(tmp) in unit._root_ids  # walked once, known now
    assert not _visit(u, since, roots)
    # renamed away, a new one made in its place (older mtime: not "changed" by itself)
    tmp.rename(tmp_path / "away")
    tmp.mkdir()
    os.utime(tmp, (old, old))
    assert not _visit(u, since, roots)
    (tmp / "f").write_text("")  # the job's file in the new directory
    assert _visit(u, since, roots)
    # a link in its place: skipped (never followed with root's rights), as the walk does
    os.unlink(tmp / "f")
    os.rmdir(tmp)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "g").write_text("")  # modified "now": a visit, if it were followed
    tmp.symlink_to(target)
    assert not _visit(u, since, roots)
    # replaced between the stat and the listing: counted as changed
    os.unlink(tmp)
    tmp.mkdir()
    stale = os.lstat(tmp)
    unit._sticky_cache.pop(str(tmp), None)
    os.rmdir(tmp)
    tmp.mkdir()
    if os.lstat(tmp).st_ino != stale.st_ino:  # (a file system may reuse the inode)
        assert unit._sticky_mtimes(str(tmp), stale) is None
    assert unit._sticky_mtimes(str(tmp), os.lstat(tmp)) == []


def test_a_world_writable_directory_below_is_checked_with_its_listed_mtime(tmp_path):
    """The cached list of world-writable directories carries the mtimes it just
    checked: a new entry in one of them during the job is a visit (no second lstat)."""
    import secrets

    uid = 1879900000 + secrets.randbelow(90000)
    u = unit.Unit({}, "x", uid, uid, True, 10)
    tmp = tmp_path / "tmp"
    (tmp / "scratch").mkdir(parents=True)
    (tmp / "scratch").chmod(0o1777)
    old = time.time() - 60
    for d in (tmp / "scratch", tmp):
        os.utime(d, (old, old))
    roots = (str(tmp),)
    since = time.time()
    assert not _visit(u, since, roots)
    assert not _visit(u, since, roots)  # (now from the cache)
    (tmp / "scratch" / "sock").write_text("")
    assert _visit(u, since, roots)
    os.utime(tmp / "scratch", (old, old))
    assert not _visit(u, since, roots)


def test_a_kill_recorded_after_the_first_read_is_seen_from_its_offset(tmp_path):
    """A reused executor looks for the daemon's `killed` record again once its TERM
    handler is in place, reading only what follows its first read (the spec is not
    decoded twice): a kill appended since is seen, a torn line at the first read is
    read again whole, and from offset 0 the spec itself never counts."""
    from jrs import records
    from jrs.node import executor, taskfile

    path = tmp_path / "t.task"
    taskfile.create(str(path), {"argv": ["/bin/true"], "e": "killed"})  # (a spec field)
    fd = os.open(path, os.O_RDWR | os.O_APPEND)
    try:
        first = os.pread(fd, os.fstat(fd).st_size, 0)
        seen = first.rfind(b"\n") + 1
        assert seen == len(first)
        assert not executor._kill_recorded(fd, seen)
        assert not executor._kill_recorded(fd)  # the spec is never a kill
        records.append(fd, {"e": "executor", "pid": 1})
        assert not executor._kill_recorded(fd, seen)
        line = records.encode({"e": "killed", "signal": 15})
        os.write(fd, line[:10])  # torn: the daemon's append is under way
        torn = os.pread(fd, os.fstat(fd).st_size, 0)
        again = torn.rfind(b"\n") + 1
        assert again < len(torn) and not executor._kill_recorded(fd, again)
        os.write(fd, line[10:])
        assert executor._kill_recorded(fd, again) and executor._kill_recorded(fd, seen)
        assert executor._kill_recorded(fd)
    finally:
        os.close(fd)
