"""The wire over real loopback sockets: round trips, concurrency, and attacks.

Every attack must end in a closed connection *and* leave a server that still
serves an honest client straight afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket

import pytest

from jrs.wire.aio import ConnectionClosed, Server, connect
from jrs.wire.connection import Connection
from jrs.wire.errors import WireError
from jrs.wire.keys import root_key
from jrs.wire.selftest import echo

ROOT = root_key(b"s" * 40)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def start(host="127.0.0.1", **kw):
    server = Server(ROOT, "node", echo, **kw)
    addr = await server.start(host, 0)
    return server, addr[1]


async def honest(port, host="127.0.0.1"):
    channel = await connect(host, port, ROOT, "submit", timeout=5)
    channel.send({"type": "echo", "seq": 1, "body": "still here"})
    reply = await channel.recv()
    await channel.wait_closed()
    assert reply == {"type": "echo", "seq": 1, "body": "still here"}


async def raw(port, data: bytes, wait: float = 3.0) -> tuple[bytes, bool]:
    """Send raw bytes; return what came back and whether the server closed on us."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    got = b""
    closed = False
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), wait)
            if not chunk:
                closed = True
                break
            got += chunk
    except (asyncio.TimeoutError, ConnectionError):
        pass
    writer.close()
    return got, closed


@pytest.mark.parametrize("size", [0, 1, 1000, 65536, 1 << 20, 16 << 20])
def test_data_round_trip_sizes(size):
    async def go():
        server, port = await start()
        channel = await connect("127.0.0.1", port, ROOT, "submit")
        payload = os.urandom(size)

        async def send():
            async with channel.transfer({"type": "blob", "size": size}) as unit:
                if size:
                    unit.write(payload)
                await unit.drain()
        sender = asyncio.ensure_future(send())  # written while we read the echo
        assert await channel.recv() == {"type": "blob", "size": size}
        if size:
            assert await channel.recv() == payload
        await sender
        await channel.wait_closed()
        server.close()
    run(go())


def test_interleaved_concurrent_connections():
    async def client(port, n):
        channel = await connect("127.0.0.1", port, ROOT, "tool")
        for seq in range(50):
            channel.send({"type": "echo", "seq": seq, "body": f"{n}-{seq}"})
        for seq in range(50):
            assert await channel.recv() == {"type": "echo", "seq": seq, "body": f"{n}-{seq}"}
        await channel.wait_closed()

    async def go():
        server, port = await start()
        await asyncio.gather(*(client(port, n) for n in range(20)))
        server.close()
    run(go())


def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.fail("IPv6 is required for this test")

    async def go():
        server, port = await start("::1")
        await honest(port, "::1")
        server.close()
    run(go())


def test_unknown_message_type_is_answered_with_an_error():
    async def answering(channel):
        item = await channel.recv()  # the bad message is answered inside recv()
        channel.send(item)
        await channel.drain()
        await asyncio.sleep(0.2)

    async def go2():
        server = Server(ROOT, "node", answering)
        port = (await server.start("127.0.0.1", 0))[1]
        channel = await connect("127.0.0.1", port, ROOT, "submit")
        channel.conn.strict = False  # a peer sending what our schema does not know
        channel.writer.write(channel.conn.send_message({"type": "rm-rf"}))
        channel.send({"type": "ping", "seq": 9})
        first = await channel.recv()
        assert first["type"] == "error" and first["code"] == "bad-message"
        assert "unknown message type 'rm-rf'" in first["message"]
        assert await channel.recv() == {"type": "ping", "seq": 9}
        await channel.wait_closed()
        server.close()
    run(go2())


def test_wrong_secret_both_directions():
    async def go():
        server, port = await start()
        with pytest.raises((WireError, ConnectionClosed, ConnectionError)):
            ch = await connect("127.0.0.1", port, root_key(b"t" * 40), "submit")
            await ch.recv()
        # and a client refuses a server holding another secret
        other = Server(root_key(b"t" * 40), "node", echo)
        other_port = (await other.start("127.0.0.1", 0))[1]
        with pytest.raises((WireError, ConnectionError)):
            await connect("127.0.0.1", other_port, ROOT, "submit")
        await honest(port)
        server.close()
        other.close()
    run(go())


def sans_io_client():
    c = Connection(ROOT, "submit", is_client=True)
    return c, c.initiate()


@pytest.mark.parametrize("attack", [
    "replay_session", "garbage_first", "garbage_after", "huge_length", "bit_flip",
    "reorder", "drop", "truncate_then_close", "reflect"])
def test_attacks_close_and_server_survives(attack):
    async def go():
        server, port = await start()
        # record an honest session, byte for byte, at the socket level
        c, msg1 = sans_io_client()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(msg1)
        msg2 = await reader.readexactly(70)
        c.receive(msg2)
        hello = c.data_to_send()
        f1 = c.send_message({"type": "echo", "seq": 1, "body": "a"})
        writer.write(hello + f1)
        reply1 = await reader.readexactly(4)
        reply1 += await reader.readexactly(int.from_bytes(reply1, "big"))
        writer.close()

        if attack == "replay_session":
            _, closed = await raw(port, msg1 + hello + f1)
        elif attack == "garbage_first":
            _, closed = await raw(port, b"\x16\x03\x01 hello TLS?" * 10)
        else:
            c2, m1 = sans_io_client()
            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
            w2.write(m1)
            c2.receive(await r2.readexactly(70))
            w2.write(c2.data_to_send())
            g1 = c2.send_message({"type": "echo", "seq": 1, "body": "a"})
            g2 = c2.send_message({"type": "echo", "seq": 2, "body": "b"})
            bad = {
                "garbage_after": b"\x00\x00\x00\x30" + os.urandom(48),
                "huge_length": (2 ** 32 - 1).to_bytes(4, "big"),
                "bit_flip": g1[:-1] + bytes([g1[-1] ^ 1]),
                "reorder": g2 + g1,
                "drop": g2,
                "truncate_then_close": g1[:-4],
                "reflect": reply1,
            }[attack]
            w2.write(bad)
            if attack == "truncate_then_close":
                w2.write_eof()
            closed = False
            try:
                while True:
                    chunk = await asyncio.wait_for(r2.read(65536), 3)
                    if not chunk:
                        closed = True
                        break
                    assert attack != "bit_flip", "a tampered frame must not be answered"
            except (asyncio.TimeoutError, ConnectionError):
                closed = attack != "truncate_then_close" and False
            w2.close()
            if attack == "truncate_then_close":
                closed = True  # the peer hung up mid-frame; nothing was delivered
        assert closed, f"{attack}: the server kept the connection open"
        await honest(port)
        server.close()
    run(go())


def test_recorded_server_reply_replayed_to_a_client():
    async def go():
        server, port = await start()
        _, msg1 = sans_io_client()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(msg1)
        recorded = await reader.readexactly(70)
        writer.close()
        fake = await asyncio.start_server(
            lambda r, w: (w.write(recorded)), "127.0.0.1", 0)
        fake_port = fake.sockets[0].getsockname()[1]
        with pytest.raises(WireError, match="server does not hold our secret"):
            await connect("127.0.0.1", fake_port, ROOT, "submit", timeout=3)
        fake.close()
        await honest(port)
        server.close()
    run(go())


def test_silent_peer_is_dropped_by_the_handshake_deadline():
    async def go():
        server, port = await start(handshake_timeout=0.5)
        _, closed = await raw(port, b"", wait=3)
        assert closed
        _, closed = await raw(port, b"JRS", wait=3)  # slowloris: a few bytes, then nothing
        assert closed
        await honest(port)
        server.close()
    run(go())


def test_a_trickling_peer_is_dropped_at_the_deadline_not_per_byte():
    """Slowloris proper: a valid handshake's bytes, one every 0.1 s. The deadline covers
    the whole handshake, so the server closes after it however steady the trickle."""
    async def go():
        server, port = await start(handshake_timeout=0.5)
        hello = Connection(ROOT, "submit", is_client=True).initiate()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        closed_after = None
        for byte in hello:
            try:
                writer.write(bytes([byte]))
                await writer.drain()
                chunk = await asyncio.wait_for(reader.read(1), 0.1)
                if not chunk:
                    closed_after = loop.time() - t0
                    break
            except asyncio.TimeoutError:
                continue
            except ConnectionError:
                closed_after = loop.time() - t0
                break
        writer.close()
        assert closed_after is not None and closed_after < 1.5, closed_after
        await honest(port)
        server.close()
    run(go())


def test_idle_authenticated_peer_is_dropped():
    async def go():
        server, port = await start(idle_timeout=0.5)
        channel = await connect("127.0.0.1", port, ROOT, "submit")
        await asyncio.sleep(1.0)
        with pytest.raises((ConnectionClosed, ConnectionError)):
            channel.send({"type": "ping", "seq": 1})
            await channel.drain()
            await channel.recv()
        server.close()
    run(go())


def test_a_thousand_connections_at_once():
    async def opener(port):
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return None

    async def closed_by_server(pair) -> bool:
        reader, writer = pair
        try:
            return await asyncio.wait_for(reader.read(100), 5) == b""
        except (asyncio.TimeoutError, ConnectionError):
            return False
        finally:
            writer.close()

    async def go():
        server, port = await start(handshake_timeout=1.0, max_unauthenticated=100)
        pairs = [p for p in await asyncio.gather(*(opener(port) for _ in range(1000))) if p]
        await asyncio.sleep(0.2)
        assert server.unauthenticated <= 100  # the cap holds under the flood
        results = await asyncio.gather(*(closed_by_server(p) for p in pairs))
        assert all(results), f"{results.count(False)} flood connections left open"
        assert server.unauthenticated == 0
        await honest(port)
        server.close()
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    run(go())


def test_failed_handshakes_are_logged_once_per_peer_and_reason(caplog):
    async def go():
        server, port = await start()
        for _ in range(5):
            try:
                await connect("127.0.0.1", port, root_key(b"t" * 40), "submit", timeout=2)
            except (WireError, ConnectionError):
                pass
        await asyncio.sleep(0.2)
        server.close()
    with caplog.at_level(logging.WARNING, logger="jrs.wire"):
        run(go())
    lines = [r.getMessage() for r in caplog.records if "does not hold our secret" in
             r.getMessage()]
    assert lines == ["refused connection from 127.0.0.1: handshake failed: the peer does not "
                     "hold our secret"]
    assert "ssss" not in caplog.text


# ---------------------------------------------------------------- transfers (issue 12.4)

class _Sink:
    """A file object for files.receive that only hashes what it is given."""

    def __init__(self, digest) -> None:
        self.digest = digest

    def write(self, chunk: bytes) -> None:
        self.digest.update(chunk)

    def close(self) -> None:
        pass


def _shrink(channel, size: int) -> None:
    sock = channel.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _file_header(kind: str, items: list) -> dict:
    from jrs.wire import files
    if kind == "run":
        return {"type": "run", "claim": "c1", "job": "1.0", "attempt": 1,
                "spec": {"executable": "x"}, "files": files.describe(items)}
    result = {"node": "n1", "exit_code": 0, "signal": None, "started": 1.0, "ended": 2.0,
              "rusage": {"utime": 0.1, "stime": 0.0, "maxrss_kb": 1024}, "removed": False}
    return {"type": "finished", "job": "1.0", "attempt": 1, "result": result,
            "files": files.describe(items)}


async def _receive_stream(channel, expect_units: int, expect_pings: int) -> tuple:
    """Read until `expect_units` transfers and `expect_pings` pings came; every transfer's
    data checked against its header (any interleaving would have closed the channel)."""
    from jrs.wire import files
    digests, pings = [], []
    while len(digests) < expect_units or len(pings) < expect_pings:
        msg = await channel.recv()
        assert isinstance(msg, dict), "file data outside a transfer reached the caller"
        if msg["type"] in ("run", "finished"):
            sink = _Sink(hashlib.sha256())
            await files.receive(channel, msg["files"], lambda head, sink=sink: sink)
            digests.append(sink.digest.hexdigest())
        elif msg["type"] in ("ping", "pong"):
            pings.append(msg["seq"])
    return digests, pings


async def _chatter(channel, kind: str, count: int, every: float) -> None:
    """Control messages while a transfer is going out: no lock at the call site."""
    for seq in range(count):
        channel.send({"type": kind, "seq": seq})
        await asyncio.sleep(every)


def _both_directions(tmp_path, size: int, buffers: int | None, pings: int, units: int = 2):
    """Client and server each send `units` transfers of a `size`-byte file while other
    tasks on the same channels send `pings` control messages; both sides must receive
    every file intact and every control message, in order, on one connection."""
    big = tmp_path / "big"
    with open(big, "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    want = hashlib.sha256(big.read_bytes()).hexdigest()
    items = [("big", str(big))]
    results: dict = {}

    async def send_units(channel, kind):
        for _ in range(units):
            await channel.send_files(_file_header(kind, items), items)

    async def handler(channel):
        if buffers:
            _shrink(channel, buffers)
        out = asyncio.gather(send_units(channel, "finished"),
                             _chatter(channel, "pong", pings, 0.002))
        results["server"] = await _receive_stream(channel, units, pings)
        await out
        await channel.drain()
        channel.send({"type": "echo", "seq": 0, "body": "done"})
        await channel.drain()
        await asyncio.sleep(5)

    async def go():
        server = Server(ROOT, "node", handler)
        port = (await server.start("127.0.0.1", 0))[1]
        channel = await connect("127.0.0.1", port, ROOT, "submit")
        if buffers:
            _shrink(channel, buffers)
        out = asyncio.gather(send_units(channel, "run"), _chatter(channel, "ping", pings, 0.002))
        results["client"] = await _receive_stream(channel, units, pings)
        await out
        assert (await channel.recv())["body"] == "done"
        await channel.wait_closed()
        server.close()
    run(go())
    for side in ("client", "server"):
        digests, seen = results[side]
        assert digests == [want] * units, side
        assert seen == list(range(pings)), side  # every control message, in order


def test_transfers_are_units_under_small_socket_buffers(tmp_path):
    """Issue 12: an 8 MiB input under small socket buffers with control messages sent
    meanwhile used to end in "file data did not match its header"."""
    _both_directions(tmp_path, 8 << 20, 65536, pings=300)


def test_a_64mib_transfer_with_concurrent_control_messages(tmp_path):
    _both_directions(tmp_path, 64 << 20, None, pings=200, units=1)


def test_the_channel_makes_misuse_impossible(tmp_path):
    """A transfer header cannot go out as a plain message; a transfer block left with
    bytes owed closes the channel instead of leaving a desynchronised stream."""
    from jrs.wire.errors import LocalProtocolError

    async def go():
        server, port = await start()
        channel = await connect("127.0.0.1", port, ROOT, "submit")
        with pytest.raises(LocalProtocolError, match="send_files"):
            channel.send({"type": "blob", "size": 3})
        with pytest.raises(WireError, match="1 bytes short"):
            async with channel.transfer({"type": "blob", "size": 3}) as unit:
                unit.write(b"ab")
        with pytest.raises(ConnectionClosed):
            await channel.recv()
        await honest(port)
        server.close()
    run(go())


# ---------------------------------------------------------------- pre-auth limits (13.8)

async def _silent(port: int, n: int) -> list:
    return [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]


async def _closed_now(pair, wait: float = 0.5) -> bool:
    try:
        return await asyncio.wait_for(pair[0].read(100), wait) == b""
    except asyncio.TimeoutError:
        return False
    except ConnectionError:
        return True


def test_a_silent_flood_from_one_address_sheds_its_oldest_not_the_honest():
    """Slots per source address: the 5th..12th silent connection each push out the one
    idle the longest; an honest client still gets through; the newest silent ones
    stay until their deadline."""
    async def go():
        server, port = await start(per_address=4, max_unauthenticated=100,
                                   handshake_timeout=5.0)
        flood = await _silent(port, 12)
        await asyncio.sleep(0.2)
        assert server.unauthenticated == 4 and server.dropped == 8
        assert all([await _closed_now(p) for p in flood[:8]])  # the oldest went first
        assert not any([await _closed_now(p, 0.05) for p in flood[8:]])
        await honest(port)  # drops one more silent one to make room
        assert server.dropped == 9
        for _, w in flood:
            w.close()
        server.close()
    run(go())


def test_the_overall_cap_sheds_the_longest_idle_whatever_its_address():
    async def go():
        server, port = await start(per_address=100, max_unauthenticated=5,
                                   handshake_timeout=5.0)
        early = await _silent(port, 3)
        await asyncio.sleep(0.05)
        late = await _silent(port, 2)
        for _, w in early[:1]:  # the first one speaks up (half a msg1): no longer idle
            w.write(Connection(ROOT, "submit", is_client=True).initiate()[:10])
        await asyncio.sleep(0.1)
        more = await _silent(port, 1)
        await asyncio.sleep(0.1)
        assert server.unauthenticated == 5
        assert await _closed_now(early[1])  # idle the longest, not the one that spoke
        assert not await _closed_now(early[0], 0.05)
        for _, w in early + late + more:
            w.close()
        server.close()
    run(go())


def test_wrong_secret_and_a_busy_server_are_told_apart():
    """A failed proof is AuthError at once (the server says so); a server that closes
    during the handshake is HandshakeClosed, retried within retry_for, never AuthError."""
    from jrs.wire.errors import AuthError, HandshakeClosed

    async def go():
        server, port = await start()
        with pytest.raises(AuthError, match="we do not hold its secret"):
            await connect("127.0.0.1", port, root_key(b"t" * 40), "submit", retry_for=5)
        attempts = []

        def hang_up(reader, writer):
            attempts.append(1)
            writer.close()
        closer = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        cport = closer.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(HandshakeClosed) as info:
            await connect("127.0.0.1", cport, ROOT, "submit", retry_for=1.0)
        assert not isinstance(info.value, AuthError)
        assert 0.2 < loop.time() - t0 < 3 and len(attempts) >= 3  # retried with backoff
        closer.close()
        server.close()
    run(go())


def test_a_dropped_handshake_is_retried_and_gets_through():
    """The first two connections are closed by a front door during the handshake; the
    third is passed on to the real server: connect() with retry_for succeeds."""
    async def go():
        server, port = await start()
        seen = []

        async def front(reader, writer):
            seen.append(1)
            if len(seen) <= 2:
                writer.close()
                return
            up_r, up_w = await asyncio.open_connection("127.0.0.1", port)

            async def pipe(r, w):
                try:
                    while True:
                        data = await r.read(65536)
                        if not data:
                            break
                        w.write(data)
                finally:
                    w.close()
            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        door = await asyncio.start_server(front, "127.0.0.1", 0)
        dport = door.sockets[0].getsockname()[1]
        channel = await connect("127.0.0.1", dport, ROOT, "submit", retry_for=10)
        channel.send({"type": "echo", "seq": 5, "body": "through"})
        assert await channel.recv() == {"type": "echo", "seq": 5, "body": "through"}
        assert len(seen) == 3
        channel.close()
        door.close()
        server.close()
    run(go())


def test_refused_connection_lines_are_rate_limited_per_address_whatever_the_text(caplog):
    """2,000 distinct reasons from one address: a few lines, each one bounded and escaped;
    another address still gets its line."""
    from jrs.wire.aio import FailureLog
    failures = FailureLog()
    with caplog.at_level(logging.WARNING, logger="jrs.wire"):
        for i in range(2000):
            failures.report(("10.0.0.1", 5000 + i), f"reason {i}\nFAKE LINE" + "x" * 500)
        failures.report(("10.0.0.2", 1), "another peer")
    lines = [r.getMessage() for r in caplog.records]
    from_first = [line for line in lines if "10.0.0.1" in line]
    assert 1 <= len(from_first) <= 20
    assert all("\n" not in line and len(line) < 300 for line in lines)
    assert any("10.0.0.2" in line for line in lines)


def test_data_frames_go_to_on_data_per_read_swallowed_ones_too():
    """R10: the channel hands each read's data frames and bytes to `on_data` (the
    daemons' budgets), those the wire swallows after a refused header included (no event
    shows them); a first message, a transfer and its data in one read are an honest
    client's, never closed. Data that follows no first message at all, read after read,
    closes the connection (`error`, code "protocol")."""
    seen: list = []  # [(frames, bytes)] of each channel, the honest one first
    got: list = []
    ended: list = []  # why the server's channels closed

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

    async def go():
        server = Server(ROOT, "node", handler)
        port = (await server.start("127.0.0.1", 0))[1]
        ch = await connect("127.0.0.1", port, ROOT, "submit", timeout=5)
        ch.conn.strict = False  # a hostile peer breaks the schema
        c = ch.conn
        wire = c.send_message({"type": "ping", "seq": 1})
        wire += c.send_message({"type": "blob", "size": 3000})
        wire += b"".join(c.send_data(bytes(1000)) for _ in range(3))
        wire += c.send_message({"type": "run", "files": [{"name": "a", "size": 500}]})
        wire += b"".join(c.send_data(bytes(100)) for _ in range(5))
        wire += c.send_message({"type": "ping", "seq": 2})
        ch.writer.write(wire)  # one write: most likely one read
        deadline = asyncio.get_running_loop().time() + 5
        while len(got) < 5 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        honest_closed = ch.writer.transport.is_closing()
        ch.close()
        # before any first message: a refused header, then its data read after read
        bad = await connect("127.0.0.1", port, ROOT, "submit", timeout=5)
        bad.conn.strict = False
        bad.writer.write(bad.conn.send_message({"type": "run",
                                                "files": [{"name": "a", "size": 1 << 30}]}))
        sent = 0
        try:
            for _ in range(20):
                bad.writer.write(b"".join(bad.conn.send_data(b"x") for _ in range(10)))
                await bad.writer.drain()
                sent += 1
                await asyncio.sleep(0.02)  # another read each time
        except ConnectionError:
            pass
        for _ in range(100):
            if len(ended) == 2:  # the honest one's (we closed it) and the bad one's
                break
            await asyncio.sleep(0.01)
        bad.close()
        server.close()
        return honest_closed, sent

    honest_closed, sent = run(go())
    assert not honest_closed
    assert [m for m in got if isinstance(m, dict)] == [
        {"type": "ping", "seq": 1}, {"type": "blob", "size": 3000}, {"type": "ping", "seq": 2}]
    assert [m for m in got if isinstance(m, bytes)] == [bytes(1000)] * 3
    assert (sum(f for f, _ in seen[0]), sum(b for _, b in seen[0])) == (8, 3500), seen
    assert ended == ["peer closed the connection", "file data before the first message"]
    assert sent < 20, sent  # closed within a few reads, not at the deadline
