"""The submitter's journal: what a killed `jrs submit` needs to resume.

An append-only record file (see `records`) beside the submit file, or under
`--state`. Records: `cluster` (id, submitter id, file hash, total) first, then
`run` (proc, attempt, node, claim) when a job starts and `end` (proc, attempt,
state, exit code, signal, node, reason) when it is final. Each record is one
write(), so a `kill -9` loses nothing already written; a machine crash may
lose the last few records, and those jobs simply run again.

The journal is removed when the run completes, so the same command run later
submits a new cluster, as condor_submit does.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Optional

from .. import records
from .jobs import FINAL, Summary


def default_path(submit_file: str, state_dir: Optional[str]) -> str:
    full = os.path.realpath(submit_file)
    if state_dir:
        digest = hashlib.sha1(full.encode()).hexdigest()[:12]
        return os.path.join(state_dir, f"{os.path.basename(full)}-{digest}.jrs-journal")
    directory, name = os.path.split(full)
    if os.access(directory, os.W_OK):
        return os.path.join(directory, f".{name}.jrs")
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    digest = hashlib.sha1(full.encode()).hexdigest()[:12]
    return os.path.join(base, "jrs", "submit", f"{name}-{digest}.jrs-journal")


def file_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@dataclass
class Previous:
    """What an interrupted run left: the cluster, final jobs, jobs that were running."""

    cluster: int
    submitter: str
    hash: str
    total: int
    final: dict = field(default_factory=dict)
    running: dict = field(default_factory=dict)  # proc -> (attempt, node, claim)
    damaged: int = 0
    submitted_upto: int = -1  # the job log has a submit event for procs up to this


def read(path: str) -> Optional[Previous]:
    try:
        recs, damaged = records.read(path)
    except FileNotFoundError:
        return None
    if not recs or recs[0].get("e") != "cluster":
        return None
    head = recs[0]
    prev = Previous(int(head["id"]), str(head["submitter"]), str(head["hash"]),
                    int(head["total"]), damaged=damaged)
    for r in recs[1:]:
        proc = r.get("proc")
        if not isinstance(proc, int):
            continue
        if r.get("e") == "run":
            prev.running[proc] = (int(r["attempt"]), str(r["node"]), r.get("claim"))
        elif r.get("e") == "end" and r.get("state") in FINAL:
            prev.running.pop(proc, None)
            prev.final[proc] = Summary(r["state"], r.get("code"), r.get("signal"),
                                       r.get("node"), r.get("reason"), r.get("error"))
        elif r.get("e") == "requeue":
            prev.running.pop(proc, None)
        elif r.get("e") == "submitted":
            prev.submitted_upto = max(prev.submitted_upto, proc)
    return prev


class Journal:
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def start(self, cluster: int, submitter: str, hash_: str, total: int) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        records.write_new(self.path, [{"e": "cluster", "id": cluster, "submitter": submitter,
                                       "hash": hash_, "total": total}])
        self.reopen()

    def reopen(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def run(self, proc: int, attempt: int, node: str, claim: str) -> None:
        records.append(self.fd, {"e": "run", "proc": proc, "attempt": attempt, "node": node,
                                 "claim": claim})

    def submitted(self, upto: int) -> None:
        """Jobs up to process `upto` have their submit event in the job log."""
        records.append(self.fd, {"e": "submitted", "proc": upto})

    def requeue(self, proc: int) -> None:
        records.append(self.fd, {"e": "requeue", "proc": proc})

    def end(self, proc: int, attempt: int, s: Summary) -> None:
        records.append(self.fd, {"e": "end", "proc": proc, "attempt": attempt,
                                 "state": s.state, "code": s.exit_code, "signal": s.signal,
                                 "node": s.node, "reason": s.reason, "error": s.error})

    def remove(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
