"""The largest file a transfer may carry is one constant (wire.messages.MAX_FILE_SIZE,
1 TiB less a byte), used by the wire's schema, the node's own check of a run's
headers and the submitter's of a result's. The schema took a size of exactly 1 TiB
(`1 << 40`) that the node refused: the node then left that run's data unread, and the
session closed on it ("file data outside a transfer"). Now both take 1 TiB - 1 and
refuse 1 TiB with the same words, the schema first: the wire answers `bad-message`
and reads the run's data, as it comes, to nowhere (the stream stays in step)."""

from __future__ import annotations

import asyncio

import pytest

from jrs.client import transfer
from jrs.node import core as nc
from jrs.wire import files as wirefiles
from jrs.wire.aio import ConnectionClosed
from jrs.wire.errors import MessageError
from jrs.wire.messages import MAX_FILE_SIZE, TOO_BIG, validate

from .cluster import honest_job_cluster
from .test_established_flood_cluster import _attach

TIB = 1 << 40


def _run(size: int, name: str = "in") -> dict:
    return {"type": "run", "claim": "c" * 32, "job": "1.0", "attempt": 0,
            "spec": {"executable": "/bin/true"}, "files": [{"name": name, "size": size}]}


def test_one_tib_less_a_byte_is_taken_by_the_schema_the_node_and_the_submitter():
    assert MAX_FILE_SIZE == TIB - 1
    assert validate(_run(TIB - 1))["files"][0]["size"] == TIB - 1
    assert nc.check_headers(_run(TIB - 1)["files"])[0]["size"] == TIB - 1
    assert wirefiles.check_headers(_run(TIB - 1)["files"])[0]["size"] == TIB - 1
    assert transfer.check_output_heads([{"name": "o", "size": TIB - 1}], 10)[0]["size"] \
        == TIB - 1


@pytest.mark.parametrize("size", [TIB, TIB + 1, 1 << 48])
def test_one_tib_is_refused_by_each_with_the_same_words(size):
    words = f"field 'files[0].size' {TOO_BIG}"
    with pytest.raises(MessageError) as wire:
        validate(_run(size))
    assert str(wire.value) == f"run: {words}"
    with pytest.raises(nc.Refused) as node:
        nc.check_headers(_run(size)["files"])
    assert str(node.value) == words
    assert "1099511627775 bytes (1 TiB - 1)" in words
    with pytest.raises(ValueError):
        wirefiles.check_headers(_run(size)["files"])
    with pytest.raises(transfer.BadResult):
        transfer.check_output_heads([{"name": "o", "size": size}], 10)


@pytest.mark.parametrize("size", [TIB - 1, TIB])
def test_a_real_node_reads_on_after_a_run_at_the_bound(pyz, tmp_path, size):
    """A real node, a run (of no claim it has) announcing one file of `size` bytes,
    then the first MiB of its data, as a sender streams it. 1 TiB - 1: taken, its data
    read (to nowhere: no such claim), no answer yet. 1 TiB: answered `bad-message`
    with the bound's words, its data read to nowhere by the wire. Either way the
    session is still open. Before, the schema took 1 TiB and the node refused it
    without reading its data: the first data frame closed the session ("file data
    outside a transfer")."""
    c, _work = honest_job_cluster(pyz, tmp_path)
    try:
        async def scenario():
            ch = await _attach(c, c.ports[0], 1)
            assert ch is not None
            ch.conn.strict = False
            ch._queue(ch.conn.send_message(_run(size)))
            for _ in range(4):
                ch._queue(ch.conn.send_data(b"x" * (1 << 18)))
            await ch.drain()
            got = []
            try:
                while True:
                    msg = await asyncio.wait_for(ch.recv(), 2)
                    if isinstance(msg, dict) and msg["type"] != "attached":
                        got.append(msg)
            except asyncio.TimeoutError:
                closed = False  # nothing more said, and still open
            except ConnectionClosed:
                closed = True
            ch.close()
            return got, closed

        got, closed = asyncio.run(scenario())
        assert not closed, (got, c.logs())
        if size == TIB - 1:
            assert got == []
        else:
            assert [m["code"] for m in got] == ["bad-message"], got
            assert TOO_BIG in got[0]["message"] and "files[0].size" in got[0]["message"]
        assert c.nodes[0].poll() is None
    finally:
        c.stop()
