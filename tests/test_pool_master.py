"""The master server over real loopback connections (in this process): hostile payloads,
session binding, node-hello displacement, and a ticker that does not die silently."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from jrs.cluster import master as master_mod
from jrs.cluster.master import ClusterCounter, Master
from jrs.config import ClusterConfig, Endpoint, NodeEntry
from jrs.errors import ConfigError
from jrs.wire.aio import ConnectionClosed, Server, connect
from jrs.wire.keys import root_key

from .cluster import free_port

NODE = "127.0.0.1:7"


class _Env:
    def __init__(self, tmp: Path) -> None:
        self.secret = os.urandom(32).hex().encode()
        self.root = root_key(self.secret)
        self.port = free_port()
        self.config = ClusterConfig(tmp, Endpoint("127.0.0.1", self.port),
                                    [NodeEntry(Endpoint("127.0.0.1", 7))], self.secret)
        self.master = Master(self.config, ClusterCounter(str(tmp)))

    async def start(self) -> None:
        self.server = Server(self.root, "master", self.master.serve,
                             peer_roles=frozenset({"node", "submit", "tool"}))
        await self.server.start("127.0.0.1", self.port)

    async def open(self, role: str, hostile: bool = False):
        ch = await connect("127.0.0.1", self.port, self.root, role,
                           peer_roles=frozenset({"master"}))
        ch.conn.strict = not hostile and ch.conn.strict  # a hostile peer breaks the schema
        return ch

    def close(self) -> None:
        self.server.close()


async def _recv(ch, timeout: float = 3.0) -> dict:
    while True:
        msg = await asyncio.wait_for(ch.recv(), timeout)
        if isinstance(msg, dict):
            return msg


def _node_hello(claims=None) -> dict:
    return {"type": "node-hello", "name": NODE, "slots": 2, "memory": 100, "gpus": 0,
            "attrs": {}, "claims": claims if claims is not None else []}


def _sub_hello(sid: str = "s1", token=None) -> dict:
    m = {"type": "submitter-hello", "submitter": sid, "user": "u", "host": "h", "pid": 1,
         "claims": [], "clusters": []}
    if token is not None:
        m["token"] = token
    return m


def run(coro_fn, tmp_path):
    env = _Env(tmp_path)

    async def main():
        await env.start()
        try:
            await coro_fn(env)
        finally:
            env.close()

    asyncio.run(main())


def test_hostile_nested_payloads_get_bad_message_and_the_sessions_go_on(tmp_path):
    async def go(env):
        node = await env.open("node", hostile=True)
        node.send(_node_hello(claims=[{"claim": ["x"]}]))
        assert (await _recv(node))["code"] == "bad-message"  # refused, no traceback
        node = await env.open("node", hostile=True)
        node.send(_node_hello())
        assert (await _recv(node))["type"] == "welcome"
        for bad in ({"load": 0, "running": 0, "claims": [{"a": 1}]},
                    {"load": 0, "running": 0, "claims": [], "waiting": -3}):
            node.send(dict(bad, type="node-report"))
            assert (await _recv(node))["code"] == "bad-message"
        sub = await env.open("submit", hostile=True)
        sub.send(_sub_hello(token="t" * 64))
        assert (await _recv(sub))["type"] == "welcome"
        for requests in ([{"key": "k", "count": "many"}], [[]], [{"key": {"x": 1}}],
                         [{"key": "k", "count": 1, "cpus": 1, "ad": {"a": [1, 2]}}]):
            sub.send({"type": "demand", "requests": requests})
            assert (await _recv(sub))["code"] == "bad-message"
        sub.send({"type": "progress", "clusters": [{"id": {"deep": [1]}}]})
        assert (await _recv(sub))["code"] == "bad-message"
        sub.send({"type": "new-cluster"})
        assert (await _recv(sub))["type"] == "cluster"  # still served
        node.send({"type": "node-report", "load": 0, "running": 0, "claims": []})
        tool = await env.open("tool")
        tool.send({"type": "query", "what": "status"})
        status = await _recv(tool)
        assert status["nodes"][0]["state"] == "up"
    run(go, tmp_path)


def test_a_submitter_id_is_bound_to_its_session_token(tmp_path):
    async def go(env):
        first = await env.open("submit")
        first.send(_sub_hello("s1", token="t" * 64))
        assert (await _recv(first))["type"] == "welcome"
        thief = await env.open("submit")
        thief.send(_sub_hello("s1", token="u" * 64))
        reply = await _recv(thief)
        assert reply["type"] == "error" and reply["code"] == "session"
        bare = await env.open("submit")
        bare.send(_sub_hello("s1"))
        assert (await _recv(bare))["code"] == "session"
        first.send({"type": "new-cluster"})  # the real one kept its session
        assert (await _recv(first))["type"] == "cluster"
        again = await env.open("submit")  # the same token: a resumed submitter
        again.send(_sub_hello("s1", token="t" * 64))
        assert (await _recv(again))["type"] == "welcome"
    run(go, tmp_path)


def test_a_submitter_hello_without_a_token_is_refused_and_its_channel_closed(tmp_path):
    """Contract 8: even for an id nobody has bound yet (one `jrs status` shows before its
    submitter's first hello, or that a master restarted without its session records)."""
    async def go(env):
        for hello in (_sub_hello("fresh"), _sub_hello("fresh", token="")):
            bare = await env.open("submit", hostile=True)
            bare.send(hello)
            reply = await _recv(bare)
            assert (reply["type"], reply["code"]) == ("error", "session"), reply
            with pytest.raises((ConnectionClosed, asyncio.TimeoutError)):
                await _recv(bare, 3)
        assert "fresh" not in env.master.pool.sessions
        assert "fresh" not in env.master.pool.submitters
        honest = await env.open("submit")  # the id stays free for its own session
        honest.send(_sub_hello("fresh", token="t" * 64))
        assert (await _recv(honest))["type"] == "welcome"
    run(go, tmp_path)


def test_a_second_node_hello_does_not_displace_a_live_session(tmp_path):
    async def go(env):
        real = await env.open("node")
        real.send(_node_hello())
        assert (await _recv(real))["type"] == "welcome"

        async def answer_pings():
            while True:
                msg = await real.recv()
                if isinstance(msg, dict) and msg["type"] == "ping":
                    real.send({"type": "pong", "seq": msg["seq"]})
        pinger = asyncio.ensure_future(answer_pings())
        fake = await env.open("node")
        fake.send(_node_hello())
        reply = await _recv(fake, 5)
        assert reply["type"] == "error" and reply["code"] == "duplicate-node"
        assert env.master.nodes[NODE] is not None
        pinger.cancel()
        # a session that stops answering (a half-open connection) loses its place in 2 s
        t0 = asyncio.get_running_loop().time()
        new = await env.open("node")
        new.send(_node_hello())
        assert (await _recv(new, 5))["type"] == "welcome"
        assert 1.5 < asyncio.get_running_loop().time() - t0 < 4
        with pytest.raises((ConnectionClosed, asyncio.TimeoutError)):
            for _ in range(10):
                await asyncio.wait_for(real.recv(), 2)
    run(go, tmp_path)


def test_the_ticker_logs_a_failure_and_keeps_ticking(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(master_mod, "TICK", 0.01)

    async def go(env):
        calls = []
        real = env.master.pool.tick

        def flaky(now):
            calls.append(now)
            if len(calls) == 2:
                raise RuntimeError("boom")
            return real(now)
        env.master.pool.tick = flaky
        with caplog.at_level(logging.ERROR, "jrs.master"):
            task = asyncio.ensure_future(env.master.ticker())
            await asyncio.sleep(0.3)
            task.cancel()
        assert len(calls) > 5
        assert any("ticker failed" in r.message and r.exc_info for r in caplog.records)
    run(go, tmp_path)


def test_session_bindings_survive_a_master_restart(tmp_path):
    """Else an id seen in `jrs status` could be bound by another in the seconds between
    the master's restart and its submitter's return."""
    from jrs.cluster.master import SessionStore

    async def first(env):
        env.master = Master(env.config, ClusterCounter(str(tmp_path)),
                            sessions=SessionStore(str(tmp_path)))
        env.server.handler = env.master.serve
        ch = await env.open("submit")
        ch.send(_sub_hello("s1", token="t" * 64))
        assert (await _recv(ch))["type"] == "welcome"
    run(first, tmp_path)
    assert oct((tmp_path / "sessions").stat().st_mode & 0o777) == "0o600"

    async def after_restart(env):
        env.master = Master(env.config, ClusterCounter(str(tmp_path)),
                            sessions=SessionStore(str(tmp_path)))
        env.server.handler = env.master.serve
        thief = await env.open("submit")
        thief.send(_sub_hello("s1", token="u" * 64))
        assert (await _recv(thief))["code"] == "session"
        real = await env.open("submit")
        real.send(_sub_hello("s1", token="t" * 64))
        assert (await _recv(real))["type"] == "welcome"
    run(after_restart, tmp_path)


def test_a_nodes_ping_is_answered_after_the_drops_its_report_caused(tmp_path):
    """A node back from a stop sends a report and a ping, and starts no run until the
    pong (jrs/node/core.py `_clock`): every claim-drop the report causes comes first."""
    async def go(env):
        node = await env.open("node")
        node.send(_node_hello())
        assert (await _recv(node))["type"] == "welcome"
        revoked = "ab" * 16
        env.master.pool.dropped[revoked] = True  # taken from the node while it was away
        node.send({"type": "node-report", "load": 0, "running": 0, "claims": [revoked]})
        node.send({"type": "ping", "seq": 7})
        assert await _recv(node) == {"type": "claim-drop", "claim": revoked, "kill": True}
        assert await _recv(node) == {"type": "pong", "seq": 7}
    run(go, tmp_path)


def test_cluster_ids_are_never_handed_out_twice_across_restarts_and_flush_once_a_block(
        tmp_path, monkeypatch):
    flushes = []
    real_fsync = os.fsync
    monkeypatch.setattr(master_mod.os, "fsync", lambda fd: (flushes.append(fd), real_fsync(fd)))
    seen: list = []
    counter = ClusterCounter(str(tmp_path))
    seen += [counter.take() for _ in range(ClusterCounter.BLOCK + 5)]
    assert len(flushes) == 4  # one per block begun, none per id: the file, its directory
    # a restart (or a crash: the file is all that survives) continues above every id out
    for used in (0, 1, 3):
        counter = ClusterCounter(str(tmp_path))
        seen += [counter.take() for _ in range(used)]
    assert seen == sorted(seen) and len(set(seen)) == len(seen) and seen[0] == 1
    # a file of an older build holds the next id itself: it is used as the ceiling
    (tmp_path / "next-cluster").write_text("7\n")
    assert ClusterCounter(str(tmp_path)).take() == 7


def test_the_tick_is_jrs_master_tick_seconds_and_a_bad_one_stops_the_master(
        tmp_path, monkeypatch):
    """JRS_MASTER_TICK sets the ticker's period and the Pool's (the suite's tests of many
    rounds shorten it); one that is no positive number of seconds is refused, naming
    the setting, as a ticker that never sleeps would spin."""
    config = _Env(tmp_path).config
    monkeypatch.setenv("JRS_MASTER_TICK", "0.02")
    m = Master(config, ClusterCounter(str(tmp_path)))
    assert m.tick == m.pool.tick_period == 0.02
    ticks = []
    m.pool.tick = lambda now: ticks.append(now) or []

    async def go() -> None:
        task = asyncio.ensure_future(m.ticker())
        await asyncio.sleep(0.5)
        task.cancel()
    asyncio.run(go())
    assert len(ticks) > 5, ticks  # 1 at the default period of 1 s
    for bad in ("0", "-1", "nan", "soon"):
        monkeypatch.setenv("JRS_MASTER_TICK", bad)
        with pytest.raises(ConfigError, match="JRS_MASTER_TICK"):
            Master(config, ClusterCounter(str(tmp_path)))


def test_the_ticker_ticks_at_once_so_a_stop_before_its_second_tick_is_pardoned(tmp_path):
    """Sim finding (small 108): a master stopped (SIGSTOP) within its first second woke
    to a Pool that had never ticked, so it had no gap to pardon (C2's rule): it declared
    every node lost at once, their reports still unread, and revoked their claims with
    kill. The ticker ticks at its start, so the stop is a gap between two ticks."""
    now = [100.0]
    env = _Env(tmp_path)
    m = Master(env.config, ClusterCounter(str(tmp_path)), clock=lambda: now[0])
    m.tick = 3600.0  # the ticker's sleep: no second tick

    async def go() -> None:
        task = asyncio.ensure_future(m.ticker())
        await asyncio.sleep(0.05)
        task.cancel()
    asyncio.run(go())
    m.pool.node_hello(NODE, _node_hello(), 100.0)
    now[0] = 110.0  # stopped for 10 s: the node's reports wait in the socket, unread
    lost = [a for a in m.pool.tick(110.0) if a[2].get("type") == "node-lost"]
    assert m.pool.nodes[NODE].state == "up" and lost == []
