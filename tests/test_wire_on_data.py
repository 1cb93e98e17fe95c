"""`Channel.on_data` read after read (R10), beside test_wire_net's one-read case: each
call names the frames and bytes read since the last one, not all so far (else a long
honest transfer is charged its first bytes again at every read); and one read of data
before the first message is let through (a refused transfer header as a first frame,
answered like any bad frame), only a second closes the channel."""

from __future__ import annotations

import asyncio

from jrs.wire.aio import ConnectionClosed, Server, connect

from .test_wire_net import ROOT, run


def _server(seen: list, got: list, ended: list):
    async def handler(ch):
        mine: list = []
        seen.append(mine)

        async def on_data(frames: int, nbytes: int) -> None:
            mine.append((frames, nbytes))

        ch.on_data = on_data
        try:
            while True:
                got.append(await ch.recv())
        except ConnectionClosed as exc:
            ended.append(str(exc))
            raise
    return Server(ROOT, "node", handler)


async def _settle(cond, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not cond() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)


def test_each_read_charges_only_the_data_it_brought():
    """A first message, a blob header, then 5 writes of 2 frames of 1,000 bytes each,
    40 ms apart (a read each): the calls add up to exactly the 10 frames and 10,000
    bytes sent, however the reads fell."""
    seen, got, ended = [], [], []

    async def go():
        server = _server(seen, got, ended)
        port = (await server.start("127.0.0.1", 0))[1]
        ch = await connect("127.0.0.1", port, ROOT, "submit", timeout=5)
        c = ch.conn
        ch.writer.write(c.send_message({"type": "ping", "seq": 1})
                        + c.send_message({"type": "blob", "size": 10_000}))
        for _ in range(5):
            await asyncio.sleep(0.04)
            ch.writer.write(c.send_data(bytes(1000)) + c.send_data(bytes(1000)))
            await ch.writer.drain()
        await asyncio.sleep(0.04)
        ch.writer.write(c.send_message({"type": "ping", "seq": 2}))  # a read after the last
        await _settle(lambda: len(got) == 13)
        closed = ch.writer.transport.is_closing() or bool(ended)
        ch.close()
        server.close()
        return closed

    closed = run(go())
    assert not closed, ended
    assert [m for m in got if isinstance(m, dict)] == [
        {"type": "ping", "seq": 1}, {"type": "blob", "size": 10_000}, {"type": "ping", "seq": 2}]
    calls = seen[0]
    assert len(calls) >= 2, calls  # (more than one read brought data)
    assert (sum(f for f, _ in calls), sum(b for _, b in calls)) == (10, 10_000), calls


def test_one_read_of_data_before_the_first_message_is_let_through():
    """A refused transfer header as the first frame (answered `bad-message`) and its
    data, in one write; then, in a later read, the first message: served. A second read
    of data before it would close the channel (test_wire_net)."""
    seen, got, ended = [], [], []

    async def go():
        server = _server(seen, got, ended)
        port = (await server.start("127.0.0.1", 0))[1]
        ch = await connect("127.0.0.1", port, ROOT, "submit", timeout=5)
        ch.conn.strict = False  # the header breaks the schema
        c = ch.conn
        ch.writer.write(c.send_message({"type": "run", "files": [{"name": "a", "size": 30}]})
                        + b"".join(c.send_data(bytes(10)) for _ in range(3)))
        await ch.writer.drain()
        answer = await asyncio.wait_for(ch.recv(), 5)
        ch.writer.write(c.send_message({"type": "ping", "seq": 1}))
        await _settle(lambda: got)
        closed = ch.writer.transport.is_closing() or bool(ended)
        ch.close()
        server.close()
        return answer, closed

    answer, closed = run(go())
    assert answer["type"] == "error" and answer["code"] == "bad-message", answer
    assert got == [{"type": "ping", "seq": 1}] and not closed, (got, ended)
    assert seen[0] == [(3, 30)]
