"""R11: the daemons charge a message's JSON by its values and keys, not its bytes alone.

JSON of many small values (`[[0],[0],...]`) costs ~0.12 us a byte to decode here, 20-100
times a long string's. Charged by their bytes (a message's worth per 8 KiB), refused
frames of 4 MiB of it, one after another on an attached session, kept a real node at
100 % of a core after the burst. Each value or key (`connection.json_units`) now costs
a hundredth of a message; an honest submit beside the flood runs. The master's budgets
(in bytes) charge each 8 bytes more (`master.UNIT_BYTES`)."""

from __future__ import annotations

import asyncio
import time

import pytest

from jrs.node.budget import UNIT_COST, message_cost, refused_cost
from jrs.wire.connection import KIND_MESSAGE, Connection, json_units
from jrs.wire.keys import root_key

from .cluster import Cluster, honest_job_cluster
from .test_established_flood_cluster import _attach
from .test_hello_flood_cluster import _cpu, _open, _run
from .test_master_limits_cluster import _sessions

DENSE = b"[" + b",".join([b"[0]"] * ((4 << 20) // 4)) + b"]"  # 4 MiB, 2 M units


def test_units_bound_what_a_decode_makes():
    assert json_units(b'{"type":"ack","job":"a","attempt":1}') == 3 + 1 + 2
    assert json_units(DENSE) == 2 * ((4 << 20) // 4)
    client = Connection(root_key(b"u" * 40), "submit", is_client=True)
    server = Connection(root_key(b"u" * 40), "node", is_client=False)
    server.receive(client.initiate())
    client.receive(server.data_to_send())
    client.strict = False
    events = server.receive(client.data_to_send() + client._seal(DENSE, KIND_MESSAGE)
                            + client.send_message({"type": "ping", "seq": 1}))
    assert events[-2].units == json_units(DENSE) and events[-1].units == 4
    # a 4 MiB frame of it costs 21,000 messages, not 516; honest text stays as it was
    assert refused_cost(len(DENSE), json_units(DENSE)) > 20_000
    text = b'{"type":"x","env":{"K":"' + b"v" * 100_000 + b'"}}'
    assert message_cost(len(text), 0, json_units(text)) < 1.01 * message_cost(len(text))
    assert UNIT_COST * 700_000 < 8_000  # a run of 100,000 file headers: +7,000


def test_refused_frames_of_dense_json_are_charged_by_their_units(pyz, tmp_path):
    c, work = honest_job_cluster(pyz, tmp_path)
    try:
        node = c.nodes[0].pid

        async def scenario():
            ch = await _attach(c, c.ports[0], 1)
            assert ch is not None
            ch.conn.strict = False
            stop = time.monotonic() + 10.0
            sent = 0

            async def flood():
                nonlocal sent
                while time.monotonic() < stop:
                    ch._queue(ch.conn._seal(DENSE, KIND_MESSAGE))  # refused: not an object
                    sent += 1
                    try:
                        await asyncio.wait_for(ch.drain(), max(0.01, stop - time.monotonic()))
                    except asyncio.TimeoutError:
                        return

            flooding = asyncio.ensure_future(flood())
            await asyncio.sleep(3.0)  # the session's and host's bursts are spent by now
            cpu0, t0 = _cpu(node), time.monotonic()
            submit = await _run(str(pyz), "submit", "-c", str(c.conf), "--no-progress",
                                "j.condor", env=c.env, cwd=work, timeout=40)
            await asyncio.wait_for(flooding, 30)
            share = (_cpu(node) - cpu0) / (time.monotonic() - t0)
            ch.close()
            return sent, share, submit

        sent, share, (code, _out, err) = asyncio.run(scenario())
        print(f"{sent} frames of 4 MiB dense JSON in 10 s, node CPU {share:.0%} of a core "
              "after the burst")
        assert code == 0, err + c.logs()
        assert (work / "ok.out").read_text() == "through\n"
        assert share < 0.3, (share, sent)  # charged by bytes: 100 %
    finally:
        c.stop()


async def _flood_share(pid: int, chans: list, seconds: float = 12.0,
                       after: float = 5.0) -> tuple:
    """Refused frames of DENSE on each of `chans` for `seconds`: (frames sent, the
    daemon's CPU share of a core from `after` s to 1 s before the end)."""
    stop = time.monotonic() + seconds
    sent = 0

    async def flood(ch):
        nonlocal sent
        ch.conn.strict = False
        while time.monotonic() < stop:
            ch._queue(ch.conn._seal(DENSE, KIND_MESSAGE))
            sent += 1
            try:
                await asyncio.wait_for(ch.drain(), max(0.01, stop - time.monotonic()))
            except (asyncio.TimeoutError, ConnectionError):
                return

    tasks = [asyncio.ensure_future(flood(ch)) for ch in chans]
    await asyncio.sleep(after)  # the bursts are spent by now
    cpu0, t0 = _cpu(pid), time.monotonic()
    await asyncio.sleep(seconds - after - 1.0)
    share = (_cpu(pid) - cpu0) / (time.monotonic() - t0)
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in chans:
        ch.close()
    return sent, share


@pytest.mark.parametrize("who", ["submitters", "impostor-node"])
def test_the_master_charges_dense_json_by_its_units(pyz, tmp_path, who):
    """Charged by bytes alone (its budgets are in bytes), refused frames of DENSE took
    28 % of the master's core from 4 welcomed submitter sessions of one host and 57 %
    from one impostor node session (node 1 of node.list, down); ~10 % now."""
    c = Cluster(pyz, tmp_path, slots=[1, 1])
    c.start_master()
    c.start_node(0)
    c.wait_up(1)
    try:
        async def scenario():
            if who == "submitters":
                chans = await _sessions(c, 4)
            else:
                ch = await _open(c, c.mport, "node")
                ch.send({"type": "node-hello", "name": c.names()[1], "slots": 0,
                         "memory": 0, "gpus": 0, "attrs": {}, "claims": []})
                assert (await asyncio.wait_for(ch.recv(), 10))["type"] == "welcome"
                chans = [ch]
            return await _flood_share(c.master.pid, chans)

        sent, share = asyncio.run(scenario())
        print(f"{who}: {sent} frames of 4 MiB dense JSON, master CPU {share:.0%} of a core "
              "after the burst")
        assert share < 0.25, (share, sent)
        assert c.master.poll() is None
    finally:
        c.stop()
