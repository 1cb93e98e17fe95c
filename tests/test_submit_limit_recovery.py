"""An honest `jrs submit` beside hostile sessions of its own host (#13, R8's review of
the master's per-host limits), with real processes on loopback: refused once for the
host's share of request entries, it recovers once the others have gone; refused a
session, it says the master's limit, never that the secret may be wrong (rule 8)."""

from __future__ import annotations

import asyncio
import time

from .cluster import Cluster
from .test_master_limits_cluster import _entries, _honest_submit, _recv, _sessions


def test_a_demand_refused_for_the_hosts_share_goes_again_and_the_submit_ends(pyz, tmp_path):
    """16 hostile sessions on the submitter's own address hold the host's 16,384
    request entries; the honest demand is refused ("limit"); then they close. Before
    the fix the master kept nothing, the submitter never sent the same demand again,
    and the submit hung for good (R8 p3)."""
    c = Cluster(pyz, tmp_path, slots=[2], env={"JRS_MASTER_HOST_DEMAND_BURST": "1e9"}).start()
    try:
        work = tmp_path / "w"
        work.mkdir()

        async def scenario():
            chans = await _sessions(c, 16, "127.0.0.1")
            for i, ch in enumerate(chans):
                ch.send({"type": "demand", "requests": _entries(1024, f"s{i}k")})
                ch.send({"type": "new-cluster"})  # answered once the demand is applied
                await ch.drain()
            for ch in chans:  # all 16 applied (a session's messages are taken in order)
                while (msg := await _recv(ch, 30))["type"] != "cluster":
                    assert msg["type"] != "error", msg
            task = asyncio.ensure_future(_honest_submit(c, work, 1))
            deadline = time.monotonic() + 30  # its demand is refused meanwhile
            while "JRS_MASTER_REQUESTS_PER_HOST" not in log.read_text() and \
                    time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            for ch in chans:
                ch.close()
            return await task

        log = tmp_path / "master.log"
        code, err, _took = asyncio.run(scenario())
        text = log.read_text()
        assert "JRS_MASTER_REQUESTS_PER_HOST" in text  # it was refused, then recovered
        assert code == 0 and "1 jobs, 1 done" in err, err + text[-2000:]
    finally:
        c.stop()


def test_a_session_refused_for_the_hosts_limit_is_not_blamed_on_the_secret(pyz, tmp_path):
    """64 hostile sessions take the address's submitter sessions: the honest submit
    cannot get one and exits 3 naming the master's limit, without the wrong-secret
    hint (R8 p6)."""
    c = Cluster(pyz, tmp_path, slots=[2]).start()
    # the honest submit's wait for a session: 4 s instead of 15 (the daemons started
    # with the default)
    c.env["JRS_CONNECT_TIMEOUT"] = "4"
    try:
        work = tmp_path / "w"
        work.mkdir()

        async def scenario():
            chans = await _sessions(c, 64, "127.0.0.1")
            res = await _honest_submit(c, work, 1)
            for ch in chans:
                ch.close()
            return res

        code, err, _took = asyncio.run(scenario())
        assert code == 3, err
        assert "refused a session" in err and "JRS_MASTER_SESSIONS_PER_HOST" in err, err
        assert "secret" not in err, err
    finally:
        c.stop()
