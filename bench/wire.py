#!/usr/bin/env python3
"""Wire speed against a plaintext-TCP echo baseline measured in the same run.

Both sides use asyncio streams over loopback with the same framing
(4-byte length + body); the only difference is the sealing, JSON and the
handshake. Reported: small-message round trips/s on one connection,
pipelined small messages/s, bulk MB/s with 1 MiB frames, handshake time.

    python3 bench/wire.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jrs.wire.aio import Server, connect
from jrs.wire.keys import root_key
from jrs.wire.selftest import echo

ROOT = root_key(os.urandom(32))
SMALL = {"type": "echo", "seq": 0, "body": "x" * 40}
RTT_N, PIPE_N, BULK_N = 3000, 20000, 200


# ---------------------------------------------------------------- plaintext baseline

async def plain_echo(reader, writer):
    try:
        while True:
            head = await reader.readexactly(4)
            body = await reader.readexactly(int.from_bytes(head, "big"))
            writer.write(head + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def plain_read(reader):
    head = await reader.readexactly(4)
    return await reader.readexactly(int.from_bytes(head, "big"))


async def plain_bench(port):
    import json
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    small = json.dumps(SMALL).encode()
    frame = len(small).to_bytes(4, "big") + small
    t = time.perf_counter()
    for _ in range(RTT_N):
        writer.write(frame)
        await plain_read(reader)
    rtt = RTT_N / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(PIPE_N):
        writer.write(frame)
    for _ in range(PIPE_N):
        await plain_read(reader)
    pipe = PIPE_N / (time.perf_counter() - t)
    bulk = os.urandom(1 << 20)
    bframe = len(bulk).to_bytes(4, "big") + bulk
    async def pump():
        for _ in range(BULK_N):
            writer.write(bframe)
            await writer.drain()
    t = time.perf_counter()
    sender = asyncio.ensure_future(pump())
    for _ in range(BULK_N):
        await plain_read(reader)
    await sender
    mbs = BULK_N * 2 * len(bulk) / 1e6 / (time.perf_counter() - t)
    writer.close()
    return rtt, pipe, mbs


# ---------------------------------------------------------------- jrs wire

async def jrs_bench(port):
    ch = await connect("127.0.0.1", port, ROOT, "tool")
    t = time.perf_counter()
    for _ in range(RTT_N):
        ch.send(SMALL)
        await ch.recv()
    rtt = RTT_N / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(PIPE_N):
        ch.send(SMALL)
    for _ in range(PIPE_N):
        await ch.recv()
    pipe = PIPE_N / (time.perf_counter() - t)
    bulk = os.urandom(1 << 20)
    async def pump():
        async with ch.transfer({"type": "blob", "size": BULK_N * len(bulk)}) as unit:
            for _ in range(BULK_N):
                unit.write(bulk)
                await unit.drain()
    t = time.perf_counter()
    sender = asyncio.ensure_future(pump())
    assert (await ch.recv())["type"] == "blob"
    for _ in range(BULK_N):
        await ch.recv()
    await sender
    mbs = BULK_N * 2 * len(bulk) / 1e6 / (time.perf_counter() - t)
    ch.close()
    hs = []
    for _ in range(200):
        t = time.perf_counter()
        c = await connect("127.0.0.1", port, ROOT, "tool")
        hs.append(time.perf_counter() - t)
        c.close()
    hs.sort()
    return rtt, pipe, mbs, hs[len(hs) // 2] * 1e3


def pin(cpu: int) -> None:
    """Client and servers on separate CPUs, the same for both kinds: the scheduler's
    placement otherwise moves the plaintext baseline between runs by 2-3x."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})


def serve(kind: str, ports) -> None:
    """The echo server, in its own process as it would be on another machine."""
    pin(1)

    async def run() -> None:
        if kind == "plain":
            srv = await asyncio.start_server(plain_echo, "127.0.0.1", 0)
            ports.put(srv.sockets[0].getsockname()[1])
        else:
            srv = Server(ROOT, "node", echo)
            ports.put((await srv.start("127.0.0.1", 0))[1])
        await asyncio.sleep(3600)
    asyncio.run(run())


async def main() -> None:
    import multiprocessing as mp
    ports = mp.Queue()
    servers = [mp.Process(target=serve, args=(kind, ports), daemon=True)
               for kind in ("plain", "jrs")]
    servers[0].start()
    plain_port = ports.get()
    servers[1].start()
    jrs_port = ports.get()
    pin(0)
    # alternate the two, three times, and keep each one's median: this machine is shared
    runs = [(await plain_bench(plain_port), await jrs_bench(jrs_port)) for _ in range(3)]
    p = [sorted(r[0][i] for r in runs)[1] for i in range(3)]
    j = [sorted(r[1][i] for r in runs)[1] for i in range(4)]
    print(f"round trips/s, one connection: jrs {j[0]:,.0f}  plaintext {p[0]:,.0f}  "
          f"ratio {j[0] / p[0]:.2f}")
    print(f"pipelined small messages/s:    jrs {j[1]:,.0f}  plaintext {p[1]:,.0f}  "
          f"ratio {j[1] / p[1]:.2f}  (target >= 20,000/s)")
    print(f"bulk MB/s, 1 MiB frames:       jrs {j[2]:,.0f}  plaintext {p[2]:,.0f}  "
          f"ratio {j[2] / p[2]:.2f}  (target >= 0.50)")
    print(f"handshake (median of 200, incl. TCP connect): {j[3]:.2f} ms  (target <= 2 ms)")
    for proc in servers:
        proc.terminate()


if __name__ == "__main__":
    asyncio.run(main())
