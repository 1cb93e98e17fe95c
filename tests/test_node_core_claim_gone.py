"""A node's `finished` says `claim_gone` exactly when the submitter must not send another
run on the job's claim: the node dropped it (with the job, or since), or, back from a
stop, the master has not confirmed its claims yet (issue 12's leftover: each such run
was refused "unknown claim", a wasted input transfer and an uncounted rerun)."""

from __future__ import annotations

from jrs.node import core as nc
from jrs.wire.messages import validate
from tests.test_node_core import T0, attach, claim_id, finish, make, of, offer, start_job, to_master


def _finished(c: nc.NodeCore, acts: list) -> dict:
    """The `finished` of the one Deliver among `acts`, built as a shell builds it."""
    (d,) = of(acts, nc.Deliver)
    task = c.task_of(d.key)
    msg = c.finished_msg(task, nc.result_of(task.state, "n1"), [])
    assert validate(msg, strict=True) == msg  # the schema has the field
    return msg


def test_a_result_on_a_claim_the_node_keeps_says_nothing_of_it():
    """The common case, and what an older submitter reads: the message as before."""
    c = make()
    offer(c, 1)
    attach(c, 1)
    task = start_job(c)
    msg = _finished(c, finish(c, task))
    assert "claim_gone" not in msg and claim_id(1) in c.claims
    assert set(msg) == {"type", "job", "attempt", "result", "files"}


def test_a_claim_released_while_its_job_ran_went_with_it():
    """The master dropped it with kill False (our session of it closed: sim large 7):
    the node lets it go as the job ends, and the result says so."""
    c = make()
    offer(c, 1)
    attach(c, 1)
    task = start_job(c)
    c.from_master({"type": "claim-drop", "claim": claim_id(1), "kill": False}, T0)
    assert c.claims[claim_id(1)].releasing
    acts = finish(c, task)
    assert claim_id(1) not in c.claims
    assert {"type": "claim-released", "claim": claim_id(1)} in to_master(acts)
    assert _finished(c, acts).get("claim_gone") is True


def test_a_claim_killed_with_its_job_is_gone_too():
    """(The submitter retires it already for its `removed` result; the field agrees.)"""
    c = make()
    offer(c, 1)
    attach(c, 1)
    task = start_job(c)
    acts = c.from_master({"type": "claim-drop", "claim": claim_id(1), "kill": True}, T0)
    assert of(acts, nc.Kill)
    acts = finish(c, task)  # (the job's end, however the kill went)
    assert _finished(c, acts).get("claim_gone") is True


def test_a_claim_dropped_after_its_job_ended_but_before_the_result_went_says_so():
    """The result could not go at once (no session: the submitter was reconnecting);
    the master dropped the claim meanwhile. Built when it goes, the result says so."""
    c = make()
    offer(c, 1)
    offer(c, 2)
    attach(c, 1)
    task = start_job(c)
    kept = start_job(c, i=2, job="1.1")
    c.session_closed(1)
    assert of(finish(c, task), nc.Deliver) == [] and of(finish(c, kept), nc.Deliver) == []
    c.from_master({"type": "claim-drop", "claim": claim_id(1), "kill": False}, T0 + 1)
    assert claim_id(1) not in c.claims
    delivered = {}
    for d in of(attach(c, 2), nc.Deliver):
        t = c.task_of(d.key)
        delivered[t.job] = c.finished_msg(t, nc.result_of(t.state, "n1"), [])
    assert delivered["1.0"].get("claim_gone") is True
    assert "claim_gone" not in delivered["1.1"]  # claim 2 is still held: reused next


def test_back_from_a_stop_a_result_says_its_claim_may_be_gone_until_the_master_confirms():
    """Sim revoke 4: the node was stopped 8 s; its job ended meanwhile and was read back
    before the first tick, its result went out, and the master's revocation (it had
    declared the node lost) landed 5 ms later: the run the submitter sent on the claim
    was refused. The stop is noted at the job's end now, the master asked at once, and
    until it answered the result says the claim may be gone."""
    c = make(slots=2)
    offer(c, 1)
    offer(c, 2)
    attach(c, 1)
    task = start_job(c)
    later = start_job(c, i=2, job="1.1")
    c.tick(T0 + 1)
    acts = finish(c, task, ended=T0 + 9)  # the first event after the stop
    assert [m["type"] for m in to_master(acts)] == ["node-report", "ping"]
    assert claim_id(1) in c.claims and c.unconfirmed is not None
    assert _finished(c, acts).get("claim_gone") is True
    seq = next(m["seq"] for m in to_master(acts) if m["type"] == "ping")
    c.from_master({"type": "pong", "seq": seq}, T0 + 9.1)  # the master kept them all
    assert "claim_gone" not in _finished(c, finish(c, later, ended=T0 + 9.2))


def test_an_attach_after_a_stop_notes_it_before_the_results_go():
    c = make()
    offer(c, 1)
    attach(c, 1)
    task = start_job(c)
    c.session_closed(1)
    finish(c, task, ended=T0 + 1)
    acts = c.attach(2, {"type": "attach", "submitter": task.submitter, "jobs": [],
                        "token": "1f" * 32}, T0 + 10)
    assert c.unconfirmed is not None and "ping" in [m["type"] for m in to_master(acts)]
    assert _finished(c, acts).get("claim_gone") is True
