"""R11: the bytes read before a connection's first message (the pure byte budget per
host, the bound on a server's first frame, and the wire `Server` applying both in
process). The daemons under a real flood: tests/test_prefirst_bytes_cluster.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from jrs.wire import aio
from jrs.wire.connection import FIRST_FRAME_MAX, Connection
from jrs.wire.errors import WireError
from jrs.wire.slots import HostBytes

from .test_wire_slots import ROOT, _closed, _open, _start, run


def test_a_host_reads_its_burst_at_once_then_at_its_rate():
    b = HostBytes(rate=100.0, burst=1000.0)
    assert b.take("h", 600, 0.0) == 0.0 and b.take("h", 400, 0.0) == 0.0
    assert b.take("h", 200, 0.0) == pytest.approx(2.0)  # 200 in debt at 100 a second
    assert b.take("other", 1000, 0.0) == 0.0  # hosts are apart
    assert b.take("h", 0, 2.0) == 0.0  # paid back by then
    assert b.take("h", 100, 2.5) == pytest.approx(0.5)


def test_a_hosts_debt_is_kept_within_its_burst():
    """Reads its connections charged and that were given up meanwhile do not lock the
    host out for longer than burst / rate."""
    b = HostBytes(rate=100.0, burst=1000.0)
    for _ in range(1000):
        wait = b.take("h", 1 << 18, 0.0)
    assert wait == pytest.approx(10.0)
    assert b.take("h", 0, 10.0) == 0.0


def test_full_buckets_are_forgotten_past_the_hosts_kept():
    b = HostBytes(rate=100.0, burst=1000.0, kept=4)
    for i in range(4):
        b.take(f"h{i}", 10, 0.0)
    b.take("busy", 5000, 95.0)  # in debt: not forgotten, its debt stands
    b.take("new", 1, 100.0)  # the others have refilled by then
    assert len(b) == 2 and b.take("busy", 0, 100.0) == pytest.approx(5.0)
    with pytest.raises(ValueError):
        HostBytes(0, 1)


def _server_and_client():
    client = Connection(ROOT, "submit", is_client=True)
    server = Connection(ROOT, "node", is_client=False)
    server.receive(client.initiate())
    client.receive(server.data_to_send())
    return client, server


def test_a_servers_first_frame_is_a_hello_at_most_first_frame_max():
    echo = {"type": "echo", "seq": 1, "body": "x" * FIRST_FRAME_MAX}
    client, server = _server_and_client()
    hello = client.data_to_send()
    assert len(hello) < FIRST_FRAME_MAX  # our own clients' first frame
    impostor = Connection(ROOT, "submit", is_client=True)  # sends no hello first:
    impostor._enc = client._enc.__class__(b"k" * 32)  # any frame of a big length
    with pytest.raises(WireError, match="first frame"):
        server.receive(impostor._seal(b"M" + b"x" * FIRST_FRAME_MAX))  # from its length
    client, server = _server_and_client()
    events = server.receive(client.data_to_send() + client.send_message(echo))
    assert events[-1].body == echo  # after the hello: any size
    client, server = _server_and_client()  # a client takes a big first frame
    assert client.receive(server.send_message(echo))[-1].body == echo


def test_reads_before_the_first_message_wait_for_their_hosts_budget(monkeypatch):
    """A host past its burst is read at its rate before its first message; another
    host's first message, a big one too (an honest resume's attach may be MBs), and the
    same host's messages after the first are not held."""
    monkeypatch.setattr(aio, "FIRST_BYTES_BURST", 1 << 20)
    monkeypatch.setattr(aio, "FIRST_BYTES_RATE", 1 << 19)  # 2 s a MiB
    pad = "z" * (3 << 18)  # 768 KiB
    big = {"type": "echo", "seq": 1, "body": pad}

    async def go():
        server, port = await _start()
        flood = await _open(port, "127.0.0.2")
        flood.conn.strict = False
        t = time.monotonic()
        for _ in range(2):  # refused, answered: bytes before the first message
            flood.send({"type": "zzz", "pad": pad})
        flood.send(big)
        for _ in range(2):
            assert (await asyncio.wait_for(flood.recv(), 10))["type"] == "error"
        assert (await asyncio.wait_for(flood.recv(), 10)) == big
        took = time.monotonic() - t
        assert 1.7 < took < 4.0, took  # 1.25 MiB over the burst: ~2.5 s
        flood.send(big)  # past its first message: not this budget's
        t = time.monotonic()
        assert (await asyncio.wait_for(flood.recv(), 10)) == big
        assert time.monotonic() - t < 0.7
        honest = await _open(port, "127.0.0.3")
        honest.send(big)
        t = time.monotonic()
        assert (await asyncio.wait_for(honest.recv(), 10)) == big
        assert time.monotonic() - t < 0.7
        for ch in (flood, honest):
            ch.close()
        server.close()
    run(go())


def test_a_read_waiting_for_its_budget_is_not_decoded_once_given_up(monkeypatch):
    """A connection that waits for its host's budget and is given up meanwhile (a
    newer one of its host took its slot) closes without decoding what it read."""
    monkeypatch.setattr(aio, "FIRST_BYTES_BURST", 1 << 16)
    monkeypatch.setattr(aio, "FIRST_BYTES_RATE", 1 << 16)
    seen = []

    async def handler(ch):
        while True:
            seen.append(await ch.recv())

    async def go():
        server = aio.Server(ROOT, "node", handler, hello_per_address=1)
        port = (await server.start("127.0.0.1", 0))[1]
        first = await _open(port, "127.0.0.2")
        first.send({"type": "echo", "seq": 1, "body": "w" * (1 << 17)})  # 1 s over
        await first.drain()
        await asyncio.sleep(0.3)  # read, charged, waiting
        second = await _open(port, "127.0.0.2")  # gives the first one up
        assert await _closed(first, 2.0)
        await asyncio.sleep(1.5)  # past its wait
        assert seen == []
        second.close()
        server.close()
    run(go())


def test_a_host_opens_connections_at_its_rate_past_it_they_are_closed(monkeypatch):
    """R12 F3: a host opening connections as fast as it could took 64-84 % of a daemon's
    core. Past CONNECT_BURST a connection waits its turn (CONNECT_RATE a second) before
    anything of it is read; one that would wait past CONNECT_MOST_WAIT is closed at once.
    Another host's connections are not held."""
    monkeypatch.setattr(aio, "CONNECT_RATE", 5.0)
    monkeypatch.setattr(aio, "CONNECT_BURST", 8.0)  # (over 1 s of debt: see refuse_past)
    chans: list = []

    async def opened(port: int, source: str):
        t0 = time.monotonic()
        try:
            ch = await asyncio.wait_for(_open(port, source), 5)
        except Exception:
            return None, time.monotonic() - t0
        chans.append(ch)
        return ch, time.monotonic() - t0

    async def go():
        server, port = await _start()
        try:
            burst = [await opened(port, "127.0.0.2") for _ in range(8)]
            assert all(ch is not None and took < 0.5 for ch, took in burst), burst
            ch, took = await opened(port, "127.0.0.2")  # past the burst: 1/5 s
            assert ch is not None and 0.1 < took < 1.0, took
            many = await asyncio.gather(*(opened(port, "127.0.0.2") for _ in range(12)))
            served = [t for ch, t in many if ch is not None]
            assert 3 <= len(served) <= 7, many  # those within a second's wait, ~5
            assert max(served) > 0.5, served
            assert sum(ch is None for ch, _ in many) >= 5, many  # the rest closed at once
            other, took = await opened(port, "127.0.0.3")
            assert other is not None and took < 0.5, took
        finally:
            for c in chans:
                c.close()
            server.close()

    run(go())
