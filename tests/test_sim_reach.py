"""The simulation's reach: defects of issue 12, put back by a test-only switch
(tests/sim/bugs.py), are found within the CI seed budget.

For each switch: the first seed (of at most BUDGET) whose run fails with the
defect's kind of failure, and the same seed passes with the switch off. The
switches are off in every other run; `python -m tests.sim --seed N --switch S`
replays one.
"""

from __future__ import annotations

import pytest

from tests.sim import world

BUDGET = 1000  # seeds of the small shape at most (the CI runs 2,000 seeds in all)

EXPECTED = {
    "release-kills": ("was killed", "no execution of that attempt ran to such an end"),
    "offer-lost": ("quiet:", "liveness"),
    "retries-forgotten": ("attempts must grow", "executed twice", "retried",
                          "and the job was run again"),
}
if world.real_cores()["node"]:  # the node core's switch needs the node core (issue 12 item 2)
    EXPECTED["task-before-io"] = ("liveness", "quiet:")


@pytest.mark.parametrize("switch", sorted(EXPECTED))
def test_the_simulation_finds_the_defect_the_switch_puts_back(switch):
    for seed in range(1, BUDGET + 1):
        res = world.run(seed, "small", switches={switch})
        hits = [f for f in res.failures if any(k in f for k in EXPECTED[switch])]
        if not hits:
            continue
        clean = world.run(seed, "small")
        if clean.ok:
            print(f"{switch}: found by seed {seed}: {hits[0][:300]}")
            return
    pytest.fail(f"{switch}: no seed of {BUDGET} found it")


def test_switches_are_off_unless_asked():
    a, b = world.run(5, "small"), world.run(5, "small", switches=set())
    assert a.digest == b.digest
    with pytest.raises(KeyError):
        world.run(5, "small", switches={"no-such-switch"})
