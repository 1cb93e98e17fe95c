"""A job's sandbox on the node: safe file names, creation, environment, outputs.

Names come from the peer, so every one is checked before it touches the disk:
relative, no `..`, no empty or hidden-trick components.

Nothing a job or a peer names is opened, stat'ed or walked by path with root's
rights. A sandbox is made as `EXECUTE/KEY` (0700) and stays root's while its
input files are written (so nothing else can get in), each file and directory
created through a directory fd with O_NOFOLLOW and handed to the job's
identity at once (`fchown` on the fd); the top directory is handed over last.
Outputs are read the same way: from the sandbox's fd, one O_NOFOLLOW component
at a time, refusing anything but regular files and directories, files not
owned by the job, and files with other hard links; the bytes sent come from
the descriptor that was checked. (A symbolic-link swap, a FIFO, a link to `/`
or to a root-only file, a hard link to one: all refused, none followed.)
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from typing import Optional

from . import fsafe

STDIN, STDOUT, STDERR = "_condor_stdin", "_condor_stdout", "_condor_stderr"
RESERVED = {STDIN, STDOUT, STDERR}
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class BadName(ValueError):
    pass


def safe_name(name: object) -> str:
    """A peer-supplied relative path, checked: no absolute paths, no `..`, no NULs."""
    if not isinstance(name, str) or not name or len(name) > 4096 or "\0" in name:
        raise BadName(f"bad file name {str(name)[:60]!r}")
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise BadName(f"file name {name[:60]!r} must be relative, without '..'")
    return name


def job_environment(spec_env: dict, getenv: dict, scratch: str, job: str, cpus: int,
                    gpu_ids: list, home: Optional[str]) -> dict:
    """The job's environment: a plain base, the submitter's (getenv), the submit
    file's `environment`, then what the node must set and the job may not override."""
    env = {"PATH": DEFAULT_PATH}
    if home:
        env["HOME"] = home
    env.update({str(k): str(v) for k, v in getenv.items()})
    env.update({str(k): str(v) for k, v in spec_env.items()})
    cluster, _, process = job.partition(".")
    env.update({
        "_CONDOR_SCRATCH_DIR": scratch, "TMPDIR": scratch, "TEMP": scratch, "TMP": scratch,
        "OMP_NUM_THREADS": str(cpus), "JRS_CLUSTER": cluster, "JRS_PROCESS": process,
        "JRS_JOB_ID": job, "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpu_ids),
        "_CONDOR_JOB_IWD": scratch,
    })
    for k in [k for k in env if "\0" in k or "=" in k or not k or "\0" in env[k]]:
        del env[k]
    return env


class Box:
    """A sandbox being set up by the node: root's until `hand_over`."""

    def __init__(self, path: str, fd: int, uid: Optional[int], gid: Optional[int]) -> None:
        self.path = path
        self.fd = fd
        self.uid = uid
        self.gid = gid

    def _own(self, fd: int) -> None:
        if self.uid is not None:
            os.fchown(fd, self.uid, self.gid if self.gid is not None else self.uid)

    def open_input(self, head: dict):
        """A binary file to write input `head["name"]` into (created, owned by the job)."""
        parts = safe_name(head["name"]).split("/")
        mode = (int(head.get("mode", 0o644)) | 0o600) & 0o777
        dfd = self.fd
        opened = []
        try:
            for part in parts[:-1]:
                try:
                    os.mkdir(part, 0o755, dir_fd=dfd)
                    made = True
                except FileExistsError:
                    made = False
                dfd = os.open(part, fsafe.DIR_FLAGS, dir_fd=dfd)
                opened.append(dfd)
                if made:
                    self._own(dfd)
            fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=dfd)
        finally:
            for d in opened:
                os.close(d)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"{head['name']}: not a regular file")
            self._own(fd)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "wb")

    def hand_over(self, executable: Optional[str] = None) -> dict:
        """Make `executable` (a top-level name) executable, take the snapshot of the
        top-level files (to spot new or changed outputs), and give the sandbox to the
        job. Returns the snapshot."""
        if executable is not None:
            fd = os.open(safe_name(executable), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                         | os.O_NONBLOCK, dir_fd=self.fd)
            try:
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    os.fchmod(fd, 0o755)
            finally:
                os.close(fd)
        snap = _snapshot_fd(self.fd)
        self._own(self.fd)
        self.close()
        return snap

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        self.close()
        remove(self.path)


def check_key(key: object) -> str:
    """A task key used as one directory name: one component, no tricks."""
    if not isinstance(key, str) or not key or "/" in key or "\0" in key \
            or key in (".", "..") or len(key) > 200:
        raise BadName(f"bad task key {str(key)[:60]!r}")
    return key


def create(execute_dir: str, key: str, uid: Optional[int] = None,
           gid: Optional[int] = None) -> Box:
    """Make the sandbox `execute_dir/key` (0700, root's until Box.hand_over)."""
    check_key(key)
    top = os.open(execute_dir, fsafe.DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        os.mkdir(key, 0o700, dir_fd=top)
        fd = os.open(key, fsafe.DIR_FLAGS, dir_fd=top)
    finally:
        os.close(top)
    return Box(os.path.join(execute_dir, key), fd, uid, gid)


def snapshot(directory: str) -> dict:
    """{name: [size, mtime_ns]} of the top-level regular files of a directory."""
    fd = os.open(directory, fsafe.DIR_FLAGS)
    try:
        return _snapshot_fd(fd)
    finally:
        os.close(fd)


def _snapshot_fd(fd: int) -> dict:
    out = {}
    with os.scandir(fd) as it:
        for e in it:
            st = e.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                out[e.name] = [st.st_size, st.st_mtime_ns]
    return out


def check_output_list(names: object) -> Optional[list]:
    """transfer_output_files from a peer: None, or a list of safe relative names."""
    if names is None:
        return None
    if not isinstance(names, list) or len(names) > fsafe.MAX_FILES:
        raise BadName("transfer_output_files must be a list of names")
    return [safe_name(n.rstrip("/") if isinstance(n, str) else n) for n in names]


MAX_OUTPUT_FILES = fsafe.MAX_FILES
# the names of one result's outputs, as the `finished` message carries them (JSON-escaped:
# a non-ASCII character is \uXXXX, 6 bytes), at most this many bytes in all: that
# message is one wire frame of at most 16 MiB, and besides the names it carries up to
# 100,000 heads' other fields (~51 bytes each, 5.1 MB) and the result (its missing and
# refused lists, up to ~1.5 MB escaped). Past it a job is held like one over the file
# count (code 33, `outputs_over_limit`); 100,000 names of 83 characters fit. Without it
# a job with long names near the file limit (4,500 files 4 KB deep here) made a
# `finished` frame that could never be sent: its delivery failed again and again.
MAX_NAME_BYTES = 8 << 20


def name_bytes(name: str) -> int:
    """`name`'s length in the `finished` message (json.dumps, ensure_ascii: the wire's)."""
    if name.isascii() and name.isprintable():
        return len(name) + name.count('"') + name.count("\\")
    return len(json.dumps(name)) - 2


class Collected:
    """The outputs of a finished job, checked: what to send, what is missing or refused.

    `items` are (name, opener) pairs for wire.files.send: each opener reopens its
    file from the sandbox's fd, one O_NOFOLLOW component at a time, checks the
    descriptor (regular, owned by the job, one link, the very inode seen when
    collecting) and returns it, so the bytes sent are the ones checked."""

    def __init__(self) -> None:
        self.items: list = []
        self.heads: list = []
        self.missing: list = []
        self.refused: dict = {}
        self.over: Optional[str] = None
        self.tree: Optional[fsafe.Tree] = None
        self.name_bytes = 0  # of the names in `heads`, escaped (MAX_NAME_BYTES)

    def close(self) -> None:
        if self.tree is not None:
            self.tree.close()
            self.tree = None

    def _add(self, name: str, found: fsafe.Found) -> None:
        assert self.tree is not None
        self.name_bytes += name_bytes(name)
        if self.name_bytes > MAX_NAME_BYTES:  # (collect stops there and says so)
            raise fsafe.OverLimit(f"output names of more than {MAX_NAME_BYTES} bytes in "
                                  "all (the result must fit one 16 MiB message)")
        self.items.append((name, self.tree.opener(found)))
        self.heads.append({"name": name, "size": found.size, "mode": found.mode & 0o777})


def collect(spec: dict, transfer: bool = True, skip: frozenset = frozenset()) -> Collected:
    """The files of a finished job's sandbox to send back.

    `_condor_stdout`/`_condor_stderr` when the job has them, then (when `transfer`)
    transfer_output_files (a directory: every regular file below it, named from
    the directory's own name down) or, without a list, every new or changed
    top-level regular file except `skip`. Owner: the job's uid (ourselves on a
    non-root node)."""
    out = Collected()
    uid = spec.get("uid")
    owner = uid if isinstance(uid, int) else os.geteuid()
    try:
        out.tree = fsafe.Tree.open(str(spec["sandbox"]), owner)
    except OSError as exc:
        out.refused["."] = f"sandbox unusable: {exc.strerror or exc}"
        return out
    tree = out.tree
    budget = fsafe.Budget()
    for name, key in ((STDOUT, "stdout"), (STDERR, "stderr")):
        if spec.get(key):
            try:
                out._add(name, tree.file([name]))
            except fsafe.Refused as exc:
                if not exc.missing:
                    out.refused[name] = exc.reason
    if not transfer:
        return out
    wanted = spec.get("transfer_output_files")
    if wanted is not None:
        try:
            names = check_output_list(wanted)
        except BadName as exc:
            out.refused["transfer_output_files"] = str(exc)
            out.missing = [str(n)[:200] for n in wanted] if isinstance(wanted, list) else []
            return out
        assert names is not None
        for name in names:
            parts = name.split("/")
            try:
                found = tree.entry(parts)
                if found.is_dir:
                    for rel, f in tree.walk(parts, budget):
                        out._add("/".join([parts[-1], *rel]), f)
                else:
                    out._add(parts[-1], found)
            except fsafe.Refused as exc:
                out.missing.append(name)
                if not exc.missing:
                    out.refused[name] = exc.reason
            except fsafe.OverLimit as exc:
                out.over = str(exc)
                break
        return out
    before = spec.get("snapshot") or {}
    try:
        for entry, found in tree.top_files(budget):
            if entry in RESERVED or entry in skip:
                continue
            if before.get(entry) != [found.size, found.mtime_ns]:
                out._add(entry, found)
    except fsafe.OverLimit as exc:
        out.over = str(exc)
    return out


def small_to_collect(spec: dict, limit: int = 64) -> bool:
    """Is collecting this finished job's outputs bounded by `limit` entries, so cheap
    enough for the event loop? True in the automatic mode (no
    transfer_output_files: only the top level is looked at) with at most `limit`
    entries there. A list may name a directory of any size, and a bigger top level
    can take seconds (100,000 files): those are collected off the loop. The names
    are only counted (a listing of the sandbox, as remove_if_small does)."""
    if spec.get("transfer_output_files") is not None or not spec.get("sandbox"):
        return False
    try:
        with os.scandir(str(spec["sandbox"])) as it:
            for n, _entry in enumerate(it):
                if n >= limit:
                    return False
    except OSError:
        return False
    return True


def remove(path: str) -> None:
    """Remove a sandbox: shutil's rmtree works through directory fds and never
    follows a symbolic link (`rmtree.avoids_symlink_attacks`)."""
    shutil.rmtree(path, ignore_errors=True)


def remove_if_small(path: str, limit: int = 64) -> bool:
    """Remove a sandbox of at most `limit` plain files right away; False when it is
    bigger (or holds directories) and should be removed off the event loop."""
    try:
        with os.scandir(path) as it:
            entries = []
            for entry in it:
                if len(entries) >= limit or entry.is_dir(follow_symlinks=False):
                    return False
                entries.append(entry.path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    for name in entries:
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        return False
    return True
