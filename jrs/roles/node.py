"""`jrs node`: find this machine's node.list entry, fork the launcher, serve."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
from typing import Optional

from ..config import NodeEntry, find_config_dir, load, parse_endpoint
from ..errors import ConfigError
from ..node.machine import mem_total_mb
from . import default_state, setup_logging
from .hostroles import is_local_address


def find_entry(nodes: list, name: Optional[str], listen: Optional[str],
               list_path: str) -> NodeEntry:
    """This node's entry: by --name, else --listen, else host names and local addresses."""
    if name:
        hits = [n for n in nodes if name in (n.name, n.endpoint.host)]
        how = f"--name={name}"
    elif listen:
        ep = parse_endpoint(listen, 0, "--listen")
        hits = [n for n in nodes if n.endpoint.host == ep.host
                and (ep.port in (0, n.endpoint.port))]
        how = f"--listen={listen}"
    else:
        names = {socket.gethostname(), socket.getfqdn()}
        hits = [n for n in nodes if n.endpoint.host in names]
        if not hits:
            hits = [n for n in nodes if is_local_address(n.endpoint.host)]
        how = f"this host ({socket.gethostname()}) or its addresses"
    if not hits:
        raise ConfigError(f"{list_path}: no entry matches {how}; add this node to it or "
                          "pass --name")
    if len(hits) > 1:
        raise ConfigError(f"{list_path}: {len(hits)} entries match {how} "
                          f"({', '.join(n.name for n in hits)}); pick one with --name")
    return hits[0]


def _count(value: Optional[str], flag: str) -> Optional[int]:
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{flag}={value}: want a whole number above 0")
    return int(value)


def _retain(value: Optional[str]) -> float:
    """--retain=DURATION in seconds (7 days when not given)."""
    from ..node.core import DEFAULT_RETAIN, parse_duration

    if value is None:
        return DEFAULT_RETAIN
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"--retain={value}: {exc}") from None


def confinement(args: dict, state: str, port: int):
    """The node's confinement from its options (ConfigError naming what is wrong)."""
    from ..node import confine, identity, unit

    if os.geteuid() == 0:
        default = os.path.join("/var/lib/jrs", f"execute-{port}")
    else:
        default = os.path.join(state, "sandbox")
    pids = _count(args.get("--job-pids"), "--job-pids") or unit.DEFAULT_PIDS
    return confine.setup(os.path.abspath(args.get("--execute") or default),
                         mode="account" if args.get("--same-user-accounts") else "job",
                         job_uids=args.get("--job-uids") or identity.DEFAULT_RANGE,
                         root_groups=args.get("--root-groups"), pids_max=pids,
                         cgroup=args.get("--cgroup"))


def main(args: dict) -> int:
    from ..condor.classad import literal

    config = load(find_config_dir(args["--config"]))
    entry = find_entry(config.nodes, args["--name"], args["--listen"],
                       str(config.directory / "node.list"))
    retain = _retain(args.get("--retain"))
    slots = _count(args["--slots"], "--slots") or entry.slots or os.cpu_count() or 1
    memory = _count(args["--memory"], "--memory") or entry.memory or mem_total_mb()
    gpus = entry.gpus or 0
    attrs = {"Name": entry.name, "Machine": socket.getfqdn(),
             "Arch": platform.machine().upper(), "OpSys": "LINUX", "Cpus": slots,
             "Memory": memory, "Gpus": gpus}
    attrs.update({k: literal(v) for k, v in entry.attrs.items()})
    from ..node.daemon import Capacity, NodeDaemon
    from ..node.launcher import Launcher

    state = args["--state"] or default_state(f"node-{entry.endpoint.port}")
    from ..node.confine import make_state_dir

    make_state_dir(state)
    confine = confinement(args, state, entry.endpoint.port)
    setup_logging("node", args["--verbose"])
    launcher = Launcher()  # a fresh small interpreter that forks executors
    host = entry.endpoint.host
    port = entry.endpoint.port
    if args["--listen"]:
        ep = parse_endpoint(args["--listen"], port, "--listen")
        host, port = ep.host, ep.port
    daemon = NodeDaemon(config, Capacity(entry.name, slots, memory, gpus, attrs), state,
                        launcher, confine=confine, retain=retain)
    from ..wire.keys import root_key

    try:
        asyncio.run(daemon.run(root_key(config.secret), host, port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    return 0
