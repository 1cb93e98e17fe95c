"""The last scan for world-writable directories, kept for a restart of the same node.

A root node scans the machine at start (as nobody, ~1 s of CPU) and again every
JRS_SCAN_EVERY seconds; its jobs clean up in the directories found, and whatever is
made after a scan waits for the next one. A node started again soon after (an
upgrade, a crash and its supervisor's restart, a restart loop) would pay the scan
again for nothing a running node would know: it takes the last scan while that is
younger than JRS_SCAN_EVERY, and its next scan is due when that one's would have
been. So the directories its jobs clean in are never older than a running node's.

Valid only for the same scan on the same machine: the key is a digest of the
scan's whole argument list (its code, the skip list made from the mount table, the
job uid range, its bounds), the identity it runs as, the mount namespace, the root
directory and the boot. Directory mtimes cannot stand for the machine's state: a
`chmod 0777` deep in a tree changes only that directory's ctime, and checking every
directory's ctime is the scan's own walk. Ages are CLOCK_BOOTTIME (no wall clock
jump makes an old scan young).

The files are root's, 0600, in /run/jrs/scan (root's, writable by nobody else);
one is read only through O_NOFOLLOW, when it is a regular file of root's that no
one else may write, at most unit.SCAN_BYTES; its content is taken as the scan's own
answer is (unit.parse_scan, bounded; root never follows a link below what it names).
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from typing import Optional

from . import unit

DIR = "/run/jrs/scan"
MAGIC = b"jrs-scan 1 "
KEEP = 256  # files in DIR at most (each node of a machine has its own key)
PRUNE_AFTER = 86400.0  # seconds: older files go whenever a node saves its own


def now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def key(argv: list, uid: int, gid: int) -> str:
    """What makes a scan's answer the same answer (see the module's docstring)."""
    h = hashlib.sha256()
    for part in (*argv, str(uid), str(gid), _boot_id()):
        h.update(part.encode(errors="surrogateescape") + b"\0")
    for path in ("/proc/self/ns/mnt", "/"):
        try:
            st = os.stat(path)
            h.update(b"%d:%d\0" % (st.st_dev, st.st_ino))
        except OSError:
            h.update(b"?\0")
    return h.hexdigest()[:32]


def load(k: str, max_age: float, directory: str = DIR) -> Optional[tuple]:
    """(the scan's answer, its age in seconds) when a scan with key `k` younger than
    `max_age` is kept; None otherwise (or when the file is not one we trust)."""
    me = os.geteuid()
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        dst = os.fstat(dfd)
        if dst.st_uid != me or dst.st_mode & 0o022:
            return None
        fd = os.open(k, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        return None
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != me or st.st_mode & 0o022 or \
                st.st_size > unit.SCAN_BYTES + 200:
            return None
        data = b""
        while len(data) <= unit.SCAN_BYTES + 200:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            data += chunk
    except OSError:
        return None
    finally:
        os.close(fd)
    head, nl, body = data.partition(b"\n")
    if not nl or not head.startswith(MAGIC):
        return None
    fields = head[len(MAGIC):].split()
    try:
        if len(fields) != 2 or fields[0].decode() != k:
            return None
        age = now() - float(fields[1])
    except (UnicodeDecodeError, ValueError):
        return None
    if not 0 <= age < max_age:
        return None
    return body, age


def save(k: str, data: bytes, started: float, directory: str = DIR) -> None:
    """Keep a complete scan's answer (started at `started`, CLOCK_BOOTTIME) under `k`;
    best effort (a node that cannot keep it scans again at its next start)."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        tmp = f".{k}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dfd)
        try:
            os.write(fd, MAGIC + f"{k} {started!r}\n".encode() + data[:unit.SCAN_BYTES])
        finally:
            os.close(fd)
        os.replace(tmp, k, src_dir_fd=dfd, dst_dir_fd=dfd)
        _prune(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _prune(dfd: int) -> None:
    """Files older than PRUNE_AFTER go, and the oldest past KEEP (random test ranges,
    ranges given up: their scans would otherwise pile up in /run)."""
    aged = []
    for name in os.listdir(dfd):
        try:
            aged.append((os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mtime, name))
        except OSError:
            pass
    aged.sort(reverse=True)
    limit = time.time() - PRUNE_AFTER
    for i, (mtime, name) in enumerate(aged):
        if i >= KEEP or mtime < limit:
            try:
                os.unlink(name, dir_fd=dfd)
            except OSError:
                pass
