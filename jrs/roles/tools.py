"""Small commands: keygen, selftest, and the pool tools (status, q, rm)."""

from __future__ import annotations

import json
import sys

from .. import __version__
from ..config import find_config_dir, load
from ..config import keygen as write_secret
from ..errors import EXIT_UNREACHABLE, JrsError


def keygen(args: dict) -> int:
    target = write_secret(find_config_dir(args["--config"]), force=args["--force"])
    print(f"wrote {target} (mode 0600); copy it to every machine of the cluster")
    return 0


def selftest(args: dict) -> int:
    """Prove the bundled crypto loads and works under this interpreter."""
    from ..wire.selftest import run

    details = run()
    print(f"jrs {__version__} ok on Python {sys.version.split()[0]}: {details}")
    return 0


def ask_master(args: dict, message: dict, timeout: float = 15.0) -> dict:
    """One request to the master as a `tool`; exit 3 when it cannot be reached."""
    import asyncio

    from ..wire.aio import CONNECT_TIMEOUT, ConnectionClosed, connect
    from ..wire.errors import AuthError, HandshakeClosed, WireError
    from ..wire.keys import root_key

    config = load(find_config_dir(args["--config"]))
    ep = config.master

    async def once(retry_for: float) -> dict:
        ch = await connect(ep.host, ep.port, root_key(config.secret), "tool",
                           peer_roles=frozenset({"master"}), retry_for=retry_for)
        try:
            ch.send(message)
            while True:
                reply = await asyncio.wait_for(ch.recv(), timeout)
                if isinstance(reply, dict):
                    return reply
        finally:
            ch.close()

    async def go() -> dict:
        # a query closed before any answer (a busy master closes the authenticated
        # connection waiting the longest for its first message) is asked again, like a
        # closed handshake; an rm is not (it may have been read)
        deadline = loop_time() + CONNECT_TIMEOUT
        while True:
            try:
                return await once(max(0.5, deadline - loop_time()))
            except ConnectionClosed:
                if message.get("type") != "query" or loop_time() + 0.2 >= deadline:
                    raise
                await asyncio.sleep(0.2)

    def loop_time() -> float:
        return asyncio.get_running_loop().time()

    try:
        reply = asyncio.run(go())
    except AuthError as exc:
        raise JrsError(f"the master at {ep} refused us: {exc} (is {config.directory}/secret "
                       "the cluster's secret?)", EXIT_UNREACHABLE)
    except HandshakeClosed as exc:
        raise JrsError(f"cannot reach the master at {ep}: {exc} (tried for "
                       f"{CONNECT_TIMEOUT:.0f}s; is it overloaded?)", EXIT_UNREACHABLE)
    except WireError as exc:
        raise JrsError(f"the master at {ep} refused us: {exc}", EXIT_UNREACHABLE)
    except (OSError, asyncio.TimeoutError, ConnectionClosed) as exc:
        raise JrsError(f"cannot reach the master at {ep}: {exc or type(exc).__name__}",
                       EXIT_UNREACHABLE)
    if reply.get("type") == "error":
        raise JrsError(f"the master at {ep} says: {reply.get('message')}", EXIT_UNREACHABLE)
    return reply


def _table(rows: list, header: list) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _age(seconds: object) -> str:
    """How long the oldest unacknowledged result has waited: 45s, 12m, 3h, 2d."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def status(args: dict) -> int:
    reply = ask_master(args, {"type": "query", "what": "status"})
    reply.pop("type", None)
    if args["--json"]:
        print(json.dumps(reply, indent=1))
        return 0
    rows = [[n["name"], n["state"], f"{n['slots_used']}/{n['slots']}",
             f"{n['memory_used']}/{n['memory']}", n["load"],
             "-" if n.get("results_waiting") is None else n["results_waiting"],
             _age(n.get("oldest_result_age")),
             ",".join(f"{u}:{k}" for u, k in sorted(n["claims"].items())) or "-"]
            for n in reply["nodes"]]
    print(_table(rows, ["NODE", "STATE", "SLOTS", "MEMORY(MiB)", "LOAD", "WAITING", "OLDEST",
                        "CLAIMS"]))
    up = [n for n in reply["nodes"] if n["state"] == "up"]
    print(f"\n{len(up)}/{len(reply['nodes'])} nodes up, "
          f"{sum(n['slots_used'] for n in up)}/{sum(n['slots'] for n in up)} slots in use, "
          f"{len(reply['submitters'])} submitters")
    return 0


def queue(args: dict) -> int:
    reply = ask_master(args, {"type": "query", "what": "queue"})
    reply.pop("type", None)
    if args["--json"]:
        print(json.dumps(reply, indent=1))
        return 0
    rows = [[c.get("id"), c.get("user"), c.get("host"), c.get("idle"), c.get("running"),
             c.get("done"), (c.get("failed") or 0) + (c.get("held") or 0), c.get("removed"),
             c.get("total"), c.get("file")] for c in reply["clusters"]]
    print(_table(rows, ["CLUSTER", "USER", "HOST", "IDLE", "RUN", "DONE", "FAILED", "REMOVED",
                        "TOTAL", "FILE"]))
    return 0


def remove(args: dict) -> int:
    for text in args["JOBID"]:
        cluster, _, proc = text.partition(".")
        if not cluster.isdigit() or (proc and not proc.isdigit()):
            raise JrsError(f"{text}: want CLUSTER or CLUSTER.PROC")
    reply = ask_master(args, {"type": "rm", "ids": list(args["JOBID"])}, timeout=30)
    failed = False
    for r in reply.get("results", []):
        if "error" in r:
            failed = True
            print(f"{r['id']}: {r['error']}", file=sys.stderr)
        else:
            print(f"{r['id']}: removed {r['removed']} jobs")
    return 1 if failed else 0
