"""The Pool's side of simulation findings C2 and C3 (API-H-requests), on the pure core.

C2: a master stopped for a while (SIGSTOP, a swapping host) woke up, ticked before reading
the node reports queued meanwhile, declared its live nodes lost and revoked their claims
with kill. C3: an orphan's claim-drop was sent once; lost, the claims stayed for good.
"""

from __future__ import annotations

from jrs.cluster.pool import DROP_RESEND, Pool
from jrs.config import Endpoint, NodeEntry


def _pool(nodes: int = 1, **kw) -> Pool:
    return Pool([NodeEntry(Endpoint("h", i + 1)) for i in range(nodes)], 0, **kw)


def _hello(claims=()) -> dict:
    return {"slots": 2, "memory": 1000, "gpus": 0, "attrs": {}, "claims": list(claims)}


def _report(claims=()) -> dict:
    return {"load": 0.0, "running": len(claims), "claims": list(claims)}


def _types(actions: list, kind: str) -> list:
    return [m for _, _, m in actions if m["type"] == kind]


def _submitter(p: Pool, sid: str, count: int, now: float) -> list:
    p.submitter_hello({"submitter": sid, "user": "alice", "host": "x", "pid": 1,
                       "claims": [], "clusters": []}, now)
    return p.set_demand(sid, [{"key": "k", "count": count, "cpus": 1, "memory": 0,
                               "gpus": 0, "requirements": "", "ad": {}}], now)


def _running_claim(p: Pool, now: float) -> str:
    """One active claim of submitter "a" on h:1."""
    (offer,) = _types(_submitter(p, "a", 1, now), "claim-offer")
    p.claim_answer("h:1", {"type": "claim-ok", "claim": offer["claim"]}, now)
    return offer["claim"]


# ------------------------------------------------------------------ C2


def test_a_master_back_from_a_stall_does_not_declare_its_live_nodes_lost():
    """Seed small 1164: the master stopped 8.1 s (node timeout 6 s); its first tick after
    the stall came before the reports queued meanwhile, and killed the nodes' jobs."""
    p = _pool(2, node_timeout=6.0)
    for name in ("h:1", "h:2"):
        p.node_hello(name, _hello(), 1.0)
    cid = _running_claim(p, 1.0)
    t = 1.0
    while t < 9.0:  # ticks and reports, one a second
        t += 1.0
        assert not _types(p.tick(t), "node-lost")
        for name in ("h:1", "h:2"):
            p.node_report(name, _report([cid] if name == "h:1" else []), t)
    out = p.tick(t + 8.1)  # stopped 8.1 s: the reports of that time are not read yet
    assert not _types(out, "node-lost") and not _types(out, "claim-drop"), out
    assert cid in p.claims and p.nodes["h:1"].state == "up"
    for name in ("h:1", "h:2"):  # the queued reports, read after the tick
        p.node_report(name, _report([cid] if name == "h:1" else []), t + 8.1)
    assert not _types(p.tick(t + 9.1), "node-lost")
    p.check()


def test_a_node_that_died_during_the_stall_is_still_declared_lost():
    """The stall is not counted for the nodes, but what follows is: a silent node goes."""
    p = _pool(2, node_timeout=6.0)
    for name in ("h:1", "h:2"):
        p.node_hello(name, _hello(), 1.0)
    cid = _running_claim(p, 1.0)
    p.tick(2.0)
    p.node_report("h:2", _report(), 2.0)
    assert not _types(p.tick(12.0), "node-lost")  # back from 10 s away
    lost, t = [], 12.0
    while not lost and t < 30.0:
        t += 1.0
        p.node_report("h:2", _report(), t)  # h:2 lives, h:1 says nothing
        lost = _types(p.tick(t), "node-lost")
    assert lost == [{"type": "node-lost", "node": "h:1", "claims": [cid]}]
    assert 16.0 <= t <= 19.0, t  # about one node timeout of the master's running time
    assert p.nodes["h:2"].state == "up"


def test_a_ticker_that_is_merely_late_still_declares_a_silent_node_lost():
    """Each tick 2.5 s after the last (a loaded host): each counts one period at least, so
    a node that stopped talking is lost after a bounded number of ticks."""
    p = _pool(1, node_timeout=6.0)
    p.node_hello("h:1", _hello(), 0.0)
    t, ticks = 0.0, 0
    while p.nodes["h:1"].state == "up" and ticks < 20:
        t += 2.5
        ticks += 1
        p.tick(t)
    assert p.nodes["h:1"].state == "down" and ticks <= 7, ticks


def test_an_offer_made_before_a_stall_is_not_withdrawn_before_its_answer_is_read():
    p = _pool(1, node_timeout=6.0, offer_timeout=10.0)
    p.node_hello("h:1", _hello(), 1.0)
    p.tick(1.0)
    (offer,) = _types(_submitter(p, "a", 1, 1.0), "claim-offer")
    p.tick(2.0)
    out = p.tick(14.0)  # stopped 12 s; the claim-ok came at 2.1 and waits in the socket
    assert not _types(out, "claim-drop") and not _types(out, "claim-offer"), out
    grant = p.claim_answer("h:1", {"type": "claim-ok", "claim": offer["claim"]}, 14.0)
    assert [m["type"] for _, _, m in grant] == ["claim"]


def test_an_orphan_whose_submitter_hello_waited_through_the_stall_keeps_its_claims():
    p = _pool(1, node_timeout=100.0, orphan_grace=15.0)
    c = {"claim": "old1", "submitter": "back", "user": "u", "cpus": 1, "memory": 0,
         "gpus": []}
    p.node_hello("h:1", _hello([c]), 1.0)  # a master that restarted: adopted, orphan
    for t in range(2, 11):
        p.tick(float(t))
    assert not _types(p.tick(20.0), "claim-drop")  # 10 s away, its hello is queued
    p.submitter_hello({"submitter": "back", "user": "u", "host": "x", "pid": 1,
                       "claims": ["old1"], "clusters": []}, 20.0)
    assert not _types(p.tick(40.0), "claim-drop") and "old1" in p.claims


# ------------------------------------------------------------------ C3


def _orphan_dropped(p: Pool) -> dict:
    """h:1 brings claim old1 of a submitter that never comes back; the drop goes out."""
    c = {"claim": "old1", "submitter": "gone", "user": "u", "cpus": 1, "memory": 0,
         "gpus": []}
    p.node_hello("h:1", _hello([c]), 1.0)
    drops = []
    for t in range(2, 18):
        drops += _types(p.tick(float(t)), "claim-drop")
    assert drops == [{"type": "claim-drop", "claim": "old1", "kill": False}]
    return c


def test_an_orphans_drop_lost_is_sent_again_while_the_node_lists_the_claim():
    """Seed small 237: the drop was lost (the node lost power before acting on it), the
    node kept listing the claim, and the Pool kept it for good."""
    p = _pool(1, node_timeout=1000.0, orphan_grace=15.0)
    _orphan_dropped(p)
    again, t = [], 17.0
    while t < 17.0 + DROP_RESEND - 1:  # not at every heartbeat
        t += 1.0
        assert not _types(p.node_report("h:1", _report(["old1"]), t), "claim-drop"), t
        p.tick(t)
    while not again and t < 17.0 + 3 * DROP_RESEND:
        t += 1.0
        again = _types(p.node_report("h:1", _report(["old1"]), t), "claim-drop")
        p.tick(t)
    assert again == [{"type": "claim-drop", "claim": "old1", "kill": False}]
    t += DROP_RESEND
    assert _types(p.node_report("h:1", _report(["old1"]), t), "claim-drop")  # until...
    p.claim_released("h:1", "old1", t + 1)  # ...the node lets it go
    assert "old1" not in p.claims and p.nodes["h:1"].used_cpus == 0
    assert not _types(p.node_report("h:1", _report(), t + 100), "claim-drop")


def test_an_orphans_drop_lost_is_sent_again_at_the_nodes_next_hello():
    p = _pool(1, node_timeout=1000.0, orphan_grace=15.0)
    c = _orphan_dropped(p)
    p.node_gone("h:1", 17.5)  # power loss before it acted on the drop
    out = p.node_hello("h:1", _hello([c]), 21.0)
    assert _types(out, "claim-drop") == [{"type": "claim-drop", "claim": "old1",
                                          "kill": False}]
    assert _types(p.node_hello("h:1", _hello([c]), 30.0), "claim-drop")
    p.check()


def test_a_claim_being_dropped_is_not_granted_to_a_submitter_that_comes_back():
    p = _pool(1, node_timeout=1000.0, orphan_grace=15.0)
    _orphan_dropped(p)
    out = p.submitter_hello({"submitter": "gone", "user": "u", "host": "x", "pid": 1,
                             "claims": [], "clusters": []}, 18.0)
    assert not _types(out, "claim"), out


def test_a_node_listing_revoked_claims_in_every_report_gets_each_drop_once_a_while():
    """R1: claims revoked when their node was declared lost are remembered (`dropped`);
    a node that lists them again gets their claim-drop. A hostile node sending reports
    back to back, each listing many such ids, made the master answer (and log) one
    claim-drop per id per report: amplification without bound. Each id's drop goes again
    only after DROP_RESEND, as for the claims the node still holds."""
    p = _pool(1, node_timeout=6.0)
    p.node_hello("h:1", dict(_hello(), slots=4), 0.0)
    cids = []
    for i in range(3):
        for offer in _types(_submitter(p, f"s{i}", 1, 0.0), "claim-offer"):
            p.claim_answer("h:1", {"type": "claim-ok", "claim": offer["claim"]}, 0.0)
            cids.append(offer["claim"])
    assert len(cids) >= 3
    lost = _types(p.tick(7.0), "node-lost")
    assert sorted(c for m in lost for c in m["claims"]) == sorted(cids)
    drops = []
    for i in range(200):  # back to back, all within one second
        drops += _types(p.node_report("h:1", _report(cids), 7.5 + i / 1000), "claim-drop")
    assert sorted(d["claim"] for d in drops) == sorted(cids)  # once each, at once
    assert all(d["kill"] is True for d in drops)
    later = _types(p.node_report("h:1", _report(cids), 7.5 + DROP_RESEND), "claim-drop")
    assert sorted(d["claim"] for d in later) == sorted(cids)  # still listed: told again
    p.check()
