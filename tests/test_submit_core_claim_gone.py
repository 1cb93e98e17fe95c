"""The submitter core retires a claim whose node's `finished` says `claim_gone`: the node
let the claim go with the job (or cannot vouch for it, back from a stop), so the next
job goes elsewhere instead of a `run` the node refuses "unknown claim" (issue 12's
leftover: sim large 7, revoke 4; a wasted input transfer and an uncounted rerun each).
A `finished` without the field (a node of before it): as before."""

from __future__ import annotations

from jrs.client import core as C
from jrs.client.jobs import IDLE
from jrs.client.runner import refused_result
from jrs.wire.aio import BadPeerMessage
from tests.test_submit_core import claim, collect, finished, make, msgs, of
from tests.test_submit_core_welcome import THREE, _two_running


def test_a_claim_gone_with_its_job_is_given_no_job_again(tmp_path):
    core = _two_running(tmp_path)  # 7.0 on c1, 7.1 on c2, 7.2 idle
    acts = collect(core, "n1", dict(finished("7.0", 1), claim_gone=True))
    assert 0 not in core.queue.live  # the result counts as usual (done)
    assert of(acts, C.StartRun) == []  # 7.2 is not sent on c1
    assert "c1" not in core.claims and core.queue.live[2].state == IDLE
    assert "c1" not in core.hello(1)["claims"]
    # released through the node (a no-op there: it dropped it and told the master)
    assert msgs(acts, C.ToNode, "release") == [{"type": "release", "claim": "c1",
                                                "kill": False}]
    acts = collect(core, "n1", finished("7.1", 1))  # c2 is still held: 7.2 goes there
    (run,) = of(acts, C.StartRun)
    assert run.msg["claim"] == "c2" and run.msg["job"] == "7.2"


def test_a_finished_without_the_field_leaves_the_claim_in_use(tmp_path):
    """A node of before the field, or the claim kept (`claim_gone` absent or not true)."""
    for gone in (None, False, "yes", 1):
        core = _two_running(tmp_path)
        msg = finished("7.0", 1)
        if gone is not None:
            msg["claim_gone"] = gone
        (run,) = of(collect(core, "n1", msg), C.StartRun)
        assert run.msg["claim"] == "c1" and run.msg["job"] == "7.2"


def test_a_stale_result_saying_claim_gone_touches_no_claim(tmp_path):
    """A result of an attempt we gave up on names no claim of ours any more."""
    core = make(tmp_path, THREE)
    core.start(0.0)
    core.from_master(claim("c1"), 0.0)
    core.node_up("n1", 0.0)
    core.run_sent("n1", 0, 1)
    acts = collect(core, "n1", dict(finished("7.0", 9), claim_gone=True))
    assert core.claims["c1"].proc == 0 and not core.claims["c1"].retire
    assert msgs(acts, C.ToNode, "ack") == [{"type": "ack", "job": "7.0", "attempt": 9}]


def test_a_result_the_schema_refused_keeps_the_field():
    """runner.refused_result hands the core a `finished` the wire refused (too many
    outputs): the field goes with it, so the claim is retired there too."""
    body = dict(finished("7.0", 1, files=[{"name": "a", "size": 1, "mode": 0o644}]),
                claim_gone=True)
    exc = BadPeerMessage("finished: too many files", body)
    assert refused_result(exc)["claim_gone"] is True
    del body["claim_gone"]
    assert "claim_gone" not in refused_result(exc)
