"""The master's pure core: offers that are lost, answers that are lost, releases that must
not kill, the indexes that make a heartbeat cost O(its node), and hostile payloads."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

from jrs.cluster import payload
from jrs.cluster.pool import Pool
from jrs.condor import classad
from jrs.config import Endpoint, NodeEntry


def _hello(slots: int, claims=(), attrs=None) -> dict:
    return {"slots": slots, "memory": 1000, "gpus": 0, "attrs": attrs or {},
            "claims": list(claims)}


def _pool(slots=(4,), **kw) -> Pool:
    p = Pool([NodeEntry(Endpoint("h", i + 1)) for i in range(len(slots))], 0, **kw)
    for i, n in enumerate(slots):
        p.node_hello(f"h:{i + 1}", _hello(n), 1)
    return p


def _sub(p: Pool, sid: str, count: int, user: str = "alice", requirements: str = "",
         now: float = 1) -> list:
    p.submitter_hello({"submitter": sid, "user": user, "host": "x", "pid": 1, "claims": [],
                       "clusters": []}, now)
    return p.set_demand(sid, [{"key": "k", "count": count, "cpus": 1, "memory": 0, "gpus": 0,
                               "requirements": requirements, "ad": {}}], now)


def _msgs(actions: list, kind: str) -> list:
    return [(who, m) for _, who, m in actions if m["type"] == kind]


def _drops_have_kill(actions: list) -> None:
    for _, _, m in actions:
        if m["type"] == "claim-drop":
            assert isinstance(m.get("kill"), bool), m


def test_release_never_kills_unless_asked():
    """Issue 12: a resumed submitter releasing old claims killed their running jobs."""
    p = _pool((2,))
    offers = _msgs(_sub(p, "a", 1), "claim-offer")
    cid = offers[0][1]["claim"]
    p.claim_answer("h:1", {"type": "claim-ok", "claim": cid}, 1)
    assert p.release("a", cid, 2) == [("node", "h:1",
                                       {"type": "claim-drop", "claim": cid, "kill": False})]
    assert p.release("a", cid, 2, kill=True)[0][2]["kill"] is True
    assert p.release("b", cid, 2) == []  # not its claim


def test_an_offer_to_a_session_that_closed_is_withdrawn_and_made_again():
    """Issue 12: a node restarted within the timeout; the offer to its old channel was lost
    and a one-job submit hung because the inactive claim counted as pending forever."""
    p = _pool((2,))
    p.node_gone("h:1", 2)
    assert _msgs(_sub(p, "a", 1, now=2), "claim-offer") == []  # not to a closed session
    out = p.node_hello("h:1", _hello(2), 3)
    (who, offer), = _msgs(out, "claim-offer")
    assert who == "h:1" and offer["submitter"] == "a"
    p.check()


def test_node_gone_withdraws_offers_in_flight():
    p = _pool((2,))
    (_, offer), = _msgs(_sub(p, "a", 1), "claim-offer")
    out = p.node_gone("h:1", 2)
    assert offer["claim"] not in p.claims and not _msgs(out, "claim-offer")
    out = p.node_hello("h:1", _hello(2), 3)  # back: a fresh offer, not the lost one
    (_, again), = _msgs(out, "claim-offer")
    assert again["claim"] != offer["claim"]
    # the old session's claim-ok arrives late after all: the node is told to let it go
    late = p.claim_answer("h:1", {"type": "claim-ok", "claim": offer["claim"]}, 4)
    assert late == [("node", "h:1", {"type": "claim-drop", "claim": offer["claim"],
                                     "kill": False})]
    p.check()


def test_a_lost_claim_ok_is_recovered_from_the_nodes_report():
    p = _pool((2,))
    (_, offer), = _msgs(_sub(p, "a", 1), "claim-offer")
    out = p.node_report("h:1", {"load": 0, "running": 0, "claims": [offer["claim"]]}, 2)
    (who, grant), = _msgs(out, "claim")
    assert who == "a" and grant["claim"] == offer["claim"] and p.claims[grant["claim"]].active


def test_a_lost_claim_ok_is_recovered_from_the_nodes_hello():
    p = _pool((2,))
    (_, offer), = _msgs(_sub(p, "a", 1), "claim-offer")
    c = {"claim": offer["claim"], "submitter": "a", "user": "alice", "cpus": 1, "memory": 0,
         "gpus": []}
    out = p.node_hello("h:1", _hello(2, [c]), 2)
    assert [g["claim"] for _, g in _msgs(out, "claim")] == [offer["claim"]]
    assert p.claims[offer["claim"]].active


def test_an_offer_the_node_never_heard_of_is_dropped_after_two_reports():
    p = _pool((2,))
    (_, offer), = _msgs(_sub(p, "a", 1), "claim-offer")
    assert p.node_report("h:1", {"load": 0, "running": 0, "claims": []}, 2) == []  # in flight
    out = p.node_report("h:1", {"load": 0, "running": 0, "claims": []}, 3)
    assert offer["claim"] not in p.claims
    (_, again), = _msgs(out, "claim-offer")  # offered again at once
    assert again["claim"] != offer["claim"]
    p.check()


def test_an_unanswered_offer_times_out_and_frees_its_slot():
    p = _pool((1,), offer_timeout=5)
    (_, offer), = _msgs(_sub(p, "a", 1), "claim-offer")
    assert not _msgs(p.tick(5.5), "claim-drop")  # not yet
    out = p.tick(6.5)
    assert ("h:1", {"type": "claim-drop", "claim": offer["claim"], "kill": False}) \
        in _msgs(out, "claim-drop") and offer["claim"] not in p.claims
    (_, again), = _msgs(out, "claim-offer")  # the slot is offered again
    assert again["claim"] != offer["claim"]
    p.check()


def test_pending_ignores_offers_that_will_never_be_answered():
    p = _pool((2, 2))
    offers = _msgs(_sub(p, "a", 2), "claim-offer")
    assert sorted(w for w, _ in offers) == ["h:1", "h:2"]
    out = p.node_gone("h:1", 2)  # its offer is lost: the request wants one more at once
    (who, _), = _msgs(out, "claim-offer")
    assert who == "h:2"


def test_ids_come_from_the_injected_source():
    ids = iter(["x1", "x1", "x2"])  # a repeat is skipped
    p = _pool((2,), new_id=lambda: next(ids))
    offers = _msgs(_sub(p, "a", 2), "claim-offer")
    assert [m["claim"] for _, m in offers] == ["x1", "x2"]


def test_the_pool_reads_no_clock_randomness_or_system():
    tree = ast.parse(Path("jrs/cluster/pool.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree)
                if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not ({"os", "time", "random", "secrets", "socket", "asyncio"} & (imported | modules))


class _NoScan(dict):
    """A claims table that fails any walk over all claims."""

    def values(self):
        raise AssertionError("walked every claim")

    def items(self):
        raise AssertionError("walked every claim")

    def __iter__(self):
        raise AssertionError("walked every claim")


def test_a_heartbeat_and_an_offer_do_not_walk_every_claim():
    p = _pool((4,) * 50)
    offers = _msgs(_sub(p, "a", 1000), "claim-offer")
    for who, m in offers:
        p.claim_answer(who, {"type": "claim-ok", "claim": m["claim"]}, 1)
    p.claims = _NoScan(p.claims)
    mine = list(p.nodes["h:7"].claims)
    assert p.node_report("h:7", {"load": 1.0, "running": 4, "claims": mine}, 2) == []
    out = p.node_report("h:7", {"load": 1.0, "running": 3, "claims": mine[1:]}, 3)
    (who, m), = _msgs(out, "claim-offer")  # the freed slot goes out again
    assert who == "h:7"
    p.claim_answer("h:7", {"type": "claim-ok", "claim": m["claim"]}, 3)
    p.claim_released("h:7", mine[1], 4)
    p.claims = dict(p.claims)
    p.check()


def test_an_offer_does_not_split_the_pool_again_unless_a_share_can_have_moved(monkeypatch):
    """The fair shares are a water-fill over every submitter; an ended claim and the offer
    that replaces it change the wants of submitters above their share only, which moves
    no share: negotiation reuses the last fill (what changed, not every submitter)."""
    p = _pool((4,) * 10)
    offers = []
    for i in range(20):  # 20 users, 2 slots each, then all backlogged
        offers += _msgs(_sub(p, f"s{i}", 2, user=f"u{i}"), "claim-offer")
    for who, m in offers:
        p.claim_answer(who, {"type": "claim-ok", "claim": m["claim"]}, 1)
    for i in range(20):
        assert not _msgs(_sub(p, f"s{i}", 100, user=f"u{i}"), "claim-offer")
    assert all(len(p.claims_of_submitter(f"s{i}")) == 2 for i in range(20))
    fills = []
    real = Pool._water_fill
    monkeypatch.setattr(Pool, "_water_fill",
                        staticmethod(lambda *a: fills.append(1) or real(*a)))
    for n in range(5):
        c = next(iter(p.nodes["h:3"].claims.values()))
        (who, m), = _msgs(p.claim_released("h:3", c.id, 2 + n), "claim-offer")
        assert m["submitter"] == c.submitter  # its slot goes back to the one below share
        p.claim_answer(who, {"type": "claim-ok", "claim": m["claim"]}, 2 + n)
    assert fills == []
    p.set_demand("s0", [], 9)  # s0 wants less than its share now: the fill is done again
    assert fills
    fills.clear()
    p.check()  # (check compares the kept shares with a fresh fill)


def test_a_requirement_is_evaluated_once_per_node_until_an_attribute_it_reads_changes(
        monkeypatch):
    calls = []
    real = classad.matches_counted
    monkeypatch.setattr(classad, "matches_counted", lambda *a: calls.append(1) or real(*a))
    p = Pool([NodeEntry(Endpoint("h", 1))], 0)
    p.node_hello("h:1", _hello(1, attrs={"Arch": "X86_64", "Other": 1}), 1)
    _sub(p, "a", 5, requirements='Arch == "X86_64"')
    first = len(calls)
    for t in range(2, 8):
        p.tick(t)
    assert len(calls) == first  # nothing it reads changed
    p.node_hello("h:1", _hello(1, attrs={"Arch": "X86_64", "Other": 2}), 8)
    p.tick(9)
    assert len(calls) == first  # Other changed, Arch did not
    p.node_hello("h:1", _hello(1, attrs={"Arch": "ARM"}), 10)
    p.tick(11)
    assert len(calls) > first


def test_status_shows_results_waiting_per_node():
    p = _pool((2, 2))
    p.node_report("h:1", {"load": 0, "running": 0, "claims": [], "waiting": 3,
                          "oldest_wait": 40.0}, 5)
    nodes = {n["name"]: n for n in p.status(7)["nodes"]}
    assert nodes["h:1"]["results_waiting"] == 3 and nodes["h:1"]["oldest_result_age"] == 42.0
    assert nodes["h:2"]["results_waiting"] is None


def test_a_session_is_bound_to_its_first_token():
    p = _pool()
    assert p.session_ok("s1", "aa")
    assert p.session_ok("s1", "aa") and not p.session_ok("s1", "bb")
    assert not p.session_ok("s1", None)  # a hello without a token cannot take it either
    # contract 8: a hello without a token is refused, and binds nothing
    assert not p.session_ok("s2", None) and not p.session_ok("s2", "")
    assert p.session_ok("s2", "cc") and not p.session_ok("s2", "dd")


BAD_VALUES = [None, 1, -1, 1.5, "x", [], {}, [1], {"a": [1]}, True, "a" * 5000, [[[]]]]


@pytest.mark.parametrize("seed", range(3))
def test_hostile_nested_payloads_raise_payload_errors_only(seed):
    rnd = random.Random(seed)
    p = _pool((2, 2))
    _sub(p, "a", 3)
    good = {
        "node_hello": lambda v: p.node_hello("h:1", dict(_hello(2), **v), 2),
        "node_report": lambda v: p.node_report("h:1", dict(
            {"load": 0, "running": 0, "claims": []}, **v), 2),
        "demand": lambda v: p.set_demand("a", [dict({"key": "k", "count": 1, "cpus": 1,
                                                     "memory": 0, "gpus": 0}, **v)], 2),
        "hello": lambda v: p.submitter_hello(dict({"submitter": "b", "user": "u",
                                                   "host": "h", "pid": 1, "claims": [],
                                                   "clusters": []}, **v), 2),
        "progress": lambda v: p.set_progress("a", v.get("clusters")),
        "answer": lambda v: p.claim_answer("h:1", dict({"type": "claim-ok"}, **v), 2),
    }
    fields = {"node_hello": ["slots", "attrs", "claims"],
              "node_report": ["load", "running", "claims", "waiting", "oldest_wait"],
              "demand": ["key", "count", "cpus", "requirements", "ad", "weight"],
              "hello": ["submitter", "user", "pid", "claims", "clusters"],
              "progress": ["clusters"], "answer": ["claim"]}
    for _ in range(300):
        event = rnd.choice(sorted(good))
        name = rnd.choice(fields[event])
        value = rnd.choice(BAD_VALUES)
        if rnd.random() < 0.3:
            value = [value] if rnd.random() < 0.5 else [{"claim": value}]
        try:
            actions = good[event]({name: value})
        except payload.PayloadError:
            pass
        else:
            _drops_have_kill(actions)
        p.check()


def test_random_event_streams_keep_the_books_straight():
    """Offers, answers (some lost), reports, restarts and time-outs in random order: the
    indexes agree with the claims, no node is overcommitted, every drop says `kill`."""
    for seed in range(20):
        rnd = random.Random(seed)
        p = _pool((3, 2, 4), offer_timeout=4, node_timeout=5)
        for s in "abc":
            _sub(p, s, rnd.randint(1, 8), user=s)
        now = 2.0
        inflight: list = []
        for _ in range(400):
            now += rnd.random() * 0.5
            node = rnd.choice(list(p.nodes))
            r = rnd.random()
            if r < 0.3 and inflight:
                who, m = inflight.pop(rnd.randrange(len(inflight)))
                if rnd.random() < 0.8:
                    out = p.claim_answer(who, {"type": rnd.choice(["claim-ok", "claim-ok",
                                                                   "claim-refused"]),
                                               "claim": m["claim"], "reason": "x"}, now)
                else:
                    out = []  # the answer is lost
            elif r < 0.5:
                mine = [c for c, cl in p.nodes[node].claims.items()
                        if cl.active or rnd.random() < 0.3]
                out = p.node_report(node, {"load": rnd.random(), "running": 0,
                                           "claims": mine}, now)
            elif r < 0.6:
                held = [c for c, cl in p.nodes[node].claims.items() if cl.active]
                out = p.claim_released(node, rnd.choice(held), now) if held else []
            elif r < 0.65:
                out = p.node_gone(node, now)
            elif r < 0.7:
                listed = [{"claim": c.id, "submitter": c.submitter, "user": c.user,
                           "cpus": c.cpus, "memory": c.memory, "gpus": []}
                          for c in p.nodes[node].claims.values() if c.active]
                out = p.node_hello(node, _hello(p.nodes[node].slots or 2, listed), now)
            elif r < 0.75:
                s = rnd.choice("abc")
                out = p.set_demand(s, [{"key": "k", "count": rnd.randint(0, 8), "cpus": 1,
                                        "memory": 0, "gpus": 0}], now)
            else:
                out = p.tick(now)
            _drops_have_kill(out)
            inflight += _msgs(out, "claim-offer")
            p.check()
            for n in p.nodes.values():
                assert n.used_cpus <= n.slots, (seed, n)


def test_claims_adopted_for_a_submitter_that_never_comes_back_are_dropped():
    """Found by the simulation (API-H-requests C1): after a master restart the nodes' hellos
    bring claims of a submitter that never says hello again; past a grace they go."""
    p = Pool([NodeEntry(Endpoint("h", 1))], 0, orphan_grace=30, node_timeout=1000)
    c = {"claim": "old1", "submitter": "gone", "user": "u", "cpus": 1, "memory": 0,
         "gpus": []}
    p.node_hello("h:1", _hello(2, [c]), 1)
    assert not _msgs(p.tick(30), "claim-drop")
    assert _msgs(p.tick(32), "claim-drop") == [("h:1", {"type": "claim-drop", "claim": "old1",
                                                        "kill": False})]
    assert not _msgs(p.tick(40), "claim-drop")  # once
    p.claim_released("h:1", "old1", 41)
    assert not p.claims
    # one that does come back keeps its claims
    c2 = dict(c, claim="old2", submitter="back")
    p.node_hello("h:1", _hello(2, [c2]), 50)
    p.submitter_hello({"submitter": "back", "user": "u", "host": "x", "pid": 1,
                       "claims": ["old2"], "clusters": []}, 55)
    assert not _msgs(p.tick(100), "claim-drop") and "old2" in p.claims


def test_jrs_status_shows_waiting_results_and_their_age(monkeypatch, capsys):
    from jrs.roles import tools

    p = _pool((2, 2))
    p.node_report("h:1", {"load": 0, "running": 0, "claims": [], "waiting": 3,
                          "oldest_wait": 7200.0}, 5)
    monkeypatch.setattr(tools, "ask_master", lambda args, msg: dict(p.status(5),
                                                                    type="status-reply"))
    assert tools.status({"--json": False, "--config": None}) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NODE", "STATE", "SLOTS", "MEMORY(MiB)", "LOAD", "WAITING",
                                "OLDEST", "CLAIMS"]
    assert lines[1].split()[5:7] == ["3", "2h"] and lines[2].split()[5:7] == ["-", "-"]
    assert tools.status({"--json": True, "--config": None}) == 0
    import json
    nodes = json.loads(capsys.readouterr().out)["nodes"]
    assert (nodes[0]["results_waiting"], nodes[0]["oldest_result_age"]) == (3, 7200.0)


def test_a_released_claim_a_restarted_node_brings_back_is_dropped():
    """Found by the simulation (API-H-requests C1, seed small 7): the node released a claim
    while its disk failed, so its claims.json still listed it after a restart."""
    p = _pool((2,))
    (_, offer), = _msgs(_sub(p, "a", 1), "claim-offer")
    cid = offer["claim"]
    p.claim_answer("h:1", {"type": "claim-ok", "claim": cid}, 1)
    p.set_demand("a", [], 2)
    p.claim_released("h:1", cid, 3)
    c = {"claim": cid, "submitter": "a", "user": "alice", "cpus": 1, "memory": 0, "gpus": []}
    out = p.node_hello("h:1", _hello(2, [c]), 4)
    assert _msgs(out, "claim-drop") == [("h:1", {"type": "claim-drop", "claim": cid,
                                                 "kill": False})]
    assert cid not in p.claims and p.nodes["h:1"].used_cpus == 0


def test_a_drop_sent_while_the_node_was_away_is_sent_again_at_its_hello():
    """Found with the simulation (large, seed 139): a release reached the master while the
    claim's node was restarting; the claim-drop went nowhere and the claim stayed forever."""
    p = _pool((2,))
    (_, offer), = _msgs(_sub(p, "a", 1), "claim-offer")
    cid = offer["claim"]
    p.claim_answer("h:1", {"type": "claim-ok", "claim": cid}, 1)
    p.node_gone("h:1", 2)
    assert p.release("a", cid, 3, kill=True)[0][2]["kill"] is True  # to no session
    c = {"claim": cid, "submitter": "a", "user": "alice", "cpus": 1, "memory": 0, "gpus": []}
    out = p.node_hello("h:1", _hello(2, [c]), 4)
    assert _msgs(out, "claim-drop") == [("h:1", {"type": "claim-drop", "claim": cid,
                                                 "kill": True})]
    p.submitter_gone("a", 5)  # a later drop without kill does not undo the kill
    out = p.node_hello("h:1", _hello(2, [c]), 6)
    assert _msgs(out, "claim-drop")[0][1]["kill"] is True
    p.claim_released("h:1", cid, 7)
    assert cid not in p.claims


def test_a_node_the_submitter_gave_up_on_is_not_offered_to_it_for_a_while():
    """A one-sided partition: the master hears the node, the submitter cannot reach it and
    releases its claims there with kill. Re-offering that node at once made a loop that
    kept the node's slots busy with claims nobody could use."""
    p = _pool((2, 2), node_timeout=1000)
    offers = _msgs(_sub(p, "a", 10), "claim-offer")
    for who, m in offers:
        p.claim_answer(who, {"type": "claim-ok", "claim": m["claim"]}, 1)
    lost = [c.id for c in p.nodes["h:2"].claims.values()]
    out = []
    for cid in lost:
        assert p.release("a", cid, 2, kill=True)[0][2]["kill"] is True
        out += p.claim_released("h:2", cid, 2)
    assert not _msgs(out, "claim-offer") and p.nodes["h:2"].used_cpus == 0
    out = _sub(p, "b", 1, user="bob", now=3)  # others may use it
    assert [w for w, _ in _msgs(out, "claim-offer")] == ["h:2"]
    later = _msgs(p.tick(40), "claim-offer")  # and to "a" again, later
    assert [w for w, m in later if m["submitter"] == "a"] == ["h:2"]


def test_sessions_that_come_and_go_wanting_nothing_do_not_split_the_pool_again(monkeypatch):
    """A host churning submitter sessions (hello, close, no demand): each end was a
    water-fill over every submitter the Pool keeps (45 % of a real master's CPU, R12).
    A submitter wanting nothing, before the last fill or now, moves no share."""
    p = _pool((4,) * 10)
    for i in range(20):
        _sub(p, f"s{i}", 100, user=f"u{i}")
    p.check()
    fills = []
    real = Pool._water_fill
    monkeypatch.setattr(Pool, "_water_fill",
                        staticmethod(lambda *a: fills.append(1) or real(*a)))
    for n in range(200):
        p.submitter_hello({"submitter": f"churn{n}", "user": "mallory", "host": "evil",
                           "pid": n, "claims": [], "clusters": []}, 2)
        p.submitter_gone(f"churn{n}", 2)
    assert fills == []
    p.check()  # the kept shares are a fresh fill's (absent ones having none)
    fills.clear()
    _sub(p, "late", 5, user="mallory", now=3)  # one that wants: the shares move
    assert fills
    p.check()
    p.submitter_gone("s0", 4)  # one that wanted, gone: they move again
    fills.clear()
    p.negotiate(5)
    p.check()


def test_submitters_gone_with_nothing_on_the_cluster_are_forgotten(monkeypatch):
    """R12 F3: each churned submitter id was kept for the lease (300 s), walked by every
    tick and listed by every `jrs status`. Gone with no claim: forgotten at once if it
    listed no cluster, else kept for `jrs q` up to MAX_GONE (the oldest first); one
    with a claim stays until its lease, and one that comes back is not forgotten."""
    import jrs.cluster.pool as pool_mod
    monkeypatch.setattr(pool_mod, "MAX_GONE", 3)
    p = _pool((2,))
    hello = {"user": "u", "host": "x", "pid": 1, "claims": [], "clusters": []}
    p.submitter_hello(dict(hello, submitter="empty"), 1)
    p.submitter_gone("empty", 1)
    assert "empty" not in p.submitters
    cl = [{"id": 1, "total": 1, "done": 1}]
    for i in range(5):
        p.submitter_hello(dict(hello, submitter=f"c{i}", clusters=cl), 1)
        p.submitter_gone(f"c{i}", 1)
    assert sorted(p.submitters) == ["c2", "c3", "c4"]  # the newest MAX_GONE kept
    offers = _msgs(_sub(p, "busy", 1), "claim-offer")
    (who, m), = offers
    p.claim_answer(who, {"type": "claim-ok", "claim": m["claim"]}, 1)
    p.submitter_gone("busy", 2)
    for i in range(5, 9):  # more gone ones push out the old, never one with a claim
        p.submitter_hello(dict(hello, submitter=f"c{i}", clusters=cl), 3)
        p.submitter_gone(f"c{i}", 3)
    assert "busy" in p.submitters and p.claims_of_submitter("busy")
    p.submitter_hello(dict(hello, submitter="c8", clusters=cl), 4)  # back
    for i in range(9, 14):
        p.submitter_hello(dict(hello, submitter=f"c{i}", clusters=cl), 4)
        p.submitter_gone(f"c{i}", 4)
    assert "c8" in p.submitters and p.submitters["c8"].connected
    assert len([s for s in p.submitters.values() if not s.connected and s.id != "busy"]) <= 3
    p.check()
