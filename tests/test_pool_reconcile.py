"""The Pool takes a node's hello as the truth about what it holds (issue 12: a lost claim
offer blocked a slot forever). tests/test_pool.py covers the offers `node_gone` withdraws
and those the reports reconcile; this covers the hello alone, as when the node's new
session says hello before the master has read the old one's end."""

from __future__ import annotations

from jrs.cluster.pool import Pool
from jrs.config import Endpoint, NodeEntry


def _hello(slots: int, claims=()) -> dict:
    return {"slots": slots, "memory": 1000, "gpus": 0, "attrs": {}, "claims": list(claims)}


def _offers(actions: list) -> list:
    return [m for _, _, m in actions if m["type"] == "claim-offer"]


def _listed(p: Pool, cid: str) -> dict:
    c = p.claims[cid]
    return {"claim": cid, "submitter": c.submitter, "user": c.user, "cpus": c.cpus,
            "memory": c.memory, "gpus": []}


def _pool_with_demand(count: int) -> tuple:
    p = Pool([NodeEntry(Endpoint("h", 1))], 0)
    p.node_hello("h:1", _hello(2), 1)
    p.submitter_hello({"submitter": "a", "user": "alice", "host": "x", "pid": 1,
                       "claims": [], "clusters": []}, 1)
    out = p.set_demand("a", [{"key": "k", "count": count, "cpus": 1, "memory": 0, "gpus": 0,
                              "requirements": "", "ad": {}}], 1)
    return p, [m["claim"] for m in _offers(out)]


def test_an_offer_the_hello_does_not_list_is_withdrawn_and_the_slot_offered_again():
    p, (lost,) = _pool_with_demand(1)
    out = p.node_hello("h:1", _hello(2), 2)  # a new session: the offer went to the old one
    assert lost not in p.claims
    (again,) = _offers(out)
    assert again["claim"] != lost and again["submitter"] == "a"
    p.check()


def test_a_claim_the_hello_no_longer_lists_frees_its_slot():
    """A granted claim whose job ended while its word to us was lost: the node's hello
    does not list it, so its slot is free again for the demand still waiting."""
    p, (first, second) = _pool_with_demand(2)
    for cid in (first, second):
        p.claim_answer("h:1", {"type": "claim-ok", "claim": cid}, 1)
    p.set_demand("a", [{"key": "k", "count": 3, "cpus": 1, "memory": 0, "gpus": 0,
                        "requirements": "", "ad": {}}], 1.5)
    assert p.nodes["h:1"].used_cpus == 2
    out = p.node_hello("h:1", _hello(2, [_listed(p, second)]), 2)
    assert first not in p.claims and second in p.claims and p.claims[second].active
    (again,) = _offers(out)
    assert again["claim"] not in (first, second)
    p.check()
