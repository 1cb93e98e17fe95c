"""The one reconnect loop (jrs/wire/reconnect.py), on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from jrs.wire.errors import WireError
from jrs.wire.reconnect import Backoff, keep_connected


def test_backoff_doubles_to_its_cap_and_resets():
    b = Backoff(first=0.1, cap=1.0, jitter=0.0)
    assert [round(b.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert b.failures == 6
    b.reset()
    assert b.next() == 0.1 and b.failures == 1


def test_backoff_jitter_only_shortens_and_is_injected():
    draws = iter([0.0, 1.0, 0.5])
    b = Backoff(first=1.0, cap=8.0, jitter=0.5, rand=lambda: next(draws))
    assert [b.next(), b.next(), b.next()] == [1.0, 1.0, 3.0]  # 1*(1-0), 2*(1-.5), 4*(1-.25)
    with pytest.raises(ValueError):
        Backoff(first=2.0, cap=1.0)


class FakeClock:
    """`sleep` that advances a counter instead of waiting, and stops the loop at the end."""

    def __init__(self, stop_after: int) -> None:
        self.now = 0.0
        self.sleeps: list = []
        self.stop_after = stop_after

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(round(delay, 3))
        self.now += delay
        if len(self.sleeps) >= self.stop_after:
            raise asyncio.CancelledError


def test_keep_connected_backs_off_resets_on_success_and_reports():
    """Three refused connects (0.1, 0.2, 0.4), a session that breaks (reset: 0.1), a
    session that ends normally (reset: 0.1), then refused again (0.2, 0.4)."""
    script = iter(["refuse", "refuse", "refuse", "ok-break", "ok-end", "refuse", "refuse"])
    served, downs = [], []
    clock = FakeClock(stop_after=7)

    async def open_session():
        step = next(script)
        if step == "refuse":
            raise ConnectionRefusedError("refused")
        return step

    async def serve(session):
        served.append((session, clock.now))
        if session == "ok-break":
            raise WireError("frame failed authentication")

    async def go():
        with pytest.raises(asyncio.CancelledError):
            await keep_connected(open_session, serve, backoff=Backoff(0.1, 5.0, jitter=0.0),
                                 on_down=lambda exc: downs.append(type(exc).__name__),
                                 sleep=clock.sleep)
    asyncio.run(go())
    assert clock.sleeps == [0.1, 0.2, 0.4, 0.1, 0.1, 0.2, 0.4]
    assert [s for s, _ in served] == ["ok-break", "ok-end"]
    assert served[0][1] == pytest.approx(0.7)
    assert downs == ["ConnectionRefusedError"] * 3 + ["WireError", "ConnectionClosed"] + \
        ["ConnectionRefusedError"] * 2


def test_keep_connected_lets_a_bug_through():
    """Only connection failures are retried: a programming error ends the loop loudly
    instead of reconnecting forever in silence."""
    clock = FakeClock(stop_after=100)

    async def open_session():
        return "s"

    async def serve(session):
        raise KeyError("a handler bug")

    with pytest.raises(KeyError):
        asyncio.run(keep_connected(open_session, serve, sleep=clock.sleep))
    assert clock.sleeps == []


def test_keep_connected_with_a_real_server_comes_back():
    """A real loopback server that goes away and returns: the loop reconnects."""
    from jrs.wire.aio import Server, connect
    from jrs.wire.keys import root_key
    root = root_key(b"r" * 40)
    sessions = []

    async def handler(ch):
        ch.send({"type": "ping", "seq": len(sessions)})
        await ch.drain()
        await asyncio.sleep(0.05)

    async def go():
        server = Server(root, "master", handler)
        port = (await server.start("127.0.0.1", 0))[1]

        async def open_session():
            return await connect("127.0.0.1", port, root, "node", timeout=2)

        async def serve(ch):
            try:
                sessions.append(await ch.recv())
                await ch.recv()  # until the server closes
            finally:
                ch.close()

        task = asyncio.ensure_future(keep_connected(open_session, serve,
                                                    backoff=Backoff(0.01, 0.05)))
        while len(sessions) < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        server.close()
        with pytest.raises(asyncio.CancelledError):
            await task
    asyncio.run(asyncio.wait_for(go(), 30))
    assert [s["type"] for s in sessions] == ["ping"] * 3
