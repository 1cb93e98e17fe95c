"""Node sessions at the master have a budget (jrs/cluster/limits.py, `NodeBudget`).

A connection playing the node role whose `node-hello` names a node of node.list with
no live session is welcomed: any secret holder can open one (a node that is down, a
name taken before its node comes up), and nothing it sent was charged. One impostor
session sending `claim-ok`s (each answered with a `claim-drop`) and reports of 4,096
claims as fast as it could took 82-100 % of the master's core, frames the wire or
the master refuses 91 %, 1-byte data frames after a `blob` header 86 %. Now every
frame of a node session (its hello, refused frames and data frames too) is charged
to a bucket of the session and one of its host, in bytes plus a message's and a claim
entry's worth: the pure rule here (an honest node of 1,000 slots never waits; a
flood gets the rate), then a real master under the flood, its CPU bounded and an
honest submit beside it done."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from jrs.cluster.limits import BATCH, Limits, NodeBudget
from jrs.cluster.master import SEND_LOG_BURST
from jrs.wire.connection import KIND_MESSAGE

from .cluster import Cluster
from .test_hello_flood_cluster import _cpu, _open, _run
from .test_node_budget import _wait_logged


def _claim_id(i: int) -> str:
    return f"{i:032x}"


def _size(body: dict) -> int:
    return len(json.dumps(body, separators=(",", ":")))


# ------------------------------------------------------------ the rule, pure

def test_the_busiest_honest_node_never_waits():
    """A node of 1,000 slots running 1 s jobs, each on a claim of its own, for a
    minute: its hello listing 4,096 claims (the most the Pool takes), then each second
    1,000 `claim-ok`s, 1,000 `claim-released`s and a report of its 1,000 claims. Under
    a third of the rate: never held."""
    b = NodeBudget()
    b.open_session("n", "h", 0.0)
    claims = [{"claim": _claim_id(i), "submitter": "s" * 24, "user": "alice", "cpus": 1,
               "memory": 0, "gpus": []} for i in range(4096)]
    hello = {"type": "node-hello", "name": "n1:7082", "slots": 1000, "memory": 0,
             "gpus": 0, "attrs": {}, "claims": claims}
    assert b.message_wait("n", _size(hello), 4096, 0.0) is None
    ok = _size({"type": "claim-ok", "claim": _claim_id(0), "gpu_ids": []})
    released = _size({"type": "claim-released", "claim": _claim_id(0)})
    report = _size({"type": "node-report", "load": 12.5, "running": 1000,
                    "claims": [_claim_id(i) for i in range(1000)], "waiting": 3,
                    "oldest_wait": 0.25})
    for second in range(60):
        for i in range(1000):
            now = second + i / 1000
            assert b.message_wait("n", ok, 0, now) is None
            assert b.message_wait("n", released, 0, now) is None
        assert b.message_wait("n", report, 1000, second + 0.999) is None
    assert b.stats("n")["waits"] == 0 and b.stats("n")["messages"] == 1 + 60 * 2001


def test_a_flood_gets_the_rate_after_the_burst():
    lim = Limits(node_rate=100_000, node_burst=400_000)
    b = NodeBudget(lim)
    b.open_session("evil", "h", 0.0)
    now, n, waits = 0.0, 0, 0
    while now < 10.0:  # 100-byte messages, each as soon as it is let in
        at = b.message_wait("evil", 100, 0, now)
        if at is None:
            n += 1
        else:
            assert at > now
            now, waits = at, waits + 1
    cost = 100 + lim.node_message_cost
    paid = lim.node_burst + 10 * lim.node_rate  # give or take the batch in progress
    assert (paid - BATCH) / cost - 1 <= n <= (paid + BATCH) / cost + 1, n
    assert waits > 0 and b.stats("evil")["waits"] == waits


def test_claim_entries_and_data_frames_are_charged():
    lim = Limits(node_rate=1.0, node_burst=10_000_000)
    b = NodeBudget(lim)
    b.open_session("s", "h", 0.0)
    b.message_wait("s", 150_000, 4096, 0.0)  # a report of 4,096 claims
    b.message_wait("s", 1000, 0, 0.0, messages=1000)  # 1,000 data frames of 1 byte
    spent = 10_000_000 - b._sessions["s"].bucket.tokens
    assert spent == 150_000 + 512 + 4096 * 64 + 1000 + 1000 * 512
    assert b.stats("s") == {"host": "h", "bytes": 151_000, "messages": 1001, "waits": 0}


def test_a_host_shares_its_bucket_and_reconnecting_gets_no_fresh_one():
    b = NodeBudget(Limits(node_rate=1000, node_burst=1_000_000, host_node_rate=1000,
                          host_node_burst=100_000))
    b.open_session(1, "h", 0.0)
    b.open_session(2, "h", 0.0)
    b.open_session(3, "other", 0.0)
    assert b.message_wait(1, 60_000, 0, 0.0) is None
    assert b.message_wait(2, 60_000, 0, 0.0) is None  # the host's burst is spent
    assert b.message_wait(1, 10, 0, 0.0) is not None  # ... for both of its sessions
    assert b.message_wait(2, 10, 0, 0.0) is not None
    assert b.message_wait(3, 10, 0, 0.0) is None  # another host is not held up
    assert b.close_session(1)["messages"] == 1 and b.close_session(2)["waits"] == 1
    b.open_session(4, "h", 0.0)  # back at once: still in the host's debt
    assert b.message_wait(4, 10, 0, 0.0) is not None
    assert b.message_wait("closed", 10, 0, 0.0) is None and b.stats("closed") is None
    assert b.close_session("closed") is None


def test_bad_node_settings_are_named():
    from jrs.errors import ConfigError

    with pytest.raises(ConfigError, match="JRS_MASTER_NODE_RATE: want a number of at "
                                          "least 1"):
        Limits.from_env({"JRS_MASTER_NODE_RATE": "0"})
    assert Limits.from_env({"JRS_MASTER_NODE_CLAIM_COST": "0"}).node_claim_cost == 0
    assert Limits.from_env({"JRS_MASTER_HOST_NODE_BURST": "5e6"}).host_node_burst == 5e6


# ------------------------------------------------------------ a real master flooded

FLOOD = 6.0  # seconds: the first 2 spend the session's burst, the rest is measured
_IDS = [os.urandom(16).hex() for _ in range(4096)]


def _frames(kind: str, n: int) -> list:
    """(encoded message, ...) of one batch of the flood of `kind`."""
    if kind == "messages":  # claim-oks of claims it never had (each answered with a
        out = [{"type": "claim-ok", "claim": _IDS[(n + i) % 4096]}  # claim-drop),
               for i in range(100)]  # pings (answered), a report of 4,096 claims
        out += [{"type": "ping", "seq": n}, {"type": "node-report", "load": 0.0,
                                             "running": 0, "claims": _IDS}]
    elif kind == "refused-handler":  # a type a node may not send (the master answers)
        out = [{"type": "demand", "requests": []} for _ in range(100)]
    else:  # one the schema refuses (the wire answers: `Channel.on_bad`)
        out = [{"type": "zzz", "n": i} for i in range(100)]
    return [json.dumps(m, separators=(",", ":")).encode() for m in out]


# the refused kinds each alone: either one charged throttles the reading of both, so
# mixed, the wire's refusals uncharged passed (16,126 answers, 7 % of a core; audit A15)
@pytest.mark.parametrize("kind", ["messages", "refused-handler", "refused-wire", "data"])
def test_an_impostor_node_session_gets_a_bounded_share_of_the_master(pyz, tmp_path, kind):
    """Node 1 of node.list is down; a secret holder says its `node-hello` (0 slots, so
    no job goes there) from another host and floods. Without the budget: 82-100 % of
    the master's core, answered ~50,000 times a second."""
    c = Cluster(pyz, tmp_path, slots=[1, 1])
    c.start_master()
    c.start_node(0)
    c.wait_up(1)
    work = tmp_path / "w"
    work.mkdir()
    (work / "j.condor").write_text("executable = /bin/echo\narguments = beside\n"
                                   "output = ok.out\nqueue\n")
    try:
        async def scenario():
            ch = await _open(c, c.mport, "node")
            assert ch is not None
            ch.conn.strict = False  # a hostile peer breaks the schema
            ch.send({"type": "node-hello", "name": c.names()[1], "slots": 0, "memory": 0,
                     "gpus": 0, "attrs": {}, "claims": []})
            assert (await asyncio.wait_for(ch.recv(), 10))["type"] == "welcome"
            answers = 0

            async def read():
                nonlocal answers
                try:
                    while True:
                        if isinstance(await ch.recv(), dict):
                            answers += 1
                except Exception:  # closed
                    pass

            reader = asyncio.ensure_future(read())
            if kind == "data":  # a header a node may send; its 1 TiB never comes
                ch._queue(ch.conn.send_message({"type": "blob", "size": 1 << 40}))
            pid = c.master.pid
            start = time.monotonic()
            marks: dict = {}

            async def beside():
                await asyncio.sleep(2)  # the burst spent: the window opens
                marks.update(cpu=_cpu(pid), answers=answers, at=time.monotonic())
                return await _run(str(pyz), "submit", "-c", str(c.conf), "--no-progress",
                                  "j.condor", env=c.env, cwd=work)

            honest = asyncio.ensure_future(beside())
            sent = 0
            while (left := FLOOD - (time.monotonic() - start)) > 0:
                if kind == "data":  # sealed and written 1,000 at a time
                    ch._queue(b"".join(ch.conn.send_data(b"x") for _ in range(1000)))
                    sent += 1000
                else:
                    for body in _frames(kind, sent):
                        ch._queue(ch.conn._seal(body, KIND_MESSAGE))
                        sent += 1
                try:  # the flood ends on time, however much the master has yet to read
                    await asyncio.wait_for(ch.drain(), left)
                except asyncio.TimeoutError:
                    break
            busy = _cpu(pid) - marks["cpu"]
            window = time.monotonic() - marks["at"]
            answered = answers - marks["answers"]
            result = await honest
            ch.close()
            reader.cancel()
            return sent, busy, window, answered, result

        sent, busy, window, answered, (code, _out, err) = asyncio.run(scenario())
        print(f"{kind}: {sent} frames sent, master CPU {busy:.2f} s in {window:.1f} s "
              f"after the burst ({busy / window:.0%}), {answered} answers")
        # the rate: 4 MiB/s at 530-570 bytes a small frame, ~7,500 a second
        assert answered < 10_000 * window, (answered, window)
        assert busy < 0.3 * window, (busy, window)  # was 0.82-1.0 of a core
        assert code == 0 and "1 jobs, 1 done, 0 failed" in err, err + c.logs()
        assert (work / "ok.out").read_text() == "beside\n"
        assert c.master.poll() is None
        if not kind.startswith("refused"):  # (whose warnings take the host's log lines)
            _wait_logged(tmp_path / "master.log", "is over its budget")  # logged once
        if kind == "messages":  # each claim-ok got a claim-drop: ~900 lines a second
            drops = [line for line in (tmp_path / "master.log").read_text().splitlines()
                     if " to node " in line and "claim-drop" in line]
            # (+ a few to node 0 on its own key, and sent before a session was known)
            assert 0 < len(drops) <= SEND_LOG_BURST + 5, len(drops)  # were 1 per answer
    finally:
        c.stop()
