"""The master's answer to a submitter-hello names the claims the hello lists that the
master no longer holds for it (issue 12, the root of sim D6): told nothing, a
reconnecting submitter sent runs on them that their nodes refused "unknown claim"."""

from __future__ import annotations

from jrs.cluster.pool import Pool
from jrs.config import Endpoint, NodeEntry
from jrs.wire.messages import validate


def _node_hello(slots: int = 2) -> dict:
    return {"slots": slots, "memory": 1000, "gpus": 0, "attrs": {}, "claims": []}


def _hello(sid: str, claims=()) -> dict:
    return {"type": "submitter-hello", "submitter": sid, "user": "alice", "host": "x",
            "pid": 1, "claims": list(claims), "clusters": []}


def _granted(p: Pool, sid: str, count: int, now: float = 1) -> list:
    """`count` claims of `sid`, offered, accepted and granted."""
    p.submitter_hello(_hello(sid), now)
    out = p.set_demand(sid, [{"key": "k", "count": count, "cpus": 1, "memory": 0, "gpus": 0,
                              "requirements": "", "ad": {}}], now)
    cids = []
    for _, node, m in out:
        if m["type"] == "claim-offer":
            p.claim_answer(node, {"type": "claim-ok", "claim": m["claim"]}, now)
            cids.append(m["claim"])
    assert len(cids) == count
    return cids


def _pool(nodes: int = 1, **kw) -> Pool:
    p = Pool([NodeEntry(Endpoint("h", i + 1)) for i in range(nodes)], 0, **kw)
    for i in range(nodes):
        p.node_hello(f"h:{i + 1}", _node_hello(), 1)
    return p


def test_claims_dropped_while_the_submitter_was_away_are_named_in_its_welcome():
    p = _pool()
    c1, c2 = _granted(p, "a", 2)
    p.submitter_gone("a", 2)  # its session reset: both dropped, kill False
    assert all(p.claims[c].drop is False for c in (c1, c2))
    p.claim_released("h:1", c1, 3)  # the node let c1 go (free); c2's job still runs
    assert c1 not in p.claims and c2 in p.claims
    hello = _hello("a", [c1, c2])
    p.submitter_hello(hello, 4)
    welcome = p.welcome(hello)
    assert welcome == {"type": "welcome", "dropped": [c1, c2]}  # nobody told to kill
    assert validate(welcome, strict=True) == welcome  # the strict wire checks let it by
    p.check()


def test_claims_revoked_with_kill_are_named_as_killed():
    p = _pool(node_timeout=5)
    (c1,) = _granted(p, "a", 1)
    p.submitter_gone("a", 2)
    p.tick(20)  # the node went silent past its timeout: its claims revoked, kill
    assert c1 not in p.claims and p.dropped.get(c1) is True  # the node is told at its hello
    hello = _hello("a", [c1])
    p.submitter_hello(hello, 21)
    assert p.welcome(hello) == {"type": "welcome", "dropped": [c1], "killed": [c1]}


def test_held_claims_and_claims_the_master_has_no_word_of_are_not_named():
    """A held claim is still ours; one this master never heard of may be adopted from
    its node's hello after a master restart, so it is not given up on either."""
    p = _pool()
    (c1,) = _granted(p, "a", 1)
    hello = _hello("a", [c1, "f" * 24])
    p.submitter_hello(hello, 2)
    assert p.welcome(hello) == {"type": "welcome"}  # an old master's welcome, too
    assert p.claims[c1].drop is None


def test_another_submitters_claim_is_named_but_not_as_killed():
    p = _pool()
    (c1,) = _granted(p, "a", 1)
    hello = _hello("b", [c1])
    p.submitter_hello(hello, 2)
    assert p.welcome(hello) == {"type": "welcome", "dropped": [c1]}
    assert p.claims[c1].drop is None  # the answer changed nothing for its holder


def test_a_claim_its_node_is_letting_go_stays_dropped_after_a_master_restart():
    """The old master dropped it (kill False) while its job ran; a restarted master adopts
    it from the node's hello as dropped, so its welcome names it and no offer counts on
    it; a claim not being let go is adopted as held."""
    p = Pool([NodeEntry(Endpoint("h", 1))], 0)
    base = {"submitter": "a", "user": "alice", "cpus": 1, "memory": 0, "gpus": []}
    out = p.node_hello("h:1", dict(_node_hello(), claims=[
        dict(base, claim="c" * 24, releasing=True), dict(base, claim="d" * 24)]), 1)
    assert p.claims["c" * 24].drop is False and p.claims["d" * 24].drop is None
    hello = _hello("a", ["c" * 24, "d" * 24])
    p.submitter_hello(hello, 2)
    assert p.welcome(hello) == {"type": "welcome", "dropped": ["c" * 24]}
    assert not [m for _, _, m in out if m["type"] == "claim-drop" and m.get("kill")]
    p.check()
