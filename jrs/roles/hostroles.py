"""`jrs roles`: which daemons this host runs, decided from node.master and node.list.

The init script and the systemd units ask this instead of guessing in shell, so a
host starts a node exactly when `jrs node` would find its own entry: an exact match
on the host name, the FQDN or an address of this machine, never a substring.
"""

from __future__ import annotations

import socket
import sys
from typing import Callable, Optional

from ..config import Endpoint, find_config_dir, load_master, load_node_list
from ..errors import ConfigError

ROLES = ("master", "node")


def is_local_address(host: str) -> bool:
    """True when `host` resolves to an address this machine can bind."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, _, _, _, addr in infos:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((addr[0], 0))
            return True
        except OSError:
            continue
    return False


def host_roles(master: Endpoint, nodes: list, names: set, is_local: Callable[[str], bool],
               name: Optional[str] = None) -> tuple[bool, list]:
    """(is this host the master, the node.list entries that are this host).

    Pure: `names` are this host's names (hostname, FQDN), `is_local` says whether
    an address is this machine's. Nodes match as `jrs node` matches itself: by
    `name` when given, else by host name first and by local address second.
    """
    is_master = master.host in names or is_local(master.host)
    if name:
        hits = [n for n in nodes if name in (n.name, n.endpoint.host)]
    else:
        hits = [n for n in nodes if n.endpoint.host in names]
        if not hits:
            hits = [n for n in nodes if is_local(n.endpoint.host)]
    return is_master, hits


def main(args: dict) -> int:
    """Print one line per daemon this host runs; exit 0 if it runs ROLE (or any), else 1."""
    directory = find_config_dir(args["--config"])
    if not directory.is_dir():
        raise ConfigError(f"{directory}: configuration directory does not exist "
                          "(use -c DIR or set JRS_CONFIG)")
    role = args["ROLE"]
    if role is not None and role not in ROLES:
        raise ConfigError(f"unknown role {role!r} (want master or node)")
    master = load_master(directory / "node.master")
    nodes = load_node_list(directory / "node.list")
    names = {socket.gethostname(), socket.getfqdn()}
    is_master, hits = host_roles(master, nodes, names, is_local_address, args["--name"])
    if len(hits) > 1:
        raise ConfigError(f"{directory / 'node.list'}: {len(hits)} entries match this host "
                          f"({', '.join(n.name for n in hits)}); pick one with --name")
    if is_master:
        print(f"master {master}")
    if hits:
        print(f"node {hits[0].name}")
    held = {"master": is_master, "node": bool(hits)}
    if role is not None and not held[role]:
        what = "not the host of node.master" if role == "master" else "not in node.list"
        sys.stderr.write(f"jrs roles: this host ({socket.gethostname()}) is {what}\n")
        return 1
    if not any(held.values()):
        sys.stderr.write(f"jrs roles: this host ({socket.gethostname()}) is neither in "
                         f"{directory / 'node.master'} nor in {directory / 'node.list'}\n")
        return 1
    return 0
