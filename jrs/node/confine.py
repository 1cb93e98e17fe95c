"""A node's confinement settings, checked once at start: who jobs run as, where
their sandboxes live, which cgroups hold them.

Layout: the state directory (taskfiles, claims.json) is 0700; sandboxes live in
a separate execute directory (0711: job identities may pass through it, not
list it), each sandbox 0700 and owned by its job. A root node whose execute
directory a job identity cannot reach refuses to start, naming the directory
and the chmod that fixes it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import Optional

from ..errors import ConfigError
from . import identity, unit


class Confinement:
    def __init__(self, policy: identity.Policy, execute_dir: str, cgroups: dict,
                 pids_max: int, tag: str) -> None:
        self.policy = policy
        self.execute_dir = execute_dir
        self.cgroups = cgroups
        self.pids_max = pids_max
        self.tag = tag
        self.range_lock: Optional[int] = None
        self.pending: list = []  # [(fd or None, identity fields)] waiting for an executor
        self.tmp_dirs: tuple = unit.TMP_DIRS  # where a per-job uid's files are removed
        self.shared_dirs: tuple = ()  # ... and only its set-id files (unit.world_writable_dirs)
        self.scan_at = 0.0  # (monotonic) when to look for world-writable directories again
        self.scanning = False
        self.scans = 0  # scans ended (or taken over from before a restart)

    def hold(self, fields: dict, path: str):
        """Before a task's taskfile goes: a token for `release`. Its per-job uid may
        be handed out again only when the sandbox is gone and the executor, which
        reaps the uid after sending the result, has exited (its lock on the file)."""
        if not (fields.get("per_job_uid") and isinstance(fields.get("uid"), int)):
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = None
        return fd, fields

    def release(self, token) -> None:
        """The sandbox is gone: release the uid now or once its executor has exited."""
        if token is not None:
            self.pending.append(token)
            self.poll()

    def poll(self) -> None:
        """Release the uids whose executors have exited (the daemon calls this every
        second)."""
        from . import taskfile

        left = []
        for fd, fields in self.pending:
            if fd is not None:
                try:
                    if taskfile.held(fd):  # tested without taking a lock (taskfile.lock)
                        left.append((fd, fields))
                        continue
                except OSError:
                    pass
                os.close(fd)
            self.policy.release(fields)
        self.pending = left

    @classmethod
    def as_self(cls, execute_dir: str) -> Confinement:
        """Jobs run as the node's own account (a non-root node, `submit --local`)."""
        os.makedirs(execute_dir, mode=0o700, exist_ok=True)
        return cls(identity.Policy("self", self_name=_self_name()), execute_dir, {},
                   unit.DEFAULT_PIDS, _tag(execute_dir))

    def scan_due(self, now: float) -> bool:
        """Time for another scan for world-writable directories (root nodes: at start,
        then every JRS_SCAN_EVERY seconds, 1800 by default)?"""
        if self.policy.pool is None or self.scanning or now < self.scan_at:
            return False
        self.scanning = True
        return True

    def scan_identity(self) -> tuple:
        """(uid, gid) the scan for world-writable directories runs as: nobody's."""
        import pwd

        try:
            nobody = pwd.getpwnam("nobody")
            return nobody.pw_uid, nobody.pw_gid
        except KeyError:
            return 65534, 65534

    def job_uids(self) -> tuple:
        r = self.policy.pool.range if self.policy.pool is not None else None
        return (r.first, r.last) if r is not None else (0, -1)

    def scanned(self, data: bytes) -> str:
        """The scan's output (unit.scan_world_writable, run by the daemon): together
        with those one level below / /var /run (as root, lstat only), the directories
        jobs started from now on clean up in, and those found before that still are
        world-writable directories (a job can hide one from a scan: 10,000 files in
        its parent, SCAN_PER_DIR, while the scan runs). A line for the log."""
        found = unit.parse_scan(data)
        new = set(found[0] + found[1])
        kept = unit.still_world_writable(
            [p for p in self.tmp_dirs + self.shared_dirs if p not in new])
        self.tmp_dirs, self.shared_dirs = unit.merge_dirs(
            unit.world_writable_dirs(), (found[0] + kept[0], found[1] + kept[1]))
        return (f"world-writable directories: {len(self.tmp_dirs)} temporary, "
                f"{len(self.shared_dirs)} shared (a job's files, or its set-id ones, go "
                "from them when it ends)")

    def scan_finished(self, now: float, age: float = 0.0) -> None:
        """A scan ended (`age`: one kept from before a restart, that old): the next is
        due a period after the one whose answer is in use."""
        self.scanning = False
        self.scans += 1
        self.scan_at = now + max(0.0, scan_every() - age)

    def spec_fields(self, ident: identity.Identity, key: str) -> dict:
        """What the taskfile spec carries for the executor: identity and unit."""
        out = ident.to_spec()
        out.update(cgroup=dict(self.cgroups), cgroup_leaf=unit.leaf_name(key),
                   pids_max=self.pids_max)
        if ident.per_job:
            out.update(tmp_dirs=list(self.tmp_dirs), shared_dirs=list(self.shared_dirs))
        return out

    def close(self) -> None:
        """The node stops: its cgroup roots go if no job is left in them (best
        effort: running jobs keep theirs, and the next start reuses the roots)."""
        for path in self.cgroups.values():
            try:
                os.rmdir(path)
            except OSError:
                pass
        if self.range_lock is not None:
            os.close(self.range_lock)
            self.range_lock = None


def scan_every() -> float:
    try:
        return max(1.0, float(os.environ.get("JRS_SCAN_EVERY", "1800")))
    except ValueError:
        return 1800.0


def _self_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _tag(execute_dir: str) -> str:
    """A name for this node's cgroups, unique per execute directory."""
    return "n" + hashlib.sha256(os.path.realpath(execute_dir).encode()).hexdigest()[:12]


def check_reachable(path: str) -> None:
    """Every directory from / down to `path` must be searchable by others."""
    path = os.path.abspath(path)
    parts = []
    p = path
    while True:
        parts.append(p)
        if p == "/":
            break
        p = os.path.dirname(p)
    for p in reversed(parts):
        st = os.stat(p)
        if not st.st_mode & stat.S_IXOTH:
            raise ConfigError(f"--execute={path}: {p} is not searchable by job identities "
                              f"(mode {stat.S_IMODE(st.st_mode):04o}); run `chmod o+x {p}` "
                              "or choose another --execute")


def make_state_dir(path: str) -> None:
    """The state directory: 0700 (made so, or tightened if it was looser)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)


def setup(execute_dir: str, mode: str = "job", job_uids: str = identity.DEFAULT_RANGE,
          root_groups: Optional[str] = None, pids_max: int = unit.DEFAULT_PIDS,
          cgroup: Optional[str] = None) -> Confinement:
    """The confinement of a node starting now (ConfigError when it cannot be had).

    A root node: per-job uids (mode "job") or same-named accounts when allowed
    (mode "account"); the range is checked against the id files and locked for
    this node; the execute directory is made 0711 and must be reachable. A
    non-root node runs every job as itself (it cannot switch identities) and
    reads outputs the same hardened way. `cgroup`: where the node's cgroups go
    (unit.prepare_root; None: below the node's own, "none": no cgroups).
    """
    if cgroup is not None and cgroup != "none" and (
            not cgroup.startswith("/") or any(p in (".", "..") for p in cgroup.split("/"))
            or any(not (c.isalnum() or c in "/._-@") for c in cgroup)):
        raise ConfigError(f"--cgroup={cgroup}: want an absolute cgroup path such as "
                          "/jrs.slice, or none")
    if os.geteuid() != 0:
        conf = Confinement.as_self(execute_dir)
        return conf
    r = identity.parse_range(job_uids)
    identity.check_range(r)
    groups = identity.DEFAULT_ROOT_GROUPS if root_groups is None else \
        tuple(g for g in root_groups.replace(",", " ").split() if g)
    policy = identity.Policy(mode, identity.UidPool(r), uid_min=identity.login_uid_min(),
                             root_groups=frozenset(groups), lookup=identity.CachedLookup(),
                             self_name="root")
    os.makedirs(execute_dir, mode=0o711, exist_ok=True)
    st = os.lstat(execute_dir)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
        raise ConfigError(f"--execute={execute_dir}: must be a directory owned by root")
    if stat.S_IMODE(st.st_mode) != 0o711:
        os.chmod(execute_dir, 0o711)
    check_reachable(execute_dir)
    tag = _tag(execute_dir)
    conf = Confinement(policy, execute_dir, unit.prepare_root(tag, cgroup), pids_max, tag)
    conf.range_lock = identity.lock_range(r)
    conf.tmp_dirs, conf.shared_dirs = unit.world_writable_dirs()  # not only /tmp & co
    return conf
