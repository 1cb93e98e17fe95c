"""A node tells a (restarted) master which claims it is letting go: dropped by an earlier
master with kill False while their jobs run (issue 12, stale claims after a reconnect)."""

from __future__ import annotations

from jrs.wire.messages import validate
from tests.test_node_core import attach, claim_id, make, offer, start_job


def test_the_hello_marks_a_claim_dropped_while_its_job_runs_as_releasing():
    c = make()
    offer(c, 1)
    offer(c, 2)
    attach(c, 1)
    start_job(c)
    c.from_master({"type": "claim-drop", "claim": claim_id(1), "kill": False}, 0.0)
    hello = c.hello()
    by_id = {cl["claim"]: cl for cl in hello["claims"]}
    assert by_id[claim_id(1)].get("releasing") is True
    assert "releasing" not in by_id[claim_id(2)]  # a claim not being let go: as before
    assert validate(hello, strict=True) == hello
