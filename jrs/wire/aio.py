"""The thin asyncio shell around `Connection`, used by every role.

It only moves bytes: reads from the socket go to `Connection.receive`, and what
the connection produces is written out. Servers get a handshake deadline, an
idle deadline and a cap on connections still in their handshake, so a silent
or slow peer cannot hold a slot; failed handshakes are logged once per peer
and reason per minute, never with key material.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections import deque
from typing import AsyncIterator, Awaitable, Callable, Optional, Union

from .connection import BadMessage, Connection, Data, Established, Message
from .errors import LocalProtocolError, WireError
from .messages import TRANSFER_TYPES, error

log = logging.getLogger("jrs.wire")
READ_SIZE = 1 << 18
HANDSHAKE_TIMEOUT = 5.0
MAX_UNAUTHENTICATED = 256
# A peer that vanishes without a reset (a pulled cable, a partition, a powered-off
# machine) is noticed within this many seconds, whether the connection is idle
# (TCP keepalive) or has data waiting to be acknowledged (TCP_USER_TIMEOUT).
PEER_TIMEOUT = float(os.environ.get("JRS_PEER_TIMEOUT", "20"))
FLUSH_FRAMES = 16  # queued frames that go out at once rather than at the end of the turn
FLUSH_BYTES = 1 << 16
TRACE = bool(os.environ.get("JRS_TRACE"))  # one stderr line per message, for timing a path


def _trace(direction: str, peer: object, body: object) -> None:
    kind = body.get("type") if isinstance(body, dict) else f"{len(body)} bytes"
    print(f"{time.monotonic() * 1000:.1f} {os.getpid()} {direction} {peer} {kind}",
          file=sys.stderr)


class ConnectionClosed(Exception):
    """The peer went away (or we closed)."""


def watch_peer(writer: asyncio.StreamWriter, timeout: float = PEER_TIMEOUT) -> None:
    """Make the kernel give up on a silent peer after about `timeout` seconds."""
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    idle = max(1, int(timeout / 2))
    interval = max(1, int(timeout / 6))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(timeout * 1000))
    except (OSError, AttributeError):  # not Linux, or not TCP: no early warning, no harm
        pass


class Transfer:
    """The open transfer of a `Channel.transfer` block: where its data frames go."""

    def __init__(self, channel: Channel) -> None:
        self._ch = channel

    @property
    def left(self) -> int:
        """Bytes the header announced that have not been written yet."""
        return self._ch.conn.sending_transfer

    def write(self, chunk: bytes) -> None:
        """Queue one data frame (at most frames.MAX_MESSAGE bytes)."""
        if self._ch._closed:
            raise ConnectionClosed("closed")
        self._ch._queue(self._ch.conn.send_data(chunk))

    async def drain(self) -> None:
        """Wait until the transport can take more (memory stays bounded)."""
        if self._ch._closed:
            raise ConnectionClosed("closed")
        await self._ch.drain()


class Channel:
    """An established, authenticated connection: send and receive messages and data."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 conn: Connection, idle_timeout: Optional[float] = None) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = conn
        self.idle_timeout = idle_timeout
        self.peer = writer.get_extra_info("peername")
        self.peer_role = conn.peer_role
        self._pending: deque = deque()
        self._closed = False
        self._out: list = []
        self._flush_soon: Optional[asyncio.Handle] = None
        self._loop = asyncio.get_running_loop()
        self._transfer_lock = asyncio.Lock()
        self._in_unit = False
        self._deferred: list = []

    def send(self, body: dict) -> None:
        """Queue a message. What one turn of the event loop sends leaves in one write:
        a loopback send() costs tens of microseconds, and a job's run, its executable and
        the previous job's ack would otherwise be three.

        While a transfer is going out (from any task) the message waits and is sealed
        right after the transfer's last data frame: nothing can land inside a transfer,
        so callers need no lock. A transfer header itself must go through `transfer`."""
        if body.get("type") in TRANSFER_TYPES:
            raise LocalProtocolError(f"a {body['type']!r} message carries data: send it "
                                     "with Channel.send_files or Channel.transfer")
        if self._in_unit:
            self._deferred.append(body)
            return
        if TRACE:
            _trace(">", self.peer, body)
        self._queue(self.conn.send_message(body))

    @contextlib.asynccontextmanager
    async def transfer(self, header: dict) -> AsyncIterator[Transfer]:
        """Send `header` and, inside the block, exactly the data it announces, as one unit:
        other transfers on this channel wait for it (in order), plain `send`s are queued
        until its last frame. Leaving the block with bytes still owed closes the channel
        (the stream cannot be resynchronised) and raises WireError."""
        async with self._transfer_lock:
            if self._closed:
                raise ConnectionClosed("closed")
            if TRACE:
                _trace(">", self.peer, header)
            self._queue(self.conn.send_message(header))
            self._in_unit = True
            unit = Transfer(self)
            try:
                yield unit
                if self.conn.sending_transfer:
                    raise WireError(f"{header['type']!r} transfer ended "
                                    f"{self.conn.sending_transfer} bytes short")
            finally:
                self._in_unit = False
                if self.conn.sending_transfer:
                    self._deferred.clear()
                    self.close()
                else:
                    deferred, self._deferred = self._deferred, []
                    for body in deferred:
                        self.send(body)

    async def send_files(self, header: dict, items: list, cache: Optional[dict] = None
                         ) -> None:
        """Send `header` (a `run` or `finished` whose `files` is
        `jrs.wire.files.describe(items)`) and the bytes of each (name, path) of `items`,
        as one unit (see `transfer`). `cache` maps path -> bytes for small files sent
        again and again (an executable shared by a whole cluster)."""
        from .files import stream

        heads = header["files"]
        if len(heads) != len(items):
            raise LocalProtocolError(f"{len(items)} files for {len(heads)} headers")
        async with self.transfer(header) as unit:
            await stream(unit, items, heads, cache)

    def _queue(self, frame: bytes) -> None:
        out = self._out
        out.append(frame)
        if len(out) >= FLUSH_FRAMES or len(frame) >= FLUSH_BYTES:
            self.flush()  # a burst: let the peer start on it while we seal the rest
        elif self._flush_soon is None:
            self._flush_soon = self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand the queued frames to the transport now, in order."""
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        if self._out:
            out = self._out[0] if len(self._out) == 1 else b"".join(self._out)
            self._out = []
            if not self._closed:
                self.writer.write(out)

    async def drain(self) -> None:
        self.flush()
        await self.writer.drain()

    async def recv(self) -> Union[dict, bytes]:
        """The next message (dict) or data chunk (bytes). Bad messages are answered here."""
        while True:
            while self._pending:
                event = self._pending.popleft()
                if isinstance(event, Message):
                    if event.body["type"] == "hello":
                        continue
                    if TRACE:
                        _trace("<", self.peer, event.body)
                    return event.body
                if isinstance(event, Data):
                    return event.chunk
                if isinstance(event, BadMessage):
                    self.send(error("bad-message", event.reason))
            await self._fill()

    async def _fill(self) -> None:
        if self._closed:
            raise ConnectionClosed("closed")
        try:
            if self.idle_timeout:
                data = await asyncio.wait_for(self.reader.read(READ_SIZE), self.idle_timeout)
            else:
                data = await self.reader.read(READ_SIZE)
        except asyncio.TimeoutError:
            self.close()
            raise ConnectionClosed("idle timeout")
        except OSError as exc:
            self.close()
            raise ConnectionClosed(str(exc))
        if not data:
            self.close()
            raise ConnectionClosed("peer closed the connection")
        try:
            self._pending.extend(self.conn.receive(data))
        except WireError:
            self.close()
            raise
        out = self.conn.data_to_send()
        if out:
            self._queue(out)

    def close(self) -> None:
        if not self._closed:
            self.flush()
            self._closed = True
            self.writer.close()

    async def wait_closed(self) -> None:
        self.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


async def _handshake(reader, writer, conn: Connection, deadline: float) -> deque:
    """Run the handshake to completion; return events that arrived with it."""
    events: deque = deque()
    while not conn.established:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WireError("handshake timed out")
        try:
            data = await asyncio.wait_for(reader.read(READ_SIZE), remaining)
        except asyncio.TimeoutError:
            raise WireError("handshake timed out")
        if not data:
            raise WireError("peer closed during the handshake")
        try:
            events.extend(e for e in conn.receive(data) if not isinstance(e, Established))
        finally:
            out = conn.data_to_send()
            if out:
                writer.write(out)
    return events


async def connect(host: str, port: int, root: bytes, role: str,
                  peer_roles: Optional[frozenset] = None,
                  timeout: float = HANDSHAKE_TIMEOUT) -> Channel:
    """Open an authenticated channel to a JRS server (raises OSError or WireError)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    conn = Connection(root, role, is_client=True, peer_roles=peer_roles)
    writer.write(conn.initiate())
    try:
        events = await _handshake(reader, writer, conn, time.monotonic() + timeout)
    except BaseException:
        writer.close()
        raise
    watch_peer(writer)
    channel = Channel(reader, writer, conn)
    channel._pending.extend(events)
    return channel


class FailureLog:
    """Log a failed handshake once per (peer host, reason) per interval."""

    def __init__(self, interval: float = 60.0, limit: int = 10_000) -> None:
        self.interval = interval
        self.limit = limit
        self._seen: dict = {}

    def report(self, peer, reason: str) -> bool:
        host = peer[0] if isinstance(peer, tuple) else str(peer)
        key = (host, reason)
        now = time.monotonic()
        last = self._seen.get(key)
        if last is not None and now - last < self.interval:
            return False
        if len(self._seen) >= self.limit:
            self._seen.clear()
        self._seen[key] = now
        log.warning("refused connection from %s: %s", host, reason)
        return True


Handler = Callable[[Channel], Awaitable[None]]


class Server:
    """Accepts connections, authenticates them, hands channels to `handler`."""

    def __init__(self, root: bytes, role: str, handler: Handler,
                 peer_roles: Optional[frozenset] = None,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 idle_timeout: Optional[float] = None,
                 max_unauthenticated: int = MAX_UNAUTHENTICATED) -> None:
        self.root = root
        self.role = role
        self.handler = handler
        self.peer_roles = peer_roles
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.max_unauthenticated = max_unauthenticated
        self.unauthenticated = 0
        self.failures = FailureLog()
        self.refused = 0
        self._server: Optional[asyncio.AbstractServer] = None

    async def start(self, host: str, port: int) -> tuple:
        self._server = await asyncio.start_server(self._accept, host, port, limit=READ_SIZE,
                                                  backlog=1024)
        return self._server.sockets[0].getsockname()

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if self.unauthenticated >= self.max_unauthenticated:
            self.refused += 1
            self.failures.report(peer, "too many connections still in their handshake")
            writer.close()
            return
        self.unauthenticated += 1
        conn = Connection(self.root, self.role, is_client=False, peer_roles=self.peer_roles)
        try:
            events = await _handshake(reader, writer, conn,
                                      time.monotonic() + self.handshake_timeout)
        except asyncio.CancelledError:
            writer.close()
            return
        except (WireError, OSError) as exc:
            self.refused += 1
            self.failures.report(peer, str(exc))
            writer.close()
            return
        finally:
            self.unauthenticated -= 1
        watch_peer(writer)
        channel = Channel(reader, writer, conn, self.idle_timeout)
        channel._pending.extend(events)
        try:
            await self.handler(channel)
        except (ConnectionClosed, ConnectionError, asyncio.CancelledError):
            pass
        except WireError as exc:
            self.failures.report(peer, str(exc))
        finally:
            channel.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
