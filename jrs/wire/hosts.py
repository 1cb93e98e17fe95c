"""Which host a peer counts as: the one place a peer address becomes a host key.

Every per-host bound (the wire's handshake and first-message slots, the master's
per-host limits, the rate of log lines about a peer) counts peers by this key, so
they all agree on who one host is:

- an IPv4 address is its own host;
- an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, how a dual-stack listener on
  ``::`` sees IPv4 clients) is that IPv4 address: the same host whichever socket it
  came through, and not one /64 with every IPv4 client;
- any other IPv6 address counts by its /64 (``2001:db8:1:2::/64``): a /64 is what a
  site hands one machine or one LAN, and a holder of one has 2^64 addresses, which
  counted one by one would be as many hosts. A zone (``fe80::1%eth0``) is dropped.
- anything else (a Unix socket's path, no address at all) is its own text.

Hosts behind one NAT address are one host here: the daemon cannot tell them apart.
Pure: no sockets; the parse is cached (a bounded cache: a flood of addresses costs
one parse each, as without it).
"""

from __future__ import annotations

import functools
import ipaddress

IPV6_PREFIX = 64  # the bits of an IPv6 address that name its host


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
        net = ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False)
        return f"{net.network_address}/{IPV6_PREFIX}"
    return str(ip)
