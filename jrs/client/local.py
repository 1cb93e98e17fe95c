"""`jrs submit --local`: a master and one node of this machine, for one submit.

Both run inside the submit process on loopback with a throw-away secret and
state in a temporary directory, which goes away with the run. The node's
launcher is forked first, while the process is still small; it owns the
directory, so a submit that dies without stopping the cluster (`kill -9`) still
takes its jobs and the directory with it.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

from ..config import ClusterConfig, Endpoint, NodeEntry


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    def __init__(self) -> None:
        from ..node.launcher import Launcher

        self.dir = tempfile.mkdtemp(prefix="jrs-local-")
        self.launcher = Launcher(owned_dir=self.dir)  # kill -9 of us: it ends the jobs
        self.secret = os.urandom(32).hex().encode()
        self.node_ep = Endpoint("127.0.0.1", _free_port())
        self.config = ClusterConfig(Path(self.dir), Endpoint("127.0.0.1", _free_port()),
                                    [NodeEntry(self.node_ep, line=1)], self.secret)

    async def start(self) -> ClusterConfig:
        import logging
        import platform

        from ..cluster.master import ClusterCounter, Master
        from ..node.daemon import Capacity, NodeDaemon
        from ..node.machine import mem_total_mb
        from ..wire.aio import Server
        from ..wire.keys import root_key

        logging.getLogger("jrs.node").setLevel(logging.ERROR)  # its start-up banner is noise here
        root = root_key(self.secret)
        self.master = Master(self.config, ClusterCounter(self.dir))
        self.server = Server(root, "master", self.master.serve,
                             peer_roles=frozenset({"node", "submit", "tool"}))
        await self.server.start(self.config.master.host, self.config.master.port)
        slots = os.cpu_count() or 1
        memory = mem_total_mb()
        attrs = {"Name": str(self.node_ep), "Machine": socket.getfqdn(),
                 "Arch": platform.machine().upper(), "OpSys": "LINUX", "Cpus": slots,
                 "Memory": memory, "Gpus": 0}
        self.node = NodeDaemon(self.config, Capacity(str(self.node_ep), slots, memory, 0, attrs),
                               os.path.join(self.dir, "node"), self.launcher,
                               allow_root_jobs=True)  # jobs run as the one who submits
        await self.node.start(root, self.node_ep.host, self.node_ep.port)
        import asyncio

        self.ticker = asyncio.ensure_future(self.master.ticker())
        return self.config

    def stop(self) -> None:
        """End the cluster with the submit. Jobs still running (a SIGTERM, an internal
        error) are killed: nothing could collect them, their state directory goes now,
        and a rerun runs them again."""
        from ..node import core as nc

        self.ticker.cancel()
        self.node.execute([nc.Kill(t.key, t.path) for t in self.node.core.tasks.values()
                           if not t.finished])
        self.node.stop()
        self.server.close()
        shutil.rmtree(self.dir, ignore_errors=True)
