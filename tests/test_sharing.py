"""Fair share, unit (the sans-IO pool) and end to end (two submitters, measured)."""

from __future__ import annotations

import time

from jrs.cluster.pool import Pool
from jrs.condor import classad
from jrs.config import Endpoint, NodeEntry

from .cluster import Cluster, wait_for


def _pool(slots=(4,)) -> Pool:
    p = Pool([NodeEntry(Endpoint("h", i + 1)) for i in range(len(slots))], 0)
    for i, n in enumerate(slots):
        p.node_hello(f"h:{i + 1}", {"slots": n, "memory": 1000, "gpus": 0, "attrs": {},
                                    "claims": []}, 1)
    return p


def _sub(p: Pool, sid: str, user: str, count: int, cpus: int = 1, weight: float = 1.0) -> list:
    p.submitter_hello({"submitter": sid, "user": user, "host": "x", "pid": 1, "claims": []}, 1)
    return p.set_demand(sid, [{"key": f"{cpus}", "count": count, "cpus": cpus, "memory": 0,
                               "gpus": 0, "requirements": "", "ad": {}, "weight": weight}], 1)


def _accept_all(p: Pool, actions: list) -> None:
    for _kind, node, msg in actions:
        if msg["type"] == "claim-offer":
            p.claim_answer(node, {"type": "claim-ok", "claim": msg["claim"]}, 1)


def test_a_newcomer_gets_half_by_give_back_at_job_boundaries():
    p = _pool((4,))
    _accept_all(p, _sub(p, "a", "alice", 100))
    assert sum(c.cpus for c in p.claims.values() if c.user == "alice") == 4
    out = _sub(p, "b", "bob", 100)
    gb = [m for k, s, m in out if m["type"] == "give-back"]
    assert gb == [{"type": "give-back", "count": 2}]  # nothing is killed: alice gives 2 back
    for cid in [c.id for c in p.claims.values() if c.user == "alice"][:2]:
        _accept_all(p, p.claim_released("h:1", cid, 2))
    held = {u: sum(c.cpus for c in p.claims.values() if c.user == u) for u in ("alice", "bob")}
    assert held == {"alice": 2, "bob": 2}


def test_a_node_back_from_a_partition_drops_the_claims_taken_from_it():
    """Silent past the timeout: its claims go back to the submitter (node-lost). When its
    reports resume on the old connection still listing them, it is told to drop them."""
    p = _pool((2, 2))
    _accept_all(p, _sub(p, "a", "alice", 100))
    mine = sorted(c.id for c in p.claims.values() if c.node == "h:2")
    assert len(mine) == 2
    p.node_report("h:1", {"load": 0, "running": 2,
                          "claims": [c.id for c in p.claims.values() if c.node == "h:1"]}, 9)
    lost = [m for k, who, m in p.tick(9) if m["type"] == "node-lost"]
    assert [(m["node"], sorted(m["claims"])) for m in lost] == [("h:2", mine)]
    out = p.node_report("h:2", {"load": 0, "running": 2, "claims": mine}, 10)
    drops = [m for k, n, m in out if m["type"] == "claim-drop"]
    assert drops == [{"type": "claim-drop", "claim": cid, "kill": True} for cid in mine]
    assert not [c for c in p.claims.values() if c.id in mine]


def test_weights_and_water_filling():
    p = _pool((6,))
    _sub(p, "a", "alice", 100, weight=2.0)
    _sub(p, "b", "bob", 100)
    _sub(p, "c", "carol", 1)
    share = p.shares()
    assert share["carol"] == 1  # asks for less than an equal share: gets what it asks
    assert abs(share["alice"] - 2 * share["bob"]) < 1e-6


def test_a_big_request_is_not_starved_by_small_ones():
    p = _pool((4,))
    _accept_all(p, _sub(p, "s", "small", 1000))
    _accept_all(p, _sub(p, "b", "big", 1, cpus=4))
    node = p.nodes["h:1"]
    # small's claims end one by one; none is regranted to small while big waits: the first
    # free slot big cannot use yet makes the node reserved for it
    for i, cid in enumerate([c.id for c in p.claims.values() if c.user == "small"]):
        _accept_all(p, p.claim_released("h:1", cid, 2))
        assert i == 3 or node.reserved_for == "b"
    assert [c.user for c in p.claims.values()] == ["big"]


def test_unmatchable_is_reported_once_with_reason():
    p = _pool((4,))
    out = _sub(p, "a", "alice", 3, cpus=64)
    (msg,) = [m for _, _, m in out if m["type"] == "unmatchable"]
    assert "no node is that big" in msg["reason"]
    assert not [m for _, _, m in p.negotiate(2) if m["type"] == "unmatchable"]


def test_classad_undefined_semantics():
    ev = lambda s, t=None: classad.evaluate(classad.parse(s), {}, t or {})  # noqa: E731
    assert ev("false && Nope") is False and ev("Nope && false") is False
    assert ev("true && Nope") is classad.UNDEFINED and ev("Nope || true") is True
    assert ev("Nope == 3") is classad.UNDEFINED and ev("Nope =?= undefined") is True
    assert ev("\"abc\" == \"ABC\"") is True and ev("\"abc\" =?= \"ABC\"") is False
    assert ev("isUndefined(Nope) && ifThenElse(3 > 2, \"y\", \"n\") == \"y\"") is True
    assert ev("TARGET.Memory >= 2048 && Arch == \"x86_64\"",
              {"memory": 4096, "arch": "X86_64"}) is True
    assert ev("1 + \"a\"") is classad.ERROR and ev("!Nope") is classad.UNDEFINED
    assert ev("7 / 2 == 3 && -7 % 3 == -1 && 1.0 * 3 == 3") is True


def _queue(conf) -> dict:
    from jrs.roles.tools import ask_master

    return ask_master({"--config": str(conf)}, {"type": "query", "what": "queue"})


def test_two_submitters_share_the_pool_measured(pyz, tmp_path):
    c = Cluster(pyz, tmp_path, slots=[2, 2]).start()
    try:
        for name in ("a", "b"):
            (tmp_path / f"{name}.condor").write_text("executable = /bin/sleep\narguments = 0.4\n"
                                                     "queue 40\n")
        pa = c.submit("a.condor", cwd=tmp_path)
        wait_for(lambda: sum(n["slots_used"] for n in c.status()["nodes"]) == 4)
        pb = c.submit("b.condor", cwd=tmp_path)
        samples = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and pa.poll() is None and pb.poll() is None:
            q = _queue(c.conf)  # in-process: a `jrs q` process per sample is too slow
            running = sorted((cl["id"], cl["running"]) for cl in q["clusters"])
            if len(running) == 2:
                samples.append([r for _, r in running])
            time.sleep(0.25)
        pa.communicate(timeout=60)
        pb.communicate(timeout=60)
        assert pa.returncode == 0 and pb.returncode == 0
        steady = samples[len(samples) // 3:]  # after the give-back settled
        assert len(steady) >= 5, samples
        mean_a = sum(s[0] for s in steady) / len(steady)
        mean_b = sum(s[1] for s in steady) / len(steady)
        print(f"fair split measured: {mean_a:.2f} vs {mean_b:.2f} running")
        assert 1.5 <= mean_a <= 2.5 and 1.5 <= mean_b <= 2.5, samples
    finally:
        c.stop()
