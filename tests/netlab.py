"""Hosts for multi-host tests: Linux network namespaces on one bridge (needs root).

Each host is a namespace with one veth into a bridge in the root namespace,
which also holds an address, so tests (and `jrs submit`) run from the root
namespace reach every host as over a LAN. `cut(i)` takes host i's link down (a
partition: packets vanish, connections hang, nothing is refused); `heal(i)`
brings it back; `vanish(i)` deletes the host outright. Only addresses and
names this lab creates are used.
"""

from __future__ import annotations

import os
import subprocess


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class NetLab:
    def __init__(self, count: int) -> None:
        tag = os.urandom(2).hex()
        net = 100 + int(tag, 16) % 150
        self.bridge = f"jrsb{tag}"
        self.names = [f"jrs{tag}h{i}" for i in range(count)]
        self.links = [f"jrs{tag}v{i}" for i in range(count)]
        self.gateway = f"10.213.{net}.1"
        self.addresses = [f"10.213.{net}.{10 + i}" for i in range(count)]
        self._made: list = []
        try:
            self._create(net)
        except BaseException:
            self.destroy()
            raise

    def _create(self, net: int) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._made.append(("link", self.bridge))
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for ns, link, addr in zip(self.names, self.links, self.addresses):
            _ip("netns", "add", ns)
            self._made.append(("netns", ns))
            _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", link, "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def run_in(self, i: int) -> list:
        """The command prefix that runs a program on host i."""
        return ["ip", "netns", "exec", self.names[i]]

    def cut(self, i: int) -> None:
        _ip("link", "set", self.links[i], "down")

    def heal(self, i: int) -> None:
        _ip("link", "set", self.links[i], "up")

    def blackhole(self, i: int, address: str) -> None:
        """Host i can no longer answer `address`; everyone else still reaches it."""
        _ip("-n", self.names[i], "route", "add", "blackhole", f"{address}/32")

    def vanish(self, i: int) -> None:
        """The host is gone: kill everything in it and delete its namespace."""
        _kill_all(self.names[i])
        _ip("netns", "del", self.names[i])
        self._made.remove(("netns", self.names[i]))

    def destroy(self) -> None:
        for kind, name in reversed(self._made):
            if kind == "netns":
                _kill_all(name)
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
            else:
                subprocess.run(["ip", "link", "del", name], capture_output=True)
        self._made = []


def _kill_all(ns: str) -> None:
    """SIGKILL every process in namespace `ns` (daemons, executors and jobs alike)."""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                          text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), 9)
        except ProcessLookupError:
            pass
