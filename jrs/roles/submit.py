"""`jrs submit`: expand an HTCondor submit file and run its jobs."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile

from . import unavailable

SPOOL_IN_MEMORY = 32 << 20


def dry_run(path: str, out=None) -> int:
    """Print one JSON object per job; print nothing at all if the file has an error.

    Output is spooled (in memory, then a temporary file) until the whole file
    has expanded, so a bad line near the end never leaves half a listing.
    """
    from ..condor import expand_file

    out = out or sys.stdout
    with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY, mode="w+", encoding="utf-8") as spool:
        dumps = json.JSONEncoder(ensure_ascii=False).encode
        write = spool.write
        for job in expand_file(path, cluster=1):
            write(dumps(job.to_json()))
            write("\n")
        spool.seek(0)
        shutil.copyfileobj(spool, out, 1 << 20)
    return 0


def main(args: dict) -> int:
    if args["--dry-run"]:
        return dry_run(args["FILE"])
    raise unavailable("running jobs (`jrs submit` without --dry-run)")
