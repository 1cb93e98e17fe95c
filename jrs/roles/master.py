"""`jrs master`: read the configuration, listen, and run the master of jrs.cluster.

Its state directory holds the cluster-id counter and the submitters' session bindings."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from ..cluster.master import ClusterCounter, Master, SessionStore
from ..config import find_config_dir, load, parse_endpoint
from ..errors import ConfigError
from . import default_state, setup_logging

log = logging.getLogger("jrs.master")


async def _run(config, host: str, port: int, state: str) -> None:
    from ..wire.aio import Server, raise_open_files
    from ..wire.keys import root_key

    raise_open_files()  # the overall connection bounds are a quarter of it
    master = Master(config, ClusterCounter(state), sessions=SessionStore(state))
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
