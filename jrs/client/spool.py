"""The jobs of a run, expanded from the submit file once and spooled to disk.

The submit file is expanded exactly once per cluster: `$RANDOM_INTEGER` counts,
`queue ... from` files that change and `include command :` would give another
list on a second pass, so the count, the checks and the jobs that run all come
from the same expansion. Jobs go to a file beside the journal as they are
expanded (one JSON line each, 0600: the environment of a job may be private)
and are read back lazily as the queue fills its window, so memory stays
bounded by the window, not the cluster. A resumed run reads the same spool and
never expands again.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterator, Optional

from ..condor import Job
from ..errors import JrsError, located

FIELDS = tuple(Job.__slots__)
TUPLES = ("getenv",)  # fields the expander gives as tuples (JSON turns them into lists)


def encode(job: Job) -> str:
    return json.dumps([getattr(job, f) for f in FIELDS], separators=(",", ":"))


def decode(line: str) -> Job:
    values = json.loads(line)
    if not isinstance(values, list) or len(values) != len(FIELDS):
        raise ValueError("not a spooled job of this build")
    job = Job.__new__(Job)
    for name, value in zip(FIELDS, values):
        if name in TUPLES and isinstance(value, list):
            value = tuple(value)
        setattr(job, name, value)
    return job


def write(path: str, jobs: Iterator[Job], check: Optional[Callable[[Job], None]] = None,
          sync: bool = True) -> int:
    """Expand `jobs` into `path` (atomically: a temp file renamed when complete);
    `check(job)` may raise to refuse the file. Returns the count. `sync=False` leaves
    the fdatasync to the caller (`sync(path)`), who must do it before the journal
    that names the spool is created."""
    tmp = f"{path}.{os.getpid()}.tmp"
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", buffering=1 << 20) as out:
            for job in jobs:
                if check is not None:
                    check(job)
                out.write(encode(job))
                out.write("\n")
                count += 1
            out.flush()
            if sync:
                os.fdatasync(out.fileno())
        os.replace(tmp, path)  # its name is made durable by the journal's creation next
        # to it (records.write_new syncs their directory), before anything depends on it
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return count


def sync(path: str) -> None:
    """Make a spool written with `write(..., sync=False)` durable (its data; its name
    goes with the journal's creation beside it)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def read(path: str) -> Iterator[Job]:
    """The spooled jobs in order, one line at a time; a damaged line is a JrsError
    naming the spool and the line (a damaged disk, a hand edit: not our bug)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for n, line in enumerate(f, 1):
            try:
                yield decode(line)
            except (ValueError, TypeError, AttributeError) as exc:
                raise JrsError(located(path, n, f"a damaged spooled job "
                                                f"({str(exc)[:80]})")) from None


def count(path: str) -> int:
    """How many jobs the spool holds (its lines), without decoding them: a resume checks
    it against the journal's total, since a queue short of jobs would wait for them
    for ever."""
    n = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            n += block.count(b"\n")
    return n
