"""What goes to a node with a job (spec and input files) and where results land.

Input names are relative paths inside the sandbox: `transfer_input_files`
entries land by their base name (a directory with its tree; `dir/` with its
contents only), as in HTCondor. Outputs are written beside the submit side's
`iwd`, to a temporary name first, renamed once complete.
"""

from __future__ import annotations

import fnmatch
import os
from typing import Optional

from ..condor.errors import SubmitError

STDIN, STDOUT, STDERR = "_condor_stdin", "_condor_stdout", "_condor_stderr"
CACHE_LIMIT = 1 << 20


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


def destination(job, name: str) -> Optional[str]:
    """Where a returned file goes on this side (None: nowhere, e.g. output unset)."""
    if name == STDOUT:
        return job.path("output")
    if name == STDERR:
        return job.path("error")
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return None
    return os.path.join(job.iwd, name)


class Receiver:
    """Writes a result's files to temporary names, then renames them all at once."""

    def __init__(self, job) -> None:
        self.job = job
        self.parts: list = []

    def open(self, head: dict):
        dest = destination(self.job, head["name"])
        if dest is None:
            return None
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        tmp = f"{dest}.jrs-part"
        self.parts.append((tmp, dest))
        return open(tmp, "wb")

    def commit(self) -> None:
        for tmp, dest in self.parts:
            os.replace(tmp, dest)

    def abort(self) -> None:
        for tmp, _ in self.parts:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
