"""The node daemon's shell with real processes: loops that survive, the lock probe,
big concurrent transfers, and results nobody collects."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import subprocess
import threading
import time
from pathlib import Path

from jrs.node import daemon, taskfile

from .cluster import Cluster, wait_for
from .conftest import run_jrs


def test_background_loops_log_their_traceback_and_go_on(caplog):
    calls = []

    async def step():
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError(f"boom {len(calls)}")

    async def go():
        task = asyncio.ensure_future(daemon.forever("the test loop", step, 0.001))
        while len(calls) < 5:
            await asyncio.sleep(0.001)
        task.cancel()

    with caplog.at_level(logging.ERROR, logger="jrs.node"):
        asyncio.run(go())
    failures = [r.getMessage() for r in caplog.records if "the test loop failed" in r.getMessage()]
    assert len(failures) == 2
    assert "Traceback" in failures[0] and "RuntimeError: boom 1" in failures[0]


def test_an_old_executors_flock_still_counts_as_alive(tmp_path):
    """Across an upgrade, an executor of the previous jrs holds a flock, not the new lock."""
    import fcntl

    path = tmp_path / "old.task"
    path.write_text("x")
    assert not taskfile.owner_alive(str(path))
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert taskfile.owner_alive(str(path))
    finally:
        os.close(fd)
    assert not taskfile.owner_alive(str(path))


def test_probing_liveness_never_makes_a_starting_executor_give_up(tmp_path, pyz):
    """The daemon probes each running job's lock every second. The old probe took a
    shared lock for an instant: an executor starting in that instant found its job
    "owned by another executor", left, and the job started 10 s late. Probe in a tight
    loop while executors start: every one of them must run its job."""
    stop = threading.Event()
    probes = [0]

    def prober(path: str) -> None:
        while not stop.is_set():
            taskfile.owner_alive(path)
            probes[0] += 1

    for i in range(20):
        path = tmp_path / f"t{i}.task"
        taskfile.create(str(path), {"argv": ["/bin/true"], "env": {}, "job": f"1.{i}",
                                    "attempt": 0})
        stop.clear()
        threads = [threading.Thread(target=prober, args=(str(path),)) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            r = run_jrs(pyz, "executor", str(path))
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert r.returncode == 0, r.stderr
        st = taskfile.load(str(path))
        assert st.exit is not None and st.exit["code"] == 0, f"job {i} did not run: {r.stderr}"
    assert probes[0] > 1000


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def test_four_jobs_moving_64_mib_each_way_at_once(pyz, tmp_path):
    """Four concurrent jobs on one node, each with a 64 MiB input and a 64 MiB output:
    control messages (started, rejected, ack) must never land between a transfer's data
    frames. Checksums of both directions are compared on the submit host."""
    c = Cluster(pyz, tmp_path, slots=[4]).start()
    try:
        work = tmp_path / "w"
        work.mkdir()
        for i in range(4):
            with open(work / f"in.{i}", "wb") as f:
                for _ in range(64):
                    f.write(os.urandom(1 << 20))
        (work / "job.sh").write_text(
            "#!/bin/sh\nset -e\nsha256sum in.$1 | cut -d' ' -f1\n"
            "(echo $1; cat in.$1) | head -c 67108864 > out.$1\nsha256sum out.$1 | cut -d' ' -f1\n")
        os.chmod(work / "job.sh", 0o755)
        (work / "big.condor").write_text(
            "executable = job.sh\narguments = $(Process)\nshould_transfer_files = YES\n"
            "transfer_input_files = in.$(Process)\noutput = sums.$(Process)\n"
            "error = err.$(Process)\nrequest_memory = 10\nqueue 4\n")
        code, _out, err = c.run_submit("big.condor", cwd=work, timeout=240)
        logs = c.logs()
        assert code == 0, err + logs
        assert "did not match its header" not in err + logs
        for i in range(4):
            sent_sum, made_sum = (work / f"sums.{i}").read_text().split()
            assert sent_sum == _sha(work / f"in.{i}"), f"input {i} arrived damaged"
            assert (work / f"out.{i}").stat().st_size == 64 << 20
            assert made_sum == _sha(work / f"out.{i}"), f"output {i} came back damaged"
        assert list((tmp_path / "node0" / "tasks").glob("*.task")) == []
    finally:
        c.stop()


def test_an_abandoned_result_is_removed_after_its_retention_time(pyz, tmp_path):
    """A submitter killed and never resumed: its finished job's result waits --retain
    (3 s here), shown by `jrs status`, then its taskfile and sandbox go, logged."""
    c = Cluster(pyz, tmp_path, slots=[1])
    c.start_master()
    c.start_node(0, "--retain=3s")
    c.wait_up(1)
    try:
        work = tmp_path / "w"
        work.mkdir()
        (work / "j.condor").write_text("executable = /bin/sh\n"
                                       "arguments = \"-c 'sleep 1.5; echo done'\"\n"
                                       "output = j.out\nqueue\n")
        p = c.submit("j.condor", cwd=work)
        tasks = tmp_path / "node0" / "tasks"
        wait_for(lambda: len(list(tasks.glob("*.task"))) == 1)
        p.kill()  # the submitter dies (SIGKILL); nobody will collect
        p.wait()
        (task,) = tasks.glob("*.task")
        box = Path(taskfile.load(str(task)).spec["sandbox"])
        assert box.is_dir()
        wait_for(lambda: taskfile.load(str(task)).finished, timeout=20)
        finished = time.monotonic()

        def waiting() -> int:
            nodes = c.status()["nodes"]
            return nodes[0].get("results_waiting", 0) if nodes else 0

        wait_for(lambda: waiting() == 1, timeout=10)
        assert time.monotonic() - finished < 3.0 or not task.exists()
        wait_for(lambda: not task.exists() and not box.exists(), timeout=20)
        assert time.monotonic() - finished >= 2.5  # not before the retention time
        log = (tmp_path / "node0.log").read_text()
        assert "was not collected within 3s: removed" in log, log
        wait_for(lambda: waiting() == 0, timeout=10)
        assert c.nodes[0].poll() is None
    finally:
        c.stop()


def test_bad_retain_is_one_line_and_exit_2(pyz, tmp_path):
    c = Cluster(pyz, tmp_path, slots=[1])
    r = subprocess.run(
        [*map(str, [os.sys.executable, pyz]), "node", "-c", str(c.conf),
         f"--name={c.names()[0]}", f"--state={tmp_path / 'n'}", "--retain=7w"],
        capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--retain=7w" in r.stderr and r.stderr.count("\n") == 1, \
        r.stderr
    help_text = run_jrs(pyz, "node", "--help").stdout
    assert "--retain=DURATION" in help_text and "7d" in help_text


def test_messages_sent_during_a_transfer_wait_for_its_last_frame(tmp_path):
    """How the node sends on a submitter session, over a real loopback channel: while a
    `finished` and its 8 MiB go out (send_files) to a slow reader, `started` messages
    are sent from elsewhere (plain send, as the daemon's ToSession does); the reader
    must see the header, every data frame, and only then the messages."""
    from jrs.wire import files as wirefiles
    from jrs.wire.aio import Server, connect
    from jrs.wire.keys import root_key

    root = root_key(b"s" * 32)
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(8 << 20))
    items = [("blob", str(blob))]
    received: list = []

    async def node_side(ch) -> None:
        heads = wirefiles.describe(items)

        async def chatter() -> None:
            for i in range(40):
                ch.send({"type": "started", "job": f"1.{i}", "attempt": 0})
                await asyncio.sleep(0.005)

        noise = asyncio.ensure_future(chatter())
        await asyncio.sleep(0)
        result = {"node": "n", "exit_code": 0, "signal": None, "rusage": None, "started": 1.0,
                  "ended": 2.0, "removed": False}
        await ch.send_files({"type": "finished", "job": "1.0", "attempt": 0, "result": result,
                             "files": heads}, items)
        await noise
        await ch.drain()
        await asyncio.sleep(0.5)

    async def go() -> None:
        server = Server(root, "node", node_side, peer_roles=frozenset({"submit"}))
        host, port = await server.start("127.0.0.1", 0)
        ch = await connect(host, port, root, "submit", peer_roles=frozenset({"node"}))
        try:
            while True:
                item = await asyncio.wait_for(ch.recv(), 10)
                received.append(item if isinstance(item, dict) else len(item))
                await asyncio.sleep(0.0005)  # a slow reader: the node's writes back up
                if sum(1 for r in received if isinstance(r, dict)) == 41:
                    break
        finally:
            ch.close()
            server.close()

    asyncio.run(go())
    kinds = [r["type"] if isinstance(r, dict) else "data" for r in received]
    first = kinds.index("finished")
    last_data = len(kinds) - 1 - kinds[::-1].index("data")
    assert sum(r for r in received if isinstance(r, int)) == 8 << 20
    assert set(kinds[first + 1:last_data + 1]) == {"data"}, \
        "a message landed between a transfer's data frames"
