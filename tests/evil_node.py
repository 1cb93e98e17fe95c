"""A malicious node for tests: it speaks the master's protocol honestly (so it gets
claims), then answers every run with a result built to hang or crash a submitter.

    python -m tests.evil_node CONFIG_DIR NAME MODE MARKER

MODE: `rusage` (a string where an object belongs), `files` (120,000 output
headers), `huge` (a file of 2**60 bytes announced), `header` (a transfer header
whose `files` is no list, re-sent on every attach), `dense` (a valid header of 100,000
files whose names of commas put it over the wire's cap on JSON values, 2.6 M: the
submitter's link closes before decoding it), `removed` / `lost` (a valid result
saying the run was killed not by its submitter / lost, for every run). MARKER is created when the
first run arrives (so the test knows the attack was delivered).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from jrs.config import load
from jrs.wire import files as wirefiles
from jrs.wire.aio import Server, connect
from jrs.wire.connection import KIND_MESSAGE
from jrs.wire.keys import root_key


def bad_finished(mode: str, job: str, attempt: int, node: str = "evil") -> tuple:
    """(header, raw): raw headers bypass our own sans-IO checks, as an attacker's would.
    Apart from the one attack of `mode`, the message is valid (so each mode tests its
    own attack, not a field the schema misses)."""
    result = {"node": node, "exit_code": 0, "signal": None,
              "rusage": {"utime": 0, "stime": 0, "maxrss_kb": 0},
              "started": 1.0, "ended": 2.0, "removed": False}
    files: object = []
    raw = False
    if mode == "rusage":
        result["rusage"] = "lots"
    elif mode == "files":
        files = [{"name": f"f{i}", "size": 0} for i in range(120_000)]
    elif mode == "huge":
        files = [{"name": "x", "size": 1 << 60}]
        raw = True  # our Channel would expect to send 2**60 bytes; an attacker stops
    elif mode == "header":
        files = "not a list"
        raw = True
    elif mode == "dense":
        files = [{"name": "," * 20 + f"{i}", "size": 0} for i in range(100_000)]
        raw = True  # (our encode refuses it)
    elif mode == "removed":
        result.update(exit_code=None, signal=15, removed=True)
    elif mode == "lost":
        result.update(exit_code=None, lost=True, reason="the node rebooted")
    return {"type": "finished", "job": job, "attempt": attempt, "result": result,
            "files": files}, raw


def send_raw(ch, body: dict) -> None:
    ch._queue(ch.conn._seal(json.dumps(body).encode(), KIND_MESSAGE))


async def main(conf: str, name: str, mode: str, marker: str) -> None:
    config = load(Path(conf))
    root = root_key(config.secret)
    host, _, port = name.rpartition(":")
    runs: dict = {}

    async def deliver(ch, job: str, attempt: int) -> None:
        header, raw = bad_finished(mode, job, attempt, name)
        if raw:
            send_raw(ch, header)
        else:
            async with ch.transfer(header):
                pass

    async def serve(ch) -> None:
        first = await ch.recv()
        ch.send({"type": "attached", "unknown": []})
        for job, attempt in list(runs.items()):  # as a real node re-delivers unacked ones
            await deliver(ch, job, attempt)
        while True:
            msg = await ch.recv()
            if isinstance(msg, dict) and msg.get("type") == "run":
                heads = wirefiles.check_headers(msg["files"])
                await wirefiles.receive(ch, heads, lambda h: None)
                Path(marker).touch()
                runs[msg["job"]] = msg["attempt"]
                ch.send({"type": "started", "job": msg["job"], "attempt": msg["attempt"]})
                await deliver(ch, msg["job"], msg["attempt"])
            elif isinstance(msg, dict) and msg.get("type") == "ack":
                runs.pop(msg["job"], None)
        del first

    server = Server(root, "node", serve, peer_roles=frozenset({"submit"}))
    await server.start(host, int(port))
    ep = config.master
    claims: list = []
    while True:
        try:
            m = await connect(ep.host, ep.port, root, "node", peer_roles=frozenset({"master"}))
            m.send({"type": "node-hello", "name": name, "slots": 1, "memory": 1000, "gpus": 0,
                    "attrs": {"Name": name}, "claims": claims})

            async def report(m=m) -> None:
                while True:
                    m.send({"type": "node-report", "load": 0.0, "running": 0,
                            "claims": claims})
                    await asyncio.sleep(0.5)

            beat = asyncio.ensure_future(report())
            try:
                while True:
                    msg = await m.recv()
                    kind = msg.get("type") if isinstance(msg, dict) else None
                    if kind == "claim-offer":
                        claims.append(msg["claim"])
                        m.send({"type": "claim-ok", "claim": msg["claim"], "gpu_ids": []})
                    elif kind == "claim-drop":
                        if msg["claim"] in claims:
                            claims.remove(msg["claim"])
                        m.send({"type": "claim-released", "claim": msg["claim"]})
                    elif kind == "ping":
                        m.send({"type": "pong", "seq": msg["seq"]})
            finally:
                beat.cancel()
        except Exception as exc:  # the test's master went away or restarted
            print("evil node:", exc, file=sys.stderr)
            await asyncio.sleep(0.3)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main(*sys.argv[1:5]))
