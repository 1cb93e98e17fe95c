"""Frames of many values are charged before they are decoded, and a host's debt holds
every read of its sessions (R11: budgets charged after the decode, per session, let a
host that churned sessions have each one's 4 MiB frame of dense JSON decoded free).

The pure parts: `Connection.hold_units` / `resume` keep the stream in order around a
held frame (it may be a transfer's header); `MessageBudget.owed`, `Limiter.host_owed`
and `NodeBudget.host_owed` see a closed session's debt from its host's new sessions.
The channel: `on_costly` is awaited before the decode and the message then reports its
bytes and values paid; `before_read` is awaited before every read."""

from __future__ import annotations

import asyncio

from jrs.cluster.limits import Limiter, Limits, NodeBudget
from jrs.node.budget import BATCH, MessageBudget
from jrs.wire.aio import COSTLY_UNITS, Server, connect
from jrs.wire.connection import (
    KIND_MESSAGE,
    BadMessage,
    Connection,
    Data,
    Message,
    json_units,
)
from jrs.wire.keys import root_key

from .test_wire_net import ROOT, run

KEY = root_key(b"c" * 40)
DENSE = b'{"type":"ping","seq":1,"pad":[' + b",".join([b"[0]"] * 3000) + b"]}"  # 6,003 units


def _pair():
    client = Connection(KEY, "submit", is_client=True)
    server = Connection(KEY, "node", is_client=False)
    server.receive(client.initiate())
    client.receive(server.data_to_send())
    client.strict = False
    return client, server


def _kinds(events):
    return [type(e).__name__ for e in events]


def test_a_held_frame_stops_the_stream_until_resumed_in_order():
    client, server = _pair()
    server.hold_units = 1000
    wire = (client.data_to_send() + client.send_message({"type": "ping", "seq": 0})
            + client._seal(DENSE, KIND_MESSAGE)
            + client.send_message({"type": "blob", "size": 3}) + client.send_data(b"abc")
            + client.send_message({"type": "ping", "seq": 2}))
    events = server.receive(wire)
    assert _kinds(events) == ["Established", "Message", "Message", "Costly"]  # (wire hello)
    costly = events[-1]
    assert (costly.size, costly.units) == (len(DENSE), json_units(DENSE))
    assert server.data_frames_in == 0  # the blob's data is not taken before its header
    assert server.receive(b"") == []  # held: more input makes no events
    # what it holds counts as buffered (aio.Server bounds a host's: R12 F1), the frames
    # after the held one too: a peer could otherwise park any amount behind one
    assert server.buffered > len(DENSE) + 40, server.buffered  # (the three after: 53)
    more = server.resume()
    assert _kinds(more) == ["Message", "Message", "Data", "Message"]
    assert more[0].body["seq"] == 1 and more[0].units == json_units(DENSE)
    assert more[1].body == {"type": "blob", "size": 3} and more[2] == Data(b"abc")
    assert more[3].body["seq"] == 2
    assert server.resume() == []  # nothing held
    assert server.buffered == 0
    server.receive(client._seal(DENSE, KIND_MESSAGE) + client.send_message({"type": "ping"})[:-5])
    assert server.buffered > len(DENSE)
    server.discard_input()  # (closed: what it held is dropped)
    assert server.buffered == 0 and server.resume() == []


def test_frames_at_the_bound_are_not_held_and_without_a_bound_none_are():
    client, server = _pair()
    server.receive(client.data_to_send())
    server.hold_units = json_units(DENSE)  # more than this is held: this one is not
    events = server.receive(client._seal(DENSE, KIND_MESSAGE))
    assert _kinds(events) == ["Message"]
    server.hold_units = 0
    big = b"[" + b",".join([b"[0]"] * 100_000) + b"]"
    events = server.receive(client._seal(big, KIND_MESSAGE))
    assert _kinds(events) == ["BadMessage"] and events[0].units == json_units(big)


def test_a_held_refused_frame_and_a_held_transfer_header():
    client, server = _pair()
    server.receive(client.data_to_send())
    server.hold_units = 100
    dense = b"[" + b",".join([b"[0]"] * 200) + b"]"
    files = [{"name": f"f{i}", "size": 1} for i in range(60)]  # ~360 units
    run_msg = {"type": "run", "claim": "c", "job": "1.0", "attempt": 0,
               "spec": {"executable": "x"}, "files": files}
    wire = client._seal(dense, KIND_MESSAGE) + client.send_message(run_msg)
    wire += b"".join(client.send_data(b"z") for _ in files)
    events = server.receive(wire)
    assert _kinds(events) == ["Costly"]
    events = server.resume()
    assert _kinds(events) == ["BadMessage", "Costly"] and isinstance(events[0], BadMessage)
    events = server.resume()
    assert _kinds(events) == ["Message"] + ["Data"] * 60
    assert isinstance(events[0], Message) and server.receiving_transfer == 0


def test_a_closed_sessions_debt_holds_its_hosts_next_session():
    b = MessageBudget(rate=100.0, burst=200.0, host_rate=100.0, host_burst=200.0)
    b.open(1, "evil", 0.0)
    b.open(2, "honest", 0.0)
    assert b.charge(1, 0.0, 200.0 + BATCH + 100.0) > 0  # its host owes 1.64 s
    b.close(1)
    b.open(3, "evil", 0.5)
    assert abs(b.owed(3, 0.5) - (BATCH + 50.0) / 100.0) < 1e-9
    assert b.owed(2, 0.5) == 0.0  # another host reads on
    assert b.owed(3, 0.5 + (50.0 + BATCH) / 100.0) == 0.0  # paid
    assert b.owed(99, 0.0) == 0.0  # not a session


def test_the_masters_books_say_when_a_host_may_be_read_again():
    lim = Limits(demand_rate=1000.0, demand_burst=1000.0, host_demand_rate=1000.0,
                 host_demand_burst=1000.0, node_rate=1000.0, node_burst=1000.0,
                 host_node_rate=1000.0, host_node_burst=1000.0)
    for books in (Limiter(lim), NodeBudget(lim)):
        assert books.host_owed("evil", 0.0) is None  # no bucket yet
        books.open_session("a", "evil", 0.0)
        assert books.message_wait("a", 5000, 0, 0.0) is None  # charged: a debt of ~4.5 KB
        books.close_session("a")
        at = books.host_owed("evil", 1.0)
        assert at is not None and 4.0 < at < 5.0, at  # until it is out of debt (4.5 s)
        assert books.host_owed("honest", 1.0) is None
        assert books.host_owed("evil", at) is None


def _costly_server(calls: list, got: list, paid: list):
    async def handler(ch):
        async def before_read():
            calls.append(("read", ch.conn._holding is not None))

        async def on_costly(size, units):
            calls.append(("costly", size, units, ch.conn._holding is not None))

        async def on_bad(size):
            paid.append(("bad", size, ch.last_units))

        ch.before_read = before_read
        ch.on_costly = on_costly
        ch.on_bad = on_bad
        try:
            while True:
                msg = await ch.recv()
                got.append(msg)
                paid.append((msg.get("seq"), ch.last_size, ch.last_units))
        except Exception:
            pass
    return Server(ROOT, "node", handler)


def test_the_channel_charges_a_costly_frame_before_decoding_it():
    calls, got, paid = [], [], []
    small = b'{"type":"ping","seq":3}'
    dense = b"[" + b",".join([b"[0]"] * 3000) + b"]"
    first_dense = DENSE.replace(b'"seq":1', b'"seq":0')

    async def go():
        server = _costly_server(calls, got, paid)
        port = (await server.start("127.0.0.1", 0))[1]
        ch = await connect("127.0.0.1", port, ROOT, "submit", timeout=5)
        ch.conn.strict = False
        # a costly first message is not held (the pre-first-message byte budget is its)
        ch._queue(ch.conn._seal(first_dense, KIND_MESSAGE))
        await ch.drain()
        await asyncio.sleep(0.2)
        ch._queue(ch.conn._seal(DENSE, KIND_MESSAGE) + ch.conn._seal(dense, KIND_MESSAGE)
                  + ch.conn._seal(small, KIND_MESSAGE))
        await ch.drain()
        for _ in range(200):
            if len(got) == 3:
                break
            await asyncio.sleep(0.02)
        ch.close()
        server.close()

    run(go())
    assert [m["seq"] for m in got] == [0, 1, 3]
    costly = [c for c in calls if c[0] == "costly"]
    # held while charged (not decoded yet), the first message's not at all
    assert costly == [("costly", len(DENSE), json_units(DENSE), True),
                      ("costly", len(dense), json_units(dense), True)], calls
    assert json_units(DENSE) > COSTLY_UNITS
    # the first message reports its bytes; the prepaid ones report 0; the small one its own
    assert paid[0] == (0, len(first_dense), json_units(first_dense))
    assert (1, 0, 0) in paid and ("bad", 0, 0) in paid
    assert paid[-1] == (3, len(small), json_units(small))
    reads = [c for c in calls if c[0] == "read"]
    assert len(reads) >= 2 and not any(h for _, h in reads)  # before each read, none held


def test_a_hosts_unfinished_frames_are_bounded_the_largest_holder_closed(monkeypatch):
    """R12 F1: a frame is buffered whole until its last byte; a host's sessions each
    sending all of a big frame but its end held a node's memory for as long as they
    liked. Past PARTIAL_PER_HOST the host's connection holding the most is closed (and
    its buffer dropped); another host's is not touched, and past PARTIAL_TOTAL the
    largest holder of all goes."""
    from jrs.wire import aio

    from .test_wire_slots import _closed, _echo_ok, _open, _start

    monkeypatch.setattr(aio, "PARTIAL_PER_HOST", 1 << 20)
    monkeypatch.setattr(aio, "PARTIAL_TOTAL", 3 << 20)

    async def partial(ch, size: int) -> None:
        ch.conn.strict = False
        ch.send({"type": "ping", "seq": 0})  # its first message (echoed)
        assert (await asyncio.wait_for(ch.recv(), 5))["type"] == "ping"
        ch.writer.write(ch.conn._seal(b'{"type":"zzz","p":"' + b"x" * size + b'"}',
                                      KIND_MESSAGE)[:-100])

    async def go():
        server, port = await _start()
        small = await _open(port, "127.0.0.2")
        await partial(small, 400_000)
        big = await _open(port, "127.0.0.2")
        await partial(big, 700_000)  # the host now holds ~1.1 MiB: its largest goes
        assert await _closed(big, 3.0)
        assert not await _closed(small, 0.5)
        assert server._partial_of.get("127.0.0.2") < 500_000
        others = []
        for source in ("127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"):
            ch = await _open(port, source)
            await partial(ch, 900_000 if source == "127.0.0.5" else 800_000)
            others.append(ch)
            await asyncio.sleep(0.2)
        # 0.4 + 3 x 0.8 + 0.9 MiB > 3 MiB in all: the largest, .5's, is closed
        assert await _closed(others[2], 3.0)
        assert not any([await _closed(ch, 0.3) for ch in [*others[:2], *others[3:]]])
        assert server._partial_all < 3 << 20
        await _echo_ok(port, "127.0.0.7")  # an honest one is served meanwhile
        for ch in [small, *others]:
            ch.close()
        server.close()

    run(go())
