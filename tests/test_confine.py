"""Node confinement (issue 13): jobs and peers cannot turn a root node against itself.

Real jrs.pyz processes on loopback with a root node giving every job a uid of its
own; each attack of the issue is a job (or a crafted peer) beside an honest submit,
and the test asserts that nothing root-only comes back, nothing appears outside the
sandbox, nothing of the job's uid survives it, and the daemons keep serving. The
races (a link planted before an open, a file swapped for a link while outputs are
collected) run in loops of hundreds of attempts, driving the node's own functions
in-process with an attacker process of the job's uid.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from jrs.errors import ConfigError
from jrs.node import executor, fsafe, identity, sandbox, unit

from .cluster import Cluster
from .conftest import run_jrs

# ------------------------------------------------------------------ pure parts


def test_uid_ranges_that_overlap_ids_in_use_are_refused():
    r = identity.parse_range("1879048192-1879113727")
    assert identity.range_conflicts(r, {}) == []
    files = {"/etc/passwd": "root:x:0:0::/root:/bin/sh\nbob:x:1879048200:100::/h:/bin/sh\n",
             "/etc/subuid": "alice:100000:65536\ncarol:1879000000:65536\n",
             "/etc/group": "g:x:1879113727:\n"}
    got = identity.range_conflicts(r, files)
    assert got == ["/etc/passwd:2: bob has 1879048200", "/etc/subuid:2: carol has "
                   "1879000000-1879065535", "/etc/group:1: g has 1879113727"]
    dyn = identity.range_conflicts(identity.parse_range("60000-62000"), {})
    assert dyn and "61184-65519" in dyn[0]
    for bad in ("", "5", "0-10", "10-5", "a-b", "1-2147483647"):
        with pytest.raises(ConfigError):
            identity.parse_range(bad)


def test_uid_pool_goes_round_and_never_hands_out_a_held_uid():
    pool = identity.UidPool(identity.UidRange(70000, 70003))
    pool.hold(70001)  # a taskfile read back at start
    got = [pool.allocate() for _ in range(3)]
    assert got == [70000, 70002, 70003] and pool.allocate() is None
    pool.release(70000)
    pool.release(70002)
    assert pool.allocate() == 70000  # round the range: 70002 is released last-first
    assert pool.allocate() == 70002 and pool.allocate() is None
    pool.hold(5)  # outside the range: ignored
    assert 5 not in pool.used


def _acct(name, uid, gid, groups, names=()):
    return identity.Account(name, uid, gid, list(groups), list(names))


def test_same_named_accounts_only_when_ordinary():
    accounts = {"alice": _acct("alice", 2001, 2001, [2001, 3000], ["alice", "users"]),
                "root": _acct("root", 0, 0, [0], ["root"]),
                "op": _acct("op", 2010, 0, [0], ["root"]),
                "sup": _acct("sup", 2011, 2011, [2011, 0], ["sup", "root"]),
                "daemon": _acct("daemon", 2, 2, [2], ["daemon"]),
                "dev": _acct("dev", 2012, 2012, [2012, 999], ["dev", "docker"])}
    pool = identity.UidPool(identity.UidRange(80000, 80099))
    p = identity.Policy("account", pool, uid_min=1000, lookup=accounts.get)
    alice = p.identity_for("alice")
    assert (alice.uid, alice.gid, alice.groups, alice.per_job) == (2001, 2001, [2001, 3000],
                                                                     False)
    for name, why in (("root", "uid 0"), ("op", "group 0"), ("sup", "group 0"),
                      ("daemon", "system account"), ("dev", "docker"),
                      ("nobody-here", "")):
        ident = p.identity_for(name)
        assert ident.per_job and ident.uid in pool.range and ident.groups == []
        assert ident.gid == ident.uid and ident.name == f"jrs-{ident.uid}"
        assert why in ident.note, (name, ident.note)
    assert p.identity_for(["not", "a", "name"]).per_job  # a peer's junk
    strict = identity.Policy("job", pool, lookup=accounts.get)
    assert strict.identity_for("alice").per_job  # the default mode never uses accounts
    assert identity.login_uid_min("UID_MIN   500\n") == 500
    assert identity.login_uid_min("# nothing\n") == 1000


def test_the_nobody_account_is_never_a_same_named_account():
    """`nobody` (uid 65534, above UID_MIN) is the identity of many daemons and of the
    node's own scan for world-writable directories: a secret holder who says its name
    is `nobody` must not get it (its job could kill or trace the scan, or any of
    them), nor may `nfsnobody` or an account with the kernel's overflow uid."""
    accounts = {"nobody": _acct("nobody", 65534, 65534, [65534], ["nogroup"]),
                "nfsnobody": _acct("nfsnobody", 4294967294, 4294967294, [], []),
                "other": _acct("other", 65534, 2000, [2000], ["x"])}
    pool = identity.UidPool(identity.UidRange(80000, 80099))
    p = identity.Policy("account", pool, uid_min=1000, lookup=accounts.get)
    for name in accounts:
        ident = p.identity_for(name)
        assert ident.per_job and ident.uid in pool.range, (name, ident.uid)
        assert "nobody" in ident.note, ident.note


def test_account_lookups_are_reused_for_a_while():
    calls = []
    now = [0.0]

    def lookup(name):
        calls.append(name)
        return None

    cached = identity.CachedLookup(lookup, ttl=30.0, clock=lambda: now[0])
    assert cached("x") is None and cached("x") is None and calls == ["x"]
    now[0] = 31.0
    cached("x")
    assert calls == ["x", "x"]
    assert cached(["junk"]) is None and calls == ["x", "x"]


# ------------------------------------------------------------------ accounts and files


@pytest.fixture
def open_dir():
    d = Path(tempfile.mkdtemp(prefix="jrs-confine-", dir="/tmp"))
    os.chmod(d, 0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def secret_file():
    """A root-only file (and directory) whose content must never leave the node."""
    d = Path(tempfile.mkdtemp(prefix="jrs-rootonly-", dir="/root"))
    os.chmod(d, 0o700)
    token = "ROOTONLY-" + secrets.token_hex(8)
    (d / "flag").write_text(token + "\n")
    os.chmod(d / "flag", 0o600)
    yield d, token
    shutil.rmtree(d, ignore_errors=True)


def _as_uid(uid: int, fn) -> int:
    """Run fn() in a child process that is `uid` alone; its exit status (0 = fine)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            fn()
            code = 0
        finally:
            os._exit(code)
    return pid


def test_sandbox_is_the_jobs_from_the_start_and_inputs_never_follow_links(open_dir):
    uid = 1879900001
    box = sandbox.create(str(open_dir), "k1", uid, uid)
    st = os.stat(box.path)
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == 0  # root's while filled
    with box.open_input({"name": "a/b/in.txt", "mode": 0o644}) as f:
        f.write(b"data")
    with box.open_input({"name": "prog", "mode": 0o600}) as f:
        f.write(b"#!/bin/sh\n")
    snap = box.hand_over("prog")
    assert os.stat(box.path).st_uid == uid and set(snap) == {"prog"}
    for rel in ("a", "a/b", "a/b/in.txt", "prog"):
        assert os.lstat(Path(box.path) / rel).st_uid == uid, rel
    assert os.stat(Path(box.path) / "prog").st_mode & 0o111
    for bad in ("../x", "/etc/x", "a/../../x", "", "a//b"):
        with pytest.raises(sandbox.BadName):
            sandbox.safe_name(bad)
    for key in ("../x", "a/b", "..", ""):
        with pytest.raises(sandbox.BadName):
            sandbox.create(str(open_dir), key, uid, uid)
    # a link planted where an input goes is not followed
    other = sandbox.create(str(open_dir), "k2", uid, uid)
    os.symlink("/etc", Path(other.path) / "d")
    os.symlink("/etc/jrs-confine-never", Path(other.path) / "f")
    for name in ("d/jrs-confine-never", "f"):
        with pytest.raises(OSError):
            other.open_input({"name": name, "mode": 0o644})
    assert not Path("/etc/jrs-confine-never").exists()
    other.discard()
    assert not Path(other.path).exists()


def test_outputs_refuse_links_fifos_hard_links_and_foreign_files(open_dir, secret_file):
    d, token = secret_file
    uid = 1879900002
    box = sandbox.create(str(open_dir), "k", uid, uid)
    box.hand_over()
    top = Path(box.path)

    def plant():
        (top / "ok.txt").write_text("fine")
        os.mkdir(top / "dir")
        (top / "dir" / "inner.txt").write_text("inner")
        os.symlink(d / "flag", top / "dir" / "leak")
        os.symlink(d / "flag", top / "link")
        os.symlink("/", top / "slash")
        os.symlink(str(d), top / "linkdir")
        os.mkfifo(top / "fifo")
        (top / "two").write_text("x")
        os.link(top / "two", top / "two.again")
        os.symlink(d / "flag", top / sandbox.STDOUT)

    pid = _as_uid(uid, plant)
    assert os.waitpid(pid, 0)[1] == 0
    (top / "rootfile").write_text(token)  # a file the job does not own
    spec = {"sandbox": box.path, "uid": uid, "stdout": "x",
            "transfer_output_files": ["ok.txt", "dir", "link", "slash", "linkdir", "fifo",
                                      "two", "rootfile", "gone", "/etc/passwd", "../x"]}
    # a listed absolute or `..` name refuses the whole list (checked on the node)
    plan = sandbox.collect(spec)
    plan.close()
    assert "transfer_output_files" in plan.refused and plan.heads == []
    spec["transfer_output_files"] = ["ok.txt", "dir", "link", "slash", "linkdir", "fifo",
                                     "two", "rootfile", "gone"]
    t0 = time.monotonic()
    plan = sandbox.collect(spec)
    assert time.monotonic() - t0 < 2  # no FIFO blocked us, no walk of /
    try:
        assert [h["name"] for h in plan.heads] == ["ok.txt", "dir/inner.txt"]
        data = b"".join(os.read(fd, 100) for fd in (o() for _n, o in plan.items))
        assert data == b"fineinner"
    finally:
        plan.close()
    assert plan.missing == ["link", "slash", "linkdir", "fifo", "two", "rootfile", "gone"]
    assert "symbolic link" in plan.refused["link"] and "FIFO" in plan.refused["fifo"]
    assert "hard links" in plan.refused["two"] and "not owned" in plan.refused["rootfile"]
    assert sandbox.STDOUT in plan.refused
    auto = dict(spec, transfer_output_files=None, snapshot={})
    plan = sandbox.collect(auto)
    plan.close()
    assert sorted(h["name"] for h in plan.heads) == ["ok.txt"]


def test_race_file_swapped_for_a_link_while_collecting(open_dir, secret_file):
    """An attacker of the job's uid keeps swapping `out` between a regular file and a
    link to a root-only file (and a hard link) while the node collects and reads it:
    in 300 attempts the root-only content never comes back."""
    d, token = secret_file
    uid = 1879900003
    box = sandbox.create(str(open_dir), "race", uid, uid)
    box.hand_over()
    top = Path(box.path)

    def attacker():
        (top / "plain").write_text("honest")
        os.symlink(d / "flag", top / "evil")
        while True:
            try:
                os.link(top / "plain", top / "tmp")
                os.rename(top / "tmp", top / "out")
                os.rename(top / "evil", top / "tmp2")
                os.symlink(d / "flag", top / "evil")
                os.rename(top / "tmp2", top / "out")
                (top / "new").write_text("honest")
                os.rename(top / "new", top / "out")
                time.sleep(0.0002)  # let the collector see the honest file now and then
            except OSError:
                pass

    pid = _as_uid(uid, attacker)
    leaked = sent = 0
    try:
        time.sleep(0.05)
        for _ in range(300):
            plan = sandbox.collect({"sandbox": box.path, "uid": uid,
                                    "transfer_output_files": ["out"]})
            try:
                for _name, opener in plan.items:
                    fd = opener()
                    if fd is not None:
                        data = os.read(fd, 4096)
                        os.close(fd)
                        sent += 1
                        leaked += token.encode() in data
            finally:
                plan.close()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert leaked == 0 and sent > 0


def test_race_subdir_swapped_for_a_link_while_the_sandbox_is_made(open_dir, secret_file):
    """The old chown_tree swap: while root makes a sandbox and writes its inputs, a
    process of the job's uid keeps trying to replace the input directory with a link
    to a root-only directory. 200 sandboxes: root never writes or chowns there (the
    sandbox is root's 0700 until it is handed over, and nothing is chowned by path)."""
    d, _token = secret_file
    uid = 1879900006

    def attacker():
        while True:
            for i in range(200):
                top = open_dir / f"c{i}"
                try:
                    os.rename(top / "in", top / "old")
                except OSError:
                    pass
                try:
                    os.symlink(d, top / "in")
                except OSError:
                    pass

    pid = _as_uid(uid, attacker)
    written = 0
    try:
        for i in range(200):
            box = sandbox.create(str(open_dir), f"c{i}", uid, uid)
            with box.open_input({"name": "in/data", "mode": 0o644}) as f:
                f.write(b"x")  # never refused: nothing but root can get in yet
            written += 1
            box.hand_over()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert sorted(p.name for p in d.iterdir()) == ["flag"]
    assert d.stat().st_uid == 0 and (d / "flag").stat().st_uid == 0 and written == 200


def test_race_link_planted_before_the_stdout_open(open_dir, secret_file):
    """A leftover process of the job's own account plants `_condor_stdout` -> a
    root-only path before the job's streams are opened: 250 jobs started the node's
    way (fork, switch identity, open as the job) never create or truncate it."""
    d, _token = secret_file
    uid = 1879900004
    target = d / "planted-target"
    box = sandbox.create(str(open_dir), "plant", uid, uid)
    box.hand_over()
    top = Path(box.path)

    def planter():
        while True:
            try:
                os.symlink(target, top / "tmp")
                os.rename(top / "tmp", top / sandbox.STDOUT)
                os.symlink(d / "flag", top / "tmp")
                os.rename(top / "tmp", top / sandbox.STDOUT)
            except OSError:
                pass

    pid = _as_uid(uid, planter)
    spec = {"argv": ["/bin/true"], "env": {}, "uid": uid, "gid": uid, "per_job_uid": False,
            "cwd": box.path, "stdout": str(top / sandbox.STDOUT), "stderr": None, "stdin": None}
    started = failed = 0
    try:
        for _ in range(250):
            killer = executor._Killer(-1, 1.0, unit.Unit({}, "x", uid, uid, False, 100))
            try:
                child = executor._spawn(spec, killer)
                os.waitpid(child, 0)
                started += 1
            except executor.StartFailed as exc:
                assert "cannot open its stdout" in exc.reason
                failed += 1
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert not target.exists()
    assert (d / "flag").read_text().startswith("ROOTONLY-")
    assert started + failed == 250 and failed > 0


def test_reap_kills_every_process_and_removes_tmp_files_and_ipc():
    """A per-job uid's setsid'ed, double-forked leftovers, its files in /tmp,
    /var/tmp and /dev/shm and its SysV shared memory: gone after reap()."""
    uid = 1879900005
    tag = secrets.token_hex(6)

    def leave_things():
        for where in ("/tmp", "/var/tmp", "/dev/shm"):
            Path(f"{where}/jrs-left-{tag}").write_text("x")
        os.mkdir(f"/tmp/jrs-leftdir-{tag}")
        os.mkdir(f"/tmp/jrs-leftdir-{tag}/sub", 0o000)
        subprocess.run(["ipcmk", "-M", "4096"], check=True, capture_output=True)
        subprocess.Popen(["setsid", "sleep", "300"], start_new_session=True)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(300)
            os._exit(0)

    pid = _as_uid(uid, leave_things)
    assert os.waitpid(pid, 0)[1] == 0
    time.sleep(0.1)
    assert _procs_of(uid)
    assert str(uid) in Path("/proc/sysvipc/shm").read_text()
    u = unit.Unit({}, "x", uid, uid, True, 100)
    got = u.reap()
    assert got["clean"], got
    assert not _procs_of(uid)
    for where in ("/tmp", "/var/tmp", "/dev/shm"):
        assert not Path(f"{where}/jrs-left-{tag}").exists()
    assert not Path(f"/tmp/jrs-leftdir-{tag}").exists()
    assert not any(line.split()[7] == str(uid)
                   for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:])


def _procs_of(uid: int) -> list:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                status = (p / "status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid and fields["State"].split()[0] != "Z":
                out.append(int(p.name))
    return out


def test_non_root_reads_outputs_the_same_hardened_way(open_dir):
    """A non-root node runs jobs as itself and reads their outputs as itself, still
    refusing links (a link to a file it may read does not come back either)."""
    me = pwd.getpwnam("nobody").pw_uid
    work = open_dir / "nb"
    work.mkdir()
    os.chown(work, me, me)

    def as_node():
        os.mkdir(work / "box", 0o700)
        (work / "box" / "a").write_text("a")
        os.symlink("/etc/hostname", work / "box" / "b")
        plan = sandbox.collect({"sandbox": str(work / "box"), "transfer_output_files": ["a", "b"]})
        plan.close()
        assert [h["name"] for h in plan.heads] == ["a"] and plan.missing == ["b"]

    pid = _as_uid(me, as_node)
    assert os.waitpid(pid, 0)[1] == 0


# ------------------------------------------------------------------ real processes


@pytest.fixture(scope="module")
def node(pyz, tmp_path_factory):
    base = Path(tempfile.mkdtemp(prefix="jrs-confine-cluster-", dir="/tmp"))
    os.chmod(base, 0o755)
    c = Cluster(pyz, base, slots=[4])
    c.start_master()
    c.start_node(0, "--job-pids=200")
    c.wait_up(1)
    yield c
    c.stop()
    shutil.rmtree(base, ignore_errors=True)


def _work(c: Cluster) -> Path:
    w = Path(tempfile.mkdtemp(prefix="w-", dir=c.base))
    os.chmod(w, 0o755)
    return w


def _honest(c: Cluster, w: Path) -> None:
    (w / "ok.condor").write_text("executable = /bin/echo\narguments = fine\n"
                                 "output = ok.out\nqueue\n")
    code, _out, err = c.run_submit("ok.condor", cwd=w)
    assert code == 0, err + c.logs()
    assert (w / "ok.out").read_text() == "fine\n"


def _no_secret_under(path: Path, token: str) -> None:
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert token not in p.read_text(errors="replace"), p


def test_shared_fs_stdio_is_opened_as_the_job(node, secret_file):
    """should_transfer_files = NO with output = /etc/cron.d/x and input = a root-only
    file: the job cannot start (its streams are opened with its rights), nothing is
    created in /etc/cron.d, and an honest submit beside it succeeds."""
    d, token = secret_file
    w = _work(node)
    name = f"jrs-attack-{secrets.token_hex(4)}"
    os.makedirs("/etc/cron.d", exist_ok=True)
    (w / "a.condor").write_text(
        f"executable = /bin/cat\nshould_transfer_files = NO\niwd = {w}\n"
        f"input = {d}/flag\noutput = /etc/cron.d/{name}\nqueue\n"
        f"input =\noutput = /etc/cron.d/{name}\nqueue\n")
    code, _out, err = node.run_submit("a.condor", cwd=w)
    assert code != 0
    assert "Permission denied" in err, err
    assert not Path(f"/etc/cron.d/{name}").exists()
    _no_secret_under(w, token)
    _honest(node, w)


def test_outputs_that_point_at_root_files_never_come_back(node, secret_file):
    """A job that links _condor_stdout and listed outputs to root-only files, lists
    absolute and `..` names, a FIFO and a link to /: nothing root-only arrives, the
    node keeps serving, an honest submit succeeds."""
    d, token = secret_file
    w = _work(node)
    script = (f"mkdir dir; echo inner > dir/in; ln -s {d}/flag dir/leak; ln -s {d}/flag link; "
              f"ln -s {d} linkdir; ln -s / slash; mkfifo fifo; echo out; "
              f"ln -sf {d}/flag _condor_stdout; ln -sf {d}/flag _condor_stderr")
    (w / "b.condor").write_text(
        f"executable = /bin/sh\narguments = \"-c '{script}'\"\noutput = o.txt\nerror = e.txt\n"
        "transfer_output_files = dir, link, linkdir, slash, fifo\nqueue\n"
        f"transfer_output_files = {d}/flag, {d}, ../../x\nqueue\n")
    t0 = time.monotonic()
    code, _out, err = node.run_submit("b.condor", cwd=w, timeout=60)
    assert time.monotonic() - t0 < 45
    assert code != 0, err
    _no_secret_under(w, token)
    assert node.nodes[0].poll() is None
    _honest(node, w)


def test_nothing_of_a_jobs_uid_survives_it_not_even_after_rm(node):
    """setsid children, files in /tmp and /dev/shm, SysV IPC: gone when the job ends
    (and when it is removed); a fork bomb stops at --job-pids; the node serves on."""
    w = _work(node)
    tag = secrets.token_hex(5)
    shared = Path(tempfile.mkdtemp(prefix="jrs-ids-", dir="/tmp"))
    os.chmod(shared, 0o777)
    (w / "c.condor").write_text(
        "executable = /bin/sh\n"
        f"arguments = \"-c 'umask 0; id -u >> {shared}/uids; setsid sleep 300 & "
        f"echo x > /tmp/jrs-c-{tag}; echo y > /dev/shm/jrs-c-{tag}; "
        "ipcmk -M 4096 >/dev/null; sleep 0.2'\"\nqueue\n"
        f"arguments = \"-c 'umask 0; id -u >> {shared}/uids; setsid sleep 300 & "
        "sleep 300'\"\nqueue\n"
        f"arguments = \"-c 'i=0; while [ $i -lt 1000 ]; do sleep 60 & i=$((i+1)); done; "
        f"echo $i'\"\noutput = bomb.out\nerror = bomb.err\nqueue\n")
    p = node.submit("c.condor", cwd=w)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (shared / "uids").exists() and len((shared / "uids").read_text().split()) == 2:
            break
        time.sleep(0.1)
    time.sleep(1.0)
    r = run_jrs(node.pyz, "q", "--json", "-c", str(node.conf))
    cluster = max(c["id"] for c in json.loads(r.stdout)["clusters"])
    r = run_jrs(node.pyz, "rm", f"{cluster}.1", "-c", str(node.conf))
    assert r.returncode == 0, r.stderr
    _out, err = p.communicate(timeout=60)
    uids = [int(u) for u in (shared / "uids").read_text().split()]
    assert len(set(uids)) == 2 and "1 removed" in err, err
    time.sleep(0.5)
    for uid in uids:
        assert not _procs_of(uid), uid
        assert not any(line.split()[7] == str(uid)
                       for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:])
    assert not Path(f"/tmp/jrs-c-{tag}").exists() and not Path(f"/dev/shm/jrs-c-{tag}").exists()
    assert "fork" in (w / "bomb.err").read_text() or int((w / "bomb.out").read_text()) < 1000
    shutil.rmtree(shared)
    _honest(node, w)


def test_jobs_cannot_see_each_others_sandboxes(node):
    w = _work(node)
    shared = Path(tempfile.mkdtemp(prefix="jrs-peek-", dir="/tmp"))
    os.chmod(shared, 0o777)
    (w / "d.condor").write_text(
        "executable = /bin/sh\n"
        f"arguments = \"-c 'echo private > mine; pwd > {shared}/where; sleep 3'\"\nqueue\n"
        f"arguments = \"-c 'while [ ! -s {shared}/where ]; do sleep 0.1; done; "
        f"ls .. > {shared}/ls 2>&1; cat $(cat {shared}/where)/mine > {shared}/cat 2>&1; "
        "true'\"\nqueue\n")
    code, _out, err = node.run_submit("d.condor", cwd=w)
    assert code == 0, err + node.logs()
    assert "Permission denied" in (shared / "ls").read_text()
    assert "Permission denied" in (shared / "cat").read_text()
    shutil.rmtree(shared)


def test_node_refuses_ranges_and_layouts_it_cannot_keep(pyz, tmp_path):
    """At start: a --job-uids range overlapping an account of /etc/passwd (one this
    test creates) or systemd's dynamic users, an execute directory job identities
    cannot reach, another node's range on this machine: refused, naming the
    conflict and the fix."""
    c = Cluster(pyz, tmp_path, slots=[1])
    name = "jrst" + secrets.token_hex(3)
    subprocess.run(["useradd", "-M", "-N", "-u", "1879990000", "-s", "/bin/false", name],
                   check=True, capture_output=True)
    try:
        cases = [("--job-uids=1879989990-1879990010", "/etc/passwd:"),
                 ("--job-uids=60000-62000", "61184-65519")]
        for flag, words in cases:
            r = run_jrs(pyz, "node", "-c", str(c.conf), f"--name={c.names()[0]}",
                        f"--state={tmp_path / 's'}", f"--execute={c.execute / 'x'}", flag)
            assert r.returncode == 2 and words in r.stderr, (flag, r.stderr)
            assert name in r.stderr or "systemd" in r.stderr
    finally:
        subprocess.run(["userdel", name], capture_output=True)
    hidden = tmp_path / "hidden"  # pytest's tmp_path is 0700: job identities cannot pass
    r = run_jrs(pyz, "node", "-c", str(c.conf), f"--name={c.names()[0]}",
                f"--state={tmp_path / 's'}", f"--execute={hidden / 'exec'}",
                f"--job-uids={c.uid_ranges[0]}")
    assert r.returncode == 2 and "not searchable" in r.stderr and "chmod o+x" in r.stderr
    fd = identity.lock_range(identity.parse_range(c.uid_ranges[0]))
    try:
        r = run_jrs(pyz, "node", "-c", str(c.conf), f"--name={c.names()[0]}",
                    f"--state={tmp_path / 's'}", f"--execute={c.execute / 'x'}",
                    f"--job-uids={c.uid_ranges[0]}")
        assert r.returncode == 2 and "another node" in r.stderr, r.stderr
    finally:
        os.close(fd)
    shutil.rmtree(c.execute, ignore_errors=True)


def test_state_dir_is_private_and_fsafe_bounds(tmp_path):
    from jrs.node.confine import make_state_dir

    d = tmp_path / "state"
    d.mkdir(mode=0o755)
    make_state_dir(str(d))
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    deep = tmp_path / "deep"
    p = deep
    for _i in range(fsafe.MAX_DEPTH + 2):
        p = p / "d"
    p.mkdir(parents=True)
    (p / "f").write_text("x")
    tree = fsafe.Tree.open(str(deep), os.geteuid())
    try:
        with pytest.raises(fsafe.OverLimit):
            list(tree.walk(["d"], fsafe.Budget()))
        with pytest.raises(fsafe.OverLimit):
            list(tree.walk(["d"], fsafe.Budget(files=3)))
    finally:
        tree.close()


def test_a_huge_directory_is_read_no_further_than_the_file_budget(tmp_path, monkeypatch):
    """R9: the listing was read whole (sorted) before the count bound: a job with
    millions of entries in its sandbox cost the node that much memory and CPU before
    it was held. Now a listing stops one entry past what is left of the budget, in a
    subdirectory (walk) and at the top (top_files) alike."""
    box = tmp_path / "box"
    (box / "d").mkdir(parents=True)
    for i in range(2000):
        (box / "d" / f"f{i}").touch()
        (box / f"t{i}").touch()
    read = []
    real_scandir = os.scandir

    class Counting:
        def __init__(self, it):
            self.it = it

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.it.close()

        def __iter__(self):
            for e in self.it:
                read.append(e.name)
                yield e

    monkeypatch.setattr(fsafe.os, "scandir", lambda p: Counting(real_scandir(p)))
    tree = fsafe.Tree.open(str(box), os.geteuid())
    try:
        with pytest.raises(fsafe.OverLimit):
            list(tree.walk(["d"], fsafe.Budget(files=50)))
        assert len(read) == 51, len(read)
        read.clear()
        with pytest.raises(fsafe.OverLimit):
            list(tree.top_files(fsafe.Budget(files=50)))
        assert len(read) == 51, len(read)
        read.clear()
        assert len(list(tree.walk(["d"], fsafe.Budget(files=2000)))) == 2000  # at the bound
    finally:
        tree.close()


def test_without_cgroups_a_per_job_uid_is_limited_by_rlimit_nproc(open_dir):
    """No pids cgroup: RLIMIT_NPROC on the per-job uid stops a fork bomb, and the
    uid's kill loop still ends every process of it."""
    uid = 1879900007
    out = open_dir / "bomb.out"
    out.touch()
    os.chown(out, uid, uid)
    bomb = ("import os, time\nn = 0\nfor _ in range(200):\n    try:\n        pid = os.fork()\n"
            "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30)\n"
            "        os._exit(0)\n    n += 1\nprint(n, flush=True)\n")
    spec = {"argv": ["/usr/bin/python3", "-I", "-S", "-c", bomb],
            "env": {"PATH": "/usr/bin:/bin"}, "uid": uid, "gid": uid, "per_job_uid": True,
            "cwd": "/", "stdin": None, "stdout": str(out), "stderr": None}
    u = unit.Unit({}, "x", uid, uid, True, 25)
    u.reap()  # whatever an earlier run left
    try:
        killer = executor._Killer(-1, 1.0, u)
        pid = executor._spawn(spec, killer)
        os.waitpid(pid, 0)
        assert int(out.read_text()) == 24  # 25 processes of the uid at most: itself and 24
        assert _procs_of(uid)
    finally:
        assert u.reap()["clean"]
    assert not _procs_of(uid)


def test_same_account_without_cgroups_kills_the_group_and_its_descendants():
    """The fallback unit (a same-named account on a node without cgroups): the
    process group and every descendant found through /proc, a setsid child too."""
    p = subprocess.Popen(["/bin/sh", "-c", "setsid sleep 300 & sleep 300 & wait"],
                         start_new_session=True)
    time.sleep(0.3)
    u = unit.Unit({}, "x", None, None, False, 100)
    u.pgid = p.pid
    kids = unit.descendants(p.pid)
    assert len(kids) == 2
    u.signal(signal.SIGTERM)
    p.wait(5)
    time.sleep(0.1)
    u.kill_all()
    for k in kids:
        try:
            os.waitpid(k, os.WNOHANG)
        except ChildProcessError:
            pass
        state = Path(f"/proc/{k}/stat").read_text().split()[2] if Path(f"/proc/{k}").exists() \
            else "gone"
        assert state in ("Z", "gone"), (k, state)


def test_same_user_accounts_only_for_ordinary_accounts(pyz):
    """--same-user-accounts: an ordinary account's job runs as that account; one whose
    primary group is 0 (like `operator`) and root get a per-job uid instead."""
    base = Path(tempfile.mkdtemp(prefix="jrs-accounts-", dir="/tmp"))
    os.chmod(base, 0o755)
    tag = secrets.token_hex(3)
    plain, gid0 = f"jrsa{tag}", f"jrsz{tag}"
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", plain], check=True, capture_output=True)
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", "-g", "0", gid0], check=True,
                   capture_output=True)
    c = Cluster(pyz, base, slots=[2])
    try:
        c.start_master()
        c.start_node(0, "--same-user-accounts")
        c.wait_up(1)
        seen = {}
        for who in (plain, gid0, "root"):
            home = base / who
            home.mkdir()
            shutil.copytree(c.conf, home / "conf")
            pw = pwd.getpwnam(who)
            for p in (home, home / "conf", *(home / "conf").iterdir()):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            (home / "id.condor").write_text("executable = /bin/sh\narguments = \"-c 'id -u; "
                                            "id -g; id -G'\"\noutput = id.txt\nqueue\n")
            r = subprocess.run(["runuser", "-u", who, "--", "/usr/bin/python3", str(c.pyz),
                                "submit", "-c", str(home / "conf"), "--no-progress",
                                "id.condor"], cwd=home, capture_output=True, text=True,
                               timeout=60, env=dict(c.env, JRS_CACHE=str(home / "cache")))
            assert r.returncode == 0, r.stderr + c.logs()
            seen[who] = [line.split() for line in (home / "id.txt").read_text().splitlines()]
        pw = pwd.getpwnam(plain)
        assert seen[plain][:2] == [[str(pw.pw_uid)], [str(pw.pw_gid)]]
        first, last = (int(x) for x in c.uid_ranges[0].split("-"))
        for who in (gid0, "root"):
            uid, gid, groups = seen[who]
            assert first <= int(uid[0]) <= last and gid == uid and groups == uid, seen
        assert "group 0" in c.logs() and "uid 0" in c.logs()
    finally:
        c.stop()
        for who in (plain, gid0):
            subprocess.run(["userdel", who], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_a_uid_comes_back_only_once_its_executor_has_exited(tmp_path):
    """The executor reaps a per-job uid after sending the result; the daemon hands the
    uid out again only when the sandbox is gone and that executor has exited (its
    lock on the taskfile), never while it may still be killing or cleaning up."""
    import fcntl

    from jrs.node.confine import Confinement

    pool = identity.UidPool(identity.UidRange(90000, 90000))
    conf = Confinement(identity.Policy("job", pool), str(tmp_path), {}, 10, "t")
    ident = conf.policy.identity_for("x")
    assert pool.allocate() is None
    task = tmp_path / "a.task"
    task.write_text("x")
    rd, wr = os.pipe()  # child -> us: it holds the lock
    go_rd, go_wr = os.pipe()  # us -> child: exit now
    pid = os.fork()
    if pid == 0:  # the executor: holds the lock while it reaps
        fd = os.open(task, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(wr, b"locked")
        os.read(go_rd, 1)
        os._exit(0)
    assert os.read(rd, 6) == b"locked"
    token = conf.hold({"uid": ident.uid, "per_job_uid": True}, str(task))
    task.unlink()
    conf.release(token)
    conf.poll()
    assert pool.allocate() is None  # its executor still runs
    os.write(go_wr, b"x")
    os.waitpid(pid, 0)
    conf.poll()
    assert pool.allocate() == 90000 and conf.pending == []
