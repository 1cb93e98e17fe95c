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

from .connection import (
    MAGIC,
    STATUS_AUTH_FAILED,
    VERSION,
    BadMessage,
    Connection,
    Costly,
    Data,
    Established,
    Message,
    Raw,
)
from .errors import AuthError, HandshakeClosed, LocalProtocolError, WireError
from .hosts import host_key, learn_local_networks
from .messages import TRANSFER_TYPES, error
from .peerlog import PeerLog, excerpt
from .slots import Counts, HostBytes, Slots, within_files

log = logging.getLogger("jrs.wire")
READ_SIZE = 1 << 18
# a message frame of more JSON values and keys than this is charged before it is
# decoded (`Channel.on_costly`): ~2 ms of decode at most, where a budget charged after
# the decode let each of a host's 64 sessions decode a 4 MiB frame of them (~0.5 s
# each) at the same moment. Honest frames past it are rare (a run of ~600 files)
COSTLY_UNITS = 4096
HANDSHAKE_TIMEOUT = 5.0  # a client's wait for one handshake attempt
SERVER_HANDSHAKE_TIMEOUT = 3.0  # how long a server gives a connection to authenticate
MAX_UNAUTHENTICATED = 1024  # connections in their handshake, in all ...
PER_ADDRESS = 32  # ... and from one source host (hosts.host_key)
MAX_BEFORE_HELLO = 1024  # authenticated connections before their first message, in all ...
HELLO_PER_ADDRESS = 32  # ... and from one source host
MAX_ESTABLISHED = 4096  # authenticated connections until they close, in all ...
ESTABLISHED_PER_ADDRESS = 128  # ... and from one source host (slots.Counts)
# A peer that vanishes without a reset (a pulled cable, a partition, a powered-off
# machine) is noticed within this many seconds, whether the connection is idle
# (TCP keepalive) or has data waiting to be acknowledged (TCP_USER_TIMEOUT).
PEER_TIMEOUT = float(os.environ.get("JRS_PEER_TIMEOUT", "20"))
# how long submit and the tools keep trying to reach the master (busy handshakes included)
CONNECT_TIMEOUT = float(os.environ.get("JRS_CONNECT_TIMEOUT", "15"))
FLUSH_FRAMES = 16  # queued frames that go out at once rather than at the end of the turn
FLUSH_BYTES = 1 << 16
# bytes queued to a peer that does not read them: past this the channel is closed (a
# peer sending what is answered, a refused message say, and never reading the answers
# otherwise grew the daemon's memory for as long as it liked; transfers wait for the
# transport anyway, see `Transfer.drain`, and no honest peer falls this far behind)
MAX_UNREAD = 64 << 20
BAD_BEFORE_FIRST = 16  # bad frames a server's channel answers before its first message
# bytes a host's connections may read before their first messages (slots.HostBytes):
# an honest first message is small but may be a resume's attach of 100,000 jobs (a few
# MB); a flood of costly JSON before it is read at ~0.15 s of CPU a second (R11)
FIRST_BYTES_BURST = 32 << 20
FIRST_BYTES_RATE = 1 << 20
FIRST_BYTES_MOST_WAIT = 10.0  # seconds: well within the daemons' 30 s first-message deadline
HANDSHAKE_READ = 4096  # a server's reads in the handshake: msg1, then the hello frame
# connections one source host may open a second, after a burst (slots.HostBytes, a
# connection a token): one a connection costs a daemon ~0.6 ms with the secret (accept,
# two X25519, close) and a host opening them as fast as it could took 64-84 % of a core
# once a session's hello cost more than its connection (R12); 100 a second is ~6 %. A
# connection past the rate waits, in its handshake slot, before anything of it is read,
# at most CONNECT_MOST_WAIT (the slots give up the oldest waiting); past that it is closed
# bytes a host's connections may hold in frames not complete yet (or held, `Costly`),
# and all hosts' (R12 F1: a frame is buffered whole until its last byte, up to 16 MiB,
# and 64 sessions of one host, each sending all of one but its last bytes, held 1 GiB
# of a node's memory for as long as they liked). Past a bound the connection holding
# the most of it is closed. An honest frame is held for a moment (our transfers send
# 256 KiB frames; the largest message is a 16 MiB run, rare)
PARTIAL_PER_HOST = 64 << 20
PARTIAL_TOTAL = 512 << 20
CONNECT_RATE = 100.0
CONNECT_BURST = 500.0
CONNECT_MOST_WAIT = 1.0  # past this a connection is closed at once instead
TRACE = bool(os.environ.get("JRS_TRACE"))  # one stderr line per message, for timing a path


def _trace(direction: str, peer: object, body: object) -> None:
    kind = body.get("type") if isinstance(body, dict) else f"{len(body)} bytes"
    print(f"{time.monotonic() * 1000:.1f} {os.getpid()} {direction} {peer} {kind}",
          file=sys.stderr)


def open_files_allowed() -> int:
    """This process's soft limit of open files (a huge number when unlimited)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 1 << 30
    return 1 << 30 if soft == resource.RLIM_INFINITY or soft < 0 else soft


def raise_open_files() -> int:
    """Raise the soft limit of open files to the hard one (daemons, at start: a soft
    limit of 1,024 is a common default, and the overall connection bounds are a
    quarter of it, see `slots.within_files`); returns the limit now in force."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if 0 <= soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, OSError, ValueError):
        pass
    return open_files_allowed()


class ConnectionClosed(Exception):
    """The peer went away (or we closed)."""


class BadPeerMessage(WireError):
    """A message from the peer that fails the schema, raised by `Channel.recv` on a
    channel whose `raise_bad` is set (it has been answered with `bad-message`). `body`
    is the message as it came (a dict) or None. A refused transfer header's data
    frames are then NOT swallowed: the caller either drains them or closes."""

    def __init__(self, reason: str, body: Optional[dict]) -> None:
        super().__init__(f"bad message: {reason}")
        self.reason = reason
        self.body = body


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
        self._raise_bad = False
        self.last_size = 0  # JSON bytes of the frame of the message recv returned last
        self.last_units = 0  # ... their connection.json_units (of a refused one at on_bad)
        # called once, when recv first returns something (the server's first-message slot)
        self.on_first: Optional[Callable[[], None]] = None
        # awaited with a refused frame's size once it is answered, before recv reads on
        # (the master charges a submitter's refused messages to its budget like others)
        self.on_bad: Optional[Callable[[int], Awaitable[object]]] = None
        # awaited with (data frames, their bytes) read since the last read, before the
        # next one (`_charge_data`): the daemons charge a submitter's data to its budget
        # (R10: 1-byte frames after one `run` took 54 % of a node's core uncharged)
        self.on_data: Optional[Callable[[int, int], Awaitable[object]]] = None
        # awaited with a read's size before it is decoded, while the first message has
        # not come (`on_first` set): a server's per-host byte budget for that stage
        # (R11: nothing charged what was decoded before the first message)
        self.on_read: Optional[Callable[[int], Awaitable[object]]] = None
        # awaited before every read from the socket, the first message's included: a
        # daemon waits here while the source host's budget is in debt (R11: a debt was
        # waited out only by the session that ran it up, after the decode, so sessions
        # opened and closed one after another each had a 4 MiB frame decoded free)
        self.before_read: Optional[Callable[[], Awaitable[object]]] = None
        # awaited with a read's size before it is decoded, once the first message has
        # come (`on_read`'s stage is before it): the master's per-host byte budget for
        # what its sessions read, kept undecoded or not (R12: demand frames kept Raw and
        # replaced unread cost no budget, but decrypting and counting them did: 100 %)
        self.on_each_read: Optional[Callable[[int], Awaitable[object]]] = None
        self._on_costly: Optional[Callable[[int, int], Awaitable[object]]] = None
        self._gated = False  # before_read was awaited once (before the first message)
        self._prepaid = False  # the next message's bytes and units went to on_costly
        # called with conn.buffered after each read (a server's bound on what a host's
        # unfinished frames hold: `Server._buffered`), and with 0 when closed
        self.on_buffered: Optional[Callable[[int], None]] = None
        self._hellos = 0  # the wire's own hello: one per connection
        self._bad_before_first = 0  # answered bad frames before the first message
        self._data_charged = (0, 0, 0)  # conn.data_frames_in, data_bytes_in,
        # data_bytes_discarded charged so far
        self.last_discarded = 0  # bytes of those on_data is called for the wire swallowed
        self._data_before_first = False  # a read before the first message brought data

    @property
    def on_costly(self) -> Optional[Callable[[int, int], Awaitable[object]]]:
        """Awaited with (bytes, `json_units`) of a message frame of more than
        COSTLY_UNITS values and keys, once the first message has come, before it is
        decoded: the daemon charges them to the session's budget first, waiting while
        it or its host is in debt. That message (or refused frame) then reports
        `last_size` and `last_units` 0: its bytes and units are paid."""
        return self._on_costly

    @on_costly.setter
    def on_costly(self, fn: Optional[Callable[[int, int], Awaitable[object]]]) -> None:
        self._on_costly = fn
        self.conn.hold_units = COSTLY_UNITS if fn is not None else 0

    @property
    def raise_bad(self) -> bool:
        """False (servers): a bad message is answered and skipped. True (a submitter's
        link to a node, where a dropped `finished` would leave its job running for
        ever): recv raises BadPeerMessage, so the caller can hold the job or count it."""
        return self._raise_bad

    @raise_bad.setter
    def raise_bad(self, value: bool) -> None:
        self._raise_bad = value
        self.conn.keep_bad_transfers = value

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
    async def transfer(self, header: dict, encoded: Optional[bytes] = None
                       ) -> AsyncIterator[Transfer]:
        """Send `header` and, inside the block, exactly the data it announces, as one unit:
        other transfers on this channel wait for it (in order), plain `send`s are queued
        until its last frame. Leaving the block with bytes still owed closes the channel
        (the stream cannot be resynchronised) and raises WireError."""
        async with self._transfer_lock:
            if self._closed:
                raise ConnectionClosed("closed")
            if TRACE:
                _trace(">", self.peer, header)
            self._queue(self.conn.send_message(header, encoded))
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

    async def send_files(self, header: dict, items: list, cache: Optional[dict] = None,
                         encoded: Optional[bytes] = None) -> None:
        """Send `header` (a `run` or `finished` whose `files` is
        `jrs.wire.files.describe(items)`) and the bytes of each (name, path) of `items`,
        as one unit (see `transfer`). `cache` maps path -> bytes for small files sent
        again and again (an executable shared by a whole cluster)."""
        from .files import stream

        heads = header["files"]
        if len(heads) != len(items):
            raise LocalProtocolError(f"{len(items)} files for {len(heads)} headers")
        async with self.transfer(header, encoded) as unit:
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
                if self.writer.transport.get_write_buffer_size() > MAX_UNREAD:
                    log.warning("closed the connection of %s: more than %d bytes queued "
                                "to it unread", excerpt(self.peer, 64), MAX_UNREAD)
                    self.close()

    async def drain(self) -> None:
        self.flush()
        await self.writer.drain()

    async def recv(self) -> Union[dict, bytes, Raw]:
        """The next message (dict) or data chunk (bytes), or a frame kept undecoded (Raw:
        only where `conn.keep_raw` is set). Bad messages are answered here.

        What no handler sees is bounded here: a second `hello` (a client sends one,
        with its handshake) closes the channel, and so do more than BAD_BEFORE_FIRST
        bad frames before the first message of a server's channel (`on_first` set;
        one is answered and skipped, as after it: a newer peer's unknown type). Both
        used to be skipped for as long as the peer sent them: one authenticated
        connection that never sent its first message kept a master at 60 % of a core
        for the 30 s deadline, and its hellos were charged to nothing after it either."""
        if not self._gated and self.before_read is not None:
            # what came with the handshake's last read (a hello sent at once) is handed
            # on without a read: the gate is passed once before it too (A16)
            self._gated = True
            await self.before_read()
            if self._closed:
                raise ConnectionClosed("closed")
        while True:
            while self._pending:
                event = self._pending.popleft()
                if self.on_first is not None and isinstance(event, (Message, Data, Raw)) \
                        and not (isinstance(event, Message) and event.body["type"] == "hello"):
                    self.on_first()
                    self.on_first = None
                if isinstance(event, Message):
                    if event.body["type"] == "hello":
                        self._hellos += 1
                        if self._hellos > 1:
                            self._refuse("a second hello on one connection")
                        continue
                    if TRACE:
                        _trace("<", self.peer, event.body)
                    if self._prepaid:
                        self._prepaid = False
                        self.last_size = self.last_units = 0
                    else:
                        self.last_size, self.last_units = event.size, event.units
                    return event.body
                if isinstance(event, Data):
                    return event.chunk
                if isinstance(event, Raw):
                    if TRACE:
                        _trace("<", self.peer, {"type": f"raw {bytes(event.body[:24])!r}"})
                    self.last_size, self.last_units = len(event.body), 0  # (undecoded)
                    return event
                if isinstance(event, Costly):
                    if self._on_costly is not None and self.on_first is None:
                        try:
                            await self._on_costly(event.size, event.units)
                        except BaseException:  # (cancelled): the frame is never resumed
                            self.close()
                            raise
                        if self._closed:
                            raise ConnectionClosed("closed")
                        self._prepaid = True
                    try:
                        self._pending.extend(self.conn.resume())
                    except WireError:
                        self.close()
                        raise
                    continue
                if isinstance(event, BadMessage):
                    paid, self._prepaid = self._prepaid, False
                    self.send(error("bad-message", event.reason))
                    if self._raise_bad:
                        raise BadPeerMessage(event.reason, event.body)
                    if self.on_first is not None:
                        self._bad_before_first += 1
                        if self._bad_before_first > BAD_BEFORE_FIRST:
                            self._refuse(f"more than {BAD_BEFORE_FIRST} bad frames before "
                                         "the first message")
                    if self.on_bad is not None:
                        self.last_units = 0 if paid else event.units
                        await self.on_bad(0 if paid else event.size)
            await self._fill()

    def _refuse(self, why: str) -> None:
        self.send(error("protocol", f"{why}: closed"))
        self.close()
        raise ConnectionClosed(why)

    async def _fill(self) -> None:
        if self._closed:
            raise ConnectionClosed("closed")
        await self._charge_data()
        if self.before_read is not None and not self._closed:
            await self.before_read()
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
        if self._closed:  # closed while it read (a server's bound on unfinished frames)
            raise ConnectionClosed("closed")
        if self.on_read is not None and self.on_first is not None:
            await self.on_read(len(data))
            if self._closed or self.writer.is_closing():  # given up meanwhile (Slots)
                self.close()
                raise ConnectionClosed("closed")
        elif self.on_each_read is not None and self.on_first is None:
            await self.on_each_read(len(data))
            if self._closed:
                raise ConnectionClosed("closed")
        try:
            self._pending.extend(self.conn.receive(data))
        except WireError:
            self.close()
            raise
        if self.on_buffered is not None:
            self.on_buffered(self.conn.buffered)
        out = self.conn.data_to_send()
        if out:
            self._queue(out)

    async def _charge_data(self) -> None:
        """The data frames read since the last read (the handshake's included), the
        swallowed ones of a refused header too (no event shows those), go to `on_data`
        before the next read: their events have been handed on, and the sender of a
        flood waits before more of it is read. A transfer is never a first message, and
        everything a read brings is handed on before the next one: so data found here
        twice while the first message has still not come followed no first message at
        all, and closes the channel (a refused `run` announcing 1 TiB, then 1-byte
        frames, was otherwise read for the whole first-message deadline, charged to
        nobody)."""
        conn = self.conn
        frames, nbytes, gone = conn.data_frames_in, conn.data_bytes_in, conn.data_bytes_discarded
        new = frames - self._data_charged[0]
        if not new:
            return
        size = nbytes - self._data_charged[1]
        self.last_discarded = gone - self._data_charged[2]
        self._data_charged = (frames, nbytes, gone)
        if self.on_first is not None:
            if self._data_before_first:
                self._refuse("file data before the first message")
            self._data_before_first = True
        if self.on_data is not None:
            await self.on_data(new, size)

    def close(self) -> None:
        if not self._closed:
            self.flush()
            self._closed = True
            self.writer.close()
            self.conn.discard_input()
            if self.on_buffered is not None:
                self.on_buffered(0)

    async def wait_closed(self) -> None:
        self.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


async def _handshake(reader, writer, conn: Connection, deadline: float,
                     activity: Optional[Callable[[], None]] = None,
                     read_size: int = READ_SIZE) -> deque:
    """Run the handshake to completion; return events that arrived with it. A peer that
    closes or stays silent raises HandshakeClosed, a failed proof AuthError. A server
    reads `HANDSHAKE_READ` at a time: what follows the client's hello is read by the
    channel, within the server's byte budget for the first message."""
    events: deque = deque()
    while not conn.established:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HandshakeClosed("handshake timed out")
        try:
            data = await asyncio.wait_for(reader.read(read_size), remaining)
        except asyncio.TimeoutError:
            raise HandshakeClosed("handshake timed out")
        except ConnectionError as exc:
            raise HandshakeClosed(f"connection lost during the handshake: {exc}")
        if not data:
            raise HandshakeClosed("peer closed during the handshake")
        if activity is not None:
            activity()
        try:
            events.extend(e for e in conn.receive(data) if not isinstance(e, Established))
        finally:
            out = conn.data_to_send()
            if out:
                writer.write(out)
    return events


async def connect_once(host: str, port: int, root: bytes, role: str,
                       peer_roles: Optional[frozenset] = None,
                       timeout: float = HANDSHAKE_TIMEOUT) -> Channel:
    """One attempt (raises OSError, AuthError, HandshakeClosed or another WireError)."""
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


async def connect(host: str, port: int, root: bytes, role: str,
                  peer_roles: Optional[frozenset] = None,
                  timeout: float = HANDSHAKE_TIMEOUT, retry_for: float = 0.0) -> Channel:
    """Open an authenticated channel to a JRS server (raises OSError or WireError).

    A handshake the server closed or let time out (it sheds the oldest idle handshakes
    when a flood fills its slots) is tried again with backoff for up to `retry_for`
    seconds: that is a busy server, not a wrong secret. AuthError is never retried."""
    from .reconnect import Backoff

    deadline = time.monotonic() + retry_for
    backoff = Backoff(first=0.05, cap=1.0)
    while True:
        try:
            return await connect_once(host, port, root, role, peer_roles,
                                      max(0.5, min(timeout, deadline - time.monotonic()))
                                      if retry_for else timeout)
        except HandshakeClosed:
            delay = backoff.next()
            if time.monotonic() + delay >= deadline:
                raise
            await asyncio.sleep(delay)


class FailureLog:
    """Log a failed handshake once per (peer host, reason) per interval, and at most a
    few lines a minute per address whatever the reasons (jrs/wire/peerlog.py)."""

    def __init__(self, interval: float = 60.0, limit: int = 10_000) -> None:
        self.interval = interval
        self.limit = limit
        self._seen: dict = {}
        self.peerlog = PeerLog(log)

    def report(self, peer, reason: str) -> bool:
        host = host_key(peer)
        key = (host, reason)
        now = time.monotonic()
        last = self._seen.get(key)
        if last is not None and now - last < self.interval:
            return False
        if len(self._seen) >= self.limit:
            self._seen.clear()
        self._seen[key] = now
        self.peerlog.warning(host, "refused connection from %s: %s", excerpt(host, 64),
                             excerpt(reason, 200))
        return True


Handler = Callable[[Channel], Awaitable[None]]


class _Handshaking:
    """A connection in a stage `Slots` bound: what giving it up needs."""

    __slots__ = ("dropped", "host", "writer")

    def __init__(self, host: str, writer: asyncio.StreamWriter) -> None:
        self.host = host
        self.writer = writer
        self.dropped = False


class Server:
    """Accepts connections, authenticates them, hands channels to `handler`.

    What a peer can hold for free is bounded (`slots.Slots`, hosts as
    `hosts.host_key` counts them), in two stages:
    - in its handshake: at most `per_address` connections of one host and
      `max_unauthenticated` in all, each for at most `handshake_timeout` seconds;
      when a new connection finds the slots full, the handshake idle the longest
      (no bytes for the longest time) is dropped to make room: a flood of silent
      connections cannot lock honest clients out, and an honest client whose
      handshake was dropped tries again (see `connect`);
    - authenticated, before its first message (the hello the daemon's own limits
      count): at most `hello_per_address` of one host and `max_before_hello` in all
      (each overall bound at most a quarter of the open files allowed);
      past them the one waiting the longest is closed (a secret holder opening
      connections that never say hello otherwise held each until the handler's
      first-message deadline, 30 s, as many as it liked). Waiting is not activity:
      bytes of a frame that is not complete buy no time;
    - established, until it closes: at most `established_per_address` of one host
      and `max_established` in all (a quarter of the open files); a newcomer past
      them is told why (an `error`, code "limit") and closed, what is held stays.
      A first message is cheap (an `attach` with a token of one's own), and a node's
      sessions have no idle deadline: 300 of them took every descriptor of a node.
    Each given-up connection costs one close; nothing here loops or waits on a peer."""

    def __init__(self, root: bytes, role: str, handler: Handler,
                 peer_roles: Optional[frozenset] = None,
                 handshake_timeout: float = SERVER_HANDSHAKE_TIMEOUT,
                 idle_timeout: Optional[float] = None,
                 max_unauthenticated: int = MAX_UNAUTHENTICATED,
                 per_address: int = PER_ADDRESS,
                 max_before_hello: int = MAX_BEFORE_HELLO,
                 hello_per_address: int = HELLO_PER_ADDRESS,
                 max_established: int = MAX_ESTABLISHED,
                 established_per_address: int = ESTABLISHED_PER_ADDRESS) -> None:
        self.root = root
        self.role = role
        self.handler = handler
        self.peer_roles = peer_roles
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.max_unauthenticated = max_unauthenticated
        self.per_address = per_address
        nofile = open_files_allowed()
        self._handshakes = Slots(per_address, within_files(max_unauthenticated, nofile))
        self._before_hello = Slots(hello_per_address, within_files(max_before_hello, nofile))
        self._established = Counts(established_per_address,
                                   within_files(max_established, nofile))
        self._first_bytes = HostBytes(FIRST_BYTES_RATE, FIRST_BYTES_BURST,
                                      most_wait=FIRST_BYTES_MOST_WAIT)
        self._arrivals = HostBytes(CONNECT_RATE, CONNECT_BURST)  # connections, per host
        self._partial: dict = {}  # host -> {channel: bytes of unfinished frames}
        self._partial_of: dict = {}  # host -> their sum
        self._partial_all = 0
        self.failures = FailureLog()
        self.refused = 0
        self.dropped = 0  # handshakes given up for a newer one
        self.dropped_before_hello = 0  # authenticated connections closed before a hello
        self._server: Optional[asyncio.AbstractServer] = None

    @property
    def unauthenticated(self) -> int:
        """Connections in their handshake now."""
        return len(self._handshakes)

    @property
    def before_hello(self) -> int:
        """Authenticated connections that have not sent their first message yet."""
        return len(self._before_hello)

    async def start(self, host: str, port: int) -> tuple:
        learn_local_networks()  # which IPv6 peers are machines of our own LANs (hosts.py)
        self._server = await asyncio.start_server(self._accept, host, port, limit=READ_SIZE,
                                                  backlog=1024)
        return self._server.sockets[0].getsockname()

    def _give_up(self, victims: list, stage: str) -> None:
        for victim, why in victims:
            victim.dropped = True
            self.failures.report(victim.host, f"{stage} {why}: closed the one idle "
                                              "the longest")
            victim.writer.close()  # its task sees the close and ends (no wait here)

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = host_key(peer)
        hs = _Handshaking(host, writer)
        victims = self._handshakes.admit(hs, host)
        self.dropped += len(victims)
        self._give_up(victims, "handshakes:")
        try:
            wait = self._arrivals.take(host, 1, time.monotonic(), CONNECT_MOST_WAIT)
            if wait > CONNECT_MOST_WAIT:  # far past its host's rate: closed at once, not
                writer.close()  # charged (an honest client tries again, `connect`, and
                return  # its tries do not make its wait longer)
            if wait > 0.0:  # past its host's rate: nothing of it is read (nor keys made)
                await asyncio.sleep(wait)
                if hs.dropped or writer.is_closing():
                    writer.close()
                    return
            conn = Connection(self.root, self.role, is_client=False,
                              peer_roles=self.peer_roles)
            events = await _handshake(reader, writer, conn,
                                      time.monotonic() + self.handshake_timeout,
                                      lambda: self._handshakes.touch(hs), HANDSHAKE_READ)
        except asyncio.CancelledError:
            writer.close()
            return
        except AuthError as exc:
            self.refused += 1
            self.failures.report(peer, str(exc))
            writer.write(MAGIC + bytes((VERSION, STATUS_AUTH_FAILED)))  # "wrong secret"
            writer.close()
            return
        except (WireError, OSError) as exc:
            self.refused += 1
            if not hs.dropped:
                self.failures.report(peer, str(exc))
            writer.close()
            return
        finally:
            self._handshakes.leave(hs)
        watch_peer(writer)
        channel = Channel(reader, writer, conn, self.idle_timeout)
        channel._pending.extend(events)
        channel.on_buffered = lambda nbytes: self._buffered(host, channel, nbytes)
        why = self._established.admit(host)
        if why is not None:
            self.failures.report(host, why)
            channel.send(error("limit", f"{why}: this connection is closed"))
            channel.close()
            return
        try:
            await self._serve(channel, host, peer)
        finally:
            self._established.leave(host)

    async def _serve(self, channel: Channel, host: str, peer) -> None:
        writer = channel.writer
        waiting = _Handshaking(host, writer)
        victims = self._before_hello.admit(waiting, host)
        self.dropped_before_hello += len(victims)
        self._give_up(victims, "connections without a first message:")
        channel.on_first = lambda: self._before_hello.leave(waiting)
        channel.on_read = lambda nbytes: self._first_read(host, nbytes)
        try:
            await self.handler(channel)
        except (ConnectionClosed, ConnectionError, asyncio.CancelledError):
            pass
        except WireError as exc:
            self.failures.report(peer, str(exc))
        finally:
            self._before_hello.leave(waiting)
            channel.close()

    def _buffered(self, host: str, channel: Channel, nbytes: int) -> None:
        """`channel` of `host` now holds `nbytes` of unfinished frames: past
        PARTIAL_PER_HOST for its host, or PARTIAL_TOTAL for all, the connection holding
        the most (of its host, or of all) is closed. A few dict updates a read; the
        search only past a bound."""
        book = self._partial.get(host)
        old = book.get(channel, 0) if book is not None else 0
        if nbytes == old:
            return
        if book is None:
            book = self._partial[host] = {}
        if nbytes:
            book[channel] = nbytes
        else:
            del book[channel]
            if not book:
                del self._partial[host]
        self._partial_of[host] = self._partial_of.get(host, 0) + nbytes - old
        if not self._partial_of[host]:
            del self._partial_of[host]
        self._partial_all += nbytes - old
        if self._partial_of.get(host, 0) > PARTIAL_PER_HOST:
            victim = max(book, key=book.get)
            self.failures.report(host, f"more than {PARTIAL_PER_HOST} bytes of unfinished "
                                       "frames from one host: closed the largest")
            victim.close()
        elif self._partial_all > PARTIAL_TOTAL:
            # the host holding the most, then its largest (R13: the largest of all let
            # hosts each holding many small pieces close another's one honest frame)
            who = max(self._partial_of, key=self._partial_of.get)
            book = self._partial[who]
            victim = max(book, key=book.get)
            self.failures.report(who, f"more than {PARTIAL_TOTAL} bytes of unfinished "
                                      "frames in all: closed the largest")
            victim.close()

    async def _first_read(self, host: str, nbytes: int) -> None:
        """A read before the first message: it waits while its host is in debt."""
        wait = self._first_bytes.take(host, nbytes, time.monotonic())
        if wait > 0.0:
            await asyncio.sleep(wait)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
