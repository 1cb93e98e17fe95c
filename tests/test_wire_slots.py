"""Issue 13 (rule 8 and its known limits): the pure parts of what a peer may hold for
free, `hosts.host_key` (which host an address counts as) and `slots.Slots` (the bound of
one stage), and the wire `Server` applying them in process to authenticated connections
that never send their first message."""

from __future__ import annotations

import asyncio
import time

import pytest

from jrs.wire import aio
from jrs.wire.aio import ConnectionClosed, Server
from jrs.wire.hosts import host_key
from jrs.wire.keys import root_key
from jrs.wire.selftest import echo
from jrs.wire.slots import Slots, within_files

ROOT = root_key(b"s" * 40)


# ---------------------------------------------------------------- host keys

@pytest.mark.parametrize("peer, key", [
    (("127.0.0.1", 5000), "127.0.0.1"),
    ("10.1.2.3", "10.1.2.3"),
    # IPv4 through a dual-stack listener is the IPv4 host, not one /64 of all of them
    (("::ffff:127.0.0.2", 5000, 0, 0), "127.0.0.2"),
    (("::ffff:10.0.0.9", 1, 0, 0), "10.0.0.9"),
    # IPv6 by its /64
    (("2001:db8:1:2::5", 1, 0, 0), "2001:db8:1:2::/64"),
    (("2001:db8:1:2:ffff:ffff:ffff:ffff", 1, 0, 0), "2001:db8:1:2::/64"),
    (("2001:db8:1:3::5", 1, 0, 0), "2001:db8:1:3::/64"),
    (("2001:DB8:1:2:0:0:0:5", 1, 0, 0), "2001:db8:1:2::/64"),  # one spelling
    (("fe80::1%eth0", 1, 0, 2), "fe80::1"),  # link-local: on our LAN, by address; no zone
    (("fe80::2", 1, 0, 0), "fe80::2"),
    (("::1", 1, 0, 0), "::1"),  # this machine itself, not ::/64 with ::a.b.c.d
    (("::10.0.0.1", 1, 0, 0), "::/64"),
    ("/run/jrs.sock", "/run/jrs.sock"),  # not an address: its text
    (None, "None"),
])
def test_host_key(peer, key):
    assert host_key(peer) == key


def test_two_addresses_of_one_64_are_one_host_and_of_two_64s_two():
    a, b = host_key(("2001:db8::1", 1)), host_key(("2001:db8::ffff:1", 1))
    c = host_key(("2001:db8:0:1::1", 1))
    assert a == b != c


IF_INET6 = """\
00000000000000000000000000000001 01 80 10 80       lo
20010db8000000050000000000000001 02 40 00 80     eth0
20010db8000000090000000000000007 02 80 00 80     eth0
20010db8a00000000000000000000001 03 30 00 80     eth1
20010000000000000000000000000001 04 40 00 80   teredo
20020a0000010000000000000000000a 05 40 00 80    tun6to4
fe800000000000000000000000000001 02 40 20 80     eth0
garbage line
"""


def test_addresses_on_our_own_lans_are_machines_of_their_own():
    """A /64 on one of our interfaces is a LAN: its machines count one by one (else a
    whole IPv6 LAN is one host to every per-host bound); a /128 of ours, a wider
    prefix and a tunnel's (Teredo, 6to4: the Internet's tunnelled hosts) name no LAN;
    elsewhere the /64 stays the host."""
    from jrs.wire import hosts

    nets = hosts.parse_if_inet6(IF_INET6)
    assert sorted(map(str, nets)) == ["2001:db8:0:5::/64"]  # no /48, no tunnel (R10)
    try:
        hosts.learn_local_networks(IF_INET6)
        assert host_key(("2001:db8:0:5::2", 1)) == "2001:db8:0:5::2"
        assert host_key(("2001:db8:0:5::3", 1)) == "2001:db8:0:5::3"
        assert host_key(("2001:db8:a000:7::3", 1)) == "2001:db8:a000:7::/64"
        assert host_key(("2001:0:1:2::3", 1)) == "2001:0:1:2::/64"  # Teredo peers
        assert host_key(("2001:db8:0:9::8", 1)) == "2001:db8:0:9::/64"  # our /128 only
        assert host_key(("2001:db8:0:6::2", 1)) == "2001:db8:0:6::/64"
    finally:
        hosts.set_local_networks(())
    assert host_key(("2001:db8:0:5::2", 1)) == "2001:db8:0:5::/64"


# ---------------------------------------------------------------- slots

def test_slots_per_host_give_up_that_hosts_oldest():
    s = Slots(per_host=2, total=10)
    assert s.admit("a1", "A") == [] and s.admit("a2", "A") == []
    assert s.admit("b1", "B") == []
    assert s.admit("a3", "A") == [("a1", "more than 2 from one host")]
    assert "a1" not in s and s.of("A") == 2 and s.of("B") == 1 and len(s) == 3
    assert s.given_up == 1


def test_slots_in_all_give_up_the_oldest_of_any_host():
    s = Slots(per_host=10, total=3)
    for key, host in (("a1", "A"), ("b1", "B"), ("c1", "C")):
        assert s.admit(key, host) == []
    assert s.admit("d1", "D") == [("a1", "more than 3 in all")]
    assert len(s) == 3 and s.of("A") == 0 and s.of("D") == 1


def test_slots_touch_makes_a_key_the_last_given_up():
    s = Slots(per_host=2, total=3)
    s.admit("a1", "A")
    s.admit("b1", "B")
    s.admit("c1", "C")
    s.touch("a1")  # active: no longer the oldest in all
    assert s.admit("d1", "D") == [("b1", "more than 3 in all")]
    s.admit("a2", "A")  # A: a1 a2 ... its oldest now is a1 (touched before a2 came)
    assert [v for v, _ in s.admit("a3", "A")] == ["a1"]


def test_slots_a_host_full_and_all_full_give_up_one():
    s = Slots(per_host=1, total=2)
    s.admit("b1", "B")
    s.admit("a1", "A")
    out = s.admit("a2", "A")
    assert out == [("a1", "more than 1 from one host")]  # after that there is room
    assert "b1" in s
    s2 = Slots(per_host=2, total=2)
    s2.admit("a1", "A")
    s2.admit("a2", "A")
    assert [v for v, _ in s2.admit("a3", "A")] == ["a1"]  # once, not twice
    assert len(s2) == 2


def test_slots_leave_is_idempotent_and_frees_the_slot():
    s = Slots(per_host=1, total=1)
    s.admit("a1", "A")
    s.leave("a1")
    s.leave("a1")
    s.leave("never")
    s.touch("never")
    assert len(s) == 0 and s.of("A") == 0
    assert s.admit("a2", "A") == []


def test_slots_refuse_bounds_below_one():
    with pytest.raises(ValueError):
        Slots(0, 5)
    with pytest.raises(ValueError):
        Slots(5, 0)


def test_a_random_flood_never_holds_more_than_the_bounds_and_the_newest_stays():
    import random

    rng = random.Random(13)
    s = Slots(per_host=4, total=16)
    live: set = set()
    for i in range(5000):
        host = f"h{rng.randrange(8)}"
        for victim, _ in s.admit(i, host):
            live.discard(victim)
        live.add(i)
        assert i in s  # a newcomer is always let in
        if rng.random() < 0.3 and live:
            gone = rng.choice(sorted(live))
            s.leave(gone)
            live.discard(gone)
        assert len(s) == len(live) <= 16
        assert all(s.of(f"h{h}") <= 4 for h in range(8))


def test_rule_8s_defaults_are_32_per_host_and_1024_in_all():
    """Issue 13 rule 8 (and its hello stage): the documented defaults, by value."""
    assert (aio.PER_ADDRESS, aio.MAX_UNAUTHENTICATED) == (32, 1024)
    assert (aio.HELLO_PER_ADDRESS, aio.MAX_BEFORE_HELLO) == (32, 1024)
    server = Server(ROOT, "node", echo)
    overall = within_files(1024, aio.open_files_allowed())
    assert (server._handshakes.per_host, server._handshakes.total) == (32, overall)
    assert (server._before_hello.per_host, server._before_hello.total) == (32, overall)


def test_the_overall_bounds_are_at_most_a_quarter_of_the_open_files():
    """Above it a flood within the bounds ran the daemon out of descriptors (then it
    accepts nobody): 1,024 each with 4,096 files or more, 256 with the common 1,024."""
    assert within_files(1024, 20_000) == 1024 and within_files(1024, 4096) == 1024
    assert within_files(1024, 1024) == 256 and within_files(1024, 2) == 1


# ---------------------------------------------------------------- the server, in process

def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _start(**kw):
    server = Server(ROOT, "node", echo, **kw)
    addr = await server.start("127.0.0.1", 0)
    return server, addr[1]


async def _closed(ch, wait: float = 1.0) -> bool:
    try:
        await asyncio.wait_for(ch.recv(), wait)
    except (ConnectionClosed, ConnectionError):
        return True
    except asyncio.TimeoutError:
        return False
    return False


async def _echo_ok(port: int, source: str = "127.0.0.1") -> None:
    ch = await _open(port, source)
    ch.send({"type": "echo", "seq": 1, "body": "still here"})
    assert await asyncio.wait_for(ch.recv(), 5) == {"type": "echo", "seq": 1,
                                                    "body": "still here"}
    ch.close()


async def _open(port: int, source: str = "127.0.0.1"):
    """An authenticated channel from `source` (any 127/8 address) that says nothing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                   local_addr=(source, 0))
    from jrs.wire.connection import Connection

    conn = Connection(ROOT, "submit", is_client=True)
    writer.write(conn.initiate())
    events = await aio._handshake(reader, writer, conn, time.monotonic() + 10)
    ch = aio.Channel(reader, writer, conn)
    ch._pending.extend(events)
    return ch


def test_authenticated_connections_that_never_say_hello_shed_their_hosts_oldest():
    """Before: each was held until the handler's first-message deadline, however many.
    Now the 5th..12th of one host each close that host's oldest; the newest 4 stay, and
    an honest client (another host) is served throughout."""
    async def go():
        server, port = await _start(hello_per_address=4, max_before_hello=100)
        flood = [await _open(port, "127.0.0.2") for _ in range(12)]
        await asyncio.sleep(0.2)
        assert server.before_hello == 4 and server.dropped_before_hello == 8
        assert all([await _closed(ch) for ch in flood[:8]])
        assert not any([await _closed(ch, 0.05) for ch in flood[8:]])
        await _echo_ok(port)
        assert server.dropped_before_hello == 8  # the honest one pushed nobody out
        for ch in flood:
            ch.close()
        server.close()
    run(go())


def test_the_overall_bound_before_hello_closes_the_oldest_of_any_host():
    async def go():
        server, port = await _start(hello_per_address=100, max_before_hello=5)
        flood = []
        for i in range(8):
            flood.append(await _open(port, f"127.0.0.{2 + i}"))
        await asyncio.sleep(0.2)
        assert server.before_hello == 5 and server.dropped_before_hello == 3
        assert all([await _closed(ch) for ch in flood[:3]])
        assert not any([await _closed(ch, 0.05) for ch in flood[3:]])
        await _echo_ok(port, "127.0.0.50")
        for ch in flood:
            ch.close()
        server.close()
    run(go())


def test_a_connection_that_has_said_its_first_message_holds_no_slot():
    """Sessions past their first message are the daemon's own limits' business: 10 idle
    ones from one host leave the hello stage empty and are all still served."""
    async def go():
        server, port = await _start(hello_per_address=2, max_before_hello=2)
        chans = []
        for i in range(10):
            ch = await _open(port, "127.0.0.2")
            ch.send({"type": "echo", "seq": i, "body": "x"})
            assert (await asyncio.wait_for(ch.recv(), 5))["seq"] == i
            chans.append(ch)
        assert server.before_hello == 0 and server.dropped_before_hello == 0
        for i, ch in enumerate(chans):
            ch.send({"type": "echo", "seq": 100 + i, "body": "y"})
            assert (await asyncio.wait_for(ch.recv(), 5))["seq"] == 100 + i
            ch.close()
        server.close()
    run(go())


def test_a_query_closed_before_its_first_message_is_read_is_asked_again(tmp_path):
    """A busy master closes the authenticated connection waiting the longest for its
    first message: `jrs status` (tools.ask_master) asks again, as after a closed
    handshake, instead of exiting 3 at once."""
    import threading

    from jrs.roles import tools

    from .conftest import write_config

    seen = []
    ready = threading.Event()
    stop = threading.Event()
    where: list = []
    secret = b"q" * 40

    async def handler(ch):
        seen.append(1)
        if len(seen) == 1:
            ch.close()  # as the hello stage does to its oldest
            return
        await ch.recv()
        ch.send({"type": "queue-reply", "clusters": []})
        await ch.drain()

    def serve():
        async def main():
            server = Server(root_key(secret), "master", handler,
                            peer_roles=frozenset({"tool"}))
            where.append((await server.start("127.0.0.1", 0))[1])
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)
            server.close()
        asyncio.run(main())

    t = threading.Thread(target=serve)
    t.start()
    try:
        assert ready.wait(10)
        conf = write_config(tmp_path / "conf", master=f"127.0.0.1:{where[0]}", secret=secret)
        reply = tools.ask_master({"--config": str(conf)}, {"type": "query", "what": "queue"})
        assert reply == {"type": "queue-reply", "clusters": []} and len(seen) == 2
    finally:
        stop.set()
        t.join(10)


def test_peer_addresses_become_hosts_in_one_place():
    """Every per-host bound counts hosts by hosts.host_key: no other module takes the
    address out of a peer tuple itself (the master, the wire and the peer log each did,
    so an IPv6 /64 would have been one host to some bounds and many to others)."""
    import re
    from pathlib import Path

    import jrs

    root = Path(jrs.__file__).parent
    offenders = [str(p.relative_to(root)) for p in sorted(root.rglob("*.py"))
                 if p.name != "hosts.py" and re.search(r"peer\w*\s*\[0\]", p.read_text())]
    assert offenders == []


def test_established_counts_refuse_the_newcomer_and_keep_what_is_held():
    """R9: sessions past the first message are held as long as their peer likes; past a
    bound the newcomer is refused (closing the oldest would let a flood end honest
    sessions), per host at most a quarter of the total (one host never fills it)."""
    from jrs.wire.slots import Counts

    c = Counts(3, 100)
    assert [c.admit("a") for _ in range(3)] == [None] * 3
    assert "more than 3 established connections from one host (a)" in c.admit("a")
    assert c.admit("b") is None and (len(c), c.of("a"), c.refused) == (4, 3, 1)
    c.leave("a")
    assert c.admit("a") is None and c.of("a") == 3
    c.leave("zz")  # never counted: harmless
    assert len(c) == 4
    small = Counts(128, 8)
    assert small.per_host == 2
    for h in "abcd":
        assert small.admit(h) is None and small.admit(h) is None
    assert "more than 8 established connections in all" in small.admit("e")
    for _ in range(3):
        small.leave("a")
    assert small.of("a") == 0 and len(small) == 6 and small.admit("e") is None
    assert (aio.ESTABLISHED_PER_ADDRESS, aio.MAX_ESTABLISHED) == (128, 4096)
    server = Server(ROOT, "node", echo)
    total = within_files(4096, aio.open_files_allowed())
    assert (server._established.per_host, server._established.total) == (
        min(128, total // 4), total)
