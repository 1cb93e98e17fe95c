"""What goes to a node with a job (spec and input files) and where results land.

Input names are relative paths inside the sandbox: `transfer_input_files`
entries land by their base name (a directory with its tree; `dir/` with its
contents only), as in HTCondor.

Outputs come from a node, which is not trusted: `output_plan` (pure) decides
where each returned file may land, `check_result` and `check_output_heads`
validate what the node says, and `OutputFile` writes one file without ever
following a symlink: every directory below `iwd` is entered with O_NOFOLLOW
relative to its parent's descriptor, the data goes to a new temporary file
(O_EXCL|O_NOFOLLOW) that is renamed over the destination once complete, so a
link planted at the destination is replaced, never written through.
"""

from __future__ import annotations

import fnmatch
import os
from typing import Callable, Optional

from ..condor.errors import SubmitError
from ..wire import messages

STDIN, STDOUT, STDERR = "_condor_stdin", "_condor_stdout", "_condor_stderr"
CACHE_LIMIT = 1 << 20
MAX_OUTPUT_FILES = 100_000  # per job, as HTCondor's default limit of returned files
MAX_NAME = 4096
MAX_REASON = 2000
MAX_MISSING = 10_000
MAX_FILE_SIZE = messages.MAX_FILE_SIZE  # the wire's: one file of a `finished`


class BadResult(ValueError):
    """A node's `finished` that does not follow the protocol."""


def max_output_bytes(environ: dict) -> Optional[int]:
    """JRS_MAX_TRANSFER_OUTPUT_MB (HTCondor's MAX_TRANSFER_OUTPUT_MB): the per-job cap
    on returned bytes; unset or 0: no cap."""
    text = (environ.get("JRS_MAX_TRANSFER_OUTPUT_MB") or "").strip()
    if not text:
        return None
    try:
        mb = float(text)
    except ValueError:
        raise SubmitError(f"JRS_MAX_TRANSFER_OUTPUT_MB: {text[:40]!r} is not a number")
    return int(mb * (1 << 20)) if mb > 0 else None


def check_output_heads(files: object, max_files: int) -> list:
    """A node's file headers, checked: at most `max_files` of {name, size}."""
    if not isinstance(files, list):
        raise BadResult("files must be a list")
    if len(files) > max_files:
        raise BadResult(f"{len(files)} output files exceed the limit of {max_files}")
    out = []
    for f in files:
        if not isinstance(f, dict):
            raise BadResult("each file must be an object")
        name, size = f.get("name"), f.get("size")
        if not isinstance(name, str) or not name or len(name) > MAX_NAME or "\0" in name:
            raise BadResult(f"bad file name {str(name)[:60]!r}")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_SIZE:
            raise BadResult(f"bad size for {name[:60]!r}")
        out.append({"name": name, "size": size})
    return out


_NUM = (int, float)
_RESULT = {  # field: (types, default)
    "exit_code": ((int, type(None)), None), "signal": ((int, type(None)), None),
    "rusage": ((dict, type(None)), None), "started": ((*_NUM, type(None)), None),
    "ended": ((*_NUM, type(None)), None), "removed": ((bool,), False),
    "reason": ((str, type(None)), None), "errno": ((int, type(None)), None),
    "exec_failed": ((bool,), False), "lost": ((bool,), False),
    "missing": ((list, type(None)), None), "bytes_sent": ((int,), 0),
    "bytes_received": ((int,), 0),
}


def check_result(result: object) -> dict:
    """A node's result object, checked field by field (a clean copy: unknown fields go)."""
    if not isinstance(result, dict):
        raise BadResult("result must be an object")
    out: dict = {}
    for name, (types, default) in _RESULT.items():
        value = result.get(name, default)
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise BadResult(f"result field {name!r} has the wrong type")
        out[name] = value
    for name in ("exit_code", "signal", "errno", "bytes_sent", "bytes_received"):
        if isinstance(out[name], int) and not -2 ** 53 <= out[name] <= 2 ** 53:
            raise BadResult(f"result field {name!r} is out of range")
    if out["rusage"] is not None:
        clean = {}
        for k in ("utime", "stime"):
            v = out["rusage"].get(k, 0)
            if isinstance(v, bool) or not isinstance(v, _NUM) or not 0 <= v < 1e12:
                raise BadResult(f"rusage {k} must be a number")
            clean[k] = v
        out["rusage"] = clean
    if out["reason"] is not None:
        out["reason"] = out["reason"][:MAX_REASON]
    if out["missing"] is not None:
        if len(out["missing"]) > MAX_MISSING or \
                not all(isinstance(m, str) for m in out["missing"]):
            raise BadResult("missing must be a list of names")
        out["missing"] = [m[:200] for m in out["missing"]]
    return out


def _plain(name: str) -> bool:
    parts = name.split("/")
    return not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def output_plan(job, heads: list, protected: frozenset,
                realdir: Optional[Callable[[str], str]] = None) -> list:
    """[(head, (directory, relative path) or None)] for a result's files.

    stdout and stderr go to the job's `output`/`error`; with an explicit
    `transfer_output_files` only the named entries come back, each by its base name
    (a directory with its tree); without, only top-level files. Nothing lands on a
    path in `protected` (the submit file, the journal, an event log) and no name
    lands twice.

    `realdir` (the shell's, cached: one call per distinct directory, not per file)
    gives a directory's real path, so an iwd spelled through a symlink cannot name
    the submit file by another path. Only directories need it: below the
    destination's directory OutputFile follows no link, and a link at the name
    itself is replaced, never written through."""
    explicit = job.transfer_output_files
    bases = None
    if explicit is not None:
        bases = {os.path.basename(e.rstrip("/")) for e in explicit}
    seen: set = set()
    plan = []
    def real(path: str) -> str:
        head, tail = os.path.split(path)
        return os.path.join(realdir(head), tail) if realdir is not None else path

    guard = set(protected) | {real(p) for p in protected}
    for head in heads:
        name = head["name"]
        dest = None
        if name in (STDOUT, STDERR):
            path = job.path("output" if name == STDOUT else "error")
            if path:
                dest = (os.path.dirname(path), os.path.basename(path))
        elif _plain(name):
            first = name.split("/")[0]
            ok = "/" not in name if bases is None else first in bases
            if ok and first not in (STDOUT, STDERR, STDIN):
                dest = (job.iwd, name)
        if dest is not None:
            full = os.path.normpath(os.path.join(*dest))
            if full in guard or real(full) in guard or full in seen:
                dest = None
            else:
                seen.add(full)
        plan.append((head, dest))
    return plan


class OutputFile:
    """One returned file, written to a temporary name and renamed into place; no
    component below the destination's directory is followed if it is a symlink."""

    def __init__(self, dest: tuple) -> None:
        root, rel = dest
        parts = rel.split("/")
        self.name = parts[-1]
        self.tmp = f".{self.name[:200]}.jrs-part"
        os.makedirs(root, exist_ok=True)  # the job's own directory: the user named it
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        dfd = os.open(root, flags)
        try:
            for p in parts[:-1]:
                try:
                    os.mkdir(p, 0o777, dir_fd=dfd)
                except FileExistsError:
                    pass
                nfd = os.open(p, flags | os.O_NOFOLLOW, dir_fd=dfd)
                os.close(dfd)
                dfd = nfd
            try:
                os.unlink(self.tmp, dir_fd=dfd)  # left by a run killed mid-transfer
            except FileNotFoundError:
                pass
            self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                              | os.O_CLOEXEC, 0o666, dir_fd=dfd)
        except BaseException:
            os.close(dfd)
            raise
        self.dfd = dfd

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def commit(self) -> None:
        os.close(self.fd)
        self.fd = -1
        try:
            os.replace(self.tmp, self.name, src_dir_fd=self.dfd, dst_dir_fd=self.dfd)
        except BaseException:
            try:
                os.unlink(self.tmp, dir_fd=self.dfd)
            except FileNotFoundError:
                pass
            raise
        finally:
            os.close(self.dfd)
            self.dfd = -1

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            try:
                os.unlink(self.tmp, dir_fd=self.dfd)
            except FileNotFoundError:
                pass
        if self.dfd >= 0:
            os.close(self.dfd)
            self.dfd = -1


def shared_fs(job) -> bool:
    return job.should_transfer_files == "NO"


def executable_path(job) -> str:
    exe = job.executable or ""
    return exe if os.path.isabs(exe) else os.path.normpath(os.path.join(job.iwd, exe))


def check_job(job, where: str) -> None:
    """Refuse a job that cannot run at all, before anything starts (exit 2)."""
    if not job.executable:
        raise SubmitError(f"{where}: job {job.job_id} has no executable")
    if job.transfer_executable and not shared_fs(job):
        path = executable_path(job)
        if not os.path.isfile(path):
            raise SubmitError(f"{where}: executable {path} does not exist (with "
                              "transfer_executable = false it may name a program on the nodes)")
    if job.input and not shared_fs(job) and not os.path.isfile(job.path("input")):
        raise SubmitError(f"{where}: input file {job.path('input')} does not exist")
    for name in job.transfer_input_files:
        full = name if os.path.isabs(name) else os.path.join(job.iwd, name)
        if not os.path.exists(full):
            raise SubmitError(f"{where}: transfer_input_files: {full} does not exist")


def inputs(job) -> list:
    """[(sandbox name, local path)] for a job."""
    if shared_fs(job):
        return []
    items = []
    if job.transfer_executable:
        path = executable_path(job)
        items.append((os.path.basename(path), path))
    if job.input:
        items.append((STDIN, job.path("input")))
    for name in job.transfer_input_files:
        full = name if os.path.isabs(name) else os.path.join(job.iwd, name)
        contents_only = name.endswith("/")
        full = os.path.normpath(full)
        if os.path.isdir(full):
            base = "" if contents_only else os.path.basename(full)
            for top, dirs, files in os.walk(full):
                dirs.sort()
                for f in sorted(files):
                    p = os.path.join(top, f)
                    rel = os.path.relpath(p, full)
                    items.append((os.path.join(base, rel) if base else rel, p))
        else:
            items.append((os.path.basename(full), full))
    return items


def environment_for(job, environ: dict) -> dict:
    """The submitter's variables the job asked for with `getenv`."""
    if job.getenv:
        return dict(environ)
    if job.getenv_match:
        pats = [p.lower() for p in job.getenv_match]
        return {k: v for k, v in environ.items()
                if any(fnmatch.fnmatchcase(k.lower(), p) for p in pats)}
    return {}


def spec(job, environ: dict) -> dict:
    shared = shared_fs(job)
    if job.transfer_executable:
        exe = executable_path(job) if shared else os.path.basename(executable_path(job))
    else:
        exe = job.executable  # a program on the node: absolute, or found in PATH there
    return {
        "executable": exe, "transfer_executable": bool(job.transfer_executable) and not shared,
        "arguments": job.arguments, "environment": job.environment,
        "getenv": environment_for(job, environ), "iwd": job.iwd, "shared_fs": shared,
        "input": job.path("input") if shared else bool(job.input),
        "output": job.path("output"), "error": job.path("error"),
        "transfer_output_files": job.transfer_output_files,
        "when_to_transfer_output": job.when_to_transfer_output, "cpus": job.request_cpus,
    }
