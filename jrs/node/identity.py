"""Who a job runs as: a uid of its own per job, or (opt-in) the submitter's account.

A node cannot know who a peer really is: the shared secret makes its holder a
cluster operator, never root on a node, and never another local user. So by
default every job gets a uid nobody else has, allocated from a reserved range
(`--job-uids`), with the matching gid and no supplementary groups; it is handed
back only once nothing of it is left (its processes killed, its files in the
shared temporary directories and its IPC objects removed, its sandbox deleted).

Running as the submitter's same-named account is a node opt-in
(`--same-user-accounts`) for sites whose accounts are the same everywhere; it
trusts every secret holder to be who they say. Even then uid 0, gid 0 (primary
or supplementary), system accounts (below UID_MIN of /etc/login.defs) and
members of root-equivalent groups get a per-job uid instead.

The policy and the allocator are pure (the shell passes in file contents and
account records); `check_range` and `lookup_account` are the thin shells.
"""

from __future__ import annotations

import grp
import os
import pwd
from typing import Callable, Optional

from ..errors import ConfigError

# systemd's UIDS-GIDS.md leaves 0x70000000-0x7FFFFFFF unused (containers take
# 524288-1879048191, dynamic users 61184-65519); shadow's subordinate ids start
# at 100000 and grow upwards in blocks of 65536, so they reach this only on a
# machine with ~27,000 users that have them.
DEFAULT_RANGE = "1879048192-1879113727"
SYSTEMD_DYNAMIC = (61184, 65519)
DEFAULT_ROOT_GROUPS = ("root", "sudo", "wheel", "adm", "docker", "lxd", "disk", "shadow", "kvm")
DEFAULT_UID_MIN = 1000


class UidRange:
    """FIRST..LAST inclusive."""

    def __init__(self, first: int, last: int) -> None:
        self.first = first
        self.last = last

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and self.first <= uid <= self.last

    def overlaps(self, lo: int, hi: int) -> bool:
        return lo <= self.last and self.first <= hi

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UidRange) and (self.first, self.last) == (other.first,
                                                                            other.last)


def parse_range(text: str, flag: str = "--job-uids") -> UidRange:
    """`FIRST-LAST` (inclusive), above 999 and below 2^31-1 (ids in use are
    refused by `check_range`)."""
    first, sep, last = text.partition("-")
    if not (sep and first.isdigit() and last.isdigit()):
        raise ConfigError(f"{flag}={text}: want FIRST-LAST, e.g. {DEFAULT_RANGE}")
    lo, hi = int(first), int(last)
    if not 1000 <= lo <= hi < 2 ** 31 - 1:
        raise ConfigError(f"{flag}={text}: want 1000 <= FIRST <= LAST < 2147483647")
    return UidRange(lo, hi)


def range_conflicts(r: UidRange, files: dict) -> list:
    """Where `r` overlaps ids already given out: ["FILE:LINE: what"], pure.

    `files` maps a path (/etc/passwd, /etc/group, /etc/subuid, /etc/subgid) to
    its text. passwd and group lines name one id (field 3); subuid and subgid
    lines a block `name:start:count`.
    """
    out = []
    if r.overlaps(*SYSTEMD_DYNAMIC):
        out.append(f"systemd's dynamic users {SYSTEMD_DYNAMIC[0]}-{SYSTEMD_DYNAMIC[1]}")
    for path, text in files.items():
        sub = path.endswith(("subuid", "subgid"))
        for n, line in enumerate(text.splitlines(), 1):
            fields = line.split(":")
            try:
                if sub:
                    lo = int(fields[1])
                    hi = lo + int(fields[2]) - 1
                else:
                    lo = hi = int(fields[2])
            except (IndexError, ValueError):
                continue
            if r.overlaps(lo, hi):
                what = f"{lo}-{hi}" if sub else str(lo)
                out.append(f"{path}:{n}: {fields[0]} has {what}")
    return out


ID_FILES = ("/etc/passwd", "/etc/group", "/etc/subuid", "/etc/subgid")


def check_range(r: UidRange) -> None:
    """Refuse a per-job range that overlaps an id in use on this machine."""
    files = {}
    for path in ID_FILES:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                files[path] = f.read()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read it to check --job-uids: {exc.strerror}")
    conflicts = range_conflicts(r, files)
    if conflicts:
        raise ConfigError(f"--job-uids={r} overlaps ids in use: {'; '.join(conflicts[:3])}; "
                          "choose a free range")


class UidPool:
    """The per-job uids of one node: pure bookkeeping.

    Allocation goes round the range (the next uid after the last one handed
    out), so a uid just released is the last to come back. After a restart the
    in-use set is rebuilt from the taskfiles (`hold`).
    """

    def __init__(self, r: UidRange) -> None:
        self.range = r
        self.used: set = set()
        self._next = r.first

    def hold(self, uid: int) -> None:
        if uid in self.range:
            self.used.add(uid)

    def allocate(self) -> Optional[int]:
        size = self.range.last - self.range.first + 1
        if len(self.used) >= size:
            return None
        uid = self._next
        while uid in self.used:
            uid = uid + 1 if uid < self.range.last else self.range.first
        self.used.add(uid)
        self._next = uid + 1 if uid < self.range.last else self.range.first
        return uid

    def release(self, uid: int) -> None:
        self.used.discard(uid)


class Identity:
    """Who one job runs as. `uid` None: as the node's own account."""

    def __init__(self, uid: Optional[int], gid: Optional[int], groups: list, name: str,
                 per_job: bool, note: str = "") -> None:
        self.uid = uid
        self.gid = gid
        self.groups = groups
        self.name = name
        self.per_job = per_job
        self.note = note  # why a same-named account was not used

    def to_spec(self) -> dict:
        if self.uid is None:
            return {"run_as": self.name}
        return {"uid": self.uid, "gid": self.gid, "groups": list(self.groups),
                "run_as": self.name, "per_job_uid": self.per_job}

    def __repr__(self) -> str:
        return f"Identity({self.uid}, {self.gid}, {self.groups}, {self.name!r}, {self.per_job})"


class Account:
    """An account record as the policy needs it (from pwd/grp, or made up by tests)."""

    def __init__(self, name: str, uid: int, gid: int, groups: list, group_names: list) -> None:
        self.name = name
        self.uid = uid
        self.gid = gid
        self.groups = groups
        self.group_names = group_names


# `nobody` and its kin: the unprivileged identity many daemons run as, and the one
# the node's own scan for world-writable directories runs as (confine.scan_identity);
# 65534 is also the kernel's overflow uid. Above UID_MIN, yet no one's own account.
NOBODY_NAMES = frozenset({"nobody", "nfsnobody"})
NOBODY_UIDS = frozenset({65534, 4294967294})


def refusal(acct: Account, uid_min: int, root_groups: frozenset) -> Optional[str]:
    """Why a same-named account may not run jobs (None: it may). Pure."""
    if acct.uid == 0:
        return "uid 0"
    if acct.name in NOBODY_NAMES or acct.uid in NOBODY_UIDS:
        return "nobody's (shared by daemons and the node's own scan)"
    if acct.gid == 0 or 0 in acct.groups:
        return "group 0"
    if acct.uid < uid_min:
        return f"a system account (uid {acct.uid} < UID_MIN {uid_min})"
    bad = sorted(set(acct.group_names) & root_groups)
    if bad:
        return f"member of {', '.join(bad)}"
    return None


class NoUids(Exception):
    """Every per-job uid is in use."""


class Policy:
    """Maps the user a claim names to an Identity.

    mode "self": a non-root node, every job runs as the node's own account.
    mode "job": a per-job uid for every job.
    mode "account": the same-named account when `refusal` allows, else per-job.
    `lookup(name) -> Optional[Account]` is the account database (a shell).
    """

    def __init__(self, mode: str, pool: Optional[UidPool] = None, uid_min: int = DEFAULT_UID_MIN,
                 root_groups: frozenset = frozenset(DEFAULT_ROOT_GROUPS),
                 lookup: Optional[Callable[[str], Optional[Account]]] = None,
                 self_name: str = "") -> None:
        if mode not in ("self", "job", "account"):
            raise ValueError(mode)
        if mode != "self" and pool is None:
            raise ValueError("a per-job uid pool is needed")
        self.mode = mode
        self.pool = pool
        self.uid_min = uid_min
        self.root_groups = frozenset(root_groups)
        self.lookup = lookup or (lambda name: None)
        self.self_name = self_name

    def identity_for(self, user: object) -> Identity:
        """The identity for a job of `user` (a per-job uid is allocated: release it)."""
        if self.mode == "self":
            return Identity(None, None, [], self.self_name, False)
        note = ""
        if self.mode == "account" and isinstance(user, str) and user:
            acct = self.lookup(user)
            if acct is not None:
                why = refusal(acct, self.uid_min, self.root_groups)
                if why is None:
                    return Identity(acct.uid, acct.gid, list(acct.groups), acct.name, False)
                note = f"account {user} not used: {why}"
        assert self.pool is not None
        uid = self.pool.allocate()
        if uid is None:
            raise NoUids(f"all {self.pool.range.last - self.pool.range.first + 1} per-job uids "
                         f"({self.pool.range}) are in use")
        return Identity(uid, uid, [], f"jrs-{uid}", True, note)

    def hold(self, spec: dict) -> None:
        """A taskfile read back at start: its per-job uid stays taken."""
        uid = spec.get("uid")
        if spec.get("per_job_uid") and isinstance(uid, int) and self.pool is not None:
            self.pool.hold(uid)

    def release(self, spec_or_ident) -> None:
        """The job's taskfile is gone: its per-job uid may be reused."""
        if isinstance(spec_or_ident, Identity):
            per_job, uid = spec_or_ident.per_job, spec_or_ident.uid
        else:
            per_job, uid = spec_or_ident.get("per_job_uid"), spec_or_ident.get("uid")
        if per_job and isinstance(uid, int) and self.pool is not None:
            self.pool.release(uid)


def login_uid_min(text: Optional[str] = None) -> int:
    """UID_MIN of /etc/login.defs (default 1000)."""
    if text is None:
        try:
            with open("/etc/login.defs", encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            return DEFAULT_UID_MIN
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "UID_MIN" and fields[1].isdigit():
            return int(fields[1])
    return DEFAULT_UID_MIN


def lookup_account(name: str) -> Optional[Account]:
    """The local account `name` with its groups, or None (the shell for Policy)."""
    try:
        pw = pwd.getpwnam(name)
    except (KeyError, TypeError, ValueError):
        return None
    try:
        groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
    except OSError:
        groups = [pw.pw_gid]
    names = []
    for g in groups:
        try:
            names.append(grp.getgrgid(g).gr_name)
        except KeyError:
            pass
    return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, groups, names)


RANGES_DIR = "/run/jrs/job-uids"


def lock_range(r: UidRange, directory: str = RANGES_DIR) -> int:
    """Claim `r` for this node on this machine; return the fd that holds the claim.

    Two nodes on one machine with overlapping ranges would kill each other's
    jobs (a uid's clean-up kills every process of it), so each node holds a lock
    on a file named after its range for its lifetime; a node whose range
    overlaps a held one refuses to start. Stale files (no lock) are removed.
    """
    import errno
    import fcntl

    os.makedirs(directory, mode=0o700, exist_ok=True)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(dfd, fcntl.LOCK_EX)  # one node checks at a time
        for name in os.listdir(dfd):
            lo, _, hi = name.partition("-")
            if not (lo.isdigit() and hi.isdigit()) or not r.overlaps(int(lo), int(hi)):
                continue
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise ConfigError(f"--job-uids={r} overlaps {name}, the per-job uids of "
                                      "another node on this machine; give each node its own "
                                      "range") from None
                raise
            finally:
                os.close(fd)
            os.unlink(name, dir_fd=dfd)
        fd = os.open(str(r), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dfd)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    finally:
        os.close(dfd)


class CachedLookup:
    """`lookup_account` answers reused for `ttl` seconds: a node in account mode
    asks once per job, and the passwd and group databases may be over NSS."""

    def __init__(self, lookup: Callable[[str], Optional[Account]] = lookup_account,
                 ttl: float = 30.0, clock: Optional[Callable[[], float]] = None) -> None:
        import time

        self.lookup = lookup
        self.ttl = ttl
        self.clock = clock or time.monotonic
        self.hits: dict = {}

    def __call__(self, name: str) -> Optional[Account]:
        if not isinstance(name, str):  # from a peer: no such account
            return None
        now = self.clock()
        hit = self.hits.get(name)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        found = self.lookup(name)
        if len(self.hits) > 1000:
            self.hits.clear()
        self.hits[name] = (now, found)
        return found
