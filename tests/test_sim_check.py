"""Each check of the simulation's checker fires, on exactly what it guards (issue 12).

The checker (tests/sim/check.py, plus the overcommit and exception checks of
tests/sim/world.py and the wire-schema check of tests/sim/net.py) is what makes a
seed scan mean anything: a check that cannot fire passes every seed. Here each one is
fed a trace that breaks exactly its invariant, built by hand on a real `World` that
never ran (its journals, executions and the facts the simulation records, in the
shapes the real shells write them: jrs/client/journal.py builds the records), or, for
the quiet-state checks, a real cluster run to its end with one thing left behind.
Each case asserts that the check's own message fires and nothing else does, and, as
its control, that the same trace without the break passes clean; so a check that
stopped firing, or one that fires on a right trace, fails here. Direct traces, not
seeds: each case runs in milliseconds and breaks one invariant, where a seed breaks
whatever a defect happens to reach.

The table of where each failure message is shown firing is `FIRES` below; a test holds
it to the checker's source, so a check added without a test that makes it fire fails
here. A case of this file is named by its CASES key; "reach" names a switch of
tests/sim/bugs.py (a core defect put back) in tests/test_sim_reach.py CHECKS, whose seed
scan must find that check's own message; "regression" a finding of
tests/test_sim_regressions.py REACH, pinned seeds that fail with it.

Every invariant can be broken by a trace that is not self-contradictory (each case is a
history the simulation could record). Two guard the simulation's own shell rather than
a core: the head record and the cluster id are written by tests/sim/submitter.py
(`_make_core`), so no core defect reaches them.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
from typing import Callable, Optional

import pytest

from jrs.client import journal as J
from jrs.client.jobs import Summary
from tests.sim import check, world
from tests.sim.clock import Proc
from tests.sim.master import MasterProc
from tests.sim.net import Network
from tests.sim.shapes import SHAPES

N1, N2 = "n1:7082", "n2:7082"

# A distinctive piece of each failure message of the checker (as in its source, with
# "{}" for each value) -> the tests that show it firing: ("case", a key of CASES),
# ("test", a test of this file), ("reach", a switch of tests/test_sim_reach.py CHECKS),
# ("regression", a switch of tests/test_sim_regressions.py REACH), ("sim", a test of
# tests/test_sim.py).
FIRES = {
    # tests/sim/world.py
    "overcommitted: {} cpus of jobs": [("reach", "drop-frees-busy-claim")],
    "exception inside the simulation": [("test", "test_an_exception_inside_the_simulation_"
                                                 "is_a_failure")],
    # tests/sim/net.py
    "a message the wire schema refuses": [("test", "test_a_message_the_wire_schema_refuses_"
                                                   "is_a_failure")],
    # tests/sim/check.py
    "the Pool books {} cpus on": [("reach", "pool-overbooks"),
                                  ("test", "test_the_pool_checks_fire_on_a_claim_past_a_"
                                           "node_s_slots")],
    "Pool.check(): ": [("reach", "pool-index-stale"), ("reach", "demand-skips-all"),
                       ("test", "test_the_pool_checks_fire_on_a_claim_past_a_node_s_slots")],
    "lost though it had a report of it": [
        ("regression", "stall-blames-peers"),
        ("test", "test_a_node_declared_lost_while_heard_within_the_node_timeout_is_a_failure")],
    "liveness: submit": [("sim", "test_the_checker_sees_a_submit_that_never_ends"),
                         ("test", "test_liveness_fires_on_a_submit_that_has_not_ended")],
    "the journal never had its head record": [("case", "head")],
    "the journal changed cluster ids": [("case", "cluster-ids")],
    "not a job of the cluster": [("case", "foreign-proc")],
    "final records (want exactly one)": [("reach", "finals-forgotten"), ("case", "no-final"),
                                         ("case", "two-finals")],
    "records after its final one": [("case", "after-final")],
    "(attempts must grow)": [("case", "attempts-grow")],
    "an execution for unknown submitter": [("case", "unknown-submitter")],
    "not a job of cluster {}": [("case", "foreign-job")],
    "executed twice": [("case", "executed-twice")],
    "without a run record in the journal": [("case", "no-run-record")],
    "but the journal's run record of it names": [("case", "other-node")],
    "before the journal recorded its run": [("case", "recorded-after"),
                                            ("case", "recorded-same-instant")],
    "removed though nobody removed it": [("case", "removed-unasked")],
    "held: {}": [("case", "held"), ("regression", "refusals-blame-job"),
                 ("regression", "any-start-ends-rest"),
                 ("sim", "test_the_checker_sees_held_jobs")],
    "and the job was run again": [
        ("case", "run-again"), ("reach", "abandon-reruns-at-once"),
        ("test", "test_a_rerun_after_a_success_is_excused_only_when_the_submitter_could_"
                 "not_know")],
    "times after runs that ended on their own": [("case", "retried-too-often"),
                                                 ("reach", "retry-once-more")],
    "the job ran twice": [("case", "ran-twice"), ("case", "ran-twice-kill-late")],
    "was killed at": [("case", "killed-unasked-lost"), ("case", "killed-unasked-revoked"),
                      ("case", "killed-unasked-early")],
    "but no execution of that attempt ran to such an end": [
        ("case", "no-such-end"), ("regression", "revoked-run-is-exit")],
    "with code {}, signal {}": [("case", "state-vs-code")],
    "retries; max_retries=": [("case", "failed-early")],
    "quiet: the Pool still holds claims": [("test", "test_quiet_fires_on_a_claim_left_in_"
                                                    "the_pool")],
    "still holds claims: ": [("reach", "drop-ignored-idle"),
                             ("test", "test_quiet_fires_on_a_claim_left_in_a_node_book")],
    "still runs {}": [("test", "test_quiet_fires_on_a_job_left_running")],
    "fairness: in [": [("reach", "shares-unweighted"),
                       ("test", "test_fairness_fires_on_a_user_short_of_its_share_and_on_"
                                "no_window_to_judge")],
    "no 60 s window with both users backlogged": [
        ("test", "test_fairness_fires_on_a_user_short_of_its_share_and_on_no_window_to_"
                 "judge")],
}


class Trace:
    """One submit's history, written by hand into a real `World` that never ran.

    `World(seed, shape)` builds the specs (one submitter, `total` jobs) and the empty
    record lists the shells fill during a run; this writes into them what a run would
    have: journal records at their times (built by jrs/client/journal.py, as the core
    writes them), executions as the hosts report them, and the facts of
    `check._unknowable` (results reaching the submitter, losses, revocations)."""

    def __init__(self, total: int = 1, max_retries: Optional[int] = 0,
                 head: bool = True) -> None:
        shape = dataclasses.replace(SHAPES["small"], faults=(), max_retries=(max_retries,),
                                    submitters=(("alice", total, total, 0, 0.0),))
        self.w = world.World(1, shape)
        self.spec = self.w.specs[0]
        self.sid = self.spec.sid
        self.journal = self.w.journals[self.sid]
        if head:  # as tests/sim/submitter.py `_make_core` writes it
            self.record(0.0, {"e": "cluster", "id": 1, "submitter": self.sid, "hash": "sim",
                              "total": total, "key": "00" * 32})

    @staticmethod
    def job(p: int) -> str:
        return f"1.{p}"

    @staticmethod
    def claim(p: int, attempt: int) -> str:
        return f"claim-{p}-{attempt}"

    def record(self, t: float, rec: dict) -> None:
        self.journal.append((t, rec))

    def run(self, t: float, p: int, attempt: int, node: str = N1) -> None:
        host, port = node.split(":")
        self.record(t, J.run_record(p, attempt, node, self.claim(p, attempt), host, int(port)))

    def requeue(self, t: float, p: int, attempt: int, completions: int, lost: int = 0) -> None:
        self.record(t, J.requeue_record(p, attempt, completions, lost=lost))

    def end(self, t: float, p: int, attempt: int, state: str = "done", code: Optional[int] = 0,
            signal: Optional[int] = None, node: str = N1, reason: Optional[str] = None) -> None:
        self.record(t, J.end_record(p, attempt, Summary(state, code, signal, node, reason)))

    def execute(self, p: int, attempt: int, start: float, end: float, how: str = "completed",
                code: Optional[int] = 0, signal: Optional[int] = None, node: str = N1,
                sid: Optional[str] = None, job: Optional[str] = None) -> world.Execution:
        e = world.Execution(sid or self.sid, job or self.job(p), attempt, node, 1, start,
                            end, how, code, signal)
        self.w.execs.append(e)
        return e

    def result(self, p: int, attempt: int) -> None:
        """The run's `finished` reaches the submitter now, after the records so far."""
        self.w.results.setdefault((self.sid, self.job(p), attempt), len(self.journal))

    def ran(self, t: float, p: int, attempt: int = 1, code: int = 0, node: str = N1,
            state: str = "done") -> None:
        """One run from its record to its end: sent at t, executed from t+0.1 to t+1,
        its result in, the job final at t+1.1."""
        self.run(t, p, attempt, node)
        self.execute(p, attempt, t + 0.1, t + 1.0, code=code, node=node)
        self.result(p, attempt)
        self.end(t + 1.1, p, attempt, state, code, node=node)

    def failures(self) -> list:
        check.final(self.w)
        return list(self.w.failures)


CASES: dict = {}  # name -> (trace builder(broken) -> Trace, the patterns that must fire)


def case(name: str, *patterns: str) -> Callable:
    """Register a trace builder under `name`: built with broken=False it must pass clean,
    with broken=True fire exactly `patterns` (one regex per failure)."""
    def register(fn: Callable[[bool], Trace]) -> Callable[[bool], Trace]:
        CASES[name] = (fn, patterns)
        return fn
    return register


# ------------------------------------------------------------------ the journal

@case("head", r"alice1: the journal never had its head record$",
      # without a head the cluster id is unknown (0), so its jobs are nobody's
      r"alice1: executed 1\.0, not a job of cluster 0$")
def _head(broken: bool) -> Trace:
    t = Trace(head=not broken)
    t.ran(1.0, 0)
    return t


@case("cluster-ids", r"alice1: the journal changed cluster ids: \[1, 2\]$")
def _cluster_ids(broken: bool) -> Trace:
    t = Trace()
    t.ran(1.0, 0)
    if broken:  # a resumed submit that took a new cluster id
        t.record(3.0, {"e": "cluster", "id": 2, "submitter": t.sid, "hash": "sim",
                       "total": 1, "key": "00" * 32})
    return t


@case("foreign-proc", r"alice1: journal records for job 1, not a job of the cluster$")
def _foreign_proc(broken: bool) -> Trace:
    t = Trace(total=1)
    t.ran(1.0, 0)
    if broken:
        t.requeue(2.5, 1, 1, 0)
    return t


@case("no-final", r"alice1: job 1\.1 has 0 final records \(want exactly one\): \[\]$")
def _no_final(broken: bool) -> Trace:
    t = Trace(total=2)
    t.ran(1.0, 0)
    t.run(1.5, 1, 1)
    t.execute(1, 1, 1.6, 2.5)
    t.result(1, 1)
    if not broken:
        t.end(2.6, 1, 1)
    return t


@case("two-finals", r"alice1: job 1\.0 has 2 final records \(want exactly one\)")
def _two_finals(broken: bool) -> Trace:
    t = Trace()
    t.ran(1.0, 0)
    if broken:  # a resumed submit that forgot the job had ended (finals-forgotten)
        t.end(3.0, 0, 1)
    return t


@case("after-final", r"alice1: job 1\.0: records after its final one: ")
def _after_final(broken: bool) -> Trace:
    t = Trace()
    t.ran(1.0, 0)
    if broken:
        t.requeue(3.0, 0, 1, 1)
    return t


@case("attempts-grow", r"alice1: job 1\.0 ran attempt 1 after attempt 1 \(attempts must grow\)$")
def _attempts_grow(broken: bool) -> Trace:
    """A run lost before it started, sent again, then the submit removed: the journal
    alone breaks it (no execution), so no other check is involved."""
    t = Trace()
    t.w.interrupted.add(t.spec.name)
    t.run(1.0, 0, 1)
    t.requeue(1.5, 0, 1, 0, lost=1)
    again = 1 if broken else 2  # a resumed queue that restarted its attempts
    t.run(2.0, 0, again, N2)
    t.end(3.0, 0, again, "removed", None, node=N2, reason="removed by Ctrl-C")
    return t


# ------------------------------------------------------------------ the executions

@case("unknown-submitter", r"an execution for unknown submitter f{24}$")
def _unknown_submitter(broken: bool) -> Trace:
    t = Trace()
    t.ran(1.0, 0)
    if broken:
        t.execute(0, 1, 1.2, 1.8, sid="f" * 24)
    return t


@case("foreign-job", r"alice1: executed 2\.0, not a job of cluster 1$")
def _foreign_job(broken: bool) -> Trace:
    t = Trace()
    t.ran(1.0, 0)
    if broken:
        t.execute(0, 1, 1.2, 1.8, job="2.0")
    return t


@case("executed-twice", r"alice1: 1\.0 attempt 1 executed twice$")
def _executed_twice(broken: bool) -> Trace:
    t = Trace()
    t.ran(1.0, 0)
    if broken:  # a second executor of the same taskfile, alongside the first
        t.execute(0, 1, 1.3, 1.9)
    return t


@case("no-run-record",
      r"alice1: 1\.0 attempt 2 executed on n1:7082 without a run record in the journal$")
def _no_run_record(broken: bool) -> Trace:
    t = Trace()
    t.ran(1.0, 0)
    if broken:
        t.execute(0, 2, 1.5, 1.9, how="lost", code=None)
    return t


@case("other-node", r"alice1: 1\.0 attempt 1 executed on n2:7082, but the journal's run "
                    r"record of it names \['n1:7082'\]$")
def _other_node(broken: bool) -> Trace:
    t = Trace()
    t.run(1.0, 0, 1, N1)
    t.execute(0, 1, 1.1, 2.0, node=N2 if broken else N1)
    t.result(0, 1)
    t.end(2.1, 0, 1)
    return t


def _recorded_at(when: float) -> Callable[[bool], Trace]:
    def build(broken: bool) -> Trace:
        t = Trace()
        t.run(when if broken else 1.0, 0, 1)
        t.execute(0, 1, 1.1, 2.0)
        t.result(0, 1)
        t.end(2.1, 0, 1)
        return t
    return build


# "recorded first" is an order: the run record is written before the run starts
case("recorded-after", r"alice1: 1\.0 attempt 1 started on n1:7082 at t=1\.100, before the "
                       r"journal recorded its run \(t=1\.200\)$")(_recorded_at(1.2))
case("recorded-same-instant", r"alice1: 1\.0 attempt 1 started on n1:7082 at t=1\.100, "
                              r"before the journal recorded its run \(t=1\.100\)$")(
    _recorded_at(1.1))


# ------------------------------------------------------------------ reruns, kills, ends

@case("removed-unasked", r"alice1: job 1\.0 removed though nobody removed it$")
def _removed_unasked(broken: bool) -> Trace:
    t = Trace()
    if not broken:
        t.w.interrupted.add(t.spec.name)  # Ctrl-C
    t.run(1.0, 0, 1)
    t.execute(0, 1, 1.1, 1.5, how="killed", code=None, signal=15)
    t.end(1.6, 0, 1, "removed", None, 15, reason="removed by Ctrl-C")
    return t


@case("held", r"alice1: job 1\.0 held: refused by the nodes 5 times$")
def _held(broken: bool) -> Trace:
    t = Trace()
    t.run(1.0, 0, 1)
    t.execute(0, 1, 1.1, 2.0)
    t.result(0, 1)
    if broken:
        t.end(2.1, 0, 1, "held", None, reason="refused by the nodes 5 times")
    else:
        t.end(2.1, 0, 1)
    return t


def _rerun(t: Trace, first_code: int, decided: float = 2.1, result_first: bool = True) -> None:
    """Attempt 1 runs on n1 to its end (exit `first_code`), the submitter decides at
    `decided` to run the job again (its requeue), attempt 2 succeeds on n2. With
    `result_first` the first run's result reached the submitter before it decided."""
    t.run(1.0, 0, 1, N1)
    t.execute(0, 1, 1.1, 2.0, code=first_code)
    if result_first:
        t.result(0, 1)
    t.requeue(decided, 0, 1, 1 if result_first else 0, lost=0 if result_first else 1)
    if not result_first:
        t.result(0, 1)  # it came, but after the decision
    t.run(decided + 0.9, 0, 2, N2)
    t.execute(0, 2, decided + 1.0, decided + 1.9, node=N2)
    t.result(0, 2)
    t.end(decided + 2.0, 0, 2, node=N2)


@case("run-again", r"alice1: job 1\.0 attempt 1 succeeded on n1:7082 and the job was run "
                   r"again at t=3\.00: ")
def _run_again(broken: bool) -> Trace:
    t = Trace(max_retries=1)
    _rerun(t, 0 if broken else 1)
    return t


@case("retried-too-often", r"alice1: job 1\.0 was retried 2 times after runs that ended on "
                           r"their own; max_retries=1: ")
def _retried_too_often(broken: bool) -> Trace:
    t = Trace(max_retries=1)
    t.run(1.0, 0, 1)
    t.execute(0, 1, 1.1, 2.0, code=1)
    t.result(0, 1)
    t.requeue(2.1, 0, 1, 1)
    last = 3 if broken else 2
    if broken:  # a second failure, and a third run
        t.run(3.0, 0, 2, N2)
        t.execute(0, 2, 3.1, 4.0, code=1, node=N2)
        t.result(0, 2)
        t.requeue(4.1, 0, 2, 2)
    t.run(5.0, 0, last)
    t.execute(0, last, 5.1, 6.0)
    t.result(0, last)
    t.end(6.1, 0, last)
    return t


def _lost_then_rerun(t: Trace, start: float, kill_at: Optional[float]) -> Trace:
    """Attempt 1 was sent to n1 at 1.0, n1 was lost (1.8), attempt 2 was sent to n2 at
    2.0 and succeeded; attempt 1 started on n1 at `start` and, with `kill_at`, the
    submitter's kill of it reached n1 then and ended it (else it went with its host)."""
    t.run(1.0, 0, 1, N1)
    if kill_at is None:
        t.execute(0, 1, start, 2.5, how="lost", code=None)
    else:
        t.execute(0, 1, start, kill_at, how="killed", code=None, signal=15)
        t.w.kills[(N1, t.job(0), 1)] = kill_at
    t.w.losses.append((1.8, t.sid, N1))
    t.requeue(1.9, 0, 1, 0, lost=1)
    t.run(2.0, 0, 2, N2)
    t.execute(0, 2, 2.1, 3.0, node=N2)
    t.result(0, 2)
    t.end(3.1, 0, 2, node=N2)
    return t


RAN_TWICE = (r"alice1: 1\.0\.1 started on n1:7082 at t=2\.20, after attempt 2 of the job had "
             r"been sent at t=2\.00: the job ran twice$")
# attempt 1 starts before attempt 2 was sent (fine) or, broken, after it
case("ran-twice", RAN_TWICE)(lambda broken: _lost_then_rerun(Trace(), 2.2 if broken else 1.1,
                                                              None))
# the excuse: the submitter abandoned it with the run on the wire, and its kill came right
# behind the run (within KILL_LAG) and ended it; 1.1 s behind is too late
case("ran-twice-kill-late", RAN_TWICE)(lambda broken: _lost_then_rerun(Trace(), 2.2,
                                                                        3.3 if broken else 2.3))


def _killed(excuse: str) -> Callable[[bool], Trace]:
    """Attempt 1 on n1 was killed at 1.5; the job then ran again on n2 and succeeded.
    Right when its node was lost after the run was sent (`lost`) or the master revoked
    its claim before the kill (`revoked`); broken, that fact is missing, or (`early`) the
    loss came before the run was sent, which excuses nothing."""
    def build(broken: bool) -> Trace:
        t = Trace()
        t.run(1.0, 0, 1, N1)
        t.execute(0, 1, 1.1, 1.5, how="killed", code=None, signal=15)
        if excuse == "lost" and not broken:
            t.w.losses.append((1.4, t.sid, N1))
        elif excuse == "revoked" and not broken:
            t.w.revoked[t.claim(0, 1)] = 1.3
        elif excuse == "early":
            t.w.losses.append((0.9 if broken else 1.4, t.sid, N1))
        t.requeue(1.6, 0, 1, 0, lost=1)
        t.run(2.0, 0, 2, N2)
        t.execute(0, 2, 2.1, 3.0, node=N2)
        t.result(0, 2)
        t.end(3.1, 0, 2, node=N2)
        return t
    return build


KILLED = (r"alice1: 1\.0\.1 on n1:7082 was killed at t=1\.50 though nobody removed it and its "
          r"node was never lost; the job ended done$")
for _excuse in ("lost", "revoked", "early"):
    case(f"killed-unasked-{_excuse}", KILLED)(_killed(_excuse))


@case("no-such-end", r"alice1: job 1\.0 ended done \(code 0, signal None, attempt 1\) but no "
                     r"execution of that attempt ran to such an end: \[\(1, 'completed', 3, "
                     r"None\)\]$")
def _no_such_end(broken: bool) -> Trace:
    t = Trace()
    t.run(1.0, 0, 1)
    t.execute(0, 1, 1.1, 2.0, code=3 if broken else 0)
    t.result(0, 1)
    t.end(2.1, 0, 1)
    return t


@case("state-vs-code", r"alice1: job 1\.0 ended done with code 1, signal None$")
def _state_vs_code(broken: bool) -> Trace:
    t = Trace()
    t.ran(1.0, 0, code=1, state="done" if broken else "failed")
    return t


@case("failed-early", r"alice1: job 1\.0 failed after 0 retries; max_retries=1: ")
def _failed_early(broken: bool) -> Trace:
    t = Trace(max_retries=1)
    t.run(1.0, 0, 1)
    t.execute(0, 1, 1.1, 2.0, code=2)
    t.result(0, 1)
    if broken:
        t.end(2.1, 0, 1, "failed", 2)
        return t
    t.requeue(2.1, 0, 1, 1)
    t.run(3.0, 0, 2, N2)
    t.execute(0, 2, 3.1, 4.0, code=2, node=N2)
    t.result(0, 2)
    t.end(4.1, 0, 2, "failed", 2, node=N2)
    return t


def _matches(failures: list, patterns: tuple) -> tuple:
    """(patterns no failure matched, failures no pattern matched); the `t=…: ` prefix of
    `World.fail` is taken off first."""
    texts = [re.sub(r"^t=[0-9.]+: ", "", f) for f in failures]
    unmatched = [p for p in patterns if not any(re.search(p, x) for x in texts)]
    extra = [x for x in texts if not any(re.search(p, x) for p in patterns)]
    return unmatched, extra


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_check_fires_on_its_break_and_only_there(name):
    build, patterns = CASES[name]
    clean = build(False).failures()
    assert clean == [], f"{name}: the control (no break) fails: {clean}"
    broken = build(True).failures()
    unmatched, extra = _matches(broken, patterns)
    assert not unmatched and not extra, (f"{name}: missing {unmatched}; other failures "
                                        f"{extra}")


# ------------------------------------------------------------------ the excuses

EXCUSES = {
    # name: (when the submitter decided, the fact set, whether it excuses the rerun)
    "link-down": (2.1, lambda t: t.w.unreachable.append((1.5, t.sid, N1)), True),
    "link-down-before-the-run": (2.1, lambda t: t.w.unreachable.append((0.5, t.sid, N1)),
                                 False),
    "revoked-node-lost": (20.5, lambda t: t.w.revocations.append((1.5, t.sid, N1, None)),
                          True),
    # give_up (20 s) less one tick after it learned of the revocation: 0.1 s too early
    "revoked-too-early": (20.4, lambda t: t.w.revocations.append((1.5, t.sid, N1, None)),
                          False),
    "revoked-claim": (20.5, lambda t: t.w.revocations.append(
        (1.5, t.sid, None, frozenset({t.claim(0, 1)}))), True),
    "revoked-other-claim": (20.5, lambda t: t.w.revocations.append(
        (1.5, t.sid, None, frozenset({t.claim(0, 9)}))), False),
    "unknown-to-its-node": (2.1, lambda t: t.w.unknown.setdefault((t.sid, "1.0", 1), 1.5),
                            True),
    "unknown-but-acked": (2.1, lambda t: (t.w.unknown.setdefault((t.sid, "1.0", 1), 1.5),
                                          t.w.acked.setdefault((t.sid, "1.0", 1), 1.4)),
                          False),
}


@pytest.mark.parametrize("name", sorted(EXCUSES))
def test_a_rerun_after_a_success_is_excused_only_when_the_submitter_could_not_know(name):
    """`_unknowable`: a run that succeeded, run again before its result reached the
    submitter, is forgiven (and listed in `world.forgiven`) only for the facts it names;
    a near miss of each is not. With its result in before the decision, none excuses."""
    decided, fact, excuses = EXCUSES[name]
    t = Trace(max_retries=1)  # (a rerun not excused counts as a retry too)
    _rerun(t, 0, decided, result_first=False)
    fact(t)
    failures = t.failures()
    again = rf"job 1\.0 attempt 1 succeeded on n1:7082 and the job was run again at " \
            rf"t={decided + 0.9:.2f}"
    if excuses:
        assert failures == [] and [f[:4] for f in t.w.forgiven] == [("alice1", "1.0", 1, True)]
    else:
        assert len(failures) == 1 and re.search(again, failures[0]), failures
    t = Trace(max_retries=1)
    _rerun(t, 0, decided, result_first=True)
    fact(t)
    failures = t.failures()
    assert len(failures) == 1 and re.search(again, failures[0]), failures


# ------------------------------------------------------------------ no live node declared lost

def test_a_node_declared_lost_while_heard_within_the_node_timeout_is_a_failure():
    """`declared_lost` on the master's own running time: heard 7 s before (node timeout
    6 s) is right, 5 s before is not; a stop of the master is not its running time (less
    two ticks: 4 s stopped count 2 off), so 7 s with a 4 s stop in them is too early."""
    def declared(heard: float, stall: Optional[tuple] = None) -> list:
        w = world.World(1, dataclasses.replace(SHAPES["small"], faults=()))
        master = MasterProc(w, world._Host("master", w.disks["master"]))
        if stall is not None:
            w.master_stalls.append((master, *stall))
        w.sim.now = 10.0
        check.declared_lost(w, master, N1, [heard])
        return [re.sub(r"^t=[0-9.]+: ", "", f) for f in w.failures]

    assert declared(3.0) == []
    assert declared(5.0) == ["the master declared node n1:7082 lost though it had a report "
                             "of it at t=5.00, 5.0s before, 5.0s of its own running time "
                             "(node timeout 6.0s)"]
    assert declared(3.0, (4.0, 7.0)) == []  # 7 s, 1 s of them off: 6 s of silence
    assert declared(3.0, (4.0, 8.0)) == ["the master declared node n1:7082 lost though it "
                                         "had a report of it at t=3.00, 7.0s before, 5.0s of "
                                         "its own running time (node timeout 6.0s)"]


# ------------------------------------------------------------------ fairness

def _fair_world(bob_every: float, bob_until: float) -> world.World:
    """Two users of the `fair` shape (equal weights), each one job at a time back to
    back, 2 s each: alice from 0 to 200 s, bob from 5 s, a job every `bob_every` s
    until `bob_until`."""
    w = world.World(1, SHAPES["fair"])
    alice, bob = w.specs
    for i in range(100):
        w.execs.append(world.Execution(alice.sid, f"1.{i}", 1, N1, 1, 2.0 * i, 2.0 * i + 2.0,
                                       "completed", 0))
    start, i = bob.start, 0
    while start < bob_until:
        w.execs.append(world.Execution(bob.sid, f"2.{i}", 1, N2, 1, start,
                                       start + min(2.0, bob_every), "completed", 0))
        start, i = start + bob_every, i + 1
    return w


def test_fairness_fires_on_a_user_short_of_its_share_and_on_no_window_to_judge():
    even = _fair_world(2.0, 200.0)
    check.fairness(even)
    assert even.failures == []
    short = _fair_world(4.0, 200.0)  # bob runs half the time: alice 60 of 90 slot-seconds
    check.fairness(short)
    assert [re.sub(r"^t=[0-9.]+: ", "", f) for f in short.failures] == [
        "fairness: in [5, 65] alice used 60.0 slot-seconds, its weighted share is 45.0 "
        "(of 90.0; weights {'alice': 1.0, 'bob': 1.0})"]
    brief = _fair_world(2.0, 50.0)  # both backlogged only from 5 s to 49 s
    check.fairness(brief)
    assert [re.sub(r"^t=[0-9.]+: ", "", f) for f in brief.failures] == [
        "fairness: no 60 s window with both users backlogged (5.0..49.0)"]


# ------------------------------------------------------------------ a real cluster, then quiet

def _quiet_run() -> tuple:
    """A real cluster (fault-free `small`, seed 3) run to its end and checked (the
    control: `check.final` ran `_quiet` on it), one claim the Pool held during it (taken
    at a master tick) and one a node's core held (taken after a step), as (node, claim)."""
    w = world.World(3, dataclasses.replace(SHAPES["small"], faults=()))
    pooled: list = []
    booked: list = []
    tick = w.check_pool

    def check_pool(pool) -> None:
        if not pooled and pool.claims:
            pooled.append(next(iter(pool.claims.values())))
        tick(pool)

    def after_step() -> None:
        for name, host in w.hosts.items():
            if not booked and host.daemon is not None and host.daemon.core.claims:
                booked.append((name, next(iter(host.daemon.core.claims.values()))))

    w.check_pool = check_pool
    w.sim.after_step.append(after_step)
    res = w.run()
    assert res.ok and pooled and booked and res.stats["execs"] > 0, res.failures
    return w, pooled[0], booked[0]


def _quiet_failures(w) -> list:
    w.failures.clear()
    check._quiet(w)
    return [re.sub(r"^t=[0-9.]+: ", "", f) for f in w.failures]


def test_quiet_fires_on_a_claim_left_in_the_pool():
    w, claim, _ = _quiet_run()
    assert _quiet_failures(w) == []
    w.master.pool.claims[claim.id] = claim
    out = _quiet_failures(w)
    assert len(out) == 1 and out[0].startswith(
        f"quiet: the Pool still holds claims nobody uses: [('{claim.id[:8]}', "
        f"'{claim.node}', "), out


def test_quiet_fires_on_a_claim_left_in_a_node_book():
    w, _, (node, claim) = _quiet_run()
    assert _quiet_failures(w) == []
    w.hosts[node].daemon.core.claims[claim.claim] = claim
    assert _quiet_failures(w) == [f"quiet: node {node} still holds claims: "
                                  f"[('{claim.claim[:8]}', '{claim.submitter[:6]}')]"]


def test_the_pool_checks_fire_on_a_claim_past_a_node_s_slots():
    """`pool_consistent` on the real Pool of a run: clean as it ended; a claim of 3 cpus
    on a 2-slot node, put on the books behind the Pool's back (its indexes not told),
    both overbooks the node and breaks `Pool.check()`."""
    w, claim, _ = _quiet_run()
    pool = w.master.pool
    check.pool_consistent(w, pool)
    assert w.failures == []
    slots = pool.nodes[claim.node].slots
    over = dataclasses.replace(claim, id="overbooked", cpus=slots + 1)
    pool.claims[over.id] = over
    check.pool_consistent(w, pool)
    out = [re.sub(r"^t=[0-9.]+: ", "", f) for f in w.failures]
    assert len(out) == 2 and out[0] == (f"the Pool books {slots + 1} cpus on {claim.node}, "
                                        f"which has {slots} slots"), out
    assert out[1].startswith("Pool.check(): "), out


def test_liveness_fires_on_a_submit_that_has_not_ended():
    w = world.World(1, dataclasses.replace(SHAPES["small"], faults=(),
                                           submitters=(("alice", 2, 2, 0, 0.0),)))
    w.last_fault = 30.0
    w.done[w.specs[0].name] = 100.0
    check.liveness(w, 700.0)
    assert w.failures == []
    del w.done[w.specs[0].name]
    check.liveness(w, 700.0)
    assert [re.sub(r"^t=[0-9.]+: ", "", f) for f in w.failures] == [
        "liveness: submit alice1 (2 jobs) has not ended 670s after the last fault "
        "(t=30.0); its queue: not started"]


def test_quiet_fires_on_a_job_left_running():
    w, _, _ = _quiet_run()
    e = w.execs[0]
    w.running[e.node] = [e]
    assert _quiet_failures(w) == [f"quiet: node {e.node} still runs ['{e.job}']"]


# ------------------------------------------------------------------ the simulation's own

def test_an_exception_inside_the_simulation_is_a_failure(monkeypatch):
    shape = dataclasses.replace(SHAPES["small"], faults=())
    assert world.run(3, shape).ok

    def boom(w) -> None:
        raise RuntimeError("boom in the checker")
    monkeypatch.setattr(check, "final", boom)
    res = world.run(3, shape)
    assert len(res.failures) == 1, res.failures
    assert re.match(r"t=[0-9.]+: exception inside the simulation:\nTraceback", res.failures[0])
    assert res.failures[0].rstrip().endswith("RuntimeError: boom in the checker")


@pytest.mark.parametrize("body,refused", [({"type": "new-cluster"}, False),
                                          ({"type": "kill", "job": "1.0", "attempt": "1"},
                                           True)])
def test_a_message_the_wire_schema_refuses_is_a_failure(body, refused):
    """The network checks each message with the real wire schema on arrival: a refused
    one is not delivered and is a failure of the run (`Network.problems`)."""
    from tests.sim.clock import Sim
    sim = Sim(1)
    net = Network(sim)
    server, client = Proc(sim, "master", "master"), Proc(sim, "s1", "submit")
    got: list = []

    def accept(end) -> None:
        end.on_message = got.append
    net.listen(server, "master:7083", accept)
    net.connect(client, "master:7083", lambda end: end.send(body), lambda why: None)
    sim.run_until(1.0)
    if refused:
        assert got == [] and len(net.problems) == 1 and re.search(
            r"submit->master \(from submit\): a message the wire schema refuses: kill: "
            r"field 'attempt' must be int: ", net.problems[0]), (got, net.problems)
    else:
        assert got == [body] and net.problems == []


# ------------------------------------------------------------------ the table, held to the source

def _literal(node) -> str:
    """The text of a message expression as written: its literal parts, "{}" for each
    value (adjacent f-strings are one JoinedStr to the parser)."""
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp):
        return _literal(node.left) + _literal(node.right)
    return "{}"


def _messages() -> list:
    """(file, text) of every failure the checker can report: each `world.fail(…)` and
    `self.fail(…)` of tests/sim/check.py and world.py, each `net.problems.append(…)` of
    net.py."""
    out = []
    for name in ("check.py", "world.py", "net.py"):
        path = os.path.join(os.path.dirname(check.__file__), name)
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                    (node.func.attr == "fail" and isinstance(node.func.value, ast.Name)
                     and node.func.value.id in ("world", "self"))
                    or (node.func.attr == "append" and isinstance(node.func.value,
                                                                  ast.Attribute)
                        and node.func.value.attr == "problems")):
                out.append((name, _literal(node.args[0])))
    return out


def test_every_failure_message_has_a_test_that_makes_it_fire():
    from tests import test_sim, test_sim_reach, test_sim_regressions
    messages = _messages()
    assert len(messages) >= 30, messages  # the parse found the checks
    keyed: dict = {}
    for name, text in messages:
        keys = [k for k in FIRES if k in text]
        assert len(keys) == 1, f"{name}: {text!r} matches {keys} of FIRES (want one)"
        keyed.setdefault(keys[0], []).append(text)
    assert sorted(keyed) == sorted(FIRES), set(FIRES) - set(keyed)
    assert all(len(v) == 1 for v in keyed.values()), keyed
    regressions = {switch for _f, switch, *_ in test_sim_regressions.REACH}
    known = {"case": set(CASES), "test": set(globals()), "reach": set(test_sim_reach.CHECKS),
             "regression": regressions, "sim": set(vars(test_sim))}
    missing = [(key, kind, ref) for key, refs in FIRES.items() for kind, ref in refs
               if ref not in known[kind]]
    assert not missing, missing
