"""The master shell asks its Limiter (jrs/cluster/limits.py) before a submitter session
or a demand gets in: in this process, over real loopback connections (the cluster test,
tests/test_master_limits_cluster.py, runs the real jrs.pyz). Over a count limit the peer
gets an `error` with code "limit" naming the bound and nothing of it is applied; a demand
flood keeps only the newest frame, undecoded, and applies it when the budget refills."""

from __future__ import annotations

import asyncio
import json

from jrs.cluster.limits import Limits
from jrs.cluster.master import ClusterCounter, Master
from jrs.wire import connection as wire_connection

from .test_pool_master import _recv, _sub_hello, run


def _use(env, tmp_path, **limits) -> None:
    # (these budgets are sized for the demands the tests send: a session's opening,
    # 64 KiB by default, would be a debt of seconds in them)
    limits.setdefault("session_cost", 0)
    env.master = Master(env.config, ClusterCounter(str(tmp_path)), limits=Limits(**limits))
    env.server.handler = env.master.serve


async def _session(env, sid: str, hostile: bool = False):
    ch = await env.open("submit", hostile=hostile)
    ch.send(_sub_hello(sid, token=sid * 8))
    return ch, await _recv(ch)


def _demand(key: str = "k", count: int = 1, entries: int = 1) -> dict:
    return {"type": "demand", "requests": [
        {"key": f"{key}{i}", "count": count, "cpus": 1, "memory": 0, "gpus": 0,
         "requirements": "", "ad": {}} for i in range(entries)]}


async def _until(pred, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _count_decoded(monkeypatch, counts) -> list:
    """The sizes of the message bodies the connections decode from now on, of those
    `counts(body)` is true for (the test's demands)."""
    decoded: list = []
    real = wire_connection.Connection._decode

    def counting(self, body, kept=False, units=None):
        if counts(body):
            decoded.append(len(body))
        return real(self, body, kept, units)

    monkeypatch.setattr(wire_connection.Connection, "_decode", counting)
    return decoded


def a_key(env, sid: str):
    """The limiter's key of a submitter's session (its channel at the master)."""
    return env.master.submitters[sid]


def _asked(env, sid: str) -> dict:
    sub = env.master.pool.submitters.get(sid)
    return {} if sub is None else {k: r.count for k, r in sub.requests.items()}


def test_sessions_past_the_per_host_limit_are_refused_and_bind_nothing(tmp_path):
    async def go(env):
        _use(env, tmp_path, sessions_per_host=2)
        (a, wa), (b, wb) = await _session(env, "s1"), await _session(env, "s2")
        assert wa["type"] == wb["type"] == "welcome"
        _c, refused = await _session(env, "s3")
        assert refused["type"] == "error" and refused["code"] == "limit"
        assert refused["message"].startswith("at most 2 submitter sessions from one host")
        assert "s3" not in env.master.pool.sessions  # its token was not bound
        assert "s3" not in env.master.pool.submitters
        a.send(_demand("a"))  # the sessions in keep working
        await _until(lambda: _asked(env, "s1") == {"a0": 1})
        # the same submitter again replaces its session: not refused, not counted twice
        _a2, w = await _session(env, "s1")
        assert w["type"] == "welcome"
        b.close()
        await _until(lambda: env.master.limiter.sessions_of("127.0.0.1") == 1)
        _d, w = await _session(env, "s4")
        assert w["type"] == "welcome"
    run(go, tmp_path)


def test_a_demand_over_the_request_limits_is_refused_whole(tmp_path):
    async def go(env):
        _use(env, tmp_path, requests_per_session=3, requests_per_host=5)
        (a, _), (b, _) = await _session(env, "s1"), await _session(env, "s2")
        a.send(_demand("a", entries=3))
        await _until(lambda: len(_asked(env, "s1")) == 3)
        a.send(_demand("x", entries=4))
        msg = await _recv(a)
        assert (msg["type"], msg["code"], msg["re"]) == ("error", "limit", "demand")
        assert "at most 3 requests per submitter session" in msg["message"]
        assert set(_asked(env, "s1")) == {"a0", "a1", "a2"}  # the previous one stands
        b.send(_demand("b", entries=3))
        msg = await _recv(b)
        assert msg["code"] == "limit" and "127.0.0.1 would hold 6" in msg["message"]
        assert _asked(env, "s2") == {}
        b.send(_demand("b", entries=2))
        await _until(lambda: len(_asked(env, "s2")) == 2)
        a.close()  # its requests go with the session: room for b
        await _until(lambda: env.master.limiter.held_by("127.0.0.1") == 2)
        b.send(_demand("b", entries=3))
        await _until(lambda: len(_asked(env, "s2")) == 3)
    run(go, tmp_path)


def test_a_refused_demand_of_100000_entries_does_not_stall_an_honest_co_host(tmp_path):
    """R8 #2: a refused demand used to be charged for each of its entries: 100,000
    minimal ones (2.7 MB, what the schema allows) cost the host 205 MB of budget and an
    honest session of the same host waited ~95 s (95,000 here, in a frame under the
    master's MAX_DEMAND_FRAME: ~90 s). Now it is charged for at most
    requests_per_session + 1 entries: the honest demand is applied within 5 s."""
    async def go(env):
        _use(env, tmp_path)
        evil, _ = await _session(env, "e", hostile=True)
        honest, _ = await _session(env, "h")
        evil.send({"type": "demand", "requests": [  # 2.5 MB: under MAX_DEMAND_FRAME
            {"key": f"{i:x}", "count": 0} for i in range(95_000)]})
        msg = await _recv(evil, 30)
        assert (msg["type"], msg["code"]) == ("error", "limit"), msg
        assert "at most 1024 requests per submitter session" in msg["message"]
        honest.send(_demand("a"))
        await _until(lambda: _asked(env, "h") == {"a0": 1}, 5.0)
    run(go, tmp_path)


def test_a_flood_keeps_only_the_newest_demand_undecoded_and_applies_it(tmp_path,
                                                                      monkeypatch):
    decoded = _count_decoded(monkeypatch, lambda body: body.startswith(b'{"type":"demand"'))

    async def go(env):
        _use(env, tmp_path, demand_rate=20_000.0, demand_burst=25_000.0, message_cost=0,
             entry_cost=0)
        a, _ = await _session(env, "s1")
        # each ~8 KB and 1,604 values, ~21 KB of budget (8 bytes a value, R12)
        a.send(_demand("big", entries=100))  # in the burst
        a.send(_demand("big", entries=100))  # leaves a debt of ~17 KB: 0.85 s
        for i in range(200):
            a.send(_demand("n", count=i + 1))
        await _until(lambda: _asked(env, "s1") == {"n0": 200})
        st = env.master.limiter.stats(a_key(env, "s1"))
        assert st["applied"] == 3 and st["deferred"] == 1 and st["coalesced"] == 199
        assert len(decoded) == 3  # the 199 replaced frames were never decoded
    run(go, tmp_path)


def test_a_demand_in_another_field_order_is_kept_too_and_the_session_waits(tmp_path):
    """Not our prefix: decoded on arrival (the master cannot tell it is a demand before);
    over budget it is kept, and the session is not read until it is due."""
    async def go(env):
        _use(env, tmp_path, demand_rate=10_000.0, demand_burst=100.0, message_cost=0,
             entry_cost=0)
        a, _ = await _session(env, "s1", hostile=True)
        loop = asyncio.get_running_loop()

        def send_reordered(msg: dict) -> None:
            body = json.dumps({"requests": msg["requests"], "type": "demand"},
                              separators=(",", ":")).encode()
            a._queue(a.conn._seal(body, wire_connection.KIND_MESSAGE))

        send_reordered(_demand("big", entries=60))  # ~5 KB: a debt of ~0.5 s
        start = loop.time()
        for i in range(5):
            send_reordered(_demand("n", count=i + 1))
        await _until(lambda: _asked(env, "s1") == {"n0": 5})
        assert loop.time() - start >= 0.4  # waited for its budget
        st = env.master.limiter.stats(a_key(env, "s1"))
        assert st["applied"] >= 2 and st["deferred"] >= 1
    run(go, tmp_path)


def test_hostile_kept_frames_are_answered_not_crashed_on(tmp_path):
    async def go(env):
        _use(env, tmp_path)
        a, _ = await _session(env, "s1", hostile=True)
        # our prefix, but a second "type" makes it another message when decoded
        a._queue(a.conn._seal(b'{"type":"demand","type":"progress","clusters":[]}',
                              wire_connection.KIND_MESSAGE))
        msg = await _recv(a)
        assert msg["code"] == "bad-message" and "kept demand frame" in msg["message"]
        a._queue(a.conn._seal(b'{"type":"demand","requests":7}',
                              wire_connection.KIND_MESSAGE))
        msg = await _recv(a)
        assert msg["code"] == "bad-message"
        a.send(_demand("ok"))
        await _until(lambda: _asked(env, "s1") == {"ok0": 1})
        # a demand before any hello
        b = await env.open("submit", hostile=True)
        b.send(_demand("early"))
        msg = await _recv(b)
        assert msg["code"] == "protocol"
    run(go, tmp_path)


def test_coalesced_frames_cost_no_timer_work_per_waiting_session(tmp_path, monkeypatch):
    """R8 #3: each coalesced frame armed the timer with `next_due()`, a loop over all
    waiting sessions (2.4 ms a frame with 640 of them). Now only a newly kept demand
    arms it, with its own due time: the work per frame does not grow with the waiting
    sessions. Counted, not timed: calls of `due_at` (next_due's loop calls it)."""
    from jrs.cluster.limits import Limiter

    calls = [0]
    real = Limiter.due_at

    def counting(self, key):
        calls[0] += 1
        return real(self, key)

    monkeypatch.setattr(Limiter, "due_at", counting)

    async def go(env):
        _use(env, tmp_path, demand_rate=1.0, demand_burst=100.0, message_cost=0,
             entry_cost=0)
        per = {}
        for waiting in (4, 40):
            chans = [(await _session(env, f"w{waiting}x{i}"))[0] for i in range(waiting)]
            keys = [a_key(env, f"w{waiting}x{i}") for i in range(waiting)]
            lim = env.master.limiter
            for ch in chans:
                ch.send(_demand("first", entries=2))  # over the burst: a debt of ~100 s
            await _until(lambda lim=lim, keys=keys: all(lim.stats(k)["held"] == 2 for k in keys))
            calls[0] = 0
            for _round in range(5):
                for ch in chans:
                    ch.send(_demand("n", count=_round + 1))
            # every frame read: each session's first kept, the 4 others replaced
            await _until(lambda lim=lim, keys=keys: all(lim.stats(k)["coalesced"] == 4
                                                          for k in keys))
            assert all(lim.kept(k) is not None for k in keys)
            per[waiting] = calls[0] / (5 * waiting)
            for ch in chans:
                ch.close()
            await _until(lambda lim=lim, keys=keys: not any(lim.stats(k) for k in keys))
        # old: ~W/2 .. W calls a frame (4 -> ~3, 40 -> ~30); now one a newly kept demand
        assert per[40] <= per[4] + 0.1 and per[40] < 0.5, per
    run(go, tmp_path)


def test_a_demand_frame_longer_than_any_the_pool_takes_is_refused_not_kept(tmp_path):
    """R8 #6: a kept Raw frame could be 16 MiB (the wire's bound) where the Pool takes at
    most payload.MAX_DEMAND (1 MiB) of text: one was held per session, undecoded. Now a
    frame past master.MAX_DEMAND_FRAME is refused on arrival (bad-message, the payload's
    error for an oversized demand), never kept nor charged; a demand near MAX_DEMAND of
    text is still applied."""
    from jrs.cluster.master import MAX_DEMAND_FRAME
    from jrs.cluster.payload import MAX_DEMAND

    async def go(env):
        _use(env, tmp_path, demand_rate=1.0, demand_burst=100.0)  # any frame is kept
        a, _ = await _session(env, "s1", hostile=True)
        head = b'{"type":"demand","requests":[],"pad":"'
        body = head + b"x" * (MAX_DEMAND_FRAME + 1 - len(head) - 2) + b'"}'
        a._queue(a.conn._seal(body, wire_connection.KIND_MESSAGE))
        msg = await _recv(a, 10)
        assert (msg["type"], msg["code"]) == ("error", "bad-message"), msg
        assert f"larger than {MAX_DEMAND} characters" in msg["message"]
        key = a_key(env, "s1")
        assert env.master.limiter.kept(key) is None
        assert env.master.limiter.stats(key)["bytes"] == 0  # not charged, not kept
    run(go, tmp_path)

    async def honest(env):
        _use(env, tmp_path)
        a, _ = await _session(env, "s2")
        big = _demand("k", entries=1024)
        for r in big["requests"]:
            r["ad"] = {"a": "x" * 1000}  # 1,025,024 characters of the 1,048,576
        a.send(big)
        await _until(lambda: len(_asked(env, "s2")) == 1024, 10.0)
    run(honest, tmp_path)


def test_frames_a_replaced_session_had_read_are_dropped_quietly(tmp_path, caplog):
    """R8 #7: a second hello of the same submitter replaces its session (the limiter
    forgets the old one); frames the old channel had already read then reached the
    limiter as KeyError, logged as a bad demand with `bad-message` sent to a closed
    channel. Now they are a quiet no-op, through the same handler as in the loop."""
    from jrs.cluster.master import Master as M
    from jrs.wire.connection import Raw

    async def go(env):
        _use(env, tmp_path)
        await _session(env, "s1")
        old = a_key(env, "s1")
        await _session(env, "s1")  # replaces it
        await _until(lambda: a_key(env, "s1") is not old)
        assert env.master.limiter.stats(old) is None
        sent = []
        old.send = sent.append
        body = json.dumps(_demand("late"), separators=(",", ":")).encode()
        with caplog.at_level("INFO", logger="jrs.master"):
            await env.master._handle(old, "s1", M._raw_demand, Raw(body), "demand")
            await env.master._handle(old, "s1", M._demand, _demand("late"), "demand")
        assert sent == [] and "late0" not in _asked(env, "s1")
        assert not [r for r in caplog.records if "demand" in r.getMessage()], caplog.text
    run(go, tmp_path)


def test_two_kept_demands_of_one_host_are_both_applied_without_further_messages(tmp_path):
    """R8 p4: A's big demand leaves a host debt; B and A each keep one. The timer serves
    B first (least recently served), which pushes A's due later: only the timer armed
    again at the end of `_run_due` applies A's, since neither sends anything more."""
    async def go(env):
        _use(env, tmp_path, host_demand_rate=20_000.0, host_demand_burst=1_000.0,
             message_cost=0, entry_cost=0)
        a, _ = await _session(env, "sa")
        b, _ = await _session(env, "sb")
        a.send(_demand("big", 0, entries=60))  # ~5 KB: host debt ~0.2 s
        await asyncio.sleep(0.05)
        b.send(_demand("b", 1, entries=40))  # kept (host in debt); ~3 KB when applied
        a.send(_demand("a", 1))  # kept
        await _until(lambda: _asked(env, "sa") == {"a0": 1}
                     and len(_asked(env, "sb")) == 40)
    run(go, tmp_path)


def test_a_flood_in_another_field_order_pauses_the_session_not_all_decoded(tmp_path,
                                                                          monkeypatch):
    """R8 p5: demands not in our field order are decoded on arrival; over budget the
    session is not read until due, so of 2,001 (~2 MB) only what the wire read ahead
    (256 KiB at a time) is decoded within 2 s, far fewer than all."""
    decoded = _count_decoded(monkeypatch, lambda body: b'"type":"demand"' in body)

    async def go(env):
        _use(env, tmp_path, demand_rate=10_000.0, demand_burst=100.0, message_cost=0,
             entry_cost=0)
        a, _ = await _session(env, "s1", hostile=True)

        def reordered(msg: dict) -> None:
            body = json.dumps({"requests": msg["requests"], "type": "demand"},
                              separators=(",", ":")).encode()
            a._queue(a.conn._seal(body, wire_connection.KIND_MESSAGE))

        reordered(_demand("big", 0, entries=60))  # ~5 KB: a debt of ~0.5 s
        for i in range(2000):
            reordered(_demand("n", i + 1, entries=10))  # ~1 KB each, 2 MB in all
        await a.drain()
        await asyncio.sleep(2.0)
        assert len(decoded) < 600, len(decoded)
    run(go, tmp_path)


def test_a_kept_frame_gets_the_schema_checks_too(tmp_path):
    """R8 p8: a frame kept undecoded is schema-validated when it is decoded: a 5,000-
    character key and an extra field get `bad-message`, nothing applied."""
    async def go(env):
        _use(env, tmp_path)
        a, _ = await _session(env, "s1", hostile=True)
        body = json.dumps({"type": "demand", "requests": [{"key": "k" * 5000, "count": 1}],
                           "extra": 1}, separators=(",", ":")).encode()
        a._queue(a.conn._seal(body, wire_connection.KIND_MESSAGE))
        msg = await _recv(a)
        assert (msg["type"], msg["code"]) == ("error", "bad-message"), msg
        assert _asked(env, "s1") == {}
    run(go, tmp_path)


def test_other_messages_wait_for_the_budget_and_for_a_kept_demand_in_order(tmp_path):
    """`new-cluster` (as `progress` and `release`: they are charged the same way, but
    answer nothing) is charged to the session's budget: in debt, its answer comes only
    when a batch of budget is back, and after the demand kept before it was applied
    (order); meanwhile another session is served at once."""
    async def go(env):
        _use(env, tmp_path, demand_rate=20_000.0, demand_burst=10_000.0, message_cost=0,
             entry_cost=0)
        a, _ = await _session(env, "s1")
        b, _ = await _session(env, "s2")
        loop = asyncio.get_running_loop()
        a.send(_demand("big", entries=200))  # 16.3 KB: a debt of 6.3 KB, ~0.32 s
        a.send(_demand("want", count=3))  # kept
        a.send({"type": "new-cluster"})
        t0 = loop.time()
        b.send({"type": "new-cluster"})
        assert (await _recv(b))["type"] == "cluster"
        assert loop.time() - t0 < 0.3  # another session is not held up
        msg = await _recv(a)
        took = loop.time() - t0
        assert msg["type"] == "cluster"
        assert _asked(env, "s1") == {"want0": 3}  # the kept demand went first
        # at least the debt (~6.3 KB at 20 KB/s: 0.32 s) and the kept demand; if that
        # left a debt, a batch more (the 10 KB burst: 0.5 s)
        assert 0.25 < took < 3.0, took
        st = env.master.limiter.stats(a_key(env, "s1"))
        assert (st["messages"], st["waits"], st["deferred"]) == (1, 1, 1)
    run(go, tmp_path)


def test_a_kept_demand_frame_is_charged_its_values_too(tmp_path):
    """R12: a demand frame kept Raw (undecoded) reported no `json_units`, so it was
    charged its bytes alone, yet decoded in full when due: dense JSON demands from one
    host took 25-28 % of the master (tests/test_r12_findings.py F2). Its values now
    cost UNIT_BYTES each, as any message's."""
    from jrs.cluster.master import UNIT_BYTES

    async def go(env):
        _use(env, tmp_path, message_cost=0, entry_cost=0)
        a, _ = await _session(env, "s1")
        body = json.dumps(_demand("k", entries=50), separators=(",", ":")).encode()
        a.send(_demand("k", entries=50))
        await _until(lambda: _asked(env, "s1") == {f"k{i}": 1 for i in range(50)})
        st = env.master.limiter.stats(a_key(env, "s1"))
        assert st["bytes"] == len(body) + UNIT_BYTES * wire_connection.json_units(body)
    run(go, tmp_path)


def test_a_sessions_opening_and_a_tools_answer_cost_its_host_and_a_debt_holds_hellos(
        tmp_path):
    """R12 F3: a hello was charged its bytes alone, and a host opening and closing
    sessions took 67-76 % of the master. A session's opening now costs session_cost of
    its host's demand budget (`Limiter.opened`), a tool's answer tool_cost and more a
    listed entry (`Limiter.host_charge`), and while the host is in debt no new session
    of it is read, its hello included (`Master._host_paid`)."""
    from jrs.cluster.master import _host

    async def go(env):
        _use(env, tmp_path, session_cost=30_000, host_demand_rate=20_000.0,
             host_demand_burst=50_000.0, tool_cost=5_000, tool_entry_cost=100)
        lim = env.master.limiter
        a, welcome = await _session(env, "s1")
        assert welcome["type"] == "welcome"
        host = _host(a.peer)
        bucket = lim._host_buckets[host]
        assert bucket.tokens < 50_000 - 30_000 + 1_000, bucket.tokens  # (+ refill)
        await _session(env, "s2")  # the host now owes ~10,000: 0.5 s
        c = await env.open("submit")
        # at once: read with the handshake's last bytes, it is handed on without a read
        # of its own, and the gate is passed before it all the same (A16)
        t0 = asyncio.get_running_loop().time()
        c.send(_sub_hello("s3", token="s3" * 8))
        welcome = await _recv(c, 10)
        took = asyncio.get_running_loop().time() - t0
        assert welcome["type"] == "welcome"
        assert 0.3 < took < 2.0, took  # waited for the debt (~0.5 s) before it was read
        await asyncio.sleep(4.0)  # back to its burst
        before = lim._host_buckets[host]
        before.refill(env.master.clock())
        full = before.tokens
        tool = await env.open("tool")
        tool.send({"type": "query", "what": "status"})
        reply = await _recv(tool)
        assert reply["type"] == "status-reply"
        listed = len(env.master.pool.nodes) + len(env.master.pool.submitters)
        await _until(lambda: lim._host_buckets[host].tokens < full - 4_000)
        b = lim._host_buckets[host]
        assert b.tokens < full - 5_000 - 100 * listed + 500, (b.tokens, full, listed)
    run(go, tmp_path)
