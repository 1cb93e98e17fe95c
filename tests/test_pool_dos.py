"""What one submitter's demand may cost the master (R3 #5, #13 item 9).

A secret holder's one `demand` of many distinct, large requirements that no node
matches must not stall the master: the demand is refused past its size bounds, each
text is parsed once (a cache shared by all submitters), and parses and evaluations are
charged to a budget per submitter and round (a tick) so that the rest waits for later
rounds while the other submitters are matched in this one. The cost is counted through
the classad calls the Pool makes (bytes parsed, bytes evaluated per node), not timed.
"""

from __future__ import annotations

import pytest

from jrs.cluster import payload
from jrs.cluster import pool as pool_mod
from jrs.cluster.pool import Pool
from jrs.condor import classad, regex_bounded
from jrs.config import Endpoint, NodeEntry

# The bound this file holds the Pool to, in the units of jrs/cluster/pool.py (the
# literal values are the fallbacks for running this file against code without them)
BUDGET = getattr(pool_mod, "EVAL_BUDGET", 262_144)
EVAL_COST = getattr(pool_mod, "EVAL_COST", 16)
PARSE_COST = getattr(pool_mod, "PARSE_COST", 4)
BIG = 16_000  # a requirement near payload.MAX_REQUIREMENTS
# One operation may overshoot the budget: the parse of the largest text it may send
ROUND_LIMIT = BUDGET + PARSE_COST * payload.MAX_REQUIREMENTS
MAX_DEMAND = getattr(payload, "MAX_DEMAND", 1 << 20)


def _unmatchable(i: int, size: int = BIG) -> str:
    """A distinct requirement of about `size` bytes that no node (Memory 1000) matches."""
    parts, j, length = [], 0, 0
    while length < size:
        parts.append(f"(TARGET.Memory == {-(i * 100_000 + j)} && Cpus > {j})")
        length += len(parts[-1]) + 4
        j += 1
    return " || ".join(parts)


class Meter:
    """Counts what the Pool asks of classad: parses (bytes) and evaluations (bytes each),
    and what that costs in the Pool's units, per submitter text."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.parses = self.parsed_bytes = self.evaluations = self.units = 0
        real_parse = classad.parse
        real_counted = getattr(classad, "matches_counted", None)
        real_matches = classad.matches
        self.texts: dict = {}  # id(tree) -> text length

        def parse(text: str) -> tuple:
            self.parses += 1
            self.parsed_bytes += len(text)
            self.units += PARSE_COST * len(text)
            tree = real_parse(text)
            self.texts[id(tree)] = len(text)
            return tree

        def charge(tree: tuple) -> None:
            self.evaluations += 1
            self.units += EVAL_COST + self.texts.get(id(tree), 0)

        def counted(tree: tuple, my: dict, target: dict) -> tuple:
            charge(tree)
            result, steps = real_counted(tree, my, target)
            self.units += steps
            return result, steps

        def matches(tree: tuple, my: dict, target: dict) -> bool:
            charge(tree)
            return real_matches(tree, my, target)

        monkeypatch.setattr(classad, "parse", parse)
        monkeypatch.setattr(classad, "matches", matches)
        if real_counted is not None:
            monkeypatch.setattr(classad, "matches_counted", counted)

    def take(self) -> int:
        units, self.units = self.units, 0
        return units


def _pool(nodes: int = 10, slots: int = 4) -> Pool:
    p = Pool([NodeEntry(Endpoint("h", i + 1)) for i in range(nodes)], 0)
    for i in range(nodes):
        p.node_hello(f"h:{i + 1}", {"slots": slots, "memory": 1000, "gpus": 0,
                                    "attrs": {"Arch": "X86_64"}, "claims": []}, 1)
    return p


def _hello(p: Pool, sid: str, user: str, now: float = 1) -> None:
    p.submitter_hello({"submitter": sid, "user": user, "host": "x", "pid": 1, "claims": [],
                       "clusters": []}, now)


def _request(key: str, requirements: str, count: int = 1) -> dict:
    return {"key": key, "count": count, "cpus": 1, "memory": 0, "gpus": 0,
            "requirements": requirements, "ad": {}}


def _types(actions: list, kind: str, who: str = "") -> list:
    return [m for _, w, m in actions if m["type"] == kind and (not who or w == who)]


def test_a_demand_past_its_size_bounds_is_refused_naming_the_bound_and_costs_no_parse(
        monkeypatch):
    meter = Meter(monkeypatch)
    p = _pool(2)
    _hello(p, "evil", "mallory")
    p.set_demand("evil", [_request("old", 'Arch == "X86_64"')], 1)
    before = dict(p.submitters["evil"].requests)
    meter.parses = 0
    attack = [_request(f"k{i}", _unmatchable(i, 16_300)) for i in range(1024)]
    with pytest.raises(payload.PayloadError, match=str(MAX_DEMAND)):
        p.set_demand("evil", attack, 2)
    assert meter.parses == 0
    assert p.submitters["evil"].requests == before  # nothing half-taken
    huge_ad = {f"A{i}": "x" * 4000 for i in range(5)}
    with pytest.raises(payload.PayloadError, match=str(payload.MAX_AD)):
        p.set_demand("evil", [dict(_request("k", ""), ad=huge_ad)], 3)
    with pytest.raises(payload.PayloadError, match=str(payload.MAX_REQUIREMENTS)):
        p.set_demand("evil", [_request("k", "x" * (payload.MAX_REQUIREMENTS + 1))], 4)
    # at the bounds: taken
    p.set_demand("evil", [dict(_request("k", ""), ad={f"A{i}": "x" * 4000 for i in range(4)})],
                 5)


def test_one_round_of_a_hostile_demand_stays_in_budget_and_the_honest_submitter_is_offered_in_it(
        monkeypatch):
    """~60 distinct 16 KiB requirements no node matches (what fits in one demand), 10
    nodes: ~1 s of parsing and ~3 s of evaluations on this machine if done at once."""
    meter = Meter(monkeypatch)
    p = _pool(10)
    _hello(p, "evil", "mallory")
    _hello(p, "good", "alice")
    n = MAX_DEMAND // (BIG + 100)
    attack = [_request(f"k{i}", _unmatchable(i)) for i in range(n)]
    meter.take()
    out = p.set_demand("evil", attack, 1.5)
    spent = meter.take()
    assert spent <= ROUND_LIMIT, (spent, ROUND_LIMIT)
    # the honest demand in the same round is matched, though evil's budget is gone
    out = p.set_demand("good", [_request("g", 'Arch == "X86_64"', count=4)], 1.6)
    offers = _types(out, "claim-offer")
    assert len(offers) == 4 and all(m["submitter"] == "good" for m in offers)
    assert meter.take() <= 10 * (EVAL_COST + 20)  # its own evaluations only
    # each later round: within budget, until every hostile request has its verdict
    verdicts: list = _types(out, "unmatchable", "evil")
    rounds = 0
    while len(verdicts) < n:
        rounds += 1
        assert rounds < 200, "hostile requests never judged"
        out = p.tick(2 + rounds)
        assert meter.take() <= ROUND_LIMIT
        verdicts += _types(out, "unmatchable", "evil")
        assert not _types(out, "claim-offer", "evil")
    assert sorted(m["key"] for m in verdicts) == sorted(r["key"] for r in attack)
    assert all("match none of the 10 nodes" in m["reason"] for m in verdicts)
    # nothing was parsed or evaluated twice (a cache hit costs nothing)
    assert meter.parses == n + 1  # and the honest one
    assert n * 10 < meter.evaluations <= n * 10 + 10
    total = n * PARSE_COST * BIG + n * 10 * (EVAL_COST + BIG)
    assert rounds >= total // ROUND_LIMIT  # spread over rounds, not done at once
    for _ in range(5):
        p.tick(300 + _)
        assert meter.take() == 0
    p.check()


def test_each_hostile_submitter_has_its_own_budget_and_none_starves_the_others(monkeypatch):
    meter = Meter(monkeypatch)
    p = _pool(4)
    evil = ["e1", "e2", "e3"]
    judged = {sid: 0 for sid in evil}
    for i, sid in enumerate(evil):
        _hello(p, sid, f"mallory{i}")
        out = p.set_demand(sid, [_request(f"k{j}", _unmatchable(100 * i + j))
                                 for j in range(20)], 1.1)
        judged[sid] += len(_types(out, "unmatchable"))
        assert meter.take() <= ROUND_LIMIT  # the others' budgets are their own
    _hello(p, "good", "alice")
    out = p.set_demand("good", [_request("g", 'Arch == "X86_64"', count=2)], 1.5)
    # the round's budget (ROUND_BUDGET) may be spent by the three: the honest one, never
    # charged, has the first turn at the next round
    out += p.tick(2)
    assert len(_types(out, "claim-offer", "h:1") + _types(out, "claim-offer", "h:2")
               + _types(out, "claim-offer", "h:3") + _types(out, "claim-offer", "h:4")) == 2
    for t in range(2, 60):
        if t > 2:
            out = p.tick(t)
        assert meter.take() <= len(evil) * ROUND_LIMIT
        for _, who, m in out:
            if m["type"] == "unmatchable":
                judged[who] += 1
        if all(v == 20 for v in judged.values()):
            break
    assert judged == {sid: 20 for sid in evil}  # every one of them judged: none starved


def test_repeated_texts_parse_once_across_submitters_and_demands(monkeypatch):
    meter = Meter(monkeypatch)
    p = _pool(2)
    text = _unmatchable(7, 2000)
    for i in range(5):
        _hello(p, f"s{i}", f"u{i}")
        p.set_demand(f"s{i}", [_request("a", text), _request("b", text)], 1 + i / 10)
        p.set_demand(f"s{i}", [_request("a2", text)], 1 + i / 10)
    assert meter.parses == 1


def test_the_witness_and_the_verdict_once_per_topology_still_hold_with_a_budget(monkeypatch):
    meter = Meter(monkeypatch)
    p = _pool(10)
    _hello(p, "evil", "mallory")
    p.set_demand("evil", [_request(f"k{i}", _unmatchable(i)) for i in range(30)], 1)
    _hello(p, "good", "alice")
    ok = 'Arch == "X86_64" && TARGET.Memory >= 1000 || ' + _unmatchable(99, 4000)
    out = p.set_demand("good", [_request("g", ok, count=0)], 1.2)
    assert not _types(out, "unmatchable", "good")
    r = p.submitters["good"].requests["g"]
    # count 0: judged at the next round, with its own budget
    p.set_demand("good", [_request("g", ok, count=1)], 1.3)
    assert r.witness is not None and r.unmatchable is None
    meter.take()
    for t in range(2, 6):
        p.tick(t)
    assert r.unmatchable is None
    p.check()


def test_a_requirement_nested_too_deep_is_an_error_never_a_recursion_error():
    for text in ["(" * 5000 + "1" + ")" * 5000, "!" * 5000 + "true", "-" * 5000 + "1",
                 "+".join(["1"] * 2000), "ifThenElse(" * 200 + "1" + ",1,1)" * 200]:
        with pytest.raises(classad.ClassAdError, match=r"nests|deep"):
            classad.parse(text)
    p = _pool(1)
    _hello(p, "evil", "mallory")
    out = p.set_demand("evil", [_request("k", "(" * 5000 + "1" + ")" * 5000)], 1)
    (m,) = _types(out, "unmatchable")
    assert "nests more than" in m["reason"]


def test_long_and_or_chains_stay_shallow_and_keep_their_value():
    text = " || ".join(f"Memory == {i}" for i in range(5000))
    tree = classad.parse(text)

    def depth(t: object) -> int:
        return 1 + max([depth(x) for x in t[1:] if isinstance(x, tuple)] or [0])

    assert depth(tree) <= 20
    assert classad.matches(tree, {}, {"memory": 4999})
    assert not classad.matches(tree, {}, {"memory": 5000})
    values = ["true", "false", "undefined", "error", "1", '"s"']
    for a in values:
        for b in values:
            for c in values:
                for op in ("&&", "||"):
                    left = classad.evaluate(classad.parse(f"({a} {op} {b}) {op} {c}"))
                    flat = classad.evaluate(classad.parse(f"{a} {op} {b} {op} {c}"))
                    right = classad.evaluate(classad.parse(f"{a} {op} ({b} {op} {c})"))
                    assert repr(left) == repr(flat) == repr(right), (a, op, b, c)


def test_all_regexp_calls_of_one_evaluation_share_one_step_budget():
    heavy = 'regexp("(a|b|c|d|e|f|g|h)*(a|b|c|d|e|f|g|h)*z", TARGET.Name)'
    tree = classad.parse(" || ".join([heavy] * 40))
    result, steps = classad.matches_counted(tree, {}, {"name": "abcdefgh" * 500})
    assert result is False
    # 40 calls of ~220,000 steps each: without the shared budget, 8.8 million
    assert steps <= regex_bounded.STEP_BUDGET + 2 * regex_bounded.MAX_PROGRAM


def test_regexp_steps_are_charged_to_the_submitters_budget(monkeypatch):
    meter = Meter(monkeypatch)
    p = _pool(10)
    for i in range(10):
        p.node_hello(f"h:{i + 1}", {"slots": 4, "memory": 1000, "gpus": 0,
                                    "attrs": {"Arch": "X86_64", "Pad": "abcdefgh" * 500},
                                    "claims": []}, 1)
    _hello(p, "evil", "mallory")
    heavy = 'regexp("(a|b|c|d|e|f|g|h)*(a|b|c|d|e|f|g|h)*z", TARGET.Pad)'
    reqs = [_request(f"k{i}", f"{heavy} && Cpus > {i}") for i in range(8)]
    meter.take()
    p.set_demand("evil", reqs, 1.5)
    assert meter.take() <= BUDGET + regex_bounded.STEP_BUDGET + 4 * regex_bounded.MAX_PROGRAM
    assert meter.evaluations < 80  # not every request against every node at once


ROUND_BUDGET = getattr(pool_mod, "ROUND_BUDGET", 4 * BUDGET)


def _sessions_round_costs(monkeypatch: pytest.MonkeyPatch, sessions: int) -> tuple:
    """The units of each round while `sessions` hostile sessions each hold 8 distinct
    BIG unmatchable texts (over its own budget), and the tick by which an honest
    newcomer was offered."""
    meter = Meter(monkeypatch)
    p = _pool(2)
    for s in range(sessions):
        _hello(p, f"s{s}", f"u{s}")
        p.set_demand(f"s{s}", [_request(f"k{i}", _unmatchable(s * 8 + i))
                               for i in range(8)], 1.1)
    costs = [meter.take()]  # the round before the first tick
    _hello(p, "good", "alice", 1.5)
    out = p.set_demand("good", [_request("g", 'Arch == "X86_64"', count=2)], 1.5)
    costs[0] += meter.take()
    offered_at = 1 if _types(out, "claim-offer", "") else None
    judged = 0
    for t in range(2, 2000):
        out = p.tick(t)
        costs.append(meter.take())
        if offered_at is None and _types(out, "claim-offer"):
            offered_at = t
        judged += len(_types(out, "unmatchable"))
        if judged == 8 * sessions:
            break
    p.check()
    return costs, offered_at, judged


@pytest.mark.parametrize("sessions", [1, 16])
def test_a_round_costs_one_bound_whatever_the_number_of_hostile_sessions(monkeypatch,
                                                                         sessions):
    """R5 F2: ids and tokens are free to a secret holder; each session's own budget must
    not add up: 1 or 16 sessions, a round costs at most ROUND_BUDGET (plus one
    operation's overshoot), the honest newcomer is offered in its turn (the never charged
    first, 4 a round: those not served before it, then it), and every hostile text still
    gets its verdict."""
    limit = ROUND_BUDGET + PARSE_COST * payload.MAX_REQUIREMENTS
    costs, offered_at, judged = _sessions_round_costs(monkeypatch, sessions)
    assert max(costs) <= limit, (max(costs), limit)
    assert offered_at is not None and offered_at <= 2 + sessions // 4, offered_at
    assert judged == 8 * sessions


class _Reads:
    """Counts reads of a Request's `count` / `unmatchable`: the requests a call walks."""
    n = 0


class _CountingRequest(pool_mod.Request):
    def __getattribute__(self, name: str) -> object:
        if name in ("count", "unmatchable"):
            _Reads.n += 1
        return object.__getattribute__(self, name)


def test_a_fresh_key_demand_walks_only_requests_that_can_still_get_a_slot(monkeypatch):
    """R5 F3: 50 sessions holding 1,024 unmatchable requests each; one 1-request demand
    with a fresh key renegotiates, and must not walk their 51,200 requests (counted in
    reads of the requests' count / verdict, not timed)."""
    monkeypatch.setattr(pool_mod, "Request", _CountingRequest)
    p = _pool(4)
    for s in range(50):
        _hello(p, f"s{s}", f"u{s}")
        p.set_demand(f"s{s}", [{"key": f"k{i}", "count": 1, "cpus": 64, "memory": 0,
                                "gpus": 0, "requirements": "", "ad": {}}
                               for i in range(1024)], 1)
    for t in range(2, 40):
        p.tick(t)
    _hello(p, "evil", "e", 40)
    for i in range(20):
        _Reads.n = 0
        out = p.set_demand("evil", [{"key": f"x{i}", "count": 1, "cpus": 1, "memory": 5000,
                                     "gpus": 0, "requirements": "", "ad": {}}], 40)
        assert _Reads.n <= 64, _Reads.n
        assert _types(out, "unmatchable", "evil")  # it is still judged
    p.check()


def test_a_demand_past_the_requests_held_in_all_is_refused_naming_the_bound(monkeypatch):
    """The walk is bounded by the requests held across all submitters: a demand past
    MAX_POOL_REQUESTS is refused, nothing changes, and a gone submitter's count back."""
    assert hasattr(pool_mod, "MAX_POOL_REQUESTS"), "no bound on the requests held in all"
    monkeypatch.setattr(pool_mod, "MAX_POOL_REQUESTS", 10)
    p = _pool(2)
    _hello(p, "a", "alice")
    _hello(p, "b", "bob")
    p.set_demand("a", [_request(f"k{i}", "", count=0) for i in range(8)], 1)
    with pytest.raises(payload.PayloadError, match="at most 10 requests"):
        p.set_demand("b", [_request(f"k{i}", "") for i in range(3)], 1)
    assert p.submitters["b"].requests == {}
    p.set_demand("a", [_request(f"k{i}", "", count=0) for i in range(7)], 1)  # replaced
    assert _types(p.set_demand("b", [_request(f"k{i}", "") for i in range(3)], 1),
                  "claim-offer")
    p.submitter_gone("a", 2)
    p.set_demand("b", [_request(f"k{i}", "") for i in range(10)], 2)
    p.check()
