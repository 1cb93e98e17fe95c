"""Issue 13.8, real processes: silent connections cannot lock honest clients out."""

from __future__ import annotations

import json
import socket

from .cluster import Cluster
from .conftest import run_jrs


def _silent(port: int, n: int) -> list:
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        out.append(s)
    return out


def test_300_silent_connections_to_master_and_node_do_not_stop_submit_or_status(pyz,
                                                                                tmp_path):
    """Before: 256-300 silent TCP connections (no secret needed) filled the global
    handshake cap and every honest `jrs submit` and `jrs status` exited 3 saying the
    secret was wrong. Now the per-address slots shed the oldest idle handshake, so the
    honest client gets through; and a closed handshake never reads as a wrong secret."""
    c = Cluster(pyz, tmp_path, slots=[1]).start()
    flood: list = []
    try:
        flood += _silent(c.mport, 300)
        flood += _silent(c.ports[0], 300)
        (tmp_path / "ok.condor").write_text("executable = /bin/echo\narguments = through\n"
                                            "output = ok.out\nqueue\n")
        code, _out, err = c.run_submit("ok.condor", cwd=tmp_path, timeout=60)
        assert code == 0, err + c.logs()
        assert (tmp_path / "ok.out").read_text() == "through\n"
        assert "secret" not in err
        r = run_jrs(pyz, "status", "--json", "-c", str(c.conf), timeout=60)
        assert r.returncode == 0, r.stderr
        assert [n["state"] for n in json.loads(r.stdout)["nodes"]] == ["up"]
        flood += _silent(c.mport, 300)  # again, while we ask
        r = run_jrs(pyz, "status", "-c", str(c.conf), timeout=60)
        assert r.returncode == 0 and "secret" not in r.stderr, r.stderr
        logs = c.logs()
        assert "does not hold our secret" not in logs
        assert c.master.poll() is None and c.nodes[0].poll() is None
    finally:
        for s in flood:
            s.close()
        c.stop()
