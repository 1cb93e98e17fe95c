"""Issue 13 (R9, hostile review): what no handler sees was not bounded. The channel
skips the wire's own `hello` (a client sends one, with its handshake) and answers bad
frames itself; both were skipped for as long as a peer sent them. One authenticated
connection that never sent its first message, flooding hellos or bad frames, kept the
master at ~60 % of a core for the 30 s first-message deadline (and a node likewise);
hellos after the first message were charged to nothing. Now a second hello, or more
than 16 bad frames before the first message (one is answered and skipped, as after
it), closes the connection (after an `error`, code "protocol"). So do the data frames
of a refused transfer header (R10: the wire swallowed them, seen by nothing, for the
whole deadline; a transfer is never a first message). Real jrs.pyz master and node on
loopback; the flood from 127.0.0.2."""

from __future__ import annotations

import asyncio
import time

import pytest

from .cluster import Cluster
from .test_hello_flood_cluster import _cpu, _open
from .test_master_limits_cluster import _hello

# "data": a `run` the schema refuses, announcing 1 TiB, whose data frames (1 byte each)
# the wire swallows: no event, so neither a first message nor a bad frame (R10)
FLOODS = {"hello": {"type": "hello", "version": 1}, "bad": {"type": "zzz"},
          "data": {"type": "run", "files": [{"name": "in", "size": 1 << 40}]}}


async def _flood(ch, body: dict, seconds: float) -> tuple:
    """Send `body` as fast as we can for `seconds` or until the daemon closes (a transfer
    header once, then its data frames): (frames sent, seconds it took, closed by the
    daemon)."""
    ch.conn.strict = False  # a hostile peer breaks the schema
    start, sent = time.monotonic(), 0
    data = body["type"] == "run"
    try:
        if data:
            ch.writer.write(ch.conn.send_message(body))
        while time.monotonic() - start < seconds:
            for _ in range(100):
                ch.writer.write(ch.conn.send_data(b"x") if data
                                else ch.conn.send_message(body))
                sent += 1
            await ch.writer.drain()
            await asyncio.sleep(0)
    except ConnectionError:
        return sent, time.monotonic() - start, True
    return sent, time.monotonic() - start, ch.writer.transport.is_closing()


@pytest.mark.parametrize("kind", sorted(FLOODS))
def test_a_flood_before_the_first_message_is_closed_at_master_and_node(pyz, tmp_path, kind):
    c = Cluster(pyz, tmp_path, slots=[1]).start()
    try:
        async def scenario():
            out = {}
            for name, port, pid in (("master", c.mport, c.master.pid),
                                    ("node", c.ports[0], c.nodes[0].pid)):
                ch = await _open(c, port, "submit")
                cpu0 = _cpu(pid)
                sent, took, closed = await _flood(ch, FLOODS[kind], 3.0)
                await asyncio.sleep(0.2)
                out[name] = (sent, took, closed, _cpu(pid) - cpu0)
                ch.close()
            return out

        out = asyncio.run(scenario())
        print(kind, out)
        for name, (_sent, took, closed, cpu) in out.items():
            assert closed and took < 1.5, (name, out)  # was held for the whole 3 s
            assert cpu < 0.3, (name, out)  # was ~1.8 s of CPU in 3 s
        assert c.master.poll() is None and c.nodes[0].poll() is None
    finally:
        c.stop()


def test_hellos_after_the_first_message_close_the_session(pyz, tmp_path):
    c = Cluster(pyz, tmp_path, slots=[1]).start()
    try:
        async def scenario():
            ch = await _open(c, c.mport, "submit")
            assert (await _hello(ch, 3))["type"] == "welcome"
            cpu0 = _cpu(c.master.pid)
            sent, took, closed = await _flood(ch, FLOODS["hello"], 3.0)
            return sent, took, closed, _cpu(c.master.pid) - cpu0

        sent, took, closed, cpu = asyncio.run(scenario())
        assert closed and took < 1.5 and cpu < 0.3, (sent, took, closed, cpu)
        assert c.master.poll() is None
    finally:
        c.stop()
