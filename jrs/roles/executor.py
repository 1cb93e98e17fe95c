"""`jrs executor TASKFILE`: own one job by hand (the node daemon forks the same code).

It needs no crypto and no configuration: everything is in the taskfile.
"""

from __future__ import annotations

import os

from ..errors import JrsError


def main(args: dict) -> int:
    from ..node import executor, taskfile

    path = args["TASKFILE"]
    if not os.path.isfile(path):
        raise JrsError(f"{path}: no such taskfile")
    # the same process the launcher forks: a child subreaper (a job's setsid'ed,
    # double-forked daemon comes to us and goes with the job), not dumpable
    executor.prepare()
    executor.become_executor()
    try:
        result = executor.run(path)
    except executor.TaskBusy as exc:
        raise JrsError(str(exc), 1)
    except (ValueError, OSError) as exc:
        raise JrsError(f"{path}: {exc}")
    taskfile.load(path)
    if result is None or result.get("e") != "exit":
        reason = (result or {}).get("reason", "did not run")
        raise JrsError(f"{path}: {reason}", 1)
    if result.get("signal"):
        print(f"{path}: job killed by signal {result['signal']}")
        return 1
    return 0 if result.get("code") == 0 else 1
