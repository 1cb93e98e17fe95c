"""Issue 13, a known limit closed: many IPv6 addresses counted as many hosts. A real
master (dist/jrs.pyz) in a network namespace of its own (tests/netlab.py), with IPv6
addresses on its loopback: sessions from two addresses of one /64 share that host's
limit (JRS_MASTER_SESSIONS_PER_HOST=4 here), a third address in another /64 is another
host; the refusal names the /64. Without the /64 key each address had a limit of its own,
so a holder of a /64 (2^64 addresses) had as many. Addresses on a LAN of the master's own
(a /64 on its interface) are machines of their own: the LAN is not one host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .conftest import write_config
from .netlab import NetLab

ROOT = Path(__file__).resolve().parents[1]
A1, A2 = "2001:db8:0:1::2", "2001:db8:0:1::3"  # one /64
B1 = "2001:db8:0:2::2"  # another
LAN = "2001:db8:0:5::1/64"  # a LAN of the master's own (an interface's /64)
C1, C2 = "2001:db8:0:5::2", "2001:db8:0:5::3"  # two machines on it

# run inside the namespace: sessions from given sources, the answers as JSON lines
HELPER = r"""
import asyncio, json, sys, time
from jrs.wire.aio import Channel, _handshake
from jrs.wire.connection import Connection
from jrs.wire.keys import root_key

conf, port = sys.argv[1], int(sys.argv[2])
sources = sys.argv[3:]

async def main():
    secret = open(conf + "/secret", "rb").read()
    held = []
    for i, src in enumerate(sources):
        r, w = await asyncio.open_connection("::1", port, local_addr=(src, 0))
        conn = Connection(root_key(secret), "submit", is_client=True)
        conn.strict = False
        w.write(conn.initiate())
        events = await _handshake(r, w, conn, time.monotonic() + 10)
        ch = Channel(r, w, conn)
        ch._pending.extend(events)
        ch.send({"type": "submitter-hello", "submitter": f"{i:024x}", "user": "mallory",
                 "host": "evil", "pid": i, "claims": [], "clusters": [],
                 "token": f"{i:064x}"})
        while True:
            msg = await asyncio.wait_for(ch.recv(), 20)
            if isinstance(msg, dict):
                break
        print(json.dumps({"source": src, "type": msg["type"],
                          "message": msg.get("message", "")}), flush=True)
        held.append(ch)

asyncio.run(main())
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def test_ipv6_hosts_count_by_their_64(pyz, tmp_path):
    lab = NetLab(1)
    master = None
    try:
        ns = lab.names[0]
        for addr in (A1, A2, B1, C1, C2):
            _ip("-n", ns, "addr", "add", f"{addr}/128", "dev", "lo", "nodad")
        _ip("-n", ns, "addr", "add", LAN, "dev", "lo", "nodad")
        conf = write_config(tmp_path / "conf", master="[::1]:7083",
                            nodes="[2001:db8:0:9::9]:7082 slots=1\n")
        log = open(tmp_path / "master.log", "wb")
        master = subprocess.Popen([*lab.run_in(0), sys.executable, str(pyz), "master",
                                   "--listen=[::1]:7083", f"--state={tmp_path / 'state'}",
                                   "-c", str(conf), "-v"], stdout=log, stderr=log,
                                  env=dict(os.environ, JRS_MASTER_SESSIONS_PER_HOST="4"))
        deadline = time.monotonic() + 20
        while b"master listening" not in (tmp_path / "master.log").read_bytes():
            assert time.monotonic() < deadline and master.poll() is None, \
                (tmp_path / "master.log").read_text()
            time.sleep(0.1)
        sources = [A1, A2, A1, A2, A2, B1, B1, C1, C2, C1, C2, C2, C1]
        helper = subprocess.run([*lab.run_in(0), sys.executable, "-c", HELPER, str(conf),
                                 "7083", *sources], capture_output=True, text=True,
                                timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert helper.returncode == 0, helper.stderr
        answers = [json.loads(line) for line in helper.stdout.splitlines()]
        kinds = [(a["source"], a["type"]) for a in answers]
        assert kinds == [(A1, "welcome"), (A2, "welcome"), (A1, "welcome"), (A2, "welcome"),
                         (A2, "error"), (B1, "welcome"), (B1, "welcome"),
                         # on the master's own LAN each address is a machine of its own:
                         # 3 sessions each, within the 4 (one /64 key would refuse the 5th)
                         *[(c, "welcome") for c in (C1, C2, C1, C2, C2, C1)]], answers
        assert answers[4]["message"].startswith(
            "at most 4 submitter sessions from one host (2001:db8:0:1::/64 has 4 open"), \
            answers[4]
        assert master.poll() is None
    finally:
        if master is not None and master.poll() is None:
            master.terminate()
            master.wait(10)
        lab.destroy()
