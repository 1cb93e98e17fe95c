"""`jrs submit`: expand an HTCondor submit file and run its jobs."""

from __future__ import annotations

import json
import sys

from . import unavailable


def main(args: dict) -> int:
    from ..condor import expand_file

    if args["--dry-run"]:
        out = sys.stdout
        for job in expand_file(args["FILE"], cluster=1):
            out.write(json.dumps(job.to_json(), ensure_ascii=False) + "\n")
        return 0
    raise unavailable("running jobs (`jrs submit` without --dry-run)")
