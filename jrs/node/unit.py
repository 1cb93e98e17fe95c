"""A job's containment unit: what "kill the job" and "nothing of it survives" mean.

The unit is the job's cgroup where the node has one (v2, or v1's pids
hierarchy), plus its per-job uid when it has one, else its process group and
the descendants found through /proc. Killing a job (rm, a lost node, a time
limit) is TERM to everything in the unit, a grace period, then KILL until
nothing is left. A `setsid` child is in the same cgroup and has the same uid,
so it goes too.

A per-job uid is reaped at the end of every job by a child of the executor
that takes on that uid alone (no groups) and:
- sends SIGKILL to every process it may signal (`kill(-1)`: those of the uid;
  no /proc walk needed, and it works without cgroups);
- removes what the uid owns in the world-writable directories found at node start
  (/tmp, /var/tmp, /dev/shm, ... and any directly below / /var /run; the sticky
  world-writable directories below them; only set-id files in the non-sticky ones,
  shared places), as that uid: nothing is followed or removed with root's rights;
- removes its SysV IPC objects.
Only after that (and after the sandbox is gone) is the uid handed out again.

The cgroups are made under `<hierarchy>/<base>/jrs/<node>/<leaf>` (prepare_root:
`base` the node's own cgroup or a configured one), with the controllers enabled
down to them, so that memory and time limits can be written into them later.
"""

from __future__ import annotations

import _signal
import errno
import os
import time
from typing import Optional

CGROUP = "/sys/fs/cgroup"
TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue")
# where a job's uid may leave files, looked for at node start (world_writable_dirs)
STANDARD_TMP = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/dev/mqueue",
                "/var/crash")
WORLD_WRITABLE_PARENTS = ("/", "/var", "/run")
MAX_SHARED = 256
DEFAULT_PIDS = 4096


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        out = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return out.decode(errors="replace")
            out += chunk
    except OSError:
        return out.decode(errors="replace")
    finally:
        os.close(fd)


def hierarchies() -> dict:
    """{"v2": mount or None, "pids": v1 pids mount or None} of this machine."""
    if os.path.exists(os.path.join(CGROUP, "cgroup.controllers")):
        return {"v2": CGROUP, "pids": None}
    v2 = os.path.join(CGROUP, "unified")
    pids = os.path.join(CGROUP, "pids")
    return {"v2": v2 if os.path.exists(os.path.join(v2, "cgroup.procs")) else None,
            "pids": pids if os.path.exists(os.path.join(pids, "cgroup.procs")) else None}


# what jobs' cgroups get so that limits can go on them later (memory, and hugetlb pages
# with it; pids now): enabled down to the node's subtree where the hierarchy has them
CONTROLLERS = ("pids", "memory", "hugetlb")


def own_cgroups(text: Optional[str] = None) -> dict:
    """{"v2": path, "pids": path} of the cgroups this process is in (/proc/self/cgroup:
    `0::/path` is the unified hierarchy, `N:...pids...:/path` v1's pids one)."""
    if text is None:
        text = _read("/proc/self/cgroup")
    out = {}
    for line in text.splitlines():
        num, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if not path.startswith("/"):
            continue
        if num == "0" and names == "":
            out["v2"] = path
        elif "pids" in names.split(","):
            out["pids"] = path
    return out


def _under(mount: str, rel: str) -> str:
    parts = [p for p in rel.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"{rel}: not a plain cgroup path")
    return os.path.join(mount, *parts)


def prepare_root(name: str, base: Optional[str] = None) -> dict:
    """At node start: make the node's cgroup subtree `<base>/jrs/<name>` in each
    hierarchy we can write; return {"v2": dir, "pids": dir} (a missing key: not
    available). `base` is the cgroup the node was started in (its own: systemd's
    `Delegate=yes` service cgroup, a container's, or the root), or the one the
    operator configured (`--cgroup=/jrs.slice`, made when missing), so the node
    manages only what is delegated to it. `base` "none": no cgroups.

    On the unified hierarchy the controllers of CONTROLLERS it has are enabled down
    to the subtree, so limits can be written into every job's cgroup later. The
    kernel lets a cgroup other than the root give controllers to its children only
    when it holds no process itself, so a node started in its own (non-root)
    cgroup first moves itself into a leaf beside the jobs, `<base>/jrs/<name>.daemon`
    (systemd's advice for delegated units; the launcher and executors it starts
    are there too). A level that still holds other processes (a login session's
    cgroup) keeps its controllers to itself: the jobs get cgroups without them,
    which still contain and kill them (v1's pids hierarchy, or RLIMIT_NPROC, then
    limits their processes). v1 hierarchies have no such rule: the jobs' cgroups go
    below the node's own there."""
    if base == "none":
        return {}
    out = {}
    own = own_cgroups()
    found = hierarchies()
    for kind, mount in found.items():
        if mount is None:
            continue
        rel = base if base is not None else own.get(kind, "/")
        daemon_leaf = f"/jrs/{name}.daemon"
        if base is None and rel.endswith(daemon_leaf):  # restarted from inside it
            rel = rel[:-len(daemon_leaf)] or "/"
        try:
            top = _under(mount, rel)
            os.makedirs(top, 0o755, exist_ok=True)
            path = os.path.join(top, "jrs", name)
            os.makedirs(path, 0o755, exist_ok=True)
            if kind == "v2":
                levels = [top, os.path.join(top, "jrs")]
                if base is not None:  # a configured place: enable from the root down
                    levels = _ancestors(mount, top) + levels
                if rel != "/" and str(os.getpid()) in _read(
                        os.path.join(top, "cgroup.procs")).split():
                    leaf = path + ".daemon"
                    os.makedirs(leaf, 0o755, exist_ok=True)
                    _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
                for level in [*levels, path]:
                    _enable(level, CONTROLLERS)
        except (OSError, ValueError):
            continue
        out[kind] = path
    return out


def _ancestors(mount: str, top: str) -> list:
    """The cgroups from the hierarchy's root down to `top`'s parent."""
    out = []
    p = os.path.dirname(top)
    while len(p) >= len(mount):
        out.append(p)
        if p == mount:
            break
        p = os.path.dirname(p)
    return out[::-1]


def _enable(path: str, controllers: tuple) -> None:
    have = _read(os.path.join(path, "cgroup.controllers")).split()
    on = _read(os.path.join(path, "cgroup.subtree_control")).split()
    want = " ".join("+" + c for c in controllers if c in have and c not in on)
    if want:
        try:
            _write(os.path.join(path, "cgroup.subtree_control"), want)
        except OSError:
            pass


def leaf_name(key: str) -> str:
    """A cgroup directory name for a task key (only [A-Za-z0-9._-], short)."""
    ok = all(c.isascii() and (c.isalnum() or c in "._-") for c in key)
    if ok and key not in (".", "..") and 0 < len(key) <= 200:
        return key
    import hashlib

    return "h" + hashlib.sha256(key.encode(errors="replace")).hexdigest()[:32]


def world_writable_dirs(standard: tuple = STANDARD_TMP,
                        parents: tuple = WORLD_WRITABLE_PARENTS, limit: int = 4096) -> tuple:
    """(temporary, shared): the world-writable directories a job's uid could leave
    files in (a setuid copy of a shell, say), found once at node start.

    temporary: the standard temporary directories and any world-writable directory one
    level below / /var /run (everything of the uid goes from them); shared: the
    world-writable directories without the sticky bit one level below those (someone's
    deliberate shared place: only the uid's set-id files go; the sticky ones are
    temporary directories, as /tmp/.X11-unix). Only lstat, as root: no link is
    followed (/var/lock -> /run/lock is found as /run/lock), nothing is opened but
    directory listings, at most `limit` entries of each. Each directory once, by
    (device, inode)."""
    import stat

    temporary: list = []
    shared: list = []
    seen: set = set()

    def fresh(st: os.stat_result) -> bool:
        if not (stat.S_ISDIR(st.st_mode) and st.st_mode & 0o002) or \
                (st.st_dev, st.st_ino) in seen:
            return False
        seen.add((st.st_dev, st.st_ino))
        return True

    def listing(parent: str) -> list:
        try:
            with os.scandir(parent) as it:
                entries = [e for _, e in zip(range(limit), it)]
        except OSError:
            return []
        out = []
        for e in sorted(entries, key=lambda e: e.name):
            try:
                if e.is_dir(follow_symlinks=False):
                    out.append((e.path, e.stat(follow_symlinks=False)))
            except OSError:
                pass
        return out

    for path in standard:
        try:
            if fresh(os.lstat(path)):
                temporary.append(path)
        except OSError:
            pass
    for parent in parents:
        temporary += [path for path, st in listing(parent) if fresh(st)]
    for top in list(temporary):
        for path, st in listing(top):
            if fresh(st):
                (temporary if st.st_mode & 0o1000 else shared).append(path)
    return tuple(temporary), tuple(shared[:MAX_SHARED])  # (each job's spec carries them)


# file systems the scan for world-writable directories does not enter: the kernel's
# own, and network ones (slow, and not where a job of this node leaves files behind
# for a later job of this node: its nosuid mounts are typical)
SKIP_FS = frozenset({"proc", "sysfs", "cgroup", "cgroup2", "devpts", "debugfs", "tracefs",
                     "securityfs", "pstore", "bpf", "configfs", "fusectl", "autofs",
                     "binfmt_misc", "hugetlbfs", "rpc_pipefs", "nfsd", "efivarfs", "nfs",
                     "nfs4", "cifs", "smb3", "smbfs", "ceph", "lustre", "gpfs", "glusterfs",
                     "9p", "afs", "beegfs", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse"})
SCAN_ENTRIES = 300_000  # directory entries the scan looks at, at most
SCAN_PER_DIR = 10_000  # ... of one directory (a shared place filled with files by a job)
SCAN_CPU = 10  # seconds of CPU (RLIMIT_CPU), and SCAN_WALL of wall time
SCAN_WALL = 120.0
SCAN_BYTES = 16 << 20  # of the scan's answer read, at most (MAX_DEEP are kept)
MAX_DEEP = 1024  # world-writable directories kept from the scan

# The scan, run as an unprivileged identity (python3 -I -S -c): argv = skip paths
# (one a line), first and last uid of the job range, entries, per dir, cpu. It
# prints "T|S path\0" for each world-writable directory (T: sticky), breadth first.
_SCAN = r"""
import collections, os, resource, stat, sys
cpu = int(sys.argv[6])
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
try:
    os.nice(10)
except OSError:
    pass
skip = set(p for p in sys.argv[1].split("\n") if p)
first, last, budget, per_dir = (int(a) for a in sys.argv[2:6])
out = sys.stdout.buffer
queue = collections.deque([b"/"])
while queue and budget > 0:
    top = queue.popleft()
    try:
        it = os.scandir(top)
    except OSError:
        continue
    with it:
        n = 0
        for e in it:
            n += 1
            budget -= 1
            if n > per_dir or budget <= 0:
                break
            try:
                if not e.is_dir(follow_symlinks=False):
                    continue
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            path = e.path
            if os.fsdecode(path) in skip or first <= st.st_uid <= last:
                continue  # another file system kind, or a job's own (cleaned with it)
            if st.st_mode & 0o002:
                out.write((b"T " if st.st_mode & 0o1000 else b"S ") + path + b"\0")
            queue.append(path)
out.flush()
"""


def _skip_paths(mounts: Optional[str] = None) -> list:
    """Mount points the scan does not enter (SKIP_FS), and /proc, /sys."""
    if mounts is None:
        mounts = _read("/proc/self/mounts")
    out = ["/proc", "/sys"]
    for line in mounts.splitlines():
        f = line.split()
        if len(f) > 2 and (f[2] in SKIP_FS or f[2].startswith("fuse.")) and f[1] != "/":
            out.append(f[1].replace("\\040", " "))
    return out


def scan_args(job_uids: tuple = (0, -1)) -> list:
    """The scan's interpreter arguments (after the interpreter's own path)."""
    return ["-I", "-S", "-c", _SCAN, "\n".join(_skip_paths()), str(job_uids[0]),
            str(job_uids[1]), str(SCAN_ENTRIES), str(SCAN_PER_DIR), str(SCAN_CPU)]


def scan_pythons(python: Optional[str] = None) -> list:
    """Interpreters to run the scan with: ours, else the system's (ours may live where
    nobody may run it, below /root)."""
    import sys

    return list(dict.fromkeys([python or sys.executable, "/usr/bin/python3"]))


def parse_scan(data: bytes) -> tuple:
    """(temporary, shared) from the scan's output (bounded: MAX_DEEP in all)."""
    temporary: list = []
    shared: list = []
    for rec in data[:SCAN_BYTES].split(b"\0"):
        kind, _, path = rec.partition(b" ")
        if kind in (b"T", b"S") and path.startswith(b"/") and len(temporary) + len(
                shared) < MAX_DEEP:
            (temporary if kind == b"T" else shared).append(os.fsdecode(path))
    return tuple(temporary), tuple(shared)


def scan_world_writable(uid: int, gid: int, job_uids: tuple = (0, -1),
                        python: Optional[str] = None) -> tuple:
    """(temporary, shared): the world-writable directories anywhere on this machine's
    local file systems that an unprivileged identity can reach, found by a child that
    is `uid`/`gid` alone (nobody: no groups), never with root's rights: it can only
    see what a job could, follows no link, skips directories of the job uids (a
    job's own go with it), and is bounded (SCAN_ENTRIES, SCAN_PER_DIR, CPU, wall
    time: what it found by then counts). Sticky ones are temporary directories (all
    of a uid's files go), the others shared places (only its set-id files go). (The
    node daemon runs the same scan as an asyncio subprocess: daemon._rescan.)"""
    import subprocess

    for exe in scan_pythons(python):
        try:
            r = subprocess.run([exe, *scan_args(job_uids)], user=uid, group=gid,
                               extra_groups=[], cwd="/", stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               timeout=SCAN_WALL, env={})
            return parse_scan(r.stdout)
        except subprocess.TimeoutExpired as exc:
            return parse_scan(exc.stdout or b"")
        except OSError:
            continue
    return (), ()


def still_world_writable(paths: list) -> tuple:
    """(temporary, shared): those of `paths` that are still world-writable directories
    reached through no link (as root: opened O_NOFOLLOW at every component, fstat
    only), sticky ones temporary. At most MAX_DEEP."""
    temporary: list = []
    shared: list = []
    for p in paths[:MAX_DEEP]:
        fd = _open_dir_nofollow(p)
        if fd is None:
            continue
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            continue
        finally:
            os.close(fd)
        if mode & 0o002:
            (temporary if mode & 0o1000 else shared).append(p)
    return tuple(temporary), tuple(shared)


def merge_dirs(found: tuple, deep: tuple) -> tuple:
    """(temporary, shared) of world_writable_dirs and scan_world_writable together:
    each path once (a temporary one never also shared), shared ones at most
    MAX_SHARED."""
    temporary = list(found[0])
    seen = set(temporary)
    for p in deep[0]:
        if p not in seen:
            seen.add(p)
            temporary.append(p)
    shared = []
    for p in (*found[1], *deep[1]):
        if p not in seen:
            seen.add(p)
            shared.append(p)
    return tuple(temporary), tuple(shared[:MAX_SHARED])


def _paths(value: object, default: tuple) -> tuple:
    """A spec's list of absolute paths, or `default` (taskfiles from before it)."""
    if isinstance(value, list) and all(isinstance(p, str) and p.startswith("/")
                                       for p in value):
        return tuple(value)
    return default


class Unit:
    """The containment unit of one job, rebuilt from its spec wherever needed."""

    def __init__(self, cgroups: dict, leaf: str, uid: Optional[int], gid: Optional[int],
                 per_job: bool, pids_max: int) -> None:
        self.roots = {k: v for k, v in cgroups.items() if v}
        self.leaf = leaf
        self.dirs = {k: os.path.join(v, leaf) for k, v in self.roots.items()}
        self.reused = False  # the cgroups are a reused executor's: kept after the job
        self.uid = uid
        self.gid = gid
        self.per_job = per_job
        self.pids_max = pids_max
        self.pgid: Optional[int] = None
        self.tmp_dirs = TMP_DIRS  # where its per-job uid's files are looked for
        self.shared_dirs: tuple = ()  # ... and its set-id files (world_writable_dirs)
        # True once the executor made the cgroups the job's child joins before it takes
        # the uid: then every process of the uid is in them (the uid cannot write any
        # cgroup.procs to leave), and the cgroup alone can kill them all
        self.contained = False
        # the executor is a child subreaper (executor.become_executor): every process the
        # job leaves is our descendant, and orphans come to us, not to init
        self.subreaper = False

    @classmethod
    def from_spec(cls, spec: dict, key: str = "", leaf: Optional[str] = None) -> Unit:
        """`leaf`: the cgroup the executor recorded (a reused executor's own), else the
        job's (the spec's)."""
        cg = spec.get("cgroup") or {}
        leaf = leaf_name(str(leaf or spec.get("cgroup_leaf") or key or "job"))
        uid = spec.get("uid")
        u = cls(cg if isinstance(cg, dict) else {}, leaf,
                uid if isinstance(uid, int) else None,
                spec.get("gid") if isinstance(spec.get("gid"), int) else None,
                bool(spec.get("per_job_uid")) and isinstance(uid, int),
                int(spec.get("pids_max") or DEFAULT_PIDS))
        u.tmp_dirs = _paths(spec.get("tmp_dirs"), TMP_DIRS)
        u.shared_dirs = _paths(spec.get("shared_dirs"), ())
        return u

    # ------------------------------------------------------------- setting up

    def reuse(self, leaf: str) -> None:
        """Run in a reused executor's own cgroups, `leaf` (kept from job to job: no
        mkdir and rmdir per job), instead of the job's."""
        self.leaf = leaf
        self.dirs = {k: os.path.join(v, leaf) for k, v in self.roots.items()}
        self.reused = True

    def create(self) -> None:
        """Make the job's cgroups (before the fork); drop those we cannot make. A
        reused executor's cgroups are made by its first job; every later one first
        makes sure they are empty (the last job's processes all gone: kill_all at
        its end waited for that), else the executor takes new ones (`leaf` says
        which: the executor records it for the daemon)."""
        if self.reused and any(p in _made for p in self.dirs.values()) and not all(
                self._empty(p, k) or self._kill_cgroup(p, k) for k, p in self.dirs.items()):
            self.reuse(f"{self.leaf.split('_')[0]}_{os.urandom(4).hex()}")
        for kind, path in list(self.dirs.items()):
            try:
                if path not in _made:
                    try:
                        os.mkdir(path, 0o755)
                    except FileExistsError:  # left by a crash: empty it, reuse it
                        self._kill_cgroup(path, kind)
                    if self.reused:
                        _made[path] = None
                limit = os.path.join(path, "pids.max")
                if _made.get(path) != self.pids_max and os.path.exists(limit):
                    _write(limit, str(self.pids_max))
                    if self.reused:
                        _made[path] = self.pids_max
            except OSError:
                del self.dirs[kind]
        self.contained = bool(self.dirs)

    @staticmethod
    def _empty(path: str, kind: str) -> bool:
        """No process in the cgroup (v2: cgroup.events says so; v1: cgroup.procs)."""
        if kind == "v2":
            return "populated 0" in _read(os.path.join(path, "cgroup.events"))
        return not _read(os.path.join(path, "cgroup.procs")).split()

    @property
    def pids_limited(self) -> bool:
        return any(os.path.exists(os.path.join(p, "pids.max")) for p in self.dirs.values())

    def join_self(self) -> None:
        """In the forked child, before the identity switch: enter the cgroups."""
        me = str(os.getpid())
        for path in self.dirs.values():
            _write(os.path.join(path, "cgroup.procs"), me)

    # ------------------------------------------------------------- killing

    def signal(self, sig: int) -> None:
        """`sig` to everything in the unit (best effort, never raises)."""
        for kind, path in self.dirs.items():
            if sig == _signal.SIGKILL and kind == "v2" and self._cgroup_kill(path):
                continue
            for pid in self._procs(path):
                _kill(pid, sig)
        if self.per_job and self.uid is not None and not self.contained:
            self._as_uid(sig, once=True)
        elif not self.dirs and self.subreaper:
            for pid in tree(os.getpid()):
                _kill(pid, sig)
        elif not self.dirs and self.pgid:
            kids = descendants(self.pgid)  # before the group goes: its orphans move to init
            try:
                os.killpg(self.pgid, sig)
            except OSError:
                pass
            for pid in kids:
                _kill(pid, sig)

    def kill_all(self) -> bool:
        """KILL until nothing of the unit is left; True when that was reached."""
        clean = True
        for kind, path in self.dirs.items():
            clean = self._kill_cgroup(path, kind) and clean
        if not self.dirs and self.pgid and self.per_job:  # a first cut: reap() does the rest
            try:
                os.killpg(self.pgid, _signal.SIGKILL)
            except OSError:
                pass
        if not self.dirs and self.subreaper and not self.per_job:
            return _kill_descendants()
        if not self.dirs and self.pgid and not self.per_job:
            for _ in range(100):
                left = descendants(self.pgid)
                try:
                    os.killpg(self.pgid, _signal.SIGKILL)
                except OSError:
                    pass
                if not left:
                    break
                for pid in left:
                    _kill(pid, _signal.SIGKILL)
                time.sleep(0.001)
        return clean

    def reap(self, clean_files: bool = True, since: float = 0.0) -> dict:
        """The job is over: kill everything of it, then (per-job uid) remove its
        files in the shared temporary directories and its IPC objects, as that
        uid; remove the cgroups. {"clean": bool}. `since`: when the
        job started (a temporary directory not modified since is not listed)."""
        clean = self.kill_all()
        if self.per_job and self.uid is not None and not (
                clean and self.contained and not self.needs_uid_visit(since)):
            ok, _ = self._as_uid(_signal.SIGKILL, once=False, clean_files=clean_files,
                                 since=since)
            clean = clean and ok
        if not (self.reused and clean):  # a reused executor's stay for its next job
            for path in self.dirs.values():
                _rmdir(path)
                _made.pop(path, None)
        return {"clean": clean}

    def needs_uid_visit(self, since: float, roots: Optional[tuple] = None) -> bool:
        """Must a child become the uid to clean up after the job? Only when a temporary
        directory (or a world-writable one of any name below it) gained or lost an
        entry since the job started, or /proc/sysvipc lists an object of the uid. Root
        only stats the directories here (and lists them, lstat only): nothing the job
        named is opened or followed. `since` 0: always."""
        if since <= 0 or self.uid is None:
            return True
        if roots is None:  # those found at node start (world_writable_dirs)
            roots = self.tmp_dirs + self.shared_dirs
        for r in roots:
            st = _root_stat(r)  # a link put in its place: not followed, skipped
            if st is None:
                continue
            if _after(st, since):
                return True
            found = _sticky_mtimes(r, st)
            if found is None or any(_after_ns(m, since) for _, m in found):
                return True
        return bool(find_ipc(self.uid))

    def _cgroup_kill(self, path: str) -> bool:
        try:
            _write(os.path.join(path, "cgroup.kill"), "1")
            return True
        except OSError:
            return False

    @staticmethod
    def _procs(path: str) -> list:
        return [int(p) for p in _read(os.path.join(path, "cgroup.procs")).split()
                if p.isdigit()]

    def _kill_cgroup(self, path: str, kind: str) -> bool:
        """KILL every process of a cgroup until it is empty (bounded: 5 s)."""
        deadline = time.monotonic() + 5.0
        while True:
            events = _read(os.path.join(path, "cgroup.events")) if kind == "v2" else ""
            if "populated 0" in events:
                return True
            procs = self._procs(path)
            if not procs and "populated 1" not in events:
                return True
            if kind != "v2" or not self._cgroup_kill(path):
                for pid in procs:
                    _kill(pid, _signal.SIGKILL)
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)

    def _as_uid(self, sig: int, once: bool, clean_files: bool = False,
                since: float = 0.0) -> tuple:
        """Fork a child that becomes the per-job uid and sends `sig` to every
        process of it (with `once` False: SIGKILL, then the clean-up). (ok, 0).
        The child is not dumpable (it came from root), so no process of the uid can
        trace it; one that signals or stops it first only makes us try again. Its
        exit status is its report (no pipe: one wake-up less per job)."""
        uid, gid = self.uid, self.gid if self.gid is not None else self.uid
        assert uid is not None and gid is not None
        for _attempt in range(3):
            try:
                pid = os.fork()
            except OSError:
                return False, 0
            if pid == 0:
                code = 3
                try:
                    for s in (_signal.SIGTERM, _signal.SIGALRM, _signal.SIGINT, _signal.SIGHUP):
                        _signal.signal(s, _signal.SIG_DFL)
                    ipc = [] if once else find_ipc(uid)
                    if ipc or not once:  # modules may be unreadable once we are the job
                        import shutil  # noqa: F401  (the launcher has it already)
                    if ipc:
                        import ctypes  # noqa: F401
                    os.setgroups([])
                    os.setresgid(gid, gid, gid)
                    os.setresuid(uid, uid, uid)
                    if once:
                        try:
                            os.kill(-1, sig)
                        except OSError:
                            pass
                        code = 0
                    else:
                        ok = _kill_uid()
                        if ok and clean_files:
                            remove_owned(uid, roots=self.tmp_dirs, since=since,
                                         shared=self.shared_dirs)
                            remove_ipc(ipc)
                        code = 0 if ok else 2
                except BaseException:
                    code = 3
                finally:
                    os._exit(code)
            while True:
                try:
                    _, status = os.waitpid(pid, os.WUNTRACED)
                except InterruptedError:
                    continue
                except ChildProcessError:
                    status = 0
                    break
                if os.WIFSTOPPED(status):  # a process of the uid stopped it: root ends it
                    _kill(pid, _signal.SIGKILL)
                    continue
                break
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) in (0, 2):
                return os.WEXITSTATUS(status) == 0, 0
            # killed by what it fights (a process of the uid got to it first): again
        return False, 0


# the cgroups this (reused executor) process made for its jobs -> pids.max written
_made: dict = {}


def _rmdir(path: str) -> None:
    for _ in range(200):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return
            time.sleep(0.005)


def remove_made() -> None:
    """A reused executor is leaving: remove the cgroups it kept for its jobs."""
    for path in list(_made):
        _rmdir(path)
        _made.pop(path, None)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def _kill_uid() -> bool:
    """As the per-job uid: SIGKILL every process we may signal, that is every one
    of the uid. One call is enough: the kernel signals them all under the task
    list lock, so none can fork in between, and a fork that was under way when
    its parent got the signal is aborted. (kill(-1) reports success whenever any
    other process exists, EPERM or not: its result says nothing more.)"""
    try:
        os.kill(-1, _signal.SIGKILL)
    except ProcessLookupError:
        pass
    except OSError:
        return False
    return True


def _after(st: os.stat_result, since: float) -> bool:
    """Was this directory modified at or after `since`? Timestamps come from the
    kernel's coarse clock (up to a tick behind time.time()): 50 ms of slack, or 2 s on
    a file system whose timestamps have 10 ms steps or coarser."""
    slack = 2.0 if st.st_mtime_ns % 10_000_000 == 0 else 0.05
    return st.st_mtime_ns >= (since - slack) * 1e9


def _after_ns(mtime_ns: int, since: float) -> bool:
    slack = 2.0 if mtime_ns % 10_000_000 == 0 else 0.05
    return mtime_ns >= (since - slack) * 1e9


def _changed(path: str, since: float) -> bool:
    try:
        return _after(os.lstat(path), since)
    except OSError:
        return False


_sticky_cache: dict = {}
_root_ids: dict = {}  # root -> (st_dev, st_ino) of the directory reached through no link


def _root_stat(root: str) -> Optional[os.stat_result]:
    """The stat of directory `root` as reached through no link at any component, or
    None. The walk (_open_dir_nofollow: an open per component) is done once per
    executor; after that an lstat that finds the very directory it found (device and
    inode) stands for it: the same directory, so the same mtime. Anything else (gone,
    a link, another directory) takes the walk again. (Reached through a link to that
    same directory, it is checked where the walk would skip it: a visit more, never
    one less.)"""
    import stat

    known = _root_ids.get(root)
    if known is not None:
        try:
            st = os.lstat(root)
            if (st.st_dev, st.st_ino) == known and stat.S_ISDIR(st.st_mode):
                return st
        except OSError:
            pass
    fd = _open_dir_nofollow(root)
    if fd is None:
        _root_ids.pop(root, None)
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    _root_ids[root] = (st.st_dev, st.st_ino)
    return st


_DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir_nofollow(path: str, dir_fd: Optional[int] = None) -> Optional[int]:
    """A descriptor of directory `path` reached through no link at any component (a
    job may put one in place of a directory whose parent it can write), else None.
    `dir_fd`: `path` is one name relative to it."""
    if dir_fd is not None:
        try:
            return os.open(path, _DIR_NOFOLLOW, dir_fd=dir_fd)
        except OSError:
            return None
    if not path.startswith("/"):
        return None
    try:
        fd = os.open("/", _DIR_NOFOLLOW)
    except OSError:
        return None
    for part in [p for p in path.split("/") if p]:
        try:
            nxt = os.open(part, _DIR_NOFOLLOW, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = nxt
    return fd


def _sticky_in(root: str, st: os.stat_result, fd: Optional[int] = None) -> list:
    """The paths of _sticky_mtimes (a root that changed under us: none)."""
    return [p for p, _ in _sticky_mtimes(root, st, fd) or ()]


def _sticky_mtimes(root: str, st: os.stat_result, fd: Optional[int] = None
                   ) -> Optional[list]:
    """The world-writable directories below `root` (any name, up to 8 levels, not
    through links: each opened O_NOFOLLOW at every component, `root` as the
    descriptor `fd` when given, entries lstat'ed only, as root, like
    world_writable_dirs at node start), not modified since `st` was taken. Cached:
    valid while `root` and every directory found keep their mtime (a new one below
    changes its parent's). [(path, mtime_ns)] (the mtimes as just checked), or None
    when `root` was opened again for the listing and is no longer the directory `st`
    describes (replaced meanwhile: count it as changed)."""
    import stat

    seen = _sticky_cache.get(root)
    if seen is not None and seen[0] == (st.st_ino, st.st_mtime_ns):
        try:
            if all(os.lstat(p).st_mtime_ns == m for p, m in seen[1]):
                return seen[1]
        except OSError:
            pass
    if fd is None:  # the listing's descriptor: the root reached through no link again
        fd = _open_dir_nofollow(root)
        if fd is None:
            return None
        try:
            again = os.fstat(fd)
            if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
                return None
            return _sticky_mtimes(root, st, fd)
        finally:
            os.close(fd)
    found: list = []
    stack = [(root, 0)]
    while stack and len(found) < 4096:
        top, depth = stack.pop()
        # (opened again from / one component at a time: at most two descriptors open)
        dfd = _open_dir_nofollow(top) if top != root or fd is None else os.dup(fd)
        if dfd is None:
            continue
        try:
            with os.scandir(dfd) as it:
                entries = [e for _, e in zip(range(100_000), it)]
            for e in entries:
                try:  # the listing's file type first: no lstat for what is no directory
                    if depth >= 8 or not e.is_dir(follow_symlinks=False):
                        continue
                    est = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(est.st_mode) and est.st_mode & 0o002:
                    path = os.path.join(top, e.name)
                    found.append((path, est.st_mtime_ns))
                    stack.append((path, depth + 1))
        except OSError:
            continue
        finally:
            os.close(dfd)
    _sticky_cache[root] = ((st.st_ino, st.st_mtime_ns), found)
    return found


# sticky world-writable directories systems make in /tmp: checked by name when /tmp
# itself was not modified during the job (a job cannot make a new one unnoticed)
KNOWN_STICKY = (".X11-unix", ".ICE-unix", ".XIM-unix", ".font-unix", ".Test-unix")


def remove_owned(uid: int, roots: tuple = TMP_DIRS, budget: int = 100_000,
                 since: float = 0.0, shared: tuple = ()) -> int:
    """As `uid`: remove what it owns in `roots` and in the sticky world-writable
    directories below them (temporary directories like /tmp/.X11-unix); n removed.
    A plain 0777 directory below them is someone's deliberate shared place (a
    shared-FS job's output directory): what the job wrote there stays, except its
    setuid and setgid files (a later job of another uid could run them as this one).

    A directory whose mtime is older than `since` (less a second, for coarse file
    system clocks) gained no entry during the job, so it is not listed: a job
    cannot set a directory's mtime back (only its owner can choose the time).
    `shared`: shared places found at node start, looked into (for set-id files) the
    same way when they changed.
    """
    import stat

    def rmtree(path: str) -> None:
        import shutil  # imported before the identity switch

        try:
            shutil.rmtree(path)
        except OSError:  # a directory the job made unreadable: it is ours, open it up
            for top, dirs, _files in os.walk(path):
                for d in dirs:
                    try:
                        os.chmod(os.path.join(top, d), 0o700, follow_symlinks=False)
                    except (OSError, NotImplementedError):
                        pass
            for top, dirs, _files in os.walk(path):  # now readable: the next level too
                for d in dirs:
                    try:
                        os.chmod(os.path.join(top, d), 0o700)
                    except OSError:
                        pass
            shutil.rmtree(path, ignore_errors=True)

    def changed(path: str) -> bool:
        try:
            return os.stat(path).st_mtime >= since - 1.0
        except OSError:
            return False

    removed = 0
    stack = []
    for r in roots:
        # listed even when unchanged: a world-writable directory of any name below it
        # (an admin's 1777 /tmp/scratch) may have changed; only changed ones are entered
        stack.append((r, 0))
    only_ids = {p for p in shared if changed(p)}  # shared places: set-id files only
    stack.extend((p, 1) for p in sorted(only_ids))
    while stack and budget > 0:
        top, depth = stack.pop()
        only_setid = top in only_ids
        try:
            with os.scandir(top) as it:
                entries = list(it)
        except OSError:
            continue
        for e in entries:
            budget -= 1
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_uid == uid and (not only_setid or (
                    stat.S_ISREG(st.st_mode) and st.st_mode & 0o6000)):
                try:
                    if stat.S_ISDIR(st.st_mode):
                        rmtree(e.path)
                    else:
                        os.unlink(e.path)
                    removed += 1
                except OSError:
                    pass
            elif stat.S_ISDIR(st.st_mode) and depth < 8 and (
                    st.st_uid == uid or (st.st_mode & 0o002 and st.st_mtime >= since - 1.0)):
                # (a directory of the uid here is in a shared place: its set-id files go;
                # its owner may set its mtime back, so it is always looked into)
                if only_setid or not st.st_mode & 0o1000 or st.st_uid == uid:
                    only_ids.add(e.path)
                stack.append((e.path, depth + 1))
    return removed


_IPC = (("/proc/sysvipc/shm", "shmctl", 1, (7, 9)), ("/proc/sysvipc/msg", "msgctl", 1, (7, 9)),
        ("/proc/sysvipc/sem", "semctl", 1, (4, 6)))


def find_ipc(uid: int) -> list:
    """[(call, id)] of the SysV IPC objects `uid` owns or created (/proc/sysvipc)."""
    found = []
    for path, call, id_col, (uid_col, cuid_col) in _IPC:
        for line in _read(path).splitlines()[1:]:
            f = line.split()
            try:
                if int(f[uid_col]) == uid or int(f[cuid_col]) == uid:
                    found.append((call, int(f[id_col])))
            except (IndexError, ValueError):
                continue
    return found


def remove_ipc(found: list) -> int:
    """As their owner: remove the IPC objects `find_ipc` listed; n removed."""
    if not found:
        return 0
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    n = 0
    for call, ident in found:
        fn = getattr(libc, call)
        rc = fn(ident, 0, 0) if call == "semctl" else fn(ident, 0, None)  # IPC_RMID
        n += rc == 0
    return n


def _children_of(pid: int) -> list:
    """The children of `pid` (every thread's), from /proc (CONFIG_PROC_CHILDREN)."""
    out = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        out.extend(int(p) for p in _read(f"/proc/{pid}/task/{tid}/children").split())
    return out


def tree(pid: int) -> list:
    """Every descendant of `pid`, through the kernel's children lists (no /proc walk)."""
    out, frontier = [], [pid]
    while frontier and len(out) < 100_000:
        kids = [k for p in frontier for k in _children_of(p)]
        out.extend(kids)
        frontier = kids
    return out


def _kill_descendants() -> bool:
    """As a child subreaper whose job has ended: KILL every descendant, reaping as
    we go. A killed process's children come to us, so repeating until we have no
    children left reaches the whole tree, setsid'ed and double-forked ones too."""
    deadline = time.monotonic() + 5.0
    while True:
        kids = _children_of(os.getpid())
        if not kids:
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                pass
            return True
        for pid in tree(os.getpid()):
            _kill(pid, _signal.SIGKILL)
        for pid in kids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        if time.monotonic() > deadline:
            return False


def process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat (R, S, D, T stopped, Z, ...); "" if gone."""
    data = _read(f"/proc/{pid}/stat")
    fields = data[data.rfind(")") + 2:].split()
    return fields[0] if fields else ""


def descendants(pid: int) -> list:
    """Every live descendant of `pid` (through /proc/*/stat ppid links)."""
    parent = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        data = _read(f"/proc/{name}/stat")
        fields = data[data.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[1].isdigit():
            parent[int(name)] = int(fields[1])
    out, frontier = [], {pid}
    while frontier:
        kids = {p for p, pp in parent.items() if pp in frontier and p not in out}
        out.extend(kids)
        frontier = kids
    return out
