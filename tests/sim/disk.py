"""A host's simulated disk: what a role persists, and nothing it does not.

Files hold JSON values (deep-copied in and out, so no role shares objects
with another or with its own past). Record files (taskfiles, the journal) are
lists of records appended one write at a time; whole files (claims.json) are
replaced atomically. A write can be made to fail (ENOSPC, EIO) for a while;
reads never fail. Everything written survives a process kill and a host
crash (the roles sync what they must; what they do not sync is the page
cache, which a kill keeps). `watch` lets the checker see every append, even
to a file that is later removed (the journal of a finished run).
"""

from __future__ import annotations

import errno as _errno
from typing import Callable, Optional

from . import jsoncopy

_copy = jsoncopy.copy  # json.loads(json.dumps(value)), without the text


class Disk:
    def __init__(self, host: str) -> None:
        self.host = host
        self.files: dict = {}
        self.fail_until = 0.0
        self.fail_errno = _errno.ENOSPC
        self.fail_chance = 0.0
        self.watchers: list = []  # fn(path, record)
        self.writes = 0
        self.failed_writes = 0
        self._now: Callable[[], float] = lambda: 0.0
        self._rng = None

    def bind(self, now: Callable[[], float], rng) -> None:
        self._now, self._rng = now, rng

    def fail(self, code: int, until: float, chance: float = 1.0) -> None:
        """Writes fail with `code` (each with `chance`) until simulated time `until`."""
        self.fail_errno, self.fail_until, self.fail_chance = code, until, chance

    def _write_check(self, path: str) -> None:
        self.writes += 1
        if self._now() < self.fail_until and self._rng is not None \
                and self._rng.random() < self.fail_chance:
            self.failed_writes += 1
            raise OSError(self.fail_errno, f"{_errno.errorcode[self.fail_errno]} (simulated)",
                          path)

    # ------------------------------------------------------------ whole files

    def replace(self, path: str, value) -> None:
        self._write_check(path)
        self.files[path] = ("file", _copy(value))

    def read(self, path: str):
        _kind, value = self.files[path]
        return _copy(value)

    # ------------------------------------------------------------ record files

    def create(self, path: str, records: list) -> None:
        self._write_check(path)
        if path in self.files:
            raise OSError(_errno.EEXIST, "exists (simulated)", path)
        self.files[path] = ("records", [_copy(r) for r in records])
        for r in records:
            for w in self.watchers:
                w(path, _copy(r))

    def append(self, path: str, record: dict) -> None:
        self._write_check(path)
        entry = self.files.get(path)
        if entry is None:
            raise OSError(_errno.ENOENT, "no such file (simulated)", path)
        entry[1].append(_copy(record))
        for w in self.watchers:
            w(path, _copy(record))

    def append_unchecked(self, path: str, record: dict) -> bool:
        """For writers outside the role under test (a job's executor): never fails."""
        entry = self.files.get(path)
        if entry is None:
            return False
        entry[1].append(_copy(record))
        return True

    def replace_unchecked(self, path: str, value) -> None:
        self.files[path] = ("file", _copy(value))

    def records(self, path: str) -> list:
        _kind, value = self.files[path]
        return _copy(value)

    # ------------------------------------------------------------ directory

    def exists(self, path: str) -> bool:
        return path in self.files

    def unlink(self, path: str) -> None:
        self.files.pop(path, None)

    def listdir(self, prefix: str, suffix: str = "") -> list:
        return sorted(p for p in self.files if p.startswith(prefix) and p.endswith(suffix))

    def size(self) -> int:
        return len(self.files)


def errno_name(exc: Optional[BaseException]) -> str:
    if isinstance(exc, OSError) and exc.errno in _errno.errorcode:
        return _errno.errorcode[exc.errno]
    return type(exc).__name__ if exc else ""
