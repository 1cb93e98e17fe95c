"""The simulation's reach: defects of issue 12, put back by a test-only switch
(tests/sim/bugs.py), are found within the CI seed budget; and each invariant
check of tests/sim/check.py can fire.

For each switch: the first seed (of at most BUDGET) whose run fails with the
defect's kind of failure, and the same seed passes with the switch off. The
switches are off in every other run; `python -m tests.sim --seed N --switch S`
replays one.
"""

from __future__ import annotations

import re

import pytest

from tests.sim import world

BUDGET = 1000  # seeds of the small shape at most (the CI runs 2,000 seeds in all)

EXPECTED = {
    "release-kills": ("was killed", "no execution of that attempt ran to such an end"),
    "offer-lost": ("quiet:", "liveness"),
    "retries-forgotten": ("attempts must grow", "executed twice", "retried",
                          "and the job was run again"),
    "task-before-io": ("liveness", "quiet:"),
    # fixes of the simulation's own findings, reverted (README "The cluster simulation")
    "refusals-blame-job": ("held: refused by the nodes 5 times",),  # D1: large seed 70
    "stall-blames-peers": ("the master declared node",),  # C2: small seed 3 (12-01)
    "revoked-run-is-exit": ("ended failed (code None, signal 15",),  # D5: revoke seed 13
}
# the shape whose CI seeds (tests/test_sim.py CI_SEEDS) must find it, if not `small`
# (release-kills: small 797 reached it through a restarted master adopting, as held, claims
# its node was letting go; since nodes say so in their hello (#12) the first seed is large 8)
SHAPE = {"revoked-run-is-exit": "revoke", "refusals-blame-job": "large",
         "release-kills": "large"}


@pytest.mark.parametrize("switch", sorted(EXPECTED))
def test_the_simulation_finds_the_defect_the_switch_puts_back(switch):
    from tests.test_sim import CI_SEEDS
    shape = SHAPE.get(switch, "small")
    for seed in range(1, min(BUDGET, CI_SEEDS[shape]) + 1):
        res = world.run(seed, shape, switches={switch})
        hits = [f for f in res.failures if any(k in f for k in EXPECTED[switch])]
        if not hits:
            continue
        clean = world.run(seed, shape)
        if clean.ok:
            print(f"{switch}: found by seed {seed} of {shape}: {hits[0][:300]}")
            return
    pytest.fail(f"{switch}: no seed of {min(BUDGET, CI_SEEDS[shape])} of {shape} found it")


# One switch per invariant: the shape it runs on, and the opening words of the one
# check's message (tests/sim/check.py, tests/sim/world.py) that must report it.
CHECKS = {
    "drop-frees-busy-claim": ("small", r"node n\d+:7082 overcommitted: \d+ cpus of jobs running "
                                       r"on \d+ slots"),
    "pool-overbooks": ("small", r"the Pool books \d+ cpus on n\d+:7082, which has \d+ slots"),
    "pool-index-stale": ("small", r"Pool\.check\(\): "),
    "demand-skips-all": ("large", r"Pool\.check\(\): .*skipped a negotiation that would "
                                  r"have sent"),
    "drop-ignored-idle": ("small", r"quiet: node n\d+:7082 still holds claims"),
    "shares-unweighted": ("fair-weighted", r"fairness: in \[\d+, \d+\] (alice|bob) used [0-9.]+ "
                                           r"slot-seconds, its weighted share is"),
    "finals-forgotten": ("small", r"job \d+\.\d+ has [2-9] final records \(want exactly one\)"),
    "retry-once-more": ("small", r"job \d+\.\d+ was retried (\d+) times after runs that ended "
                                 r"on their own; max_retries=(\d+)"),
    # no run again after a success the submitter could have known of (S1 reverted: the
    # master's word alone reruns a run its reachable node is still finishing; revoke 14)
    "abandon-reruns-at-once": ("revoke", r"job \d+\.\d+ attempt \d+ succeeded on n\d+:7082 "
                                         r"and the job was run again"),
}
CHECK_BUDGET = 100  # seeds; each of these is found within the first 30 (12-01)


@pytest.mark.parametrize("switch", sorted(CHECKS))
def test_each_invariant_check_fires_on_the_defect_it_guards(switch):
    shape, pattern = CHECKS[switch]
    for seed in range(1, CHECK_BUDGET + 1):
        res = world.run(seed, shape, switches={switch})
        hits = [f for f in res.failures if re.search(pattern, f)]
        if not hits:
            continue
        m = re.search(pattern, hits[0])
        if switch == "retry-once-more":
            assert int(m.group(1)) == int(m.group(2)) + 1, hits[0][:300]
        clean = world.run(seed, shape)
        assert clean.ok, f"seed {seed} fails without the switch: {clean.failures[:2]}"
        print(f"{switch}: seed {seed}: {hits[0][:200]}")
        return
    pytest.fail(f"{switch}: no seed of {CHECK_BUDGET} made the check fire ({pattern})")


def test_switches_are_off_unless_asked():
    a, b = world.run(5, "small"), world.run(5, "small", switches=set())
    assert a.digest == b.digest
    with pytest.raises(KeyError):
        world.run(5, "small", switches={"no-such-switch"})


HOLD_SEEDS = 6  # seeds of `backlog`; each of the first 20 held falls back (12-01: 77-228)


def test_backlog_seeds_reach_the_demand_hold_back_under_faults(monkeypatch):
    """The submitter holds back small falls of a backlogged count (`_demand_matters`,
    DEMAND_SLACK); the shapes with few jobs a submit never reach that (a count below
    DEMAND_SLACK is told exactly), `backlog` must, in every seed, with faults injected.
    The count (`demand_held`, tests/sim/submitter.py) is of the core's own answers: with
    the slack made too big to hold anything back, the same seeds count none."""
    from jrs.client import core

    held = [world.run(seed, "backlog") for seed in range(1, HOLD_SEEDS + 1)]
    assert all(r.ok and r.faults for r in held), [r.failures[:1] for r in held]
    counts = [r.stats["demand_held"] for r in held]
    assert min(counts) >= 10, f"falls held back per seed: {counts}"
    monkeypatch.setattr(core, "DEMAND_SLACK", 10 ** 9)  # every fall told: no hold-back
    exact = [world.run(seed, "backlog").stats["demand_held"]
             for seed in range(1, HOLD_SEEDS + 1)]
    assert exact == [0] * HOLD_SEEDS, exact
    print(f"backlog: falls held back in seeds 1-{HOLD_SEEDS}: {counts}; none without slack")
