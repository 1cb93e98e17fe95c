"""The simulation counts the runs nodes refuse "unknown claim" (the claim went before the
run came): after a reset submitter-master connection the submitter sent such runs on the
claims the master had dropped meanwhile, one wasted input transfer and delay each (the
root of D6). The master's welcome now names them and the submitter gives them up."""

from __future__ import annotations

import pytest

from jrs.node import core as nc
from tests.sim import world

# (seed, shape): refusals "unknown claim" with the welcome naming no drops (an older
# master, switch welcome-names-no-drops) -> with it (counted 12-01 on 4ed92dd)
SEEDS = [(404719, "large")]  # D6's first seed: 5 -> 0


def _count_refusals(monkeypatch, seed: int, shape: str, switches=()) -> tuple:
    counted = []
    race = nc.NodeCore._race

    def counting(t, reason):
        if reason.startswith("unknown claim"):
            counted.append(t.claim)
        return race(t, reason)

    monkeypatch.setattr(nc.NodeCore, "_race", staticmethod(counting))
    res = world.run(seed, shape, switches=set(switches))
    monkeypatch.setattr(nc.NodeCore, "_race", staticmethod(race))
    return len(counted), res


@pytest.mark.parametrize("seed,shape", SEEDS, ids=[f"{s}-{sh}" for s, sh in SEEDS])
def test_no_run_is_sent_on_a_claim_the_master_dropped_while_we_were_away(monkeypatch, seed,
                                                                         shape):
    # the nodes' `finished` says such a claim is gone too (tests/test_sim_claim_gone.py):
    # left out here, so the welcome alone is what is tested
    alone = {"finished-says-no-claim-gone"}
    before, res = _count_refusals(monkeypatch, seed, shape, alone | {"welcome-names-no-drops"})
    assert before >= 1, f"seed {seed} no longer reaches D6's root: find another"
    assert res.ok, res.replay()  # refused runs rerun uncounted (D6's fix)
    after, res = _count_refusals(monkeypatch, seed, shape, alone)
    assert res.ok, res.replay() + "\n" + "\n".join(res.failures[:3])
    assert after == 0, f"{after} runs refused 'unknown claim' (before the welcome: {before})"
