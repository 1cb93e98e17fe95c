"""Seeds of the cluster simulation that found bugs, pinned: each must now run clean.

Each entry: the seed and shape that showed the bug (with the fault kinds left out, if
any), whose code it was in, and what happened. Replay one with
`python -m tests.sim --seed N --shape S [--without KINDS] -m -v`.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from tests.sim import world
from tests.sim.shapes import SHAPES

FOUND = [
    # (seed, shape, fault kinds left out, owner, what it found)
    (141, "small", "", "Pool (C1)",
     "a submitter partitioned from the master finished; the master restarted and adopted the "
     "claims the nodes still listed for it; nothing ever dropped them"),
    (393, "small", "", "Pool (C1)", "the same, three claims on two nodes"),
    (7, "small", "", "Pool (C1)",
     "a claim released while the node's disk failed came back from a stale claims.json "
     "after a node restart and was adopted for a finished submitter"),
    (171, "small", "", "Pool (C1)", "claims adopted for a submitter that had gone"),
    (108, "large", "ctrl-c,disk", "Pool (C1)",
     "a claim revoked before two master restarts came back with its node's hello"),
    (105212, "small", "stall,disk,ctrl-c", "the checker (H, soak 12-01)",
     "a run ended (exit 2) while the master had declared its node lost; its result reached "
     "the submitter, which counted it: the checker said FAILED came too early"),
    (100861, "large", "stall,disk,ctrl-c", "the checker (H, soak 12-01)", "the same"),
    (193, "large", "ctrl-c,disk", "node core (E2)",
     "power lost after a run's taskfile was written, before its executor started: back "
     "up, the node launched it although the job had run again elsewhere (twice at once)"),
    (62, "small", "disk,stall", "submitter core (D3)",
     "Ctrl-C, then the job's node was lost: the job went back to the queue of a cluster "
     "being removed (empty demand) and the submit never ended"),
    (180, "small", "disk,stall", "submitter core (D3)", "the same, after a node crash"),
    (65, "small", "disk,stall", "submitter core (D4)",
     "Ctrl-C then kill -9 of the submitter: the rerun forgot the removal and ran the "
     "killed job again"),
    (45, "small", "ctrl-c,stall", "submitter core (D1)",
     "a node whose disk failed (ENOSPC) for seconds refused a job 5 times: held for good"),
    (124, "small", "ctrl-c,stall", "submitter core (D1)",
     "the same with EIO on its input (since other fixes it no longer reaches D1: REACH)"),
    (1164, "small", "disk,ctrl-c", "Pool (C2), submitter core (D5) (alone: REACH)",
     "a master back from an 8 s stall ticked before reading the queued reports and "
     "revoked live nodes' claims with kill (C2); the run so killed, which the submitter "
     "never heard of, ended the job FAILED 'signal 15' (D5)"),
    (2399, "small", "ctrl-c,disk", "sim checker",
     "a run's result reached the submitter, which counted it as a retry; a later loss of "
     "the node made the checker discount it: 'failed after 0 retries'"),
    (345, "large", "ctrl-c,disk,stall", "sim checker", "the same, on the large shape"),
    (200970, "small", "", "node core (N2)",
     "a node stalled past the node timeout woke and started a run queued on a claim the "
     "master had revoked meanwhile: the job ran twice at once until the kill came"),
    (200962, "large", "", "node core (N2)", "the same, on the large shape"),
    (105101, "large", "stall,disk,ctrl-c", "Pool (C4, soak 12-01)",
     "a master restarted after kill -9 heard only its 1-slot node within its 3 s grace and "
     "declared 2-cpu jobs unmatchable: they were held for good"),
    (400831, "large", "", "the checker (K, soak 7)",
     "a submitter stalled while the master declared a node lost sent that node a run "
     "before reading the node-lost, then reran it: the checker dated the loss from the "
     "master's send, before the run, and called the rerun a retry"),
    (404593, "large", "", "the checker (K, soak 7)",
     "the same: a retry sent on the lost node's claim by a submitter stalled past the "
     "node-lost ran there and succeeded; the rerun elsewhere is right"),
    (414888, "large", "", "the checker (K, soak 7)", "the same"),
    (404719, "large", "", "submitter and node cores (K, soak 7)",
     "a reset submitter-master connection dropped the submitter's claims at the master; "
     "the submitter sent five runs of one job on them as their jobs ended, each refused "
     "'unknown claim', and the five refusals held the job (now cause \"claim\": a race, "
     "rerun uncounted)"),
    (418064, "large", "", "submitter and node cores (K, soak 7)", "the same"),
    (108, "small", "", "master (C6, K)",
     "a master stopped within its first second had never ticked: no gap for C2's pardon, "
     "so its first tick declared both live nodes lost and revoked their claims with kill"),
    (500075, "revoke", "", "submitter core (D7, K's soak 7b)",
     "a node-lost came in one burst with claims on that node: runs sent on them, the jobs "
     "rerun elsewhere, and the node (cut off from the master only) ran both until the "
     "partition healed; the submitter now kills what it abandons on a node it reaches"),
    (500358, "revoke", "", "submitter core (D7, K's soak 7b)", "the same"),
    (22, "revoke", "", "the checker (K)",
     "a run sent on a claim the master had revoked while the submitter was cut off from "
     "it was killed when the revocation landed: 'killed though nobody removed it'"),
    (259, "revoke", "", "the checker (K)",
     "reports a partition held counted from their sending: 'declared lost though it had "
     "a report'"),
    (802139, "revoke", "", "submitter core (S1, soak 9b)",
     "the welcome named a claim killed while its node, reachable, was stalled: the job ran "
     "again at once and the first run ended exit 0 too (twice to success)"),
    (802570, "revoke", "", "submitter core (S1, soak 9b)", "the same"),
    (221, "backlog", "", "submitter core (B)",
     "a node whose disk failed half its writes refused one job 10 times in 1.3 s: runs "
     "already out started between the refusals and each start ended its rest"),
    (582, "backlog", "", "submitter core (B)", "the same"),
    (867, "backlog", "", "submitter core (B)", "the same"),
]


@pytest.mark.parametrize("seed,shape,without,owner,what", FOUND,
                         ids=[f"{s}-{sh}" for s, sh, *_ in FOUND])
def test_pinned_seed_runs_clean(seed, shape, without, owner, what):
    base = SHAPES[shape]
    out = set(without.split(",")) if without else set()
    res = world.run(seed, dataclasses.replace(
        base, faults=tuple(k for k in base.faults if k not in out)))
    assert res.ok, f"{owner}: {what}\n{res.replay()}\n" + "\n".join(res.failures[:5])


# Seeds that reach a fixed finding's bug on their own: with only that fix reverted (a
# test-only switch, tests/sim/bugs.py) the run fails with the bug's own message, and
# without it runs clean. A pinned seed of FOUND may stop reaching its bug as other code
# changes (the run takes another path); these say so loudly (D7's fix moved D5's from
# revoke 1 and 65 to 13 and 36). Each was found by scanning seeds with the switch on
# (12-01, K).
REACH = [
    # (finding, switch, seed, shape, fault kinds left out, the failure it brings back)
    ("D1", "refusals-blame-job", 45, "small", "ctrl-c,stall",
     r"held: refused by the nodes 5 times; last: .*ENOSPC"),
    ("D1", "refusals-blame-job", 611, "small", "",  # the first of the CI seeds (12-01)
     r"held: refused by the nodes 5 times; last: .*ENOSPC"),
    ("C2", "stall-blames-peers", 1164, "small", "disk,ctrl-c",
     r"the master declared node n\d:7082 lost though it had a report of it"),
    ("C2", "stall-blames-peers", 3, "small", "",
     r"the master declared node n\d:7082 lost though it had a report of it"),
    ("D5", "revoked-run-is-exit", 13, "revoke", "",
     r"ended failed \(code None, signal 15, attempt \d\) but no execution of that attempt"),
    ("D5", "revoked-run-is-exit", 36, "revoke", "",
     r"ended failed \(code None, signal 15, attempt \d\) but no execution of that attempt"),
    # (802139 and 802570, S1's own seeds, stopped reaching it when a claim whose job came
    # back `removed` was no longer used again, session 10)
    ("S1", "abandon-reruns-at-once", 14, "revoke", "",
     r"succeeded on n\d:7082 and the job was run again"),
    ("S1", "abandon-reruns-at-once", 135, "revoke", "",
     r"succeeded on n\d:7082 and the job was run again"),
    ("B", "any-start-ends-rest", 221, "backlog", "",
     r"held: refused by the nodes 10 times for their own trouble"),
    ("B", "any-start-ends-rest", 582, "backlog", "",
     r"held: refused by the nodes 10 times for their own trouble"),
]


@pytest.mark.parametrize("finding,switch,seed,shape,without,pattern", REACH,
                         ids=[f"{f}-{s}-{sh}" for f, _, s, sh, *_ in REACH])
def test_a_seed_still_reaches_the_bug_its_fix_removed(finding, switch, seed, shape, without,
                                                      pattern):
    base = SHAPES[shape]
    out = set(without.split(",")) if without else set()
    sh = dataclasses.replace(base, faults=tuple(k for k in base.faults if k not in out))
    broken = world.run(seed, sh, switches={switch})
    assert any(re.search(pattern, f) for f in broken.failures), (
        f"{finding}: seed {seed} no longer reaches it with --switch {switch}; find another "
        f"(python -m tests.sim --seed 1 --seeds 1000 --shape {shape} --switch {switch}): "
        f"{broken.failures[:2]}")
    clean = world.run(seed, sh)
    assert clean.ok, f"{finding}: {clean.replay()}\n" + "\n".join(clean.failures[:3])


def _run_again_after_success(w) -> list:
    """(job, attempt) of each run that succeeded on its own and was followed by a later
    attempt, counted on the executions of a world that ran, apart from the checker."""
    by: dict = {}
    for e in w.execs:
        by.setdefault((e.sid, e.job), []).append(e)
    return [(job, e.attempt) for (_sid, job), es in by.items() for e in es
            if e.how == "completed" and e.code == 0 and e.signal is None
            and any(x.attempt > e.attempt for x in es)]


RUN_AGAIN = r"job \d+\.\d+ attempt \d+ succeeded on n\d:7082 and the job was run again"


def test_the_revoke_seeds_reach_a_run_again_after_success_and_the_checker_sees_each():
    """S1 and R7: a run whose claim the master revoked (the welcome's `killed`, its
    `node-lost`) must not be run again while its node may still finish it: the checker's
    invariant "no run again after a success" (tests/sim/check.py `_unknowable`). In the
    `revoke` shape no link between a submitter and a node is down for the 20 s after
    which the submitter gives a silent node up, so no success is ever followed by a
    rerun: each seed runs clean. With the old behaviour (switch `abandon-reruns-at-once`)
    13 of seeds 1-60 have such jobs (12 before e9e066c), and 135 (R7: db811c4, which waited only
    on a link that was up, had 39 in seeds 1-300); counted here on the executions
    themselves, apart from the checker, and the checker must fail exactly those seeds."""
    from tests.sim import bugs
    seeds = [*range(1, 61), 135]
    clean = {seed: r.failures[:1] for seed in seeds if not (r := world.run(seed, "revoke")).ok}
    assert not clean, clean
    reached, missed = {}, {}
    for seed in seeds:
        w = world.World(seed, SHAPES["revoke"])
        with bugs.enabled({"abandon-reruns-at-once"}):
            res = w.run()
        raw = _run_again_after_success(w)
        flagged = [f for f in res.failures if re.search(RUN_AGAIN, f)]
        if raw:
            reached[seed] = raw
        if bool(raw) != bool(flagged):
            missed[seed] = (raw, flagged[:1], res.failures[:1])
    assert not missed, missed
    assert len(reached) >= 10 and 135 in reached, f"the seeds no longer reach it: {reached}"


EXCUSED = [
    # (seed, shape, give_up, ran to success, the excuse): the CI shapes never reach one
    # (small 1-1000, large 1-300, revoke 1-300 at give_up 20 s: none); a short give_up does
    (29, "small", 3.0, True, "link down for give_up"),
    (16, "large", 3.0, True, "link down for give_up"),
    (26, "revoke", 5.0, True, "revoked"),
    (80, "revoke", 5.0, False, "revoked"),
]


@pytest.mark.parametrize("seed,shape,give_up,succeeded,excuse", EXCUSED,
                         ids=[f"{s}-{sh}-{e.split()[0]}" for s, sh, _g, _o, e in EXCUSED])
def test_a_rerun_the_submitter_could_not_have_avoided_is_excused_and_only_it(
        seed, shape, give_up, succeeded, excuse, monkeypatch):
    """The excuses of "no run again after a success" (tests/sim/check.py `_unknowable`)
    are reached and needed: the seed runs clean, excusing a rerun of a run that ended on
    its own for that very reason, and, for a success, with no excuse at all the checker
    fails it."""
    from tests.sim import check
    sh = dataclasses.replace(SHAPES[shape], give_up=give_up)
    w = world.World(seed, sh)
    res = w.run()
    assert res.ok, res.failures[:2]
    hits = [f for f in w.forgiven if f[3] == succeeded and f[4].startswith(excuse)]
    assert hits, f"no rerun excused for {excuse!r} any more: {w.forgiven}"
    if not succeeded:
        return  # counted, this one retry stays within its max_retries
    monkeypatch.setattr(check, "_unknowable", lambda *a: None)
    strict = world.World(seed, sh).run()
    assert any(re.search(RUN_AGAIN, f) for f in strict.failures), strict.failures[:2]
