"""The queue of one cluster, and what a job's result means (sans-IO).

Jobs are materialized from the streaming expander as slots need them (no more
than `max_idle` waiting at once), so a million-job cluster is never in memory.
A finished job keeps only a small summary. The retry policy is HTCondor's:
`on_exit_remove` when given (false puts the job back in the queue), else
`max_retries` reruns a job whose exit is not `success_exit_code`. A job whose
node was lost goes back to the queue without counting as an attempt.
"""

from __future__ import annotations

from collections import deque
from typing import Iterator, Optional

from ..condor import classad
from ..plain import dataclass

IDLE, RUNNING, DONE, FAILED, REMOVED, HELD = "idle", "running", "done", "failed", \
    "removed", "held"
FINAL = (DONE, FAILED, REMOVED, HELD)
DEFAULT_WINDOW = 1000


@dataclass
class Summary:
    """What stays of a job once it is final."""

    state: str
    exit_code: Optional[int] = None
    signal: Optional[int] = None
    node: Optional[str] = None
    reason: Optional[str] = None
    error: Optional[str] = None


class Rec:
    """A job that has been materialized and is not final yet."""

    __slots__ = ("announced", "attempt", "claim", "completions", "job", "key", "lost_runs",
                 "node", "node_rejections", "proc", "rejections", "state")

    def __init__(self, job) -> None:
        self.job = job
        self.proc: int = job.process
        self.state = IDLE
        self.attempt = 0
        self.completions = 0
        self.claim: Optional[str] = None
        self.node: Optional[str] = None
        self.announced = -1  # the attempt whose execute event is in the job log
        self.rejections = 0  # nodes that refused to start it (held after MAX_REJECTIONS)
        self.node_rejections = 0  # ... for their own trouble (cause "node"), counted apart
        self.lost_runs = 0  # runs that ended without an end of the job's own (MAX_LOST_RUNS)
        self.key = request_key(job)  # asked for on every demand update: computed once


def request_key(job) -> str:
    """Jobs with the same key can reuse each other's claims."""
    return f"{job.request_cpus}/{job.request_memory or 0}/{job.request_gpus}/" \
           f"{job.requirements or ''}"


def resumed_queue(jobs: Iterator, total: int, prev=None) -> Queue:
    """The queue of a run: fresh when `prev` is None, else resuming what the journal of
    an interrupted run recorded (a `journal.Previous`): its final jobs stay final,
    attempts and completions keep counting `max_retries` (and no attempt number is
    reused), lost runs and refusals keep counting toward the bounds that hold a job.
    The one place the real runner and the simulation's submitter build it, so a resume
    cannot carry one of these and forget another in only one of them."""
    if prev is None:
        return Queue(jobs, total)
    return Queue(jobs, total, skip=prev.final, restore=prev.attempts, counts=prev.counts)


class Queue:
    def __init__(self, jobs: Iterator, total: int, skip: Optional[dict] = None,
                 window: Optional[int] = None, restore: Optional[dict] = None,
                 counts: Optional[dict] = None) -> None:
        """`skip`: proc -> Summary of jobs already final (resume); `restore`: proc ->
        (last attempt, completions) of jobs that ran before, so a resumed run keeps
        counting `max_retries` and never reuses an attempt number; `counts`: proc ->
        (lost runs, refusals, refusals for the node's own trouble), so it keeps counting
        toward the bounds that hold a job too."""
        self._source = iter(jobs)
        self._restore = dict(restore or {})
        self._counts = dict(counts or {})
        self.total = total
        self.final: dict[int, Summary] = dict(skip or {})
        self.live: dict[int, Rec] = {}
        self.idle: deque = deque()  # read it; change it only through _idle_add/_idle_remove
        self._idle_n: dict = {}  # key -> idle recs with it: a demand costs O(keys), not O(idle)
        self.window = window
        self._exhausted = False
        self.counts = {s: 0 for s in (IDLE, RUNNING, DONE, FAILED, REMOVED, HELD)}
        for s in self.final.values():
            self.counts[s.state] += 1
        self.counts[IDLE] = total - len(self.final)
        self._on_exit_remove: dict = {}

    # ------------------------------------------------------------ materialize

    def fill(self) -> list:
        """Materialize jobs until the idle window is full; return the new ones."""
        new = []
        limit = self.window or DEFAULT_WINDOW
        while not self._exhausted and len(self.idle) < limit:
            try:
                job = next(self._source)
            except StopIteration:
                self._exhausted = True
                break
            if self.window is None and job.max_idle:
                self.window = limit = max(1, min(job.max_idle, job.max_materialize or
                                                 job.max_idle))
            if job.process in self.final or job.process in self.live:
                continue
            rec = self._rec(job)
            self.live[rec.proc] = rec
            self._idle_add(rec)
            new.append(rec)
        return new

    def _rec(self, job) -> Rec:
        rec = Rec(job)
        before = self._restore.pop(rec.proc, None)
        if before is not None:
            rec.attempt, rec.completions = before
        counts = self._counts.pop(rec.proc, None)
        if counts is not None:
            rec.lost_runs, rec.rejections, rec.node_rejections = counts
        return rec

    def adopt(self, job, attempt: int, node: str, claim: Optional[str]) -> Rec:
        """A job that was running when the submitter was killed (resume)."""
        rec = self.live.get(job.process) or self._rec(job)
        self.live[rec.proc] = rec
        if rec in self.idle:
            self._idle_remove(rec)
        rec.state, rec.attempt, rec.node, rec.claim = RUNNING, attempt, node, claim
        self.counts[IDLE] -= 1
        self.counts[RUNNING] += 1
        return rec

    @property
    def finished(self) -> bool:
        return len(self.final) >= self.total

    def _idle_add(self, rec: Rec, left: bool = False) -> None:
        if left:
            self.idle.appendleft(rec)
        else:
            self.idle.append(rec)
        self._idle_n[rec.key] = self._idle_n.get(rec.key, 0) + 1

    def _idle_remove(self, rec: Rec) -> None:
        self.idle.remove(rec)
        n = self._idle_n[rec.key] - 1
        if n:
            self._idle_n[rec.key] = n
        else:
            del self._idle_n[rec.key]

    def take(self, rec: Rec) -> None:
        """`rec` leaves the idle queue to be started (a claim it fits without a key)."""
        self._idle_remove(rec)

    def idle_by_key(self) -> dict:
        """key -> [idle count, the first idle job with that key], keys in the order their
        first job waits. Called at every demand update (each job start of a big cluster):
        the counts are kept as jobs come and go, and the scan for each key's first job
        stops once every key was seen (one step for a one-key cluster), so a 1,000-job
        idle window costs O(keys), not O(window), per demand."""
        out: dict = {}
        missing = len(self._idle_n)
        for rec in self.idle:
            if not missing:
                break
            k = rec.key
            if k not in out:
                out[k] = [self._idle_n[k], rec.job]
                missing -= 1
        if not self._exhausted and self.idle:
            # not yet materialized jobs wait too; count them against the last key
            last = self.idle[-1].job
            out[request_key(last)][0] += self.total - len(self.final) - len(self.live)
        return out

    def next_for(self, key: str) -> Optional[Rec]:
        if key not in self._idle_n:
            return None
        for rec in self.idle:
            if rec.key == key:
                self._idle_remove(rec)
                return rec
        return None

    # ------------------------------------------------------------ transitions

    def start(self, rec: Rec, node: str, claim: str) -> None:
        rec.state = RUNNING
        rec.attempt += 1
        rec.node, rec.claim = node, claim
        self.counts[IDLE] -= 1
        self.counts[RUNNING] += 1

    def requeue(self, rec: Rec) -> None:
        """Back to idle: a lost node (no completion counted) or a retry (`outcome`
        counted it)."""
        if rec.state == RUNNING:
            self.counts[RUNNING] -= 1
            self.counts[IDLE] += 1
        rec.state, rec.claim = IDLE, None  # the attempt number stays: the next one grows
        self._idle_add(rec, left=True)

    def finish(self, rec: Rec, summary: Summary) -> None:
        if rec.state == RUNNING:
            self.counts[RUNNING] -= 1
        elif rec.state == IDLE:
            self.counts[IDLE] -= 1
            if rec in self.idle:
                self._idle_remove(rec)
        self.counts[summary.state] += 1
        rec.state = summary.state
        self.final[rec.proc] = summary
        self.live.pop(rec.proc, None)

    def remove_procs(self, procs: set, reason: str) -> int:
        """`jrs rm C.P` of jobs not materialized yet: final now, skipped when reached."""
        n = 0
        for p in sorted(procs):
            if 0 <= p < self.total and p not in self.live and p not in self.final:
                self.final[p] = Summary(REMOVED, reason=reason)
                self.counts[IDLE] -= 1
                self.counts[REMOVED] += 1
                n += 1
        return n

    def remove_unmaterialized(self, reason: str) -> int:
        """Ctrl-C or rm of a whole cluster: jobs never materialized are removed too."""
        n = 0
        while not self._exhausted:
            try:
                job = next(self._source)
            except StopIteration:
                break
            if job.process in self.final or job.process in self.live:
                continue
            self.final[job.process] = Summary(REMOVED, reason=reason)
            self.counts[IDLE] -= 1
            self.counts[REMOVED] += 1
            n += 1
        self._exhausted = True
        return n

    # ------------------------------------------------------------ policy

    def outcome(self, rec: Rec, result: dict) -> str:
        """DONE, FAILED, HELD or IDLE (run it again) for a job's result."""
        if result.get("exec_failed") or result.get("missing"):
            return HELD
        job = rec.job
        sig = result.get("signal")
        code = result.get("exit_code")
        rec.completions += 1
        success_code = job.success_exit_code if job.success_exit_code is not None else 0
        success = sig is None and code == success_code
        if job.on_exit_remove:
            tree = self._on_exit_remove.get(job.on_exit_remove)
            if tree is None:
                tree = self._on_exit_remove[job.on_exit_remove] = classad.parse(
                    job.on_exit_remove)
            ad = {"exitcode": code, "exitbysignal": sig is not None,
                  "exitsignal": sig if sig is not None else classad.UNDEFINED,
                  "numjobcompletions": rec.completions, "jobstatus": 4,
                  "requestcpus": job.request_cpus}
            ad.update({k.lower(): classad.literal(v) for k, v in (job.attributes or {}).items()})
            value = classad.evaluate(tree, ad, {})
            if value is False:
                return IDLE
            return DONE if success else FAILED
        if not success and job.max_retries is not None and rec.completions <= job.max_retries:
            return IDLE
        return DONE if success else FAILED
