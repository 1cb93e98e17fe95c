"""The simulated network: connections between processes, nothing else.

Each connection is two ends; each direction is a FIFO (TCP) whose messages
arrive after a random delay (never before an earlier one on the same
direction), so messages on different connections reorder freely. A message
crosses as JSON (what `json.loads(json.dumps(msg))` gives, made at the send:
tests/sim/jsoncopy.py) and is checked by the real wire schema on arrival
(`jrs.wire.messages.validate`), exactly as a real receiver does, unknown fields
dropped. A message with data frames (a transfer) is one unit whose delay grows
with its size.

Faults: `reset` drops everything in flight both ways (a killed process, a
reset connection, lost messages); a partition between two hosts holds traffic
until it heals and resets the connections across it after the keepalive
timeout; connecting across a partition times out.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Callable, Optional

from jrs.wire.errors import MessageError
from jrs.wire.messages import validate

from . import jsoncopy
from .clock import Proc, Sim

_CLOSE = object()
PEER_TIMEOUT = 20.0  # jrs.wire.aio: the kernel gives up on a silent peer after this
CONNECT_TIMEOUT = 3.0


class Closed(Exception):
    """Sending on an end that is closed (ConnectionClosed in the real shell)."""


class End:
    def __init__(self, net: Network, proc: Proc, conn: Conn, label: str) -> None:
        self.net = net
        self.proc = proc
        self.conn = conn
        self.label = label
        self.peer: Optional[End] = None
        self.open = True
        self.on_message: Callable[[dict], None] = lambda msg: None
        self.on_close: Callable[[], None] = lambda: None
        self.proc_host = proc.host
        self.dead_host: Optional[str] = None  # set: a ghost of a process on that host
        self._out: deque = deque()
        self._last = 0.0
        self._busy = False
        proc.ends.append(self)

    def send(self, msg: dict, size: int = 0) -> None:
        """Queue `msg` (plus `size` bytes of file data as one unit) to the peer."""
        if not self.open:
            raise Closed(f"{self.label}: connection closed")
        body = jsoncopy.copy(msg)  # what json.loads(json.dumps(msg)) gives the receiver
        net = self.net
        ready = max(self._last, net.sim.now + net.delay() + size / net.bandwidth)
        self._last = ready
        if self._busy and self.peer is not None:  # behind a message a partition holds?
            hold = net.partition_end(self.proc.host, self.peer.proc.host)
            if hold is not None:
                ready = max(ready, hold)  # ready only then (for the checks; same timing)
        self._out.append((ready, body))
        net.sent += 1
        if not self._busy:
            self._schedule()

    def close(self) -> None:
        """Graceful: what was sent still arrives, then the peer sees the close."""
        if not self.open:
            return
        self.open = False
        self._drop_from_proc()
        self._out.append((max(self._last, self.net.sim.now + self.net.delay()), _CLOSE))
        if not self._busy:
            self._schedule()

    def reset(self) -> None:
        """Both directions lost; the peer notices shortly after."""
        self.conn.reset(notify_self=False, origin=self)

    def ghost(self) -> None:
        """Its process vanished with its host: what arrives here is lost, and the peer
        learns of it only from a reset (the host answers again) or its keepalive."""
        self._drop_from_proc()
        self.proc = self.net.ghost
        self.dead_host = self.proc_host
        self.on_message = lambda msg: None
        self.on_close = lambda: None
        self._out.clear()

    def _drop_from_proc(self) -> None:
        if self in self.proc.ends:
            self.proc.ends.remove(self)

    def _schedule(self) -> None:
        self._busy = True
        ready, _ = self._out[0]
        self.net.sim.at(ready, self._deliver, owner=self.peer.proc)

    def _deliver(self) -> None:
        self._busy = False
        if not self._out:
            return
        peer = self.peer
        net = self.net
        hold = net.partition_end(self.proc.host, peer.proc.host)
        if hold is not None:
            self._busy = True
            # what waits for the heal is ready only then (for the checks; same timing)
            self._out = deque((max(ready, hold), body) for ready, body in self._out)
            net.sim.at(hold, self._deliver, owner=peer.proc)
            return
        if peer.dead_host is not None:  # into the void, or a reset from the rebooted host
            self._out.clear()
            if net.host_up(peer.dead_host):
                self.conn.reset()
            return
        ready, body = self._out.popleft()
        if self._out:
            self._schedule()
        if body is _CLOSE:
            if peer.open:
                peer.open = False
                peer._drop_from_proc()
                peer.on_close()
            return
        if not peer.open:
            return
        try:
            msg = validate(body)  # (builds a new dict: `body` is left as it was sent)
        except MessageError as exc:
            net.problems.append(f"t={net.sim.now:.3f} {self.label}: a message the wire schema "
                                f"refuses: {exc}: {json.dumps(body)[:200]}")
            return
        net.delivered += 1
        if net.tracer is not None:
            net.tracer(f"{self.proc.name} -> {peer.proc.name}: {json.dumps(body)[:300]}")
        if net.on_deliver is not None:
            net.on_deliver(self, msg, ready)
        peer.on_message(msg)

    def waiting(self) -> list:
        """(ready, body) of what is sent and not delivered yet, oldest first (a body is
        the message as it crosses the wire, decoded; or _CLOSE)."""
        return list(self._out)


class Conn:
    def __init__(self, net: Network, client: Proc, server: Proc, label: str) -> None:
        self.net = net
        self.label = label
        self.a = End(net, client, self, f"{label} (from {client.name})")
        self.b = End(net, server, self, f"{label} (from {server.name})")
        self.a.peer, self.b.peer = self.b, self.a
        self.dead = False
        net.conns[self] = None

    def reset(self, notify_self: bool = True, origin: Optional[End] = None) -> None:
        if self.dead:
            return
        self.dead = True
        self.net.conns.pop(self, None)
        for end in (self.a, self.b):
            end._out.clear()
            end._drop_from_proc()
            was_open = end.open
            end.open = False
            if was_open and (end is not origin or notify_self) and end.proc.alive:
                self.net.sim.after(self.net.delay(), end.on_close, owner=end.proc)

    def hosts(self) -> tuple:
        return self.a.proc.host, self.b.proc.host


class Network:
    def __init__(self, sim: Sim, latency: tuple = (0.0002, 0.003),
                 bandwidth: float = 200e6) -> None:
        self.sim = sim
        self.latency = latency
        self.bandwidth = bandwidth
        self.listeners: dict = {}  # address -> (proc, accept(end))
        # open connections, as an ordered set: a set of objects iterates in the order of
        # their addresses, which differ from run to run (a seed would not replay)
        self.conns: dict = {}
        self.partitions: dict = {}  # frozenset({host, host}) -> heal time
        self.problems: list = []
        self.sent = 0
        self.delivered = 0
        self.tracer: Optional[Callable[[str], None]] = None
        # told of every message delivered: the sending end, the message, and when it was
        # ready (sent, plus the delay; a partition or a stalled peer may hold it longer)
        self.on_deliver: Optional[Callable[[End, dict, float], None]] = None
        self.ghost = Proc(sim, "", "(gone)")  # owns what is sent to a vanished process
        self.host_up: Callable[[str], bool] = lambda host: True

    def delay(self) -> float:
        lo, hi = self.latency
        return self.sim.rng.uniform(lo, hi)

    # ------------------------------------------------------------ connecting

    def listen(self, proc: Proc, address: str, accept: Callable[[End], None]) -> None:
        self.listeners[address] = (proc, accept)

    def connect(self, proc: Proc, address: str, on_open: Callable[[End], None],
                on_fail: Callable[[str], None]) -> None:
        def attempt() -> None:
            entry = self.listeners.get(address)
            if entry is None or not entry[0].alive:
                proc.later(self.delay(), on_fail, "connection refused")
                return
            server, accept = entry
            if self.partition_end(proc.host, server.host) is not None:
                proc.later(CONNECT_TIMEOUT, on_fail, "timed out")
                return
            if server.stalled_until > self.sim.now:  # the handshake waits for it
                proc.sim.at(server.stalled_until, attempt, owner=proc)
                return
            conn = Conn(self, proc, server, f"{proc.name}->{server.name}")
            accept(conn.b)
            on_open(conn.a)

        proc.later(self.delay() * 2, attempt)

    # ------------------------------------------------------------ faults

    def partition_end(self, a: str, b: str) -> Optional[float]:
        if a == b or not self.partitions:  # (most calls: a frozenset each is dear)
            return None
        heal = self.partitions.get(frozenset((a, b)))
        if heal is None or heal <= self.sim.now:
            return None
        return heal

    def partition(self, a: str, b: str, seconds: float) -> None:
        key = frozenset((a, b))
        heal = self.sim.now + seconds
        self.partitions[key] = max(self.partitions.get(key, 0.0), heal)
        if seconds > PEER_TIMEOUT:
            self.sim.after(PEER_TIMEOUT, self._keepalive_gives_up, key)

    def _keepalive_gives_up(self, key: frozenset) -> None:
        if self.partitions.get(key, 0.0) <= self.sim.now:
            return
        for conn in list(self.conns):
            if frozenset(conn.hosts()) == key:
                conn.reset()

    def host_lost(self, host: str) -> None:
        """After the keepalive timeout the peers of a vanished host give up on it."""
        def give_up() -> None:
            for conn in list(self.conns):
                if host in (conn.a.dead_host, conn.b.dead_host):
                    conn.reset()
        self.sim.after(PEER_TIMEOUT, give_up)

    def reset_random(self) -> Optional[str]:
        if not self.conns:
            return None
        conns = sorted(self.conns, key=lambda c: c.label)
        conn = self.sim.rng.choice(conns)
        conn.reset()
        return conn.label

    def quiet(self) -> bool:
        return not any(e._out for c in self.conns for e in (c.a, c.b))
