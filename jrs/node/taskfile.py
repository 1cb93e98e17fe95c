"""The taskfile: everything known about one job on a node, in one record file.

The first record is the job spec (`kind: "jrs-task"`, format `v`), written
atomically before the executor starts. The executor then appends events:

    executor   {pid, start, boot}        it owns the job (holds the file's lock)
    running    {pid, start}              the user process runs
    exec-failed {errno, reason}          the user process could not start
    exit       {code, signal, rusage, started, ended}
    killed     {signal}                  the job was removed (rm, node shutdown)
    delivered  {}                        the submitter has the result

Only the spec is fsynced, by the executor before the job starts (its bytes, then
its name: sync_name); the daemon that writes it syncs nothing, inline in its event
loop (a sync was 4-8 ms a job here, with the loop stopped for every slot). A power
cut before the executor's sync takes a task whose job never ran: the node forgets it
(or sets aside a taskfile left empty) and the submitter reruns it as a lost run.
Events need not be: a killed daemon or executor
loses nothing the page cache holds, and after a power loss (a new boot id) a
job whose exit record did not reach the disk is reported lost and reruns, like
any job the reboot interrupted; results are deduplicated by job and attempt.

Unknown fields and unknown events are ignored, so a taskfile written by an
older jrs (format 1 lacks `gpus`, `kind`, rusage) is still read.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from .. import records

FORMAT = 1
SUFFIX = ".task"


_boot: str | None = None


def boot_id() -> str:
    """This boot's id (cached: it cannot change while we run)."""
    global _boot
    if _boot is None:
        _boot = _read("/proc/sys/kernel/random/boot_id").decode().strip()
    return _boot


def _read(path: str) -> bytes:
    """A small /proc file's content (b"" if it is gone); os-level: executors call it per job."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return b""
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""
    finally:
        os.close(fd)


def process_start(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot (None if it does not exist)."""
    data = _read(f"/proc/{pid}/stat")
    # the command name may hold spaces and parentheses: split after the last ')'
    fields = data[data.rfind(b")") + 2:].split(None, 20)
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


class TaskState:
    """A taskfile read back: the spec plus what its events say.

    A plain class, not a dataclass: the launcher imports this module, and every
    module it imports makes each executor fork a little dearer.
    """

    def __init__(self, path: str, spec: dict, damaged: int = 0) -> None:
        self.path = path
        self.spec = spec
        self.executor_pid: int | None = None
        self.executor_start: int | None = None
        self.cgroup_leaf: str | None = None  # the cgroups the job ran in, when not its own
        self.boot: str | None = None
        self.pid: int | None = None
        self.pid_start: int | None = None
        self.running_since: float | None = None
        self.exit: dict | None = None
        self.killed: int | None = None
        self.delivered = False
        self.damaged = damaged
        self.extra: list = []

    @property
    def key(self) -> str:
        return os.path.basename(self.path)[: -len(SUFFIX)]

    @property
    def finished(self) -> bool:
        return self.exit is not None


def parse(path: str, recs: list, damaged: int = 0) -> TaskState:
    if not recs or recs[0].get("kind", "jrs-task") != "jrs-task" or "argv" not in recs[0]:
        raise ValueError(f"{path}: not a taskfile (no job spec in the first record)")
    if not isinstance(recs[0].get("v", 1), int) or recs[0].get("v", 1) > FORMAT:
        raise ValueError(f"{path}: taskfile format {recs[0].get('v')} is newer than this jrs")
    st = TaskState(path, recs[0], damaged=damaged)
    for rec in recs[1:]:
        event = rec.get("e")
        if event == "executor":
            st.executor_pid, st.executor_start = rec.get("pid"), rec.get("start")
            st.boot = rec.get("boot")
            if isinstance(rec.get("cgroup_leaf"), str):  # a reused executor's own cgroup
                st.cgroup_leaf = rec["cgroup_leaf"]
        elif event == "running":
            st.pid, st.pid_start = rec.get("pid"), rec.get("start")
            st.running_since = rec.get("t")
        elif event in ("exit", "exec-failed", "lost"):
            # the first end is the job's end: a "lost" a daemon appended after the
            # executor's exit record (it saw the job running, then its lock gone)
            # must not turn a finished job into one to run again
            if st.exit is None:
                st.exit = rec
        elif event == "killed":
            st.killed = rec.get("signal")
        elif event == "delivered":
            st.delivered = True
        else:
            st.extra.append(rec)
    return st


def load(path: str) -> TaskState:
    recs, damaged = records.read(path)
    return parse(path, recs, damaged)


def create(path: str, spec: dict) -> None:
    """Write a new taskfile holding only the spec (atomic: a temp file renamed).

    Nothing is synced here: the daemon creates taskfiles inline in its event loop,
    and each sync is a journal commit and a disk flush (4-8 ms a job on this disk,
    the loop stopped meanwhile for every slot of the node). The executor syncs the
    bytes and then the name before the job starts (sync_name), which is when they
    must be durable: a taskfile a power cut takes before that is a task the node
    forgets (or an empty one it sets aside), whose job never ran, and the submitter
    reruns it as a lost run."""
    records.write_new(path, [dict(spec, kind="jrs-task", v=FORMAT)], sync=False)


def sync_name(path: str, fd: int) -> None:
    """Make taskfile `path` durable, its bytes (`fd`, open on it) and then its name
    (its directory's fsync): the executor calls it before the job starts, so a job
    that ran cannot be forgotten by a power cut."""
    os.fdatasync(fd)
    records.fsync_dir(os.path.dirname(path))


def append_event(path: str, event: dict, sync: bool = True) -> None:
    """Append an event from outside the executor (the daemon: delivered, lost)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        records.append(fd, event, sync=sync)
    finally:
        os.close(fd)


# The executor's hold on its taskfile is an open-file-description (OFD) write lock
# on the whole file: tied to the executor's open file (so to its life, immune to pid
# reuse), and one that can be *tested* without taking any lock (F_OFD_GETLK). The old
# probe took a shared flock for an instant, and an executor starting in that instant
# found its lock taken, gave up, and its job started 10 s late.
_F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
_F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
_FLOCK = "hhxxxxqqi4x"  # struct flock on 64-bit Linux: type, whence, start, len, pid


class Locked(OSError):
    """Another executor holds this taskfile."""


def lock(fd: int) -> None:
    """Take the taskfile's owner lock on `fd` (an O_RDWR descriptor), or raise Locked."""
    arg = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    try:
        fcntl.fcntl(fd, _F_OFD_SETLK, arg)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise Locked(exc.errno, "another executor owns this job") from None
        raise


def owner_alive(path: str) -> bool:
    """True while an executor holds the taskfile's lock. Takes no lock itself, so it
    can never make a starting executor fail to take its own."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        return held(fd)
    finally:
        os.close(fd)


def held(fd: int) -> bool:
    """Does an executor hold the lock of the taskfile open on `fd`? (No lock taken.)"""
    probe = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    if struct.unpack(_FLOCK, fcntl.fcntl(fd, _F_OFD_GETLK, probe))[0] != fcntl.F_UNLCK:
        return True
    return _old_owner(fd)


def _old_owner(fd: int) -> bool:
    """An executor of an older jrs (still running across an upgrade) holds a flock.
    Testing for it cannot race a new executor: new executors take no flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    return False


def same_process(pid: int | None, start: int | None) -> bool:
    """Is `pid` still the very process that had start time `start`?"""
    return bool(pid) and start is not None and process_start(pid) == start
