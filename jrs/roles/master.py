"""`jrs master`: the pool's metadata server, a thin asyncio shell around `Pool`.

It carries no job data. Its only file is a counter of cluster ids under
--state, so ids are never reused; everything else is rebuilt from the hellos
of nodes and submitters after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from ..config import find_config_dir, load, parse_endpoint
from ..errors import ConfigError
from . import default_state, setup_logging

log = logging.getLogger("jrs.master")
PEER_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)


class ClusterCounter:
    """Cluster ids from a tiny file, written (fsynced) before an id is handed out."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "next-cluster")
        try:
            with open(self.path) as f:
                self.next = int(f.read().strip() or 1)
        except FileNotFoundError:
            self.next = 1
        except ValueError:
            raise ConfigError(f"{self.path}: not a number; fix or remove it")

    def take(self) -> int:
        value = self.next
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{value + 1}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.next = value + 1
        return value


class Master:
    def __init__(self, config, counter: ClusterCounter) -> None:
        from ..cluster.pool import Pool

        self.config = config
        self.pool = Pool(config.nodes, time.monotonic())
        self.counter = counter
        self.nodes: dict = {}
        self.submitters: dict = {}
        self.rm_waiters: dict = {}

    def send(self, actions: list) -> None:
        for kind, ident, msg in actions:
            if msg["type"] in ("give-back", "unmatchable", "node-lost", "claim-drop"):
                log.info("to %s %s: %s", kind, ident, msg)
            ch = (self.nodes if kind == "node" else self.submitters).get(ident)
            if ch is not None:
                try:
                    ch.send(msg)
                except Exception as exc:  # a dead transport: the peer's loop cleans up
                    log.info("cannot send to %s %s: %s", kind, ident, exc)

    async def serve(self, ch) -> None:
        first = await asyncio.wait_for(ch.recv(), 30)
        if not isinstance(first, dict):
            return
        kind = first["type"]
        if ch.peer_role == "node" and kind == "node-hello":
            await self._node(ch, first)
        elif ch.peer_role == "submit" and kind == "submitter-hello":
            await self._submitter(ch, first)
        elif ch.peer_role == "tool":
            await self._tool(ch, first)
        else:
            from ..wire.messages import error
            ch.send(error("protocol", f"a {ch.peer_role} may not start with {kind!r}"))

    async def _node(self, ch, hello: dict) -> None:
        from ..wire.messages import error

        name = hello["name"]
        if name not in self.pool.nodes:
            log.warning("refused unknown node %r from %s (not in node.list)", name, ch.peer[0])
            ch.send(error("unknown-node", f"{name} is not in the master's node.list"))
            return
        old = self.nodes.get(name)
        if old is not None:
            old.close()
        self.nodes[name] = ch
        try:
            self.send(self.pool.node_hello(name, hello, time.monotonic()))
            log.info("node %s up (%s slots)", name, hello["slots"])
            while True:
                msg = await ch.recv()
                if not isinstance(msg, dict):
                    continue
                t = time.monotonic()
                try:
                    kind = msg["type"]
                    if kind == "node-report":
                        self.send(self.pool.node_report(name, msg, t))
                    elif kind in ("claim-ok", "claim-refused"):
                        self.send(self.pool.claim_answer(name, msg, t))
                    elif kind == "claim-released":
                        self.send(self.pool.claim_released(name, msg["claim"], t))
                except PEER_ERRORS as exc:
                    ch.send(error("bad-message", str(exc)[:200], msg.get("type")))
        finally:
            if self.nodes.get(name) is ch:
                del self.nodes[name]

    async def _submitter(self, ch, hello: dict) -> None:
        from ..wire.messages import error

        sid = hello["submitter"]
        old = self.submitters.get(sid)
        if old is not None:
            old.close()
        self.submitters[sid] = ch
        try:
            ch.send({"type": "welcome"})
            self.send(self.pool.submitter_hello(hello, time.monotonic()))
            self.pool.submitters[sid].clusters = [c for c in hello["clusters"]
                                                  if isinstance(c, dict)]
            while True:
                msg = await ch.recv()
                if not isinstance(msg, dict):
                    continue
                try:
                    self._from_submitter(ch, sid, msg)
                except PEER_ERRORS as exc:
                    ch.send(error("bad-message", str(exc)[:200], msg.get("type")))
        finally:
            if self.submitters.get(sid) is ch:
                del self.submitters[sid]
                self.send(self.pool.submitter_gone(sid, time.monotonic()))

    def _from_submitter(self, ch, sid: str, msg: dict) -> None:
        kind = msg["type"]
        t = time.monotonic()
        if kind == "new-cluster":
            ch.send({"type": "cluster", "id": self.counter.take()})
        elif kind == "demand":
            self.send(self.pool.set_demand(sid, msg["requests"], t))
        elif kind == "release":
            self.send(self.pool.release(sid, msg["claim"], t))
        elif kind == "progress":
            self.pool.submitters[sid].clusters = [c for c in msg["clusters"]
                                                  if isinstance(c, dict)]
        elif kind == "removed":
            fut = self.rm_waiters.pop(msg["re"], None)
            if fut is not None and not fut.done():
                fut.set_result(msg["count"])

    async def _tool(self, ch, msg: dict) -> None:
        from ..wire.messages import error

        kind = msg["type"]
        if kind == "query" and msg["what"] == "status":
            ch.send(dict(self.pool.status(time.monotonic()), type="status-reply"))
        elif kind == "query" and msg["what"] == "queue":
            ch.send(dict(self.pool.queue(), type="queue-reply"))
        elif kind == "rm":
            ch.send({"type": "rm-reply", "results": await self._rm(msg["ids"])})
        else:
            ch.send(error("unexpected", f"a tool may not send {kind!r}", kind))
        await ch.drain()

    async def _rm(self, ids: list) -> list:
        results = []
        for text in ids:
            text = str(text)
            cluster_text = text.split(".")[0]
            if not cluster_text.isdigit():
                results.append({"id": text, "error": "not a CLUSTER or CLUSTER.PROC"})
                continue
            owner = self.pool.owner_of(int(cluster_text))
            ch = self.submitters.get(owner.id) if owner else None
            if ch is None:
                results.append({"id": text, "error": "no such cluster (or its submitter "
                                                     "is not connected)"})
                continue
            token = os.urandom(8).hex()
            fut = asyncio.get_running_loop().create_future()
            self.rm_waiters[token] = fut
            ch.send({"type": "rm", "re": token, "ids": [text]})
            try:
                count = await asyncio.wait_for(fut, 10)
                results.append({"id": text, "removed": count})
            except asyncio.TimeoutError:
                self.rm_waiters.pop(token, None)
                results.append({"id": text, "error": "the submitter did not answer"})
        return results

    async def ticker(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.send(self.pool.tick(time.monotonic()))


async def _run(config, host: str, port: int, state: str) -> None:
    from ..wire.aio import Server
    from ..wire.keys import root_key

    master = Master(config, ClusterCounter(state))
    server = Server(root_key(config.secret), "master", master.serve,
                    peer_roles=frozenset({"node", "submit", "tool"}))
    where = await server.start(host, port)
    log.warning("master listening on %s:%s for %d nodes; state in %s", where[0], where[1],
                len(config.nodes), state)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ticker = asyncio.ensure_future(master.ticker())
    await stop.wait()
    ticker.cancel()
    server.close()


def main(args: dict) -> int:
    config = load(find_config_dir(args["--config"]))
    ep = config.master
    if args["--listen"]:
        ep = parse_endpoint(args["--listen"], ep.port, "--listen")
    state = args["--state"] or default_state("master")
    os.makedirs(state, mode=0o755, exist_ok=True)
    setup_logging("master", args["--verbose"])
    try:
        asyncio.run(_run(config, ep.host, ep.port, state))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {ep}: {exc.strerror or exc}")
    return 0
