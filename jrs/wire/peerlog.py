"""Log lines about peers that a peer cannot flood or forge.

`excerpt` turns whatever a peer sent into a short escaped text (no newlines,
no control characters, at most `limit` characters), so a log line cannot be
split, faked or made huge. `PeerLog` lets through at most `burst` lines per
source address per `interval` seconds, then one line saying how many it held
back, whatever their text: 2,000 distinct lines a second from one address
cost a few lines a minute.

Shared by every role (it began in jrs/cluster for the master; jrs/cluster/peerlog.py
re-exports it): the wire's refused-handshake lines go through it too.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any, Callable

from .hosts import host_key

MAX_SOURCES = 4096


def excerpt(value: Any, limit: int = 80) -> str:
    """`value` as at most `limit` characters of escaped text (one line, ASCII)."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > 4 * limit:
        text = text[:4 * limit]
    escaped = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."


class PeerLog:
    """A logger whose lines about a peer are counted against its host (`hosts.host_key`)."""

    def __init__(self, logger: logging.Logger, burst: int = 20, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = logger
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self.sources: OrderedDict = OrderedDict()  # address -> [window start, lines, held]

    def _allow(self, peer: Any) -> bool:
        addr = host_key(peer)
        now = self.clock()
        entry = self.sources.get(addr)
        if entry is None or now - entry[0] >= self.interval:
            if entry is not None and entry[2]:
                self.log.warning("held back %d log lines about %s", entry[2], addr)
            entry = self.sources[addr] = [now, 0, 0]
            while len(self.sources) > MAX_SOURCES:
                self.sources.popitem(last=False)
        self.sources.move_to_end(addr)
        if entry[1] >= self.burst:
            entry[2] += 1
            return False
        entry[1] += 1
        return True

    def warning(self, peer: Any, fmt: str, *args: Any) -> None:
        if self._allow(peer):
            self.log.warning(fmt, *args)

    def info(self, peer: Any, fmt: str, *args: Any) -> None:
        if self.log.isEnabledFor(logging.INFO) and self._allow(peer):
            self.log.info(fmt, *args)

    def exception(self, peer: Any, fmt: str, *args: Any) -> None:
        if self._allow(peer):
            self.log.exception(fmt, *args)
