"""Issue 13 (R9, hostile review): every submitter message is charged to its session's
and host's budgets, but the messages the master refuses were not: a session sending
types a submitter may not send (answered `bad-message` by the master) or frames that
fail the schema (answered by the wire) was read and answered as fast as it sent, ~35 %
of a core from one session, and the answers, never read, piled up in the master's
memory. Now a refused frame is charged like any other (its bytes plus the message
cost), and a channel whose peer leaves more than `aio.MAX_UNREAD` bytes unread is
closed. Real jrs.pyz master and node on loopback for the first; the wire's own Server
in process for the second."""

from __future__ import annotations

import asyncio
import time

import pytest

from jrs.wire import aio
from jrs.wire.aio import ConnectionClosed, Server, connect

from .cluster import honest_job_cluster
from .test_hello_flood_cluster import _cpu, _open, _run
from .test_master_limits_cluster import _hello

# seconds of flood: the first 2 spend the session's burst, the rest is the window
# measured. The flood writes far faster than the master's budget lets it read, so the
# socket buffers fill (MBs on loopback) and a drain waits for the master to read them
# at the budget's rate: a drain without a deadline held the flood ~30 s past this, and
# the window, opened after it, was its last few ms (master CPU "0.00 s in 0.0 s").
FLOOD = 6.0


# a type a submitter may not send (the master's handler answers it) and a frame the
# schema refuses (the wire answers it, `Channel.on_bad`): each flooded alone, since
# either one charged throttles the reading of both (mixed, the wire's uncharged took
# the flood only from ~3,900 answers to ~7,800 in 4 s, 0.13 s of CPU)
_REFUSED = {"handler": {"type": "pong", "seq": 1}, "wire": {"type": "zzz"}}


@pytest.mark.parametrize("kind", sorted(_REFUSED))
def test_refused_messages_of_a_submitter_are_charged_to_its_budget(pyz, tmp_path, kind):
    c, work = honest_job_cluster(pyz, tmp_path, "beside")
    try:
        async def scenario():
            ch = await _open(c, c.mport, "submit")
            ch.conn.strict = False  # a hostile peer breaks the schema
            assert (await _hello(ch, 7))["type"] == "welcome"
            answers = 0

            async def read():
                nonlocal answers
                try:
                    while True:
                        msg = await ch.recv()
                        if isinstance(msg, dict) and msg.get("type") == "error":
                            assert msg["code"] == "bad-message", msg
                            answers += 1
                except ConnectionClosed:
                    pass

            reader = asyncio.ensure_future(read())
            pid = c.master.pid
            start = time.monotonic()
            marks = {}

            async def beside():
                await asyncio.sleep(2)  # the burst spent: the window opens
                marks.update(cpu=_cpu(pid), answers=answers, at=time.monotonic())
                return await _run(str(pyz), "submit", "-c", str(c.conf), "--no-progress",
                                  "j.condor", env=c.env, cwd=work)

            honest = asyncio.ensure_future(beside())
            while (left := FLOOD - (time.monotonic() - start)) > 0:
                for _ in range(200):
                    ch.writer.write(ch.conn.send_message(_REFUSED[kind]))
                try:  # the flood ends on time, however much the master has yet to read
                    await asyncio.wait_for(ch.writer.drain(), left)
                except asyncio.TimeoutError:
                    break
                await asyncio.sleep(0)
            busy = _cpu(pid) - marks["cpu"]
            window = time.monotonic() - marks["at"]
            answered = answers - marks["answers"]
            result = await honest
            ch.close()
            reader.cancel()
            return busy, window, answered, result

        busy, window, answered, (code, _out, err) = asyncio.run(scenario())
        print(f"{kind}: master CPU {busy:.2f} s in {window:.1f} s of flood after the "
              f"burst, {answered} refusals answered")
        # the budget: 512 KiB/s at ~530 bytes a refused frame, ~1,000 a second
        assert answered < 1500 * window, (answered, window)
        assert busy < 0.12 * window, (busy, window)  # was ~0.35 of a core
        assert code == 0 and "1 jobs, 1 done, 0 failed" in err, err + c.logs()
        assert (work / "ok.out").read_text() == "beside\n"
        assert c.master.poll() is None
    finally:
        c.stop()


# a transfer header a submitter may send the master by the schema (it never wants one:
# its data frames reach the master's loop, which skips them) and a `run` the schema
# refuses, whose data frames the wire swallows itself (no event shows them)
_HEADERS = {"blob": {"type": "blob", "size": 1 << 40},
            "refused": {"type": "run", "files": [{"name": "in", "size": 1 << 40}]}}


@pytest.mark.parametrize("kind", sorted(_HEADERS))
def test_data_frames_of_a_submitter_are_charged_to_its_budget(pyz, tmp_path, kind):
    """R10: 1-byte data frames after one transfer header. Those after a refused header
    were swallowed by the wire and charged to nothing; now every data frame costs the
    message cost plus its bytes (`Channel.on_data`), ~1,000 a second."""
    c, work = honest_job_cluster(pyz, tmp_path, "beside")
    try:
        async def scenario():
            ch = await _open(c, c.mport, "submit")
            ch.conn.strict = False  # a hostile peer breaks the schema
            assert (await _hello(ch, 8))["type"] == "welcome"
            ch.writer.write(ch.conn.send_message(_HEADERS[kind]))
            stop = time.monotonic() + 6.0
            sent = 0

            async def flood():
                nonlocal sent
                while time.monotonic() < stop:  # sealed and written 1,000 at a time
                    ch.writer.write(b"".join(ch.conn.send_data(b"x") for _ in range(1000)))
                    sent += 1000
                    try:  # (a master reading slowly fills the socket: stop on time)
                        await asyncio.wait_for(ch.writer.drain(),
                                               max(0.01, stop - time.monotonic()))
                    except asyncio.TimeoutError:
                        return

            flooding = asyncio.ensure_future(flood())
            await asyncio.sleep(2.0)  # the session's burst is spent by now
            pid = c.master.pid
            cpu0, t0 = _cpu(pid), time.monotonic()
            result = await _run(str(pyz), "submit", "-c", str(c.conf), "--no-progress",
                                "j.condor", env=c.env, cwd=work)
            await asyncio.wait_for(flooding, 30)
            busy, window = _cpu(pid) - cpu0, time.monotonic() - t0
            ch.close()
            return sent, busy, window, result

        sent, busy, window, (code, _out, err) = asyncio.run(scenario())
        print(f"{kind}: {sent} frames sent, master CPU {busy:.2f} s in {window:.1f} s "
              "after the burst")
        assert busy < 0.12 * window, (busy, window)
        assert code == 0 and "1 jobs, 1 done, 0 failed" in err, err + c.logs()
        assert (work / "ok.out").read_text() == "beside\n"
        assert c.master.poll() is None
    finally:
        c.stop()


def test_a_peer_that_never_reads_what_it_is_sent_is_closed(monkeypatch):
    """A channel closes once more than MAX_UNREAD bytes wait unread for its peer, rather
    than holding them in the daemon's memory for as long as the peer likes."""
    monkeypatch.setattr(aio, "MAX_UNREAD", 1 << 20, raising=False)
    root = b"k" * 32
    served: list = []

    async def answer_each(ch):
        served.append(ch)
        while True:
            await ch.recv()
            ch.send({"type": "error", "code": "x", "message": "y" * 60_000})

    async def go():
        server = Server(root, "master", answer_each, peer_roles=frozenset({"tool"}))
        port = (await server.start("127.0.0.1", 0))[1]
        client = await connect("127.0.0.1", port, root, "tool")
        for i in range(400):  # 400 answers of 60 KB, ~24 MB: none read
            client.send({"type": "ping", "seq": i})
            await client.drain()
            await asyncio.sleep(0.001)
            if served and served[0]._closed:
                break
        await asyncio.sleep(0.2)
        closed = bool(served) and served[0]._closed
        client.close()
        server.close()
        return closed, i

    closed, sent = asyncio.run(asyncio.wait_for(go(), 60))
    assert closed and sent < 399, sent
