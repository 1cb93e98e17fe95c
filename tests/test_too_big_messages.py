"""R11: a message no frame can carry ends what needed it in one line, never a loop.

`Connection.encode` refuses a body over 16 MiB or over the wire's cap on JSON values
and keys (`connection.MAX_UNITS`: a receiver closes the connection on such a frame).
A submitter's `run` too big for one message used to raise the frame sealer's WireError
inside `_send_run`, a network error: the link closed and node_up sent the same run
again, for ever. A node's `finished` too big (output names full of commas: each counts
as a JSON value) failed its delivery on every attach. Now the job fails (the run) or
is held (the result, its outputs dropped) saying what is too big."""

from __future__ import annotations

import asyncio
import re
import time

from jrs.node import core as nc
from jrs.wire.connection import KIND_MESSAGE, MAX_UNITS, json_units

from .cluster import honest_job_cluster
from .test_hello_flood_cluster import _open, _run
from .test_node_core import finish, start_job
from .test_node_daemon_claim_gone import _Channel, attached_daemon


class _Found:
    """Collected outputs whose names make the `finished` over the cap: 30,000 names of
    80 commas (2.6 M units; 2.7 MB, far under 16 MiB and the node's 8 MiB of names)."""

    def __init__(self) -> None:
        self.heads = [{"name": "," * 80 + str(i), "size": 0, "mode": 0o644}
                      for i in range(30_000)]
        self.items = [(h["name"], None) for h in self.heads]
        self.missing: list = []
        self.refused = {"x": "a reason"}
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_finished_over_the_cap_is_delivered_without_its_outputs(pyz, tmp_path):
    d = attached_daemon(pyz, tmp_path)
    core = d.core
    task = start_job(core)
    (deliver,) = [a for a in finish(core, task) if isinstance(a, nc.Deliver)]
    found = _Found()

    async def scan(st):
        result = nc.result_of(st, "n1")
        result["refused"] = dict(found.refused)
        return result, found

    d._collect = scan
    ch = d.channels[deliver.sid] = _Channel()
    asyncio.run(d._deliver_now(deliver.sid, deliver.key))
    (msg,) = ch.sent
    assert ch.items == [[]], "no output is sent"
    assert msg["type"] == "finished" and msg["files"] == [], msg
    over = msg["result"]["outputs_over_limit"]
    assert over.startswith("the result's description is too big for one message, so no "
                           "output was sent back: 'finished': a message of "), over
    assert f"over the wire's cap of {MAX_UNITS:,}" in over
    assert "refused" not in msg["result"] and msg["result"]["exit_code"] == 0
    assert json_units(ch.conn.encode(msg)) < 1000
    assert found.closed


def test_a_session_sending_a_frame_over_the_cap_is_closed_and_an_honest_submit_runs(
        pyz, tmp_path):
    """A real node and master: one authenticated submitter session sends one frame of
    [0], over the cap (4.5 MiB, a decode of ~0.6 s here) and is closed, the node logs
    one line (its per-host limiter's), and the honest submit beside it runs."""
    c, work = honest_job_cluster(pyz, tmp_path)
    try:
        dense = b"[" + b",".join([b"[0]"] * (MAX_UNITS // 2 + 1)) + b"]"
        assert json_units(dense) > MAX_UNITS

        async def scenario():
            out = []
            for port, role in ((c.ports[0], "submit"), (c.mport, "submit")):
                ch = await _open(c, port, role)
                assert ch is not None
                ch.conn.strict = False
                if port == c.mport:
                    ch.send({"type": "submitter-hello", "submitter": "e" * 24, "user": "u",
                             "host": "h", "pid": 1, "claims": [], "clusters": [],
                             "token": "e" * 64})
                    assert (await asyncio.wait_for(ch.recv(), 10))["type"] == "welcome"
                else:
                    ch.send({"type": "attach", "submitter": "e" * 24, "jobs": [],
                             "token": "e" * 64})
                    assert (await asyncio.wait_for(ch.recv(), 10))["type"] == "attached"
                t0 = time.monotonic()
                ch._queue(ch.conn._seal(dense, KIND_MESSAGE))
                try:
                    while True:  # the daemon closes it; nothing is answered first
                        msg = await asyncio.wait_for(ch.recv(), 10)
                        assert not isinstance(msg, dict) or msg["type"] == "error", msg
                except (ConnectionError, OSError, Exception) as exc:
                    out.append((type(exc).__name__, time.monotonic() - t0))
                ch.close()
            submit = await _run(str(pyz), "submit", "-c", str(c.conf), "--no-progress",
                                "j.condor", env=c.env, cwd=work, timeout=60)
            return out, submit

        closed, (code, _out, err) = asyncio.run(scenario())
        print("closed:", closed)
        assert [name for name, _ in closed] == ["ConnectionClosed"] * 2, closed
        assert code == 0, err + c.logs()
        assert (work / "ok.out").read_text() == "through\n"
        for log in ("node0.log", "master.log"):
            text = (c.base / log).read_text()
            lines = [ln for ln in text.splitlines() if "over the wire's cap" in ln]
            assert len(lines) == 1, (log, lines)
            assert "Traceback" not in text, text[-3000:]
        assert c.master.poll() is None and c.nodes[0].poll() is None
    finally:
        c.stop()


def test_a_submit_whose_run_is_over_16_mib_fails_its_job_in_bounded_time(pyz, tmp_path):
    """20 MiB of arguments: the job fails with the reason (jrs submit exits 1, as for a
    job that could not be started), the node is never sent a byte of it, and the
    submit does not reconnect for ever."""
    c, work = honest_job_cluster(pyz, tmp_path)
    try:
        arg = "a" * (1 << 20)
        args = " ".join([arg] * 20)
        (work / "big.condor").write_text(f"executable = /bin/true\narguments = {args}\n"
                                         "log = big.log\nqueue\n")
        t0 = time.monotonic()
        code, out, err = c.run_submit("big.condor", cwd=work, timeout=90)
        took = time.monotonic() - t0
        print(f"exit {code} in {took:.1f} s: {err[-400:]}")
        assert code not in (0, None), (code, out, err)
        assert "too big for one message" in err + out, (code, out[-2000:], err[-2000:])
        assert re.search(r"'run' message of [0-9,]+ bytes is over the wire's "
                         r"16,777,216-byte \(16 MiB\) limit", err + out), err[-2000:]
        assert took < 60, took
        assert "Traceback" not in (c.base / "node0.log").read_text() + err
        event_log = (work / "big.log").read_text()
        assert "too big for one message" in event_log, event_log[-2000:]
        # the same cluster runs the next honest job
        code, out, err = c.run_submit("j.condor", cwd=work, timeout=60)
        assert code == 0, err + c.logs()
    finally:
        c.stop()


def test_a_status_reply_over_the_cap_is_answered_with_an_error(tmp_path, caplog):
    """~10,000 busy nodes make a status-reply over the cap: the tool is told so in one
    `error`, the master logs one line (no traceback) and answers the next query."""
    from .test_pool_master import _Env, _recv

    env = _Env(tmp_path)
    from .test_wire_units import _status_reply

    huge = _status_reply(11_000)
    real = env.master.pool.status
    env.master.pool.status = lambda now: {k: huge[k] for k in ("nodes", "submitters")}

    async def go():
        await env.start()
        try:
            ch = await env.open("tool")
            ch.send({"type": "query", "what": "status"})
            first = await _recv(ch, 10)
            ch.close()
            env.master.pool.status = real
            ch = await env.open("tool")
            ch.send({"type": "query", "what": "status"})
            second = await _recv(ch, 10)
            ch.close()
            return first, second
        finally:
            env.close()

    with caplog.at_level("WARNING"):
        first, second = asyncio.run(go())
    assert first["type"] == "error" and first["code"] == "too-big", first
    assert "the status is too big for one message: 'status-reply': a message of " \
        in first["message"], first
    assert second["type"] == "status-reply"
    lines = [r for r in caplog.records if "cannot answer a status query" in r.getMessage()]
    assert len(lines) == 1 and not any(r.exc_info for r in caplog.records)
