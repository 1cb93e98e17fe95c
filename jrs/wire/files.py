"""Files over a channel: a header message lists `{name, size}`, the bytes follow
as data frames in that order (one transfer: see `Channel.send_files`). Memory
stays bounded by one chunk plus the transport's buffer whatever the file size,
because every chunk is drained."""

from __future__ import annotations

import asyncio
import os
from typing import Callable, Optional

from .errors import WireError
from .messages import MAX_FILE_SIZE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .aio import Channel, Transfer

CHUNK = 1 << 18
YIELD_EVERY = 64  # files between two turns of the event loop (see stream)


def describe(items: list) -> list:
    """[(name, path)] -> [{name, size, mode}] for a header (sizes fixed now)."""
    out = []
    for name, path in items:
        st = os.stat(path)
        out.append({"name": name, "size": st.st_size, "mode": st.st_mode & 0o777})
    return out


async def stream(unit: Transfer, items: list, headers: list,
                 cache: Optional[dict] = None) -> None:
    """Write the bytes of each (name, path) into an open transfer, exactly the size its
    header promised (a file that shrank since `describe` is padded with zeros; one
    that grew is cut). Use it through `Channel.send_files`.

    `path` may instead be a callable returning an open fd (or None: send zeros),
    so a node sends the very descriptor it checked, never a path reopened.

    Every YIELD_EVERY files the event loop gets a turn: a drain returns at once while
    the transport has room, so 100,000 small files (each opened and checked again:
    9.8 s at load 6.4) held the node's loop the whole time, its heartbeats stopped
    and the master declared it lost."""
    for i, ((_, path), head) in enumerate(zip(items, headers)):
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)
        size = head["size"]
        if callable(path):
            fd = path()
            f = open(fd, "rb", closefd=True) if fd is not None else None
            try:
                left = size
                while left > 0:
                    chunk = (f.read(min(CHUNK, left)) if f is not None else b"") \
                        or bytes(min(CHUNK, left))  # shrank, or refused now: pad
                    unit.write(chunk)
                    left -= len(chunk)
                    await unit.drain()
            finally:
                if f is not None:
                    f.close()
            continue
        if cache is not None and path in cache:
            data = cache[path]
            if len(data) != size:  # the file changed since it was cached: keep the promise
                data = data[:size].ljust(size, b"\0")
            for i in range(0, size, CHUNK):
                unit.write(data[i:i + CHUNK])
            await unit.drain()
            continue
        with open(path, "rb") as f:
            left = size
            while left > 0:
                chunk = f.read(min(CHUNK, left)) or bytes(min(CHUNK, left))  # shrank: pad
                unit.write(chunk)
                left -= len(chunk)
                await unit.drain()


async def receive(ch: Channel, headers: list, open_file: Callable[[dict], Optional[object]]
                  ) -> None:
    """Receive the data frames for `headers`; `open_file(head)` gives a binary file
    to write into (closed here) or None to discard the bytes."""
    for head in headers:
        left = head["size"]
        out = open_file(head)
        try:
            while left > 0:
                chunk = await ch.recv()
                if not isinstance(chunk, bytes) or len(chunk) > left:
                    raise WireError("file data did not match its header")
                if out is not None:
                    out.write(chunk)
                left -= len(chunk)
        finally:
            if out is not None:
                out.close()


def check_headers(files: object, limit: int = MAX_FILE_SIZE) -> list:
    """Peer-supplied file headers, checked: a list of {name: str, size: int >= 0}."""
    if not isinstance(files, list) or len(files) > 100_000:
        raise ValueError("files must be a list")
    out = []
    for f in files:
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            raise ValueError("each file needs a name")
        size = f.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= limit:
            raise ValueError(f"bad size for {f['name'][:60]!r}")
        mode = f.get("mode", 0o644)
        if not isinstance(mode, int) or isinstance(mode, bool):
            mode = 0o644
        out.append({"name": f["name"], "size": size, "mode": mode & 0o777})
    return out
