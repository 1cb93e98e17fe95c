"""The master's per-source limits, pure (jrs/cluster/limits.py; issue 13): sessions per
host, request entries per session and per host, and the demand token bucket that keeps
(coalesces) the newest demand over budget and hands it back once refilled. Every rule
at its boundary; times are injected."""

from __future__ import annotations

import random

import pytest

from jrs.cluster.limits import SETTINGS, Limiter, Limits
from jrs.errors import ConfigError

A, B = "10.0.0.1", "10.0.0.2"


def _limiter(**kw) -> Limiter:
    return Limiter(Limits(**kw))


# ------------------------------------------------------------ settings

def test_the_documented_defaults():
    lim = Limits()
    assert (lim.sessions_per_host, lim.requests_per_session, lim.requests_per_host) \
        == (64, 1024, 16_384)
    assert (lim.demand_rate, lim.demand_burst, lim.message_cost, lim.entry_cost) \
        == (512 * 1024, 4 << 20, 512, 2048)
    assert (lim.host_demand_rate, lim.host_demand_burst) == (2 << 20, 8 << 20)
    assert lim.progress_entry_cost == 256
    assert {v[0] for v in SETTINGS.values()} == {
        "JRS_MASTER_SESSIONS_PER_HOST", "JRS_MASTER_REQUESTS_PER_SESSION",
        "JRS_MASTER_REQUESTS_PER_HOST", "JRS_MASTER_DEMAND_RATE", "JRS_MASTER_DEMAND_BURST",
        "JRS_MASTER_DEMAND_MESSAGE_COST", "JRS_MASTER_DEMAND_ENTRY_COST",
        "JRS_MASTER_HOST_DEMAND_RATE", "JRS_MASTER_HOST_DEMAND_BURST",
        "JRS_MASTER_PROGRESS_ENTRY_COST", "JRS_MASTER_NODE_RATE", "JRS_MASTER_NODE_BURST",
        "JRS_MASTER_HOST_NODE_RATE", "JRS_MASTER_HOST_NODE_BURST",
        "JRS_MASTER_NODE_MESSAGE_COST", "JRS_MASTER_NODE_CLAIM_COST",
        "JRS_MASTER_SESSION_COST", "JRS_MASTER_NODE_SESSION_COST", "JRS_MASTER_TOOL_COST",
        "JRS_MASTER_TOOL_ENTRY_COST"}
    assert (lim.node_rate, lim.node_burst, lim.host_node_rate, lim.host_node_burst) \
        == (4 << 20, 16 << 20, 8 << 20, 32 << 20)
    assert (lim.node_message_cost, lim.node_claim_cost) == (512, 64)
    assert (lim.session_cost, lim.node_session_cost, lim.tool_cost, lim.tool_entry_cost) \
        == (64 << 10, 256 << 10, 64 << 10, 256)


def test_from_env_takes_each_variable_and_names_a_bad_one():
    lim = Limits.from_env({"JRS_MASTER_SESSIONS_PER_HOST": "3",
                           "JRS_MASTER_DEMAND_RATE": "1000.5",
                           "JRS_MASTER_REQUESTS_PER_HOST": "", "OTHER": "x"})
    assert lim.sessions_per_host == 3 and lim.demand_rate == 1000.5
    assert lim.requests_per_host == 16_384  # empty: the default
    with pytest.raises(ConfigError, match="JRS_MASTER_REQUESTS_PER_SESSION: want a number"):
        Limits.from_env({"JRS_MASTER_REQUESTS_PER_SESSION": "many"})
    with pytest.raises(ConfigError, match="JRS_MASTER_DEMAND_RATE: want a number of at "
                                          "least 1"):
        Limits.from_env({"JRS_MASTER_DEMAND_RATE": "0"})
    with pytest.raises(ConfigError, match="JRS_MASTER_SESSIONS_PER_HOST"):
        Limits.from_env({"JRS_MASTER_SESSIONS_PER_HOST": "1.5"})
    assert Limits.from_env({"JRS_MASTER_DEMAND_MESSAGE_COST": "0"}).message_cost == 0
    assert Limits.from_env({"JRS_MASTER_DEMAND_ENTRY_COST": "0"}).entry_cost == 0
    with pytest.raises(ConfigError, match="JRS_MASTER_DEMAND_ENTRY_COST"):
        Limits.from_env({"JRS_MASTER_DEMAND_ENTRY_COST": "-1"})


# ------------------------------------------------------------ sessions per host

def test_sessions_per_host_boundary_and_other_hosts_unaffected():
    lim = _limiter(sessions_per_host=3)
    for k in range(3):
        assert lim.session_refusal(A) is None
        lim.open_session(("a", k), A, 0.0)
    why = lim.session_refusal(A)
    assert why == ("at most 3 submitter sessions from one host (10.0.0.1 has 3 open; "
                   "JRS_MASTER_SESSIONS_PER_HOST)")
    assert lim.session_refusal(B) is None
    lim.open_session("b", B, 0.0)
    assert lim.sessions_of(A) == 3 and lim.sessions_of(B) == 1
    assert lim.close_session(("a", 0)) is not None
    assert lim.close_session(("a", 0)) is None  # twice: harmless, not counted again
    assert lim.sessions_of(A) == 2
    assert lim.session_refusal(A) is None


def test_a_replacing_session_is_not_counted_twice_on_its_host():
    lim = _limiter(sessions_per_host=2)
    lim.open_session("old", A, 0.0)
    lim.open_session("other", A, 0.0)
    assert lim.session_refusal(A) is not None
    assert lim.session_refusal(A, replaces="old") is None  # takes the old one's place
    assert lim.session_refusal(B, replaces="old") is None  # B has none
    lim.open_session("new", A, 1.0, replaces="old")
    assert lim.sessions_of(A) == 2 and lim.stats("old") is None
    # from another host the old host's slot frees and the new host's fills
    lim.open_session("moved", B, 2.0, replaces="new")
    assert lim.sessions_of(A) == 1 and lim.sessions_of(B) == 1
    lim.open_session("x", B, 2.0)
    assert lim.session_refusal(B, replaces="new") is not None  # "new" is gone: no credit


# ------------------------------------------------------------ request entries

def test_requests_per_session_boundary():
    lim = _limiter(requests_per_session=10)
    lim.open_session("s", A, 0.0)
    assert lim.demand_refusal("s", 10) is None
    why = lim.demand_refusal("s", 11)
    assert why == ("demand refused: at most 10 requests per submitter session (this one "
                   "lists 11; JRS_MASTER_REQUESTS_PER_SESSION)")
    assert lim.demand_refusal("s", 0) is None


def test_requests_per_host_boundary_counts_the_sessions_own_previous_demand_once():
    lim = _limiter(requests_per_host=100, requests_per_session=80)
    for k in ("s1", "s2"):
        lim.open_session(k, A, 0.0)
    lim.open_session("b", B, 0.0)
    assert lim.demand_refusal("s1", 60) is None
    lim.demand_applied("s1", 60)
    assert lim.demand_refusal("s1", 80) is None  # replaces its own 60
    assert lim.demand_refusal("s2", 40) is None
    why = lim.demand_refusal("s2", 41)
    assert why == ("demand refused: at most 100 requests held by the submitter sessions "
                   "of one host (10.0.0.1 would hold 101; JRS_MASTER_REQUESTS_PER_HOST)")
    assert lim.demand_refusal("b", 80) is None  # another host: its own budget
    lim.demand_applied("s2", 40)
    assert lim.held_by(A) == 100
    lim.demand_applied("s1", 10)  # a smaller demand frees entries
    assert lim.held_by(A) == 50 and lim.demand_refusal("s2", 80) is None
    lim.close_session("s2")  # its requests go with it (the Pool drops them too)
    assert lim.held_by(A) == 10
    lim.close_session("s1")
    assert lim.held_by(A) == 0


def test_a_replacing_session_takes_over_the_requests_held():
    lim = _limiter(requests_per_host=100)
    lim.open_session("old", A, 0.0)
    lim.demand_applied("old", 70)
    lim.open_session("new", A, 1.0, replaces="old")
    assert lim.held_by(A) == 70 and lim.stats("new")["held"] == 70
    lim.open_session("other", A, 1.0)
    assert lim.demand_refusal("other", 31) is not None  # the 70 still count
    assert lim.demand_refusal("new", 100) is None
    lim.open_session("away", B, 2.0, replaces="new")  # moved host: the entries move too
    assert lim.held_by(A) == 0 and lim.held_by(B) == 70


# ------------------------------------------------------------ demand rate

def test_the_bucket_lets_a_burst_through_then_keeps_the_newest_until_refilled():
    lim = _limiter(demand_rate=100.0, demand_burst=1000.0, message_cost=0)
    lim.open_session("s", A, 0.0)
    assert lim.demand_frame("s", 600, "d1", 0.0) is True  # 400 left
    assert lim.demand_frame("s", 600, "d2", 0.0) is True  # -200: a debt (>= 0 before)
    assert lim.demand_frame("s", 100, "d3", 0.0) is False  # kept
    assert lim.kept("s") == "d3"
    assert lim.due_at("s") == pytest.approx(2.0)  # 200 of debt at 100 a second
    assert lim.demand_frame("s", 50, "d4", 1.0) is False  # replaces d3, never applied
    assert lim.kept("s") == "d4"
    assert lim.due_at("s") == pytest.approx(2.0)  # the replaced frame cost nothing
    assert lim.due(1.99) == []
    assert lim.due(2.0) == [("s", "d4")]
    assert lim.kept("s") is None and lim.due(100.0) == []
    st = lim.stats("s")
    assert (st["deferred"], st["coalesced"], st["bytes"]) == (1, 1, 1350)
    # d4 was charged its 50: the next frame right after waits for that
    assert lim.demand_frame("s", 10, "d5", 2.0) is False
    assert lim.due_at("s") == pytest.approx(2.5)
    assert lim.due(2.5) == [("s", "d5")]


def test_message_cost_is_charged_on_top_of_the_size_and_refill_stops_at_the_burst():
    lim = _limiter(demand_rate=10.0, demand_burst=100.0, message_cost=20)
    lim.open_session("s", A, 0.0)
    assert lim.demand_frame("s", 80, "a", 0.0) is True  # 100 - 100 = 0: still >= 0
    assert lim.demand_frame("s", 0, "b", 0.0) is True  # 0 -> -20
    assert lim.demand_frame("s", 0, "c", 0.0) is False
    assert lim.due_at("s") == pytest.approx(2.0)
    assert lim.due(1000.0) == [("s", "c")]  # 1000 s idle: refilled to 100 only,
    for i in range(5):  # c charged 20: 80, 60, 40, 20, 0 are each >= 0
        assert lim.demand_frame("s", 0, i, 1000.0) is True
    assert lim.demand_frame("s", 0, "y", 1000.0) is False  # -20


def test_decoded_entries_are_charged_as_a_debt_later_demands_wait_for():
    lim = _limiter(demand_rate=1000.0, demand_burst=1000.0, message_cost=0, entry_cost=100)
    lim.open_session("s", A, 0.0)
    assert lim.demand_frame("s", 100, "a", 0.0) is True  # 900 left
    lim.decoded("s", 20)  # 2,000 more: -1,100
    assert lim.demand_frame("s", 100, "b", 0.0) is False
    assert lim.due_at("s") == pytest.approx(1.1)
    assert lim.due(1.09) == [] and lim.due(1.1) == [("s", "b")]
    lim.decoded("s", 0)  # an empty demand costs its bytes only
    assert lim.due_at("s") is None
    assert lim.demand_frame("s", 0, "c", 1.3) is True  # -100 + 200 of refill: 100


def test_a_refused_demand_is_charged_at_most_the_bound_plus_one_entries():
    lim = _limiter(demand_rate=1000.0, demand_burst=1000.0, message_cost=0, entry_cost=100,
                   requests_per_session=3)
    lim.open_session("s", A, 0.0)
    assert lim.demand_frame("s", 0, "a", 0.0) is True
    lim.decoded("s", 100_000)  # refused (over 3): charged 4 entries, 400, not 10,000,000
    assert lim.demand_refusal("s", 100_000) is not None
    assert lim.demand_frame("s", 0, "b", 0.0) is True  # 600 left
    lim.decoded("s", 4)  # 400 more: 200 left
    assert lim.demand_frame("s", 600, "c", 0.0) is True
    assert lim.demand_frame("s", 0, "d", 0.0) is False
    assert lim.due_at("s") == pytest.approx(0.4)


def test_a_refused_demand_of_100000_entries_does_not_stall_an_honest_co_host():
    """R8 #2: a 2.3 MB demand of 100,000 minimal entries (the schema allows that many)
    is refused for the 1,024 bound; charged for every entry (205 MB) it kept an honest
    one-entry demand of the same host waiting ~95 s. With the default limits it is now
    let through at once (we bound it: due within 5 s)."""
    lim = Limiter(Limits())
    lim.open_session("evil", A, 0.0)
    lim.open_session("honest", A, 0.0)
    assert lim.demand_frame("evil", 2_300_000, "f", 0.0)
    lim.decoded("evil", 100_000)
    assert lim.demand_refusal("evil", 100_000) is not None
    ok = lim.demand_frame("honest", 300, "mine", 0.1)
    wait = 0.0 if ok else lim.due_at("honest") - 0.1
    assert wait < 5, wait


def test_next_due_is_the_earliest_of_all_sessions_and_a_closed_session_drops_its_kept():
    lim = _limiter(demand_rate=100.0, demand_burst=100.0, message_cost=0)
    lim.open_session("s1", A, 0.0)
    lim.open_session("s2", B, 0.0)
    assert lim.next_due() is None
    lim.demand_frame("s1", 400, "x", 0.0)  # -300
    lim.demand_frame("s1", 1, "s1-kept", 0.0)
    lim.demand_frame("s2", 200, "y", 0.0)  # -100
    lim.demand_frame("s2", 1, "s2-kept", 0.0)
    assert lim.next_due() == pytest.approx(1.0)
    assert lim.due(1.0) == [("s2", "s2-kept")]
    assert lim.next_due() == pytest.approx(3.0)
    lim.close_session("s1")
    assert lim.next_due() is None and lim.due(10.0) == []


def test_a_new_session_starts_with_a_full_bucket_and_keys_are_separate():
    lim = _limiter(demand_rate=1.0, demand_burst=10.0, message_cost=0)
    lim.open_session("s1", A, 0.0)
    lim.open_session("s2", B, 0.0)
    assert lim.demand_frame("s1", 11, "a", 0.0) is True
    assert lim.demand_frame("s1", 1, "b", 0.0) is False
    assert lim.demand_frame("s2", 10, "c", 0.0) is True  # s1's debt is not s2's
    lim.open_session("s3", A, 0.0, replaces="s1")  # a replacing session: fresh bucket,
    assert lim.kept("s3") is None  # and the old one's kept demand is gone with it
    assert lim.demand_frame("s3", 10, "d", 0.0) is True  # (nothing of A's queued now)


def test_a_session_of_a_host_queues_behind_a_kept_demand_of_another_then_goes_at_once():
    """Else the session whose frames come first takes each refill of the host's bucket
    and a kept demand of another waits for ever (seen: 4 of 11 to one of 8 sessions)."""
    lim = _limiter(demand_rate=1.0, demand_burst=10.0, message_cost=0)
    lim.open_session("s1", A, 0.0)
    lim.open_session("s2", A, 0.0)
    assert lim.demand_frame("s1", 11, "a", 0.0) is True
    assert lim.demand_frame("s1", 1, "b", 0.0) is False  # kept: s1 owes 1 until 1.0
    assert lim.demand_frame("s2", 5, "c", 0.5) is False  # queued, though s2 has budget
    assert lim.due_at("s2") == pytest.approx(0.5)
    assert lim.due(0.5) == [("s2", "c")]  # due at once: the shell's timer runs now
    assert lim.demand_frame("s2", 1, "d", 0.6) is False  # s1 still waits
    assert lim.due(1.0) == [("s2", "d"), ("s1", "b")]  # the one due first goes first
    assert lim.demand_frame("s2", 1, "e", 1.0) is True  # none waits: straight in


def _host_limited(**kw) -> Limiter:
    """Sessions' own buckets large: the host's (1,000, 100 a second) is what binds."""
    return _limiter(demand_rate=1e6, demand_burst=1e6, message_cost=0,
                    host_demand_rate=100.0, host_demand_burst=1000.0, **kw)


def test_the_sessions_of_one_host_share_its_bucket_and_other_hosts_do_not():
    lim = _host_limited(entry_cost=10)
    for k, h in (("s1", A), ("s2", A), ("b", B)):
        lim.open_session(k, h, 0.0)
    assert lim.demand_frame("s1", 600, "a", 0.0) is True  # host A: 400
    assert lim.demand_frame("s2", 300, "b", 0.0) is True  # 100
    lim.decoded("s2", 30)  # 300 more, to both buckets: -200
    assert lim.demand_frame("s1", 1, "c", 0.0) is False  # its own bucket is full
    assert lim.due_at("s1") == pytest.approx(2.0)
    assert lim.demand_frame("b", 900, "d", 0.0) is True  # B has its own
    assert lim.due(1.99) == [] and lim.due(2.0) == [("s1", "c")]


def test_a_session_opened_again_does_not_get_a_fresh_host_bucket():
    lim = _host_limited()
    lim.open_session("s1", A, 0.0)
    assert lim.demand_frame("s1", 1500, "a", 0.0) is True  # host A: -500
    lim.close_session("s1")
    lim.open_session("s2", A, 1.0)  # a new session, a full bucket of its own ...
    assert lim.demand_frame("s2", 1, "b", 1.0) is False  # ... but the host still owes
    assert lim.due_at("s2") == pytest.approx(5.0)


def test_kept_demands_of_one_host_go_first_come_first_served():
    lim = _host_limited()
    for k in ("s1", "s2", "s3"):
        lim.open_session(k, A, 0.0)
    assert lim.demand_frame("s1", 1000, "x", 0.0) is True  # host: 0
    assert lim.demand_frame("s1", 500, "x", 0.0) is True  # -500: back to 0 at 5.0
    assert lim.demand_frame("s3", 150, "s3-first", 0.1) is False
    assert lim.demand_frame("s2", 150, "s2-second", 0.2) is False
    assert lim.due_at("s2") == lim.due_at("s3") == pytest.approx(5.0)
    assert lim.due(5.0) == [("s3", "s3-first")]  # the one kept first; then the host
    assert lim.due_at("s2") == pytest.approx(6.5)  # owes s3's 150 again
    assert lim.due(6.49) == [] and lim.due(6.5) == [("s2", "s2-second")]


def test_a_hosts_refill_goes_to_the_least_recently_served_session_first():
    lim = _host_limited()
    for k in ("s1", "s2"):
        lim.open_session(k, A, 0.0)
    assert lim.demand_frame("s1", 1500, "x", 0.0) is True  # host: -500, s1 served
    assert lim.demand_frame("s1", 100, "s1-again", 0.0) is False  # kept first ...
    assert lim.demand_frame("s2", 100, "s2-never", 0.1) is False
    assert lim.due(5.5) == [("s2", "s2-never")]  # ... but s2 was never served
    assert lim.due(5.99) == [] and lim.due(6.0) == [("s1", "s1-again")]


def test_host_buckets_of_hosts_without_sessions_are_forgotten_past_max_hosts(monkeypatch):
    from jrs.cluster import limits as limits_mod

    monkeypatch.setattr(limits_mod, "MAX_HOSTS", 3)
    lim = _host_limited()
    lim.open_session("live", "h0", 0.0)
    for i in range(1, 6):
        lim.open_session(f"s{i}", f"h{i}", float(i))
        lim.demand_frame(f"s{i}", 10 * i, "x", float(i))
        lim.close_session(f"s{i}")
    assert len(lim._host_buckets) <= 3 and "h0" in lim._host_buckets  # its session lives


def test_no_lost_update_the_newest_demand_is_always_applied_and_the_rate_holds():
    """Random floods: whatever a session sends, the last demand it sent is applied (at
    once or by `due`), nothing older is applied after a newer one, and the bytes applied
    by time t stay under burst + rate * t + one frame (the debt rule)."""
    rng = random.Random(7)
    for trial in range(200):
        rate, burst = rng.choice([(100.0, 1000.0), (1000.0, 100.0), (50.0, 50.0)])
        lim = _limiter(demand_rate=rate, demand_burst=burst, message_cost=rng.choice([0, 7]))
        lim.open_session("s", A, 0.0)
        now, applied, sent, biggest = 0.0, [], [], 0
        for i in range(rng.randrange(1, 60)):
            now += rng.choice([0.0, 0.0, 0.001, 0.05, 0.5])
            for _key, frame in lim.due(now):
                applied.append((now, frame))
            size = rng.choice([1, 10, 200, 3000])
            biggest = max(biggest, size + lim.limits.message_cost)
            sent.append((i, size))
            if lim.demand_frame("s", size, (i, size), now):
                applied.append((now, (i, size)))
        end = lim.next_due()
        if end is not None:
            assert end > now and lim.due(end - 1e-6) == []  # not before it is due
            applied.extend((end, f) for _, f in lim.due(end))
        assert applied[-1][1] == sent[-1], (trial, applied[-3:], sent[-3:])
        order = [f[0] for _, f in applied]
        assert order == sorted(order)
        for t, _ in applied:
            spent = sum(f[1] + lim.limits.message_cost for u, f in applied if u <= t)
            assert spent <= burst + rate * t + biggest + 1e-6, trial


# ------------------------------------------------------------ other messages (progress, release)

def test_a_message_is_charged_its_size_the_message_cost_and_its_entries():
    lim = _limiter(demand_burst=10_000.0, host_demand_burst=100_000.0)
    lim.open_session("s", A, 0.0)
    assert lim.message_wait("s", 88, 3, 0.0) is None  # handle now
    cost = 88 + 512 + 3 * 256
    assert lim._sessions["s"].bucket.tokens == 10_000 - cost
    assert lim._host_buckets[A].tokens == 100_000 - cost
    st = lim.stats("s")
    assert (st["messages"], st["waits"], st["bytes"]) == (1, 0, 88)


def test_data_frames_cost_a_message_each_and_their_bytes():
    """A read's data frames are charged at once (R10: 1-byte frames, uncharged when the
    wire swallowed them after a refused header): 1,000 of 1 byte, 1,000 x 513."""
    lim = _limiter(demand_burst=1e6, host_demand_burst=1e7)
    lim.open_session("s", A, 0.0)
    assert lim.message_wait("s", 1000, 0, 0.0, messages=1000) is None
    assert lim._sessions["s"].bucket.tokens == 1e6 - 1000 * 513
    assert lim.message_wait("s", 1000, 0, 0.0, messages=1000) is None  # into debt
    assert lim.message_wait("s", 1, 0, 0.0, messages=1) is not None  # then it waits
    assert lim.stats("s")["messages"] == 2000


def test_a_message_in_debt_waits_until_a_batch_is_back_then_those_after_it_go():
    """In debt, a message waits until BATCH bytes (at most the burst) are back, so the
    next ones go without a wait (and a wake-up) each; the rate is the same."""
    lim = _limiter(demand_rate=1000.0, demand_burst=1000.0, message_cost=0)
    lim.open_session("s", A, 0.0)
    assert lim.message_wait("s", 3000, 0, 0.0) is None  # the burst was there: a debt
    at = lim.message_wait("s", 10, 0, 0.5)
    assert at == pytest.approx(3.0)  # -2,000 back to the burst (1,000) at 1,000/s
    assert lim.message_wait("s", 10, 0, 1.9, waited=True) == pytest.approx(3.0)  # in debt
    assert lim.message_wait("s", 10, 0, 3.0, waited=True) is None
    assert lim.stats("s")["waits"] == 1 and lim.stats("s")["messages"] == 2
    for _ in range(100):  # the batch: 100 x 10 bytes more (the last into debt), no wait
        assert lim.message_wait("s", 10, 0, 3.0) is None
    assert lim.message_wait("s", 10, 0, 3.0) is not None
    big = _limiter(demand_rate=1000.0, message_cost=0)  # a 4 MiB burst: 64 KiB batches
    big.open_session("s", A, 0.0)
    assert big.message_wait("s", (4 << 20) + 1000, 0, 0.0) is None
    assert big.message_wait("s", 10, 0, 0.0) == pytest.approx((1000 + 65536) / 1000)


def test_a_message_waits_for_the_hosts_bucket_too():
    lim = _limiter(host_demand_rate=100.0, host_demand_burst=1000.0, message_cost=0)
    lim.open_session("s", A, 0.0)
    lim.open_session("t", A, 0.0)
    lim.open_session("u", B, 0.0)
    assert lim.message_wait("s", 1500, 0, 0.0) is None  # the host now owes 500
    # its own is full; the host's 500 of debt and a batch (its 1,000 burst) at 100/s
    assert lim.message_wait("t", 10, 0, 0.0) == pytest.approx(15.0)
    assert lim.message_wait("u", 10, 0, 0.0) is None  # another host


def test_a_message_behind_a_kept_demand_waits_for_it_then_goes():
    """Order: a release sent after a demand is not handled before it."""
    lim = _limiter(demand_rate=1000.0, demand_burst=1000.0, message_cost=0)
    lim.open_session("s", A, 0.0)
    assert lim.demand_frame("s", 2000, "d1", 0.0)
    assert not lim.demand_frame("s", 100, "d2", 0.0)  # kept
    at = lim.message_wait("s", 10, 0, 0.0)
    assert at == pytest.approx(1.0) == lim.due_at("s")
    assert lim.message_wait("s", 10, 0, 1.0, waited=True) == 1.0  # due: apply it first
    assert lim.due(1.0) == [("s", "d2")]
    at = lim.message_wait("s", 10, 0, 1.0, waited=True)  # the demand's cost is a debt
    assert at == pytest.approx(2.1)  # its 100, and a batch (the 1,000 burst) back
    assert lim.message_wait("s", 10, 0, at, waited=True) is None


def test_an_honest_submitters_progress_and_releases_never_wait():
    """What a real `jrs submit` sends the master (README "What one source host may
    hold"): a demand of one entry up to 26 times a second, a one-entry progress (~91
    bytes) each second; at its end a release of every claim through the master (1,000
    here, a whole cluster's slots) with a last progress. None of it waits."""
    lim = _limiter()
    lim.open_session("s", A, 0.0)
    t = 0.0
    for second in range(600):
        for i in range(26):
            t = second + i / 26
            assert lim.demand_frame("s", 400, {"n": i}, t)
            lim.decoded("s", 1)
        assert lim.message_wait("s", 91, 1, second + 0.99) is None
    for _ in range(1000):
        assert lim.message_wait("s", 70, 0, 600.0) is None
    assert lim.message_wait("s", 91, 1, 600.0) is None
    assert lim.stats("s")["waits"] == 0 and lim.stats("s")["deferred"] == 0


def test_a_flood_of_large_progress_is_held_to_the_rate():
    """1,024-entry progress (~62 KB, ~325 KB of budget each) as fast as the master
    lets them: over 60 s one session gets the burst plus 60 s of its rate, no more."""
    lim = _limiter()
    lim.open_session("s", A, 0.0)
    cost = 62_000 + 512 + 1024 * 256
    now, handled = 0.0, 0
    while now < 60.0:
        at = lim.message_wait("s", 62_000, 1024, now)
        if at is None:
            handled += 1
        else:
            assert at > now  # a wait is always into the future: nothing spins
            now = at
    most = (lim.limits.demand_burst + 60 * lim.limits.demand_rate) / cost + 1
    assert most - 3 <= handled <= most, (handled, most)


def test_every_limit_is_in_the_help():
    """`jrs --help` names each JRS_MASTER_* knob (their text is jrs/__main__.py's)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "jrs" / "__main__.py").read_text()
    missing = [var for var, _d, _k in SETTINGS.values() if var not in text]
    assert not missing, missing
