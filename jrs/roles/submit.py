"""`jrs submit`: expand an HTCondor submit file and run its jobs (or print them)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile

from ..errors import JrsError

SPOOL_IN_MEMORY = 32 << 20


def dry_run(path: str, out=None) -> int:
    """Print one JSON object per job; print nothing at all if the file has an error.

    Output is spooled (in memory, then a temporary file) until the whole file
    has expanded, so a bad line near the end never leaves half a listing.
    """
    from ..condor import expand_lines

    out = out or sys.stdout
    notes: list = []
    with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY, mode="w+", encoding="utf-8") as spool:
        lines: list = []
        for line in expand_lines(path, cluster=1, warn=notes.append):
            lines.append(line)
            if len(lines) >= 512:
                lines.append("")
                spool.write("\n".join(lines))
                lines = []
        if lines:
            lines.append("")
            spool.write("\n".join(lines))
        spool.seek(0)
        warn_unsupported(notes)  # stderr: never in the JSON stream
        shutil.copyfileobj(spool, out, 1 << 20)
    return 0


def warn_unsupported(notes: list) -> None:
    """One `file:line: warning: <command> is not supported; <what happens instead>`
    per command, once the whole file expanded (a bad file shows only its error)."""
    for line in notes:
        print(line, file=sys.stderr, flush=True)


def checked_jobs(path: str, cluster: int, environ: dict):
    """The jobs of the file, expanded once, each checked as it comes: the first
    mistake raises SubmitError (exit 2) before anything runs. The runner spools
    what this yields, so the count, the checks and the jobs run are one expansion."""
    from ..client.transfer import check_job
    from ..condor import SubmitError, classad, expand_file

    seen_exprs: set = set()
    seen_files: set = set()
    notes: list = []
    for job in expand_file(path, cluster=cluster, environ=environ, warn=notes.append):
        for what in ("requirements", "on_exit_remove"):
            text = getattr(job, what)
            if text and text not in seen_exprs:
                try:
                    classad.parse(text)
                except classad.ClassAdError as exc:
                    raise SubmitError(f"{path}: {what}: {exc}")
                seen_exprs.add(text)
        files = (job.executable, job.iwd, job.input, tuple(job.transfer_input_files),
                 job.transfer_executable, job.should_transfer_files)
        if files not in seen_files:
            check_job(job, path)
            seen_files.add(files)
        yield job
    warn_unsupported(notes)


def check_file(path: str, environ: dict) -> int:
    """The number of jobs of a file (expanding it; for tools and tests, not the run)."""
    return sum(1 for _ in checked_jobs(path, 1, environ))


def main(args: dict) -> int:
    if args["--dry-run"]:
        return dry_run(args["FILE"])
    return run(args)


def run(args: dict) -> int:
    import asyncio

    path = args["FILE"]
    local = None
    if args["--local"]:
        from ..client.local import LocalCluster

        local = LocalCluster()  # forks its launcher now, while this process is small
    try:
        return _run(args, path, local, asyncio)
    finally:
        if local is not None:
            local.launcher.close()


def _check_spool(path: str, total: int, journal_path: str) -> None:
    """A resume reads its jobs back from the spool; one holding fewer (or more) than the
    journal's total would leave the queue waiting for jobs no line holds."""
    from ..client import spool

    try:
        held = spool.count(path)
    except OSError as exc:
        raise JrsError(f"{path}: cannot read the interrupted run's expanded jobs: "
                       f"{exc.strerror}; rerun with --fresh to start over") from None
    if held != total:
        raise JrsError(f"{path}: holds {held} jobs, but the interrupted run recorded in "
                       f"{journal_path} has {total}; rerun with --fresh to start over")


def _run(args: dict, path: str, local, asyncio) -> int:
    from ..client import journal as journal_mod
    from ..client import transfer
    from ..client.progress import Progress
    from ..client.runner import Submission
    from ..config import find_config_dir, load
    from ..wire.keys import root_key
    from . import setup_logging

    environ = dict(os.environ)
    if not os.path.isfile(path):
        raise JrsError(f"{path}: no such submit file")
    transfer.max_output_bytes(environ)  # a bad JRS_MAX_TRANSFER_OUTPUT_MB: exit 2 now
    setup_logging("submit", bool(os.environ.get("JRS_DEBUG")))
    journal_path = journal_mod.default_path(path, args["--state"])
    previous = None if args["--fresh"] else journal_mod.read(journal_path)
    digest = journal_mod.file_hash(path)
    if previous is not None and previous.hash != digest:
        raise JrsError(f"{path}: changed since the interrupted run recorded in {journal_path}; "
                       "rerun with --fresh to start over")
    if local is not None and previous is not None:
        # a local cluster is gone with its run: its running jobs died with it and run
        # again (uncounted); finished jobs stay finished, attempts and retries go on
        previous = dataclasses.replace(previous, running={})
    if previous is not None and not os.path.isfile(journal_mod.spool_path(journal_path)):
        raise JrsError(f"{journal_path}: the interrupted run's expanded jobs "
                       f"({journal_mod.spool_path(journal_path)}) are gone; rerun with --fresh "
                       "to start over")
    if previous is not None:
        _check_spool(journal_mod.spool_path(journal_path), previous.total, journal_path)
    progress = Progress(not args["--no-progress"])
    journal = journal_mod.Journal(journal_path)

    async def go() -> int:
        if local is not None:
            config = await local.start()
        else:
            config = load(find_config_dir(args["--config"]))
        try:
            sub = Submission(path, config, root_key(config.secret), journal, previous,
                             progress, environ, digest,
                             lambda cluster: checked_jobs(path, cluster, environ))
            sub.local = local is not None
            return await sub.run()
        finally:
            if local is not None:
                local.stop()

    try:
        return asyncio.run(go())
    finally:
        journal.close()
