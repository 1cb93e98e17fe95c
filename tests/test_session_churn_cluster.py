"""R11: a host's budget debt holds all its sessions, the new ones included.

The daemons charged a frame after decoding it, and a session in debt waited before its
next read: but only that session. A host that opened session after session, each
saying hello, sending one frame of dense JSON (`[[0],[0],...]`, ~0.12 us a byte to
decode) and closing, had every frame decoded free: two such loops kept a real node at
97 % of a core (stalled 5.7 s, it thought itself stopped and held honest jobs) and the
master at 99 %. Now every read of a session waits while its host is in debt
(`Channel.before_read`), and a frame of many values is charged before it is decoded
(`Channel.on_costly`: otherwise a host's sessions, reading in step, all decoded theirs
at the same moment)."""

from __future__ import annotations

import asyncio
import os
import time

from jrs.wire.connection import KIND_MESSAGE

from .cluster import Cluster, honest_job_cluster
from .test_hello_flood_cluster import EVIL, _cpu, _open, _run
from .test_master_limits_cluster import _open_from

# 1.5 MiB, ~790,000 values: under the wire's cap on one frame's values, ~0.2 s to decode
DENSE = b"[" + b",".join([b"[0]"] * (393_216)) + b"]"


async def _session(c: Cluster, who: str, i: int):
    """A new session of the attacker's host that said hello (None: refused)."""
    if who == "node":
        ch = await _open(c, c.ports[0], "submit", EVIL)
        if ch is None:
            return None
        ch.send({"type": "attach", "submitter": f"{i:024x}", "token": os.urandom(32).hex(),
                 "jobs": []})
        return ch
    try:
        ch = await _open_from(c, EVIL)
    except (OSError, asyncio.TimeoutError, Exception):
        return None
    ch.send({"type": "submitter-hello", "submitter": f"{i:024x}", "user": "mallory",
             "host": "evil", "pid": i, "claims": [], "clusters": [],
             "token": os.urandom(32).hex()})
    return ch


async def _churn(c: Cluster, who: str, stop: float, loops: int = 2) -> int:
    """`loops` loops of: a new session, its hello, one DENSE frame, close; until `stop`.
    The frames sent."""
    sent = 0
    ids = iter(range(1, 10**9))

    async def loop():
        nonlocal sent
        while time.monotonic() < stop:
            ch = await _session(c, who, next(ids))
            if ch is None:
                await asyncio.sleep(0.05)
                continue
            ch.conn.strict = False
            try:
                ch._queue(ch.conn._seal(DENSE, KIND_MESSAGE))
                await asyncio.wait_for(ch.drain(), max(0.01, stop - time.monotonic()))
                sent += 1
            except (asyncio.TimeoutError, ConnectionError, OSError):
                pass
            ch.close()

    await asyncio.gather(*(loop() for _ in range(loops)), return_exceptions=True)
    return sent


async def _share(pid: int, stop: float, after: float) -> float:
    """The CPU share of a core `pid` took from `after` s from now to 1 s before `stop`."""
    await asyncio.sleep(after)
    cpu0, t0 = _cpu(pid), time.monotonic()
    await asyncio.sleep(max(1.0, stop - 1.0 - time.monotonic()))
    return (_cpu(pid) - cpu0) / (time.monotonic() - t0)


def test_a_node_charges_a_host_that_churns_sessions(pyz, tmp_path):
    c, work = honest_job_cluster(pyz, tmp_path)
    try:
        async def scenario():
            stop = time.monotonic() + 11.0
            churn = asyncio.ensure_future(_churn(c, "node", stop))
            share = asyncio.ensure_future(_share(c.nodes[0].pid, stop, 5.0))
            await asyncio.sleep(5.0)  # the host's burst is spent by now
            submit = await _run(str(pyz), "submit", "-c", str(c.conf), "--no-progress",
                                "j.condor", env=c.env, cwd=work, timeout=40)
            return await churn, await share, submit

        sent, share, (code, _out, err) = asyncio.run(scenario())
        print(f"{sent} sessions of one 1.5 MiB dense frame each in 11 s, node CPU "
              f"{share:.0%} of a core after the burst")
        assert code == 0, err + c.logs()
        assert (work / "ok.out").read_text() == "through\n"
        assert share < 0.35, (share, sent)  # decoded free: 97 %
        assert sent >= 10, sent  # the churn did run
    finally:
        c.stop()


def test_the_master_charges_a_host_that_churns_sessions(pyz, tmp_path, loops=2):
    """Two loops of sessions one after another (64-99 % before)."""
    c = Cluster(pyz, tmp_path, slots=[1])
    c.start_master()
    c.start_node(0)
    c.wait_up(1)
    try:
        async def scenario():
            stop = time.monotonic() + 11.0
            churn = asyncio.ensure_future(_churn(c, "master", stop, loops))
            share = await _share(c.master.pid, stop, 5.0)
            return await churn, share

        sent, share = asyncio.run(scenario())
        print(f"{loops} loops: {sent} sessions of one 1.5 MiB dense frame each in 11 s, "
              f"master CPU {share:.0%} of a core after the burst")
        assert share < 0.3, (share, sent)  # decoded free: 99 %
        assert sent >= 10, sent
        assert c.master.poll() is None
        code, _out, err = asyncio.run(_run(str(pyz), "status", "-c", str(c.conf),
                                          env=c.env, timeout=30))
        assert code == 0, err  # and it answers
    finally:
        c.stop()
