"""Issue 13 (R9, hostile review): the wire bounds connections only until their first
message. A secret holder that sends each a first message (an `attach` with a token of
its own at a node; an `rm` at the master that its own silent submitter never answers)
held every such connection for good: the node has no bound on attached sessions and no
idle deadline, and does not raise its open-file limit, so 300 of them from one host
took every descriptor of a node at 256 open files (then the node accepts nobody and
cannot open a taskfile). Now each daemon keeps at most 128 established connections of
one host (and a quarter of its open files in all): a newcomer past them is told why and
closed, what is held stays, and honest clients of other hosts get through."""

from __future__ import annotations

import asyncio
import os
import subprocess

from jrs.wire.aio import Channel, ConnectionClosed

from .cluster import Cluster, honest_job_cluster
from .test_hello_flood_cluster import EVIL, _open, _run


async def _attach(c: Cluster, port: int, i: int, source: str = EVIL):
    ch = await _open(c, port, "submit", source)
    if ch is None:
        return None
    ch.send({"type": "attach", "submitter": f"{i:024x}", "token": os.urandom(32).hex(),
             "jobs": []})
    return ch


async def _refused(ch: Channel, wait: float) -> bool:
    """Did the daemon close `ch` (saying why: an `error` of code "limit")?"""
    try:
        while True:
            msg = await asyncio.wait_for(ch.recv(), wait)
            if isinstance(msg, dict) and msg.get("type") == "error":
                assert msg["code"] == "limit", msg
                assert "established connections from one host" in msg["message"], msg
    except (ConnectionClosed, ConnectionError):
        return True
    except asyncio.TimeoutError:
        return False


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_attached_sessions_of_one_host_cannot_take_every_descriptor_of_a_node(
        pyz, tmp_path):
    c, work = honest_job_cluster(pyz, tmp_path)
    env = dict(c.env, JRS_CONNECT_TIMEOUT="10")
    try:
        node = c.nodes[0].pid
        subprocess.run(["prlimit", f"--pid={node}", "--nofile=256:256"], check=True)

        async def scenario():
            held = []
            for first in range(0, 300, 25):  # within the handshake stage's 32 a host
                held += await asyncio.gather(*(
                    asyncio.wait_for(_attach(c, c.ports[0], i), 12)
                    for i in range(first, first + 25)), return_exceptions=True)
            held = [ch for ch in held if not isinstance(ch, BaseException)]
            await asyncio.sleep(1.0)
            opened = [ch for ch in held if ch is not None]
            closed = sum(await asyncio.gather(*(_refused(ch, 0.5) for ch in opened)))
            fds = _fds(node)
            submit = await _run(str(pyz), "submit", "-c", str(c.conf), "--no-progress",
                                "j.condor", env=env, cwd=work, timeout=40)
            for ch in opened:
                ch.close()
            return len(opened), closed, fds, submit

        opened, closed, fds, (code, _out, err) = asyncio.run(scenario())
        print(f"{opened} attached from one host, {closed} closed by the node, node fds {fds}")
        assert opened == 300 and closed >= 300 - 128, (opened, closed, c.logs())
        assert code == 0 and "1 jobs, 1 done, 0 failed" in err, err + c.logs()
        assert (work / "ok.out").read_text() == "through\n"
        assert fds < 200, (fds, opened, closed)
        assert "more than 128 established connections from one host" in c.logs()
        assert c.nodes[0].poll() is None
    finally:
        c.stop()
