"""R13 findings (cold read of R12's changes): each found failing (strict xfail), passing with
its fix: Server._buffered closes the host holding the most, then its largest; a tool's
charge is at most half a second of its host's rate and a debt of a burst; the clusters
of gone submitters are capped in all (pool.MAX_GONE_CLUSTERS)."""
import asyncio

from jrs.wire.connection import KIND_MESSAGE

from .test_wire_net import run


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


def test_a_tool_on_an_honest_host_is_not_charged_for_what_another_host_made(tmp_path):
    """A hostile host opens sessions (each its own submitter id, listing 1,024 clusters,
    MAX_CLUSTERS) and closes them: each is kept gone, with its clusters, up to MAX_GONE.
    Here 400 (~2 min of one host's 2 MiB/s budget at ~75 KiB a session, seconds from a
    few addresses). An honest host's one `jrs q` is then charged 64 KiB + 256 B x
    (400 x 1,025) ~ 100 MiB to ITS demand budget (limits.host_charge: no floor), so its
    new sessions (a resume) and its sessions' reads wait ~50 s (`host_owed`)."""
    from jrs.cluster.master import ClusterCounter, Master

    from .test_pool_master import _Env

    m = Master(_Env(tmp_path).config, ClusterCounter(str(tmp_path)))
    now = m.clock()
    clusters = [{} for _ in range(1024)]
    for i in range(400):
        sid = f"s{i:04d}"
        m.pool.submitter_hello({"type": "submitter-hello", "submitter": sid, "user": "x",
                                "host": "h", "pid": 1, "claims": [],
                                "clusters": clusters}, now)
        m.pool.submitter_gone(sid, now)
    # kept for `jrs q` (gone, with clusters): at most MAX_GONE_CLUSTERS of them in all
    from jrs.cluster.pool import MAX_GONE_CLUSTERS
    assert len(m.pool.submitters) == MAX_GONE_CLUSTERS // 1024  # 400 before the bound
    cost = m._tool_cost({"type": "status", "what": "queue"})
    assert cost <= m.limiter.limits.host_demand_rate / 2  # half a second of its rate
    m.limiter.host_charge("127.0.0.1", cost, now)
    owed = m.limiter.host_owed("127.0.0.1", now)
    wait = 0.0 if owed is None else owed - now
    assert wait < 5.0, f"the honest host's sessions wait {wait:.0f} s ({cost / 2**20:.0f} MiB)"
