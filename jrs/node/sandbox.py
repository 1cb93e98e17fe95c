"""A job's sandbox on the node: safe file names, identity, environment, outputs.

Names come from the peer, so every one is checked before it touches the disk:
relative, no `..`, no empty or hidden-trick components.
"""

from __future__ import annotations

import os
import pwd
import shutil
import time
from typing import Optional

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


IDENTITY_TTL = 30.0  # seconds an account lookup is reused: a new account counts soon
_identities: dict = {}


def identity(user: str, allow_root: bool) -> Optional[tuple]:
    """(uid, gid, groups, name) to run a job as, or None to run as ourselves.

    A root node runs jobs as the submitting user's account when one of that
    name exists here, else as `nobody`; uid 0 only with --allow-root-jobs.
    Lookups (the passwd and group databases, maybe over NSS) are reused for
    IDENTITY_TTL seconds: a node asks once per job.
    """
    if os.geteuid() != 0:
        return None
    if not isinstance(user, str):  # from a peer: no cache key, and no such account
        return _lookup(user, allow_root)
    now = time.monotonic()
    hit = _identities.get((user, allow_root))
    if hit is not None and now - hit[0] < IDENTITY_TTL:
        return hit[1]
    found = _lookup(user, allow_root)
    if len(_identities) > 1000:
        _identities.clear()
    _identities[(user, allow_root)] = (now, found)
    return found


def _lookup(user: str, allow_root: bool) -> Optional[tuple]:
    try:
        pw = pwd.getpwnam(user)
    except (KeyError, TypeError, ValueError):
        pw = None
    if pw is not None and pw.pw_uid == 0 and not allow_root:
        pw = None
    if pw is None:
        pw = pwd.getpwnam("nobody")
    if pw.pw_uid == 0:
        return None
    try:
        groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
    except OSError:
        groups = [pw.pw_gid]
    return pw.pw_uid, pw.pw_gid, groups, pw.pw_name


def chown_tree(path: str, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for top, dirs, files in os.walk(path):
        for n in dirs + files:
            os.lchown(os.path.join(top, n), uid, gid)


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


def snapshot(directory: str) -> dict:
    """{name: [size, mtime_ns]} of the top-level regular files (to spot new or changed)."""
    out = {}
    with os.scandir(directory) as it:
        for e in it:
            if e.is_file(follow_symlinks=False):
                st = e.stat(follow_symlinks=False)
                out[e.name] = [st.st_size, st.st_mtime_ns]
    return out


def outputs(directory: str, wanted: Optional[list], before: dict,
            skip: set) -> tuple[list, list]:
    """([(name, path)] to send back, [missing names]) for a finished job.

    `wanted` is transfer_output_files (None: every new or changed top-level file).
    """
    found, missing = [], []
    if wanted is not None:
        for name in wanted:
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                found.append((os.path.basename(name.rstrip("/")), path))
            elif os.path.isdir(path):
                for top, _, files in os.walk(path):
                    for f in sorted(files):
                        full = os.path.join(top, f)
                        found.append((os.path.relpath(full, os.path.dirname(path)), full))
            else:
                missing.append(name)
        return found, missing
    for name, stamp in sorted(snapshot(directory).items()):
        if name in RESERVED or name in skip:
            continue
        if before.get(name) != stamp:
            found.append((name, os.path.join(directory, name)))
    return found, missing


def remove(path: str) -> None:
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
