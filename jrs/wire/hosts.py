"""Which host a peer counts as: the one place a peer address becomes a host key.

Every per-host bound (the wire's handshake and first-message slots, the master's
per-host limits, the rate of log lines about a peer) counts peers by this key, so
they all agree on who one host is:

- an IPv4 address is its own host;
- an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, how a dual-stack listener on
  ``::`` sees IPv4 clients) is that IPv4 address: the same host whichever socket it
  came through, and not one /64 with every IPv4 client;
- an IPv6 address on one of this machine's own LANs (a /64 on one of its
  interfaces, not a tunnel's, `learn_local_networks`; a link-local ``fe80::`` address) is
  its own host (so is ``::1``): every machine of an ordinary IPv6 LAN shares the LAN's /64, and
  counted by it the whole cluster would be one host to every per-host bound. There a
  machine's root can take many addresses (R10: unlike an IPv4 LAN's, a /64's are
  not few), so a root-holding attacker on the daemon's own LAN can hold many hosts'
  shares: the overall bounds still hold;
- any other IPv6 address counts by its /64 (``2001:db8:1:2::/64``): a /64 is what a
  site hands one machine or one LAN, and a holder of one has 2^64 addresses, which
  counted one by one would be as many hosts. A zone (``fe80::1%eth0``) is dropped.
- anything else (a Unix socket's path, no address at all) is its own text.

Hosts behind one NAT address are one host here: the daemon cannot tell them apart.
Pure but for `learn_local_networks`, which the daemons' shells call once at
start (it reads /proc/net/if_inet6); the parse is cached (a bounded cache: a flood
of addresses costs one parse each, as without it).
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Iterable, Optional

IPV6_PREFIX = 64  # the bits of an IPv6 address that name its host
_LINK_LOCAL = ipaddress.IPv6Network("fe80::/10")
# relays, not LANs: a Teredo or 6to4 interface's prefix holds the whole Internet's
# tunnelled hosts (R10)
_TUNNELS = (ipaddress.IPv6Network("2001::/32"), ipaddress.IPv6Network("2002::/16"))
_lans: frozenset = frozenset()  # this machine's own IPv6 LANs (learn_local_networks)


def parse_if_inet6(text: str) -> frozenset:
    """The IPv6 LANs (exactly /64: not one address's /128, nor a wider VPN or tunnel
    prefix; never Teredo's or 6to4's) named by the lines of /proc/net/if_inet6
    ("address-hex ifindex prefix-len scope flags name")."""
    nets = set()
    for line in text.splitlines()[:4096]:
        f = line.split()
        try:
            addr = ipaddress.IPv6Address(int(f[0], 16))
            plen = int(f[2], 16)
        except (IndexError, ValueError):
            continue
        if plen == IPV6_PREFIX and addr not in _LINK_LOCAL and not addr.is_loopback \
                and not any(addr in t for t in _TUNNELS):
            nets.add(ipaddress.IPv6Network((addr, plen), strict=False))
    return frozenset(nets)


def learn_local_networks(text: Optional[str] = None) -> None:
    """Take this machine's own IPv6 LANs (a daemon's shell calls it once at start;
    `text` is /proc/net/if_inet6's, read here when not given)."""
    if text is None:
        try:
            with open("/proc/net/if_inet6") as f:
                text = f.read(1 << 20)
        except OSError:
            text = ""
    set_local_networks(parse_if_inet6(text))


def set_local_networks(nets: Iterable) -> None:
    global _lans
    _lans = frozenset(nets)
    _key.cache_clear()


def host_key(peer: object) -> str:
    """The host key of `peer`: a (host, port, ...) tuple as asyncio's ``peername``
    gives it, or an address alone."""
    addr = peer[0] if isinstance(peer, tuple) and peer else peer
    if not isinstance(addr, str):
        return str(addr)
    return _key(addr)


@functools.lru_cache(maxsize=4096)
def _key(addr: str) -> str:
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return addr
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if ip.is_loopback or ip in _LINK_LOCAL or any(ip in net for net in _lans):
            return str(ip)  # on one of our own LANs: a machine of its own
        net = ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False)
        return f"{net.network_address}/{IPV6_PREFIX}"
    return str(ip)
