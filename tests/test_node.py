"""The node's own guarantees: taskfiles, executors, process trees, identities, big output."""

from __future__ import annotations

import json
import os
import pwd
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jrs import records
from jrs.node import sandbox, taskfile

from .cluster import Cluster, check_outputs, runs, sweep, wait_for
from .conftest import ROOT, run_jrs

FIXTURE = ROOT / "tests" / "fixtures" / "format1.task"


def test_record_codec_detects_torn_and_corrupt_lines():
    good = records.encode({"e": "a"}) + records.encode({"e": "b"})
    assert records.decode(good) == ([{"e": "a"}, {"e": "b"}], 0)
    torn = good + records.encode({"e": "c"})[:-5]
    assert records.decode(torn) == ([{"e": "a"}, {"e": "b"}], 1)
    flipped = bytearray(good)
    flipped[12] ^= 1
    recs, damaged = records.decode(bytes(flipped))
    assert recs == [{"e": "b"}] and damaged == 1


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(), kids, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), _json_values, max_size=6))
def test_record_codec_round_trips_like_json(record):
    """Records are read with json's C scanner directly (the executor launcher does
    not import json): the same values as json.loads, torn or bad lines dropped."""
    line = records.encode(record)
    assert json.loads(line[9:]) == record
    assert records.decode(line * 2) == ([record, record], 0)


@pytest.mark.parametrize("body", [b"{", b"{}x", b"", b"[1]", b"\xff", b'{"a":1}{}', b"nul"])
def test_record_codec_refuses_what_json_refuses(body):
    line = b"%08x %s\n" % (zlib.crc32(body), body)
    assert records.decode(line) == ([], 1)


def test_record_codec_reads_json_constants_and_whitespace():
    body = b' {"a": NaN, "b": -Infinity, "c": [1.5e300, "\\u00e9"]} '
    recs, damaged = records.decode(b"%08x %s\n" % (zlib.crc32(body), body))
    assert damaged == 0 and recs[0]["b"] == float("-inf") and recs[0]["c"] == [1.5e300, "\u00e9"]
    assert recs[0]["a"] != recs[0]["a"]  # NaN


def test_taskfile_truncated_mid_record_is_still_read(tmp_path):
    path = tmp_path / "t.task"
    taskfile.create(str(path), {"argv": ["/bin/true"], "env": {}, "job": "1.0", "attempt": 1})
    with open(path, "ab") as f:
        f.write(records.encode({"e": "exit", "code": 0, "signal": None})[:20])
    st = taskfile.load(str(path))
    assert st.damaged == 1 and not st.finished and st.spec["job"] == "1.0"


def test_old_format_taskfile_fixture(tmp_path):
    """A format-1 taskfile from an older jrs: no `kind`, fields since removed, an
    event this version does not know. It still reads, and the executor runs it."""
    st = taskfile.load(str(FIXTURE))
    assert st.spec["job"] == "3.1" and st.extra and not st.finished
    copy = tmp_path / "old.task"
    shutil.copy(FIXTURE, copy)
    out = tmp_path / "out.txt"
    recs, _ = records.read(str(copy))
    recs[0]["stdout"] = str(out)
    records.write_new(str(copy), recs)
    r = run_jrs(ROOT / "dist" / "jrs.pyz", "executor", str(copy))
    assert r.returncode == 0, r.stderr
    assert out.read_text() == "old format\n"
    st = taskfile.load(str(copy))
    assert st.finished and st.exit["code"] == 0 and st.executor_pid
    r = run_jrs(ROOT / "dist" / "jrs.pyz", "executor", str(copy))
    assert r.returncode == 1 and "already ended" in r.stderr


NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def open_dir():
    """A directory every account can reach (pytest's own are 0700, under /tmp/pytest-of-root)."""
    d = Path(tempfile.mkdtemp(prefix="jrs-open-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _identity(as_nobody: bool) -> dict:
    return {"uid": NOBODY.pw_uid, "gid": NOBODY.pw_gid, "groups": [NOBODY.pw_gid]} \
        if as_nobody else {}


@pytest.mark.parametrize("as_nobody", [False, True], ids=["as-ourselves", "as-nobody"])
def test_executor_by_hand_reports_exec_failures(open_dir, pyz, as_nobody):
    """Both ways of starting a job (posix_spawn as ourselves; fork, switch identity and
    exec as another account) say which step failed and why."""
    private = open_dir / "private"
    private.mkdir(mode=0o700)
    (private / "prog").write_text("#!/bin/sh\n")
    os.chmod(private / "prog", 0o755)
    (open_dir / "badinterp").write_text("#!/no/such/interpreter\n")
    os.chmod(open_dir / "badinterp", 0o755)
    cases = [(["/nonexistent/prog"], None, "cannot run /nonexistent/prog: No such file"),
             ([str(open_dir)], None, f"cannot run {open_dir}: Permission denied"),
             ([str(open_dir / "badinterp")], None, "badinterp: No such file"),
             (["/bin/true"], "/nonexistent", "cannot enter the working directory "
                                             "/nonexistent: No such file")]
    if as_nobody:  # root may go there; nobody may not
        cases += [([str(private / "prog")], None, "prog: Permission denied"),
                  (["/bin/true"], str(private), "working directory "
                                                f"{private}: Permission denied")]
    for argv, cwd, words in cases:
        path = open_dir / "x.task"
        taskfile.create(str(path), {"argv": argv, "env": {}, "job": "1.0", "attempt": 1,
                                    "cwd": cwd or str(open_dir), **_identity(as_nobody)})
        r = run_jrs(pyz, "executor", str(path))
        assert r.returncode == 1 and words in r.stderr, (argv, cwd, r.stderr)
        st = taskfile.load(str(path))
        assert st.exit["e"] == "exec-failed" and st.exit["errno"]


@pytest.mark.parametrize("as_nobody", [False, True], ids=["as-ourselves", "as-nobody"])
def test_jobs_start_with_default_signal_dispositions(open_dir, pyz, as_nobody):
    """The executor ignores hangups and interrupts (and Python ignores SIGPIPE and
    SIGXFSZ); the job must inherit none of that: a shell treats a signal ignored at
    entry as one it can never trap. (glibc's posix_spawn leaves its two internal
    real-time signals, 32 and 33, ignored; glibc programs take them back at start.)"""
    out = open_dir / "status"
    out.touch()  # the job opens its stdout itself, with its own rights
    os.chown(out, NOBODY.pw_uid, NOBODY.pw_gid)
    path = open_dir / "s.task"
    taskfile.create(str(path), {"argv": ["/bin/cat", "/proc/self/status"], "env": {},
                                "job": "1.0", "attempt": 1, "cwd": str(open_dir),
                                "stdout": str(out), **_identity(as_nobody)})
    r = run_jrs(pyz, "executor", str(path))
    assert r.returncode == 0, r.stderr
    fields = dict(line.split(":\t", 1) for line in out.read_text().splitlines() if ":\t" in line)
    assert int(fields["SigIgn"], 16) & 0x7FFFFFFF == 0, fields["SigIgn"]  # signals 1-31
    assert int(fields["SigBlk"], 16) == 0, fields["SigBlk"]
    assert int(fields["Uid"].split()[0]) == (NOBODY.pw_uid if as_nobody else os.getuid())


def test_liveness_is_the_lock_not_the_pid(tmp_path, pyz):
    path = tmp_path / "s.task"
    taskfile.create(str(path), {"argv": ["/bin/sleep", "5"], "env": {}, "job": "1.0",
                                "attempt": 1})
    p = subprocess.Popen([sys.executable, str(pyz), "executor", str(path)])
    wait_for(lambda: taskfile.load(str(path)).pid is not None)
    assert taskfile.owner_alive(str(path))
    st = taskfile.load(str(path))
    assert taskfile.same_process(st.pid, st.pid_start)
    assert not taskfile.same_process(st.pid, st.pid_start + 1)
    p.send_signal(signal.SIGTERM)  # rm: TERM to the job's group, recorded
    p.wait(10)
    st = taskfile.load(str(path))
    assert st.exit["signal"] == signal.SIGTERM and st.killed == signal.SIGTERM
    assert not taskfile.owner_alive(str(path))


@pytest.fixture
def one_node(pyz, tmp_path):
    c = Cluster(pyz, tmp_path, slots=[2]).start()
    yield c
    c.stop()


def test_executor_killed_is_reported_and_rerun(one_node, tmp_path):
    work = tmp_path / "w"
    ledger = sweep(work, 2, 1.5)
    p = one_node.submit("c.condor", cwd=work)
    wait_for(lambda: ledger.exists() and len(runs(ledger)) == 2)
    tasks = list((tmp_path / "node0" / "tasks").glob("*.task"))
    st = taskfile.load(str(tasks[0]))
    # executors and their launcher go by names of their own in ps, top and pgrep
    assert Path(f"/proc/{st.executor_pid}/comm").read_text() == "jrs-executor\n"
    parent = int(Path(f"/proc/{st.executor_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert Path(f"/proc/{parent}/comm").read_text() == "jrs-launcher\n"
    os.kill(st.executor_pid, signal.SIGKILL)
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err + one_node.logs()
    assert "executor" in err and "died" in err
    assert sorted(runs(ledger).values()) == [1, 2]
    # the orphaned user process of the dead executor was killed
    assert subprocess.run(["pgrep", "-f", "sleep 1.5"], capture_output=True).returncode == 1


def test_reboot_reports_unfinished_jobs_lost_and_they_rerun(one_node, tmp_path):
    """A reboot: the daemon, executors and jobs all die, and the taskfiles carry the old
    boot id. The restarted node reports those jobs lost (not failed); they run again."""
    work = tmp_path / "w"
    ledger = sweep(work, 2, 2.75)
    p = one_node.submit("c.condor", cwd=work)
    wait_for(lambda: ledger.exists() and len(runs(ledger)) == 2)
    one_node.kill9(one_node.nodes[0])
    tasks = sorted((tmp_path / "node0" / "tasks").glob("*.task"))
    assert len(tasks) == 2
    for t in tasks:  # power gone: executors first (so they record nothing), then the jobs
        st = taskfile.load(str(t))
        os.kill(st.executor_pid, signal.SIGKILL)
        os.killpg(st.pid, signal.SIGKILL)
    for t in tasks:
        recs, _ = records.read(str(t))
        for r in recs:
            if r.get("e") == "executor":
                assert r["boot"] == taskfile.boot_id()
                r["boot"] = "00000000-0000-4000-8000-000000000000"  # the previous boot
        records.write_new(str(t), recs)
    one_node.start_node(0)
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err + one_node.logs()
    assert err.count("the node rebooted while the job ran") == 2, err
    assert sorted(runs(ledger).values()) == [2, 2]
    check_outputs(work, 2)


def test_gpus_are_assigned_exclusively(pyz, tmp_path):
    """A node with gpus=2: two 1-GPU jobs at once see different CUDA_VISIBLE_DEVICES; a
    2-GPU job sees both; a job with no GPU request sees none."""
    c = Cluster(pyz, tmp_path, slots=[4], attrs=["gpus=2"]).start()
    try:
        (tmp_path / "g.condor").write_text(
            "executable = /bin/sh\n"
            "arguments = \"-c 'echo $CUDA_VISIBLE_DEVICES; sleep 1'\"\n"
            "output = one.$(Process)\nrequest_gpus = 1\nqueue 2\n"
            "output = two\nrequest_gpus = 2\nqueue\n"
            "output = none\nrequest_gpus = 0\nqueue\n")
        code, _out, err = c.run_submit("g.condor", cwd=tmp_path, timeout=60)
        assert code == 0, err + c.logs()
        ones = sorted((tmp_path / f"one.{i}").read_text().strip() for i in range(2))
        assert ones == ["0", "1"]
        assert (tmp_path / "two").read_text().strip() in ("0,1", "1,0")
        assert (tmp_path / "none").read_text().strip() == ""
    finally:
        c.stop()


def test_process_trees_are_killed(one_node, tmp_path):
    a, b = (f"{40 + random.random():.6f}" for _ in range(2))  # unique to this run
    (tmp_path / "t.condor").write_text(
        f"executable = /bin/sh\narguments = \"-c 'sleep {a} & exit 0'\"\nqueue\n"
        f"arguments = \"-c 'sleep {b} & sleep {b}'\"\nqueue\n")
    p = one_node.submit("t.condor", cwd=tmp_path)
    wait_for(lambda: subprocess.run(["pgrep", "-f", f"^sleep {b}"],
                                    capture_output=True).stdout.count(b"\n") == 2)
    # the first job exited: the child it left behind went with it
    assert subprocess.run(["pgrep", "-f", f"^sleep {a}"], capture_output=True).returncode == 1
    time.sleep(1.1)
    r = run_jrs(one_node.pyz, "rm", "1.1", "-c", str(one_node.conf))
    assert r.returncode == 0, r.stderr
    _out, err = p.communicate(timeout=30)
    assert "1 done, 0 failed, 1 removed" in err
    assert subprocess.run(["pgrep", "-f", f"^sleep {b}"], capture_output=True).returncode == 1


def _hwm_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def test_one_gib_of_stdout_with_bounded_memory(one_node, tmp_path):
    (tmp_path / "big.condor").write_text("executable = /usr/bin/head\narguments = -c 1G /dev/zero\n"
                                         "output = big.out\nqueue\n")
    p = one_node.submit("big.condor", cwd=tmp_path)
    peak = 0
    while p.poll() is None:
        peak = max(peak, _hwm_kb(p.pid))
        time.sleep(0.05)
    assert p.returncode == 0, p.stderr.read()
    assert (tmp_path / "big.out").stat().st_size == 1 << 30
    assert peak < 120_000, f"submit peak RSS {peak} kB"
    assert _hwm_kb(one_node.nodes[0].pid) < 120_000


def _job_runs_as(c: Cluster, base: Path) -> str:
    """The account a job of this cluster runs as (`id -un` on the node)."""
    (base / "id.condor").write_text("executable = /usr/bin/id\narguments = -un\n"
                                    "output = id.txt\nqueue\n")
    code, _out, err = c.run_submit("id.condor", cwd=base)
    assert code == 0, err + c.logs()
    return (base / "id.txt").read_text().strip()


def test_root_node_runs_each_job_under_a_uid_of_its_own(pyz):
    """No --same-user-accounts: a root submitter's jobs get a per-job uid from the
    node's range, the matching gid, no other groups, USER/LOGNAME jrs-UID, HOME and
    the working directory its sandbox."""
    base = Path(tempfile.mkdtemp(prefix="jrs-ident-"))
    os.chmod(base, 0o755)
    try:
        c = Cluster(pyz, base, slots=[1])
        c.start_master()
        c.start_node(0, "--slots=1")
        c.wait_up(1)
        try:
            (base / "id.condor").write_text(
                "executable = /bin/sh\narguments = \"-c 'id -u; id -g; id -G; "
                "echo $USER $LOGNAME $HOME; pwd'\"\noutput = id.txt\nqueue 2\n")
            code, _out, err = c.run_submit("id.condor", cwd=base)
            assert code == 0, err + c.logs()
            uid, gid, groups, names, cwd = (base / "id.txt").read_text().splitlines()
            first, last = (int(x) for x in c.uid_ranges[0].split("-"))
            assert first <= int(uid) <= last and gid == uid and groups == gid
            assert names.split() == [f"jrs-{uid}", f"jrs-{uid}", cwd]
            assert cwd.startswith(str(c.execute / "node0") + "/")
        finally:
            c.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_non_root_node_runs_jobs_as_itself(pyz):
    base = Path(tempfile.mkdtemp(prefix="jrs-user-"))
    os.chmod(base, 0o755)
    try:
        shutil.copy(pyz, base / "jrs.pyz")
        c = Cluster(base / "jrs.pyz", base, slots=[1])
        for p in [base, *base.rglob("*")]:
            os.chown(p, 65534, 65534)
        c.start_master()
        node = subprocess.Popen(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
             str(base / "jrs.pyz"), "node", "-c", str(c.conf), f"--name={c.names()[0]}",
             f"--state={base / 'nstate'}", "-v"],
            env=dict(c.env, HOME=str(base)), stdout=open(base / "node0.log", "ab"),
            stderr=subprocess.STDOUT, start_new_session=True)
        c.nodes[0] = node
        c.wait_up(1)
        try:
            assert _job_runs_as(c, base) == "nobody"
        finally:
            c.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_small_sandboxes_go_at_once_big_ones_in_the_background(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    for i in range(3):
        (small / f"f{i}").write_text("x")
    assert sandbox.remove_if_small(str(small)) and not small.exists()
    nested = tmp_path / "nested"
    (nested / "d").mkdir(parents=True)
    assert not sandbox.remove_if_small(str(nested)) and (nested / "d").is_dir()
    many = tmp_path / "many"
    many.mkdir()
    for i in range(65):
        (many / f"f{i}").write_text("x")
    assert not sandbox.remove_if_small(str(many)) and len(list(many.iterdir())) == 65
    assert sandbox.remove_if_small(str(tmp_path / "gone"))


def test_node_survives_a_hostile_submitter(one_node, tmp_path):
    """A peer holding the secret but no manners: wrong first message, bad job lists,
    runs without a claim (one naming ../escape), data that does not match its header,
    unknown messages. Each is refused; nothing lands outside a sandbox; the node keeps
    serving honest submitters."""
    import asyncio

    from jrs.wire.aio import ConnectionClosed, connect
    from jrs.wire.errors import WireError
    from jrs.wire.keys import root_key

    root = root_key((one_node.conf / "secret").read_bytes())
    port = one_node.ports[0]

    async def session(*messages, data: bytes = b"", expect: int = 0):
        ch = await connect("127.0.0.1", port, root, "submit", peer_roles=frozenset({"node"}))
        replies = []
        try:
            for m in messages:  # sealed raw: a hostile peer ignores our side's rules
                ch.writer.write(ch.conn._seal(json.dumps(m).encode(), b"M"))
            if data:
                ch.writer.write(ch.conn._seal(data, b"D"))
            for _ in range(expect or len(messages)):
                replies.append(await asyncio.wait_for(ch.recv(), 5))
        except (ConnectionClosed, WireError, asyncio.TimeoutError):
            replies.append("closed")
        finally:
            ch.close()
        return replies

    async def go():
        run = {"type": "run", "claim": "nope", "job": "1.0", "attempt": 1,
               "spec": {"executable": "x"}, "files": [{"name": "../escape", "size": 5}]}
        first = await session({"type": "ack", "job": "1.0", "attempt": 1})
        assert first[0]["type"] == "error" and "attach" in first[0]["message"]
        hello = {"type": "attach", "submitter": "ab" * 12, "token": "ab" * 32,
                 "jobs": [[1, 2, 3], "x", ["9.9", -1], ["../9", 1], ["9.9", 2]]}
        replies = await session(hello, run, data=b"12345")
        assert replies[0] == {"type": "attached", "unknown": [["9.9", 2]]}
        assert replies[1]["type"] == "error" and "relative" in replies[1]["message"]
        fine = dict(run, claim="ef" * 12, files=[{"name": "in", "size": 5}])
        replies = await session(hello, fine, data=b"12345")
        assert replies[1]["type"] == "rejected" and "unknown claim" in replies[1]["reason"]
        crafted = dict(fine, job="/../../../../etc/jrs-escape", claim="cd" * 12)
        replies = await session(hello, crafted, data=b"12345")
        assert replies[1]["type"] == "rejected" and "bad job id" in replies[1]["reason"]
        for bad in ({"type": "attach", "submitter": "h" * 24, "jobs": [], "token": "ab" * 32},
                    {"type": "attach", "submitter": "ab" * 12, "jobs": [], "token": "x"},
                    {"type": "attach", "submitter": "ab" * 12, "jobs": []}):
            replies = await session(bad, {"type": "ack", "job": "1.0", "attempt": 1})
            assert replies[0]["type"] == "error" and replies[1] == "closed", replies
            if "token" not in bad:  # contract 8
                assert replies[0]["code"] == "session", replies
        many = dict(run, files=[{"name": f"f{i}", "size": 0} for i in range(100_001)])
        replies = await session(hello, many)
        assert replies[1]["type"] == "error", replies
        short = dict(run, files=[{"name": "f", "size": 100}])
        replies = await session(hello, short, {"type": "ack", "job": "1.0", "attempt": 1})
        assert "closed" in replies  # a message where file data was promised ends it
        replies = await session(hello, {"type": "nonsense"},
                                {"type": "kill", "job": "7.7", "attempt": 3},
                                {"type": "release", "claim": "not-mine"},
                                {"type": "ack", "job": "7.7", "attempt": 3}, expect=2)
        assert replies[1]["type"] == "error"  # the rest are ignored without a word

    asyncio.run(go())
    # `../escape` from a sandbox lands in the execute directory (Cluster.execute), not
    # under tmp_path: look everywhere the node writes, whatever the name became
    landed = [p for where in (one_node.execute, tmp_path) for p in where.rglob("*escape*")]
    assert not landed, landed
    assert not Path("/etc/jrs-escape").exists() and not Path("/etc/jrs-escape.task").exists()
    assert one_node.nodes[0].poll() is None
    (tmp_path / "ok.condor").write_text("executable = /bin/echo\narguments = fine\n"
                                        "output = ok.out\nqueue\n")
    code, _out, err = one_node.run_submit("ok.condor", cwd=tmp_path)
    assert code == 0, err + one_node.logs()
    assert (tmp_path / "ok.out").read_text() == "fine\n"


def test_another_session_with_the_same_submitter_id_sees_nothing(one_node, tmp_path):
    """Issue 13 item 7: the submitter id is public (`jrs status --json`). A secret holder
    attaching to a node with it and no token, or a wrong one, must not receive the
    submitter's results, nor ack or kill its jobs; the honest submit gets its output."""
    import asyncio

    from jrs.wire.aio import ConnectionClosed, connect
    from jrs.wire.keys import root_key

    (tmp_path / "slow.condor").write_text("executable = /bin/sh\n"
                                          "arguments = \"-c 'sleep 4; echo mine'\"\n"
                                          "output = slow.out\nqueue\n")
    p = one_node.submit("slow.condor", cwd=tmp_path)
    wait_for(lambda: any(s["claims"] for s in one_node.status()["submitters"]), timeout=30)
    sid = one_node.status()["submitters"][0]["submitter"]
    root = root_key((one_node.conf / "secret").read_bytes())
    port = one_node.ports[0]

    async def thief(token):
        ch = await connect("127.0.0.1", port, root, "submit", peer_roles=frozenset({"node"}))
        got = []
        try:
            hello = {"type": "attach", "submitter": sid, "jobs": []}
            if token is not None:
                hello["token"] = token
            ch.send(hello)
            # listen for the job's whole life: until a second after the honest submit
            # got its result and ended (30 s at most)
            deadline, ended = time.monotonic() + 30, None
            while time.monotonic() < deadline:
                if ended is None and p.poll() is not None:
                    ended = time.monotonic()
                if ended is not None and time.monotonic() > ended + 1:
                    break
                try:
                    msg = await asyncio.wait_for(ch.recv(), 0.2)
                except asyncio.TimeoutError:
                    continue
                got.append(msg)
                if isinstance(msg, dict) and msg.get("type") in ("finished", "started"):
                    ch.send({"type": "ack", "job": msg["job"], "attempt": msg["attempt"]})
        except ConnectionClosed:
            pass
        finally:
            ch.close()
        return got

    async def go():
        return await asyncio.gather(thief(None), thief("0" * 64))

    stolen = asyncio.run(go())
    for got in stolen:
        kinds = [m.get("type") for m in got if isinstance(m, dict)]
        assert "finished" not in kinds and "started" not in kinds, got
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, (out, err, one_node.logs())
    assert (tmp_path / "slow.out").read_text() == "mine\n"


def test_a_run_on_a_real_claim_with_a_bad_job_id_is_refused(one_node, tmp_path):
    """Issue 13 item 6: a secret holder gets real claims from the master and sends
    `run`s whose job is not CLUSTER.PROC (a path, a newline for the log, `..`) or whose
    attempt is negative. Each is rejected; no taskfile, nothing in /etc; the node serves."""
    import asyncio
    import glob

    from jrs.wire.aio import connect
    from jrs.wire.keys import root_key

    root = root_key((one_node.conf / "secret").read_bytes())
    tag = os.urandom(4).hex()
    bad = [(f"/../../../../etc/jrs-{tag}", 1), (f"1.0\n2026-01-01 FAKE {tag}", 1), ("..", 1),
           ("1.0", -5), ("1", 1), ("1.0.0", 1)]

    async def go():
        m = await connect("127.0.0.1", one_node.mport, root, "submit",
                          peer_roles=frozenset({"master"}))
        sid = "e" * 24
        m.send({"type": "submitter-hello", "submitter": sid, "user": "nobody", "host": "x",
                "pid": 1, "claims": [], "clusters": [], "token": "cd" * 32})
        m.send({"type": "demand", "requests": [{"key": "k", "count": 1, "cpus": 1,
                                                "memory": 1, "gpus": 0}]})
        while True:
            msg = await asyncio.wait_for(m.recv(), 20)
            if msg.get("type") == "claim":
                break
        n = await connect(msg["host"], msg["port"], root, "submit",
                          peer_roles=frozenset({"node"}))
        n.send({"type": "attach", "submitter": sid, "jobs": [], "token": "ab" * 32})
        assert (await asyncio.wait_for(n.recv(), 10))["type"] == "attached"
        replies = []
        for job, attempt in bad:
            await n.send_files({"type": "run", "claim": msg["claim"], "job": job,
                                "attempt": attempt, "spec": {"executable": "/bin/true"},
                                "files": []}, [])
            replies.append(await asyncio.wait_for(n.recv(), 10))
        n.close()
        m.close()
        return replies

    replies = asyncio.run(go())
    assert [r["type"] for r in replies] == ["rejected"] * len(bad), replies
    assert not os.listdir(tmp_path / "node0" / "tasks")
    assert not glob.glob(f"/etc/jrs-{tag}*")
    assert tag not in (tmp_path / "node0.log").read_text()
    assert one_node.nodes[0].poll() is None
