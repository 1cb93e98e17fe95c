"""Reconnecting with jittered exponential backoff: the one loop every client role uses.

The submitter's links to nodes and to the master and the node's link to the
master all do the same thing: connect (and greet), serve the connection until
it breaks, wait, try again. The waits double from `first` up to `cap`, are
shortened by a random fraction (`jitter`) so a master restart is not answered
by every node in the same millisecond, and start over after each success.
`Backoff` is pure (randomness injected), `keep_connected` takes its `sleep`,
so both are tested with a fake clock.
"""

from __future__ import annotations

import asyncio
import random
from typing import Awaitable, Callable, Optional, TypeVar

from .aio import ConnectionClosed
from .errors import WireError

T = TypeVar("T")

# what a broken or refused connection raises; anything else is a bug and propagates
RETRY: tuple = (OSError, WireError, asyncio.TimeoutError, ConnectionClosed)


class Backoff:
    """Delays between attempts: first, first*factor, ... up to cap, each jittered down."""

    def __init__(self, first: float = 0.1, cap: float = 5.0, factor: float = 2.0,
                 jitter: float = 0.5, rand: Callable[[], float] = random.random) -> None:
        if not (0 < first <= cap and factor >= 1 and 0 <= jitter < 1):
            raise ValueError("want 0 < first <= cap, factor >= 1, 0 <= jitter < 1")
        self.first, self.cap, self.factor, self.jitter = first, cap, factor, jitter
        self._rand = rand
        self._next = first
        self.failures = 0  # attempts failed since the last success

    def next(self) -> float:
        """The delay before the next attempt (and advance)."""
        base = self._next
        self._next = min(self._next * self.factor, self.cap)
        self.failures += 1
        return base * (1 - self.jitter * self._rand())

    def reset(self) -> None:
        """A success: the next failure waits `first` again."""
        self._next = self.first
        self.failures = 0


async def keep_connected(open_session: Callable[[], Awaitable[T]],
                         serve: Callable[[T], Awaitable[None]], *,
                         backoff: Optional[Backoff] = None,
                         on_down: Optional[Callable[[BaseException], None]] = None,
                         sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                         retry_on: tuple = RETRY) -> None:
    """Forever: `session = await open_session()`, reset the backoff, `await serve(session)`;
    when either raises one of `retry_on` (or `serve` returns), call `on_down(exc)` (a
    ConnectionClosed for a plain return) and sleep `backoff.next()` before trying again.

    `open_session` connects and greets (its result is what `serve` needs); `serve` runs
    until the connection ends and must close it (a `finally`). Any other exception
    propagates: a bug must not hide inside a reconnect loop. Cancel the task to stop."""
    backoff = backoff or Backoff()
    while True:
        try:
            session = await open_session()
            backoff.reset()
            await serve(session)
            exc: BaseException = ConnectionClosed("the session ended")
        except retry_on as failure:
            exc = failure
        if on_down is not None:
            on_down(exc)
        await sleep(backoff.next())
