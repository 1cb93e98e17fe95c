"""The submitter's journal: what a killed `jrs submit` needs to resume.

An append-only record file (see `records`), mode 0600, beside the submit file,
or under `--state`. Records: `cluster` (id, submitter id, file hash, total, the
session key) first, then `run` (proc, attempt, node, claim, node address) when
a job starts, `requeue` (proc, attempt, completions, and the lost runs and
refusals that hold a job once they are not 0) when it goes back to the queue,
`remove` (ids, reason) when Ctrl-C or `jrs rm` asks for a removal (before
its kills go out: a resumed run finishes it), and `end` (proc, attempt, state,
exit code, signal, node, reason) when it is final. The session key proves to
the nodes and the master that a resumed run is the same submitter (it is never
sent; tokens derived from it are), so the journal is readable by its owner only.
The jobs themselves, expanded once from the submit file, are spooled beside it
(`spool_path`). Each record is one write(), so a `kill -9` loses nothing already
written; a machine crash may lose the last few records, and those jobs simply
run again.

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

# the records the submitter core writes (core.Record): built here, so the reader
# above and the writers stay side by side


def run_record(proc: int, attempt: int, node: str, claim: str, host: str, port: int) -> dict:
    return {"e": "run", "proc": proc, "attempt": attempt, "node": node, "claim": claim,
            "host": host, "port": port}


def submitted_record(upto: int) -> dict:
    """Jobs up to process `upto` have their submit event in the job log."""
    return {"e": "submitted", "proc": upto}


def requeue_record(proc: int, attempt: int, completions: int, lost: int = 0,
                   refused: int = 0, refused_node: int = 0) -> dict:
    """Back to the queue. The bounds that hold a job across resumes ride along once they
    are not zero: `lost` runs (MAX_LOST_RUNS), `refused` (MAX_REJECTIONS) and
    `refused_node` refusals (MAX_NODE_REJECTIONS), so a resumed run, however often it is
    resumed, keeps counting them (a node that loses every run, and a resume loop)."""
    rec = {"e": "requeue", "proc": proc, "attempt": attempt, "completions": completions}
    for name, value in (("lost", lost), ("refused", refused), ("refused_node", refused_node)):
        if value:
            rec[name] = value
    return rec


def remove_record(ids: list, reason: str) -> dict:
    """A removal asked for: `ids` are "C" (the cluster) or "C.P" (one job)."""
    return {"e": "remove", "ids": list(ids), "reason": reason}


def end_record(proc: int, attempt: int, s: Summary) -> dict:
    return {"e": "end", "proc": proc, "attempt": attempt, "state": s.state,
            "code": s.exit_code, "signal": s.signal, "node": s.node, "reason": s.reason,
            "error": s.error}


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


def spool_path(journal_path: str) -> str:
    """The expanded jobs of the run the journal records."""
    return journal_path + "-jobs"


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
    running: dict = field(default_factory=dict)  # proc -> (attempt, node, claim, host, port)
    attempts: dict = field(default_factory=dict)  # proc -> (last attempt, completions)
    key: bytes = b""  # the session key (contract 1); empty in a journal of an older build
    damaged: int = 0
    submitted_upto: int = -1  # the job log has a submit event for procs up to this
    removes: list = field(default_factory=list)  # [(ids, reason)] removals asked for
    # proc -> (lost runs, refusals, refusals for the node's own trouble) so far; a journal
    # of an older build has none (they count from 0 again, as they did)
    counts: dict = field(default_factory=dict)


def read(path: str) -> Optional[Previous]:
    try:
        recs, damaged = records.read(path)
    except FileNotFoundError:
        return None
    return parse(recs, damaged)


def parse(recs: list, damaged: int = 0) -> Optional[Previous]:
    """What the records of a journal say (pure: the simulation feeds it its disk's)."""
    if not recs or recs[0].get("e") != "cluster":
        return None
    head = recs[0]
    try:
        key = bytes.fromhex(str(head.get("key") or ""))
    except ValueError:
        key = b""
    prev = Previous(int(head["id"]), str(head["submitter"]), str(head["hash"]),
                    int(head["total"]), key=key, damaged=damaged)
    for r in recs[1:]:
        if r.get("e") == "remove":
            ids = r.get("ids")
            if isinstance(ids, list) and all(isinstance(i, str) for i in ids):
                prev.removes.append((ids, str(r.get("reason") or "removed")))
            continue
        proc = r.get("proc")
        if not isinstance(proc, int):
            continue
        if r.get("e") == "run":
            attempt = int(r["attempt"])
            port = r.get("port")
            prev.running[proc] = (attempt, str(r["node"]), r.get("claim"), r.get("host"),
                                  port if isinstance(port, int) else None)
            done = prev.attempts.get(proc, (0, 0))[1]
            prev.attempts[proc] = (max(attempt, prev.attempts.get(proc, (0, 0))[0]), done)
        elif r.get("e") == "end" and r.get("state") in FINAL:
            prev.running.pop(proc, None)
            prev.attempts.pop(proc, None)
            prev.counts.pop(proc, None)
            prev.final[proc] = Summary(r["state"], r.get("code"), r.get("signal"),
                                       r.get("node"), r.get("reason"), r.get("error"))
        elif r.get("e") == "requeue":
            prev.running.pop(proc, None)
            last, done = prev.attempts.get(proc, (0, 0))
            attempt, completions = r.get("attempt"), r.get("completions")
            prev.attempts[proc] = (max(last, attempt if isinstance(attempt, int) else 0),
                                   completions if isinstance(completions, int) else done)
            before = prev.counts.get(proc, (0, 0, 0))
            now = tuple(max(b, v) if isinstance(v, int) and not isinstance(v, bool) else b
                        for b, v in zip(before, (r.get("lost"), r.get("refused"),
                                                 r.get("refused_node"))))
            if any(now):
                prev.counts[proc] = now
        elif r.get("e") == "submitted":
            prev.submitted_upto = max(prev.submitted_upto, proc)
    return prev


class Journal:
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def start(self, cluster: int, submitter: str, hash_: str, total: int, key: bytes) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        records.write_new(self.path, [{"e": "cluster", "id": cluster, "submitter": submitter,
                                       "hash": hash_, "total": total, "key": key.hex()}])
        self.reopen()

    def reopen(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        os.fchmod(self.fd, 0o600)  # a journal of an older build may be 0644

    def append(self, record: dict) -> None:
        """One record built by the submitter core (`core.Record`)."""
        records.append(self.fd, record)

    def remove(self) -> None:
        self.close()
        for path in (self.path, spool_path(self.path)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
