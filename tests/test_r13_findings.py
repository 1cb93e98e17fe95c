"""R13 findings (cold read of R12's changes): each a failing test, strict xfail until fixed."""
import asyncio

import pytest

from jrs.wire.connection import KIND_MESSAGE

from .test_wire_net import run


@pytest.mark.xfail(strict=True, reason="R13 F1: PARTIAL_TOTAL closes the largest single "
               "connection of all: hosts holding many small unfinished frames make an "
               "honest host's one large frame the victim")
def test_the_total_bound_on_unfinished_frames_does_not_close_another_hosts_one_frame(
        monkeypatch):
    """Attacker hosts .2-.4 each hold just under PARTIAL_PER_HOST in many small unfinished
    frames (each connection far smaller than any honest big frame); an honest host (.1)
    sending one frame bigger than those pushes the total over PARTIAL_TOTAL. The largest
    holder of all is the honest connection: it is closed, again on every retry, while
    the hosts that hold 99 % of the total keep theirs. Scaled down 64x (real: 8 hosts x
    ~64 MiB in 1 MiB pieces lock out every message over 1 MiB from every other host)."""
    from jrs.wire import aio

    from .test_wire_slots import _closed, _open, _start

    monkeypatch.setattr(aio, "PARTIAL_PER_HOST", 1 << 20)
    monkeypatch.setattr(aio, "PARTIAL_TOTAL", 3 << 20)

    async def partial(ch, size: int, cut: int = 100) -> None:
        ch.conn.strict = False
        ch.send({"type": "ping", "seq": 0})
        assert (await asyncio.wait_for(ch.recv(), 5))["type"] == "ping"
        ch.writer.write(ch.conn._seal(b'{"type":"zzz","p":"' + b"x" * size + b'"}',
                                      KIND_MESSAGE)[:-cut])

    async def go():
        server, port = await _start(established_per_address=64, hello_per_address=64)
        hostile = []
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            for _ in range(10):  # 10 x ~100 KB a host: ~1 MB, under its 1 MiB
                ch = await _open(port, source)
                await partial(ch, 100_000)
                hostile.append(ch)
        await asyncio.sleep(0.3)
        assert server._partial_all > 2_900_000
        honest = await _open(port, "127.0.0.1")
        await partial(honest, 400_000)  # one honest frame, its end still coming
        honest_closed = await _closed(honest, 2.0)
        for ch in hostile:
            ch.close()
        server.close()
        assert not honest_closed, "the honest host's only frame was the one closed"

    run(go())
