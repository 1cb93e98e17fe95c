"""The submitter core's demand rule (`SubmitCore._demand_matters`, #12 scale): a
backlogged count that falls by a little is held back, everything that can matter to the
master is sent at once with the exact counts. One test per clause, each failing when its
clause is dropped."""

from __future__ import annotations

from jrs.client import core as C
from jrs.client.core import DEMAND_SLACK, ClaimState
from jrs.client.jobs import Queue
from jrs.condor import expand_text

KEY = bytes(range(32))


def make(tmp_path, text: str) -> C.SubmitCore:
    js = list(expand_text(text, str(tmp_path), cluster=7))
    conf = C.CoreConfig(7, "sub1", "alice", "submithost", KEY, len(js))
    return C.SubmitCore(conf, Queue(iter(js), len(js)), None)


def claim(cid: str, node: str = "n1", key: str = "1/0/0/") -> dict:
    return {"type": "claim", "claim": cid, "node": node, "host": "127.0.0.1", "port": 9,
            "cpus": 1, "memory": 100, "gpus": 0, "key": key}


def demands(actions: list) -> list:
    return [a.msg for a in actions
            if isinstance(a, C.ToMaster) and a.msg.get("type") == "demand"]


def count_of(msg: dict) -> int:
    (r,) = msg["requests"]
    return r["count"]


def req(count: int, key: str = "k", **kw) -> dict:
    r = {"key": key, "count": count, "cpus": 1, "memory": 0, "gpus": 0,
         "requirements": "", "ad": {"Owner": "alice"}, "weight": 1.0}
    r.update(kw)
    return r


def core_told(tmp_path, sent: list, held: int = 0, key: str = "k") -> C.SubmitCore:
    """A core that last told the master `sent`, holding `held` claims for `key`."""
    core = make(tmp_path, "executable = /bin/true\nqueue\n")
    core._demand_sent = sent
    for i in range(held):
        core.claims[f"c{i}"] = ClaimState(f"c{i}", "n1", "h", 9, 1, 0, 0, key, proc=i)
    return core


# ------------------------------------------------------------ through events


def test_a_backlog_draining_one_start_at_a_time_is_told_in_steps(tmp_path):
    """1,000 jobs, claims granted one by one, a job started on each: the counts fall by
    one each time; the master hears the first count, then only when the fall passes the
    slack of (held + count) / DEMAND_SLACK, each time with the exact count."""
    core = make(tmp_path, "executable = /bin/true\nqueue 1000\n")
    core.start(0.0)
    (first,) = demands(core.master_up())
    assert count_of(first) == 1000
    told = [1000]
    for i in range(200):
        core.from_master(claim(f"c{i}"), 1.0)
        core.node_up("n1", 1.0)
        for m in demands(core.demand()):
            told.append(count_of(m))
    assert core.queue.idle_by_key()["1/0/0/"][0] == 800
    # held back: far fewer messages than job starts, each one exact and beyond the slack
    assert 3 <= len(told) - 1 <= 10, told
    for then, now in zip(told, told[1:]):
        held = 1000 - now
        assert then - now > (held + now) // DEMAND_SLACK
    # and never more than the slack above the truth in between
    assert told[-1] - 800 <= 1000 // DEMAND_SLACK


def test_the_last_idle_job_starting_is_told_at_once(tmp_path):
    """The key disappears (no idle job left): the master must stop offering at once."""
    core = make(tmp_path, "executable = /bin/true\nqueue 40\n")
    core.start(0.0)
    demands(core.master_up())
    last = None
    for i in range(40):
        core.from_master(claim(f"c{i}"), 1.0)
        core.node_up("n1", 1.0)
        for m in demands(core.demand()):
            last = m
    assert last is not None and last["requests"] == []


# ------------------------------------------------------------ each clause


def test_first_demand_is_always_sent(tmp_path):
    assert core_told(tmp_path, None)._demand_matters([req(1000)])


def test_an_unchanged_demand_is_not_sent_again(tmp_path):
    assert not core_told(tmp_path, [req(1000)])._demand_matters([req(1000)])


def test_a_small_fall_is_held_back(tmp_path):
    core = core_told(tmp_path, [req(1000)], held=100)
    slack = (100 + 1000 - 31) // DEMAND_SLACK
    assert slack >= 31
    assert not core._demand_matters([req(1000 - 31)])


def test_a_fall_beyond_the_slack_is_sent(tmp_path):
    core = core_told(tmp_path, [req(1000)], held=100)
    assert core._demand_matters([req(900)])  # 100 > (100 + 900) // 32


def test_the_slack_counts_the_claims_held_for_the_key_only(tmp_path):
    """Claims of another key do not widen the slack; the ones of this key do."""
    fall = [req(40 - 2)]
    assert core_told(tmp_path, [req(40)], held=40)._demand_matters(fall) is False
    assert core_told(tmp_path, [req(40)], held=40, key="other")._demand_matters(fall)


def test_a_fall_near_what_it_holds_is_exact(tmp_path):
    """Small wants have no slack at all: below DEMAND_SLACK jobs every fall is sent."""
    core = core_told(tmp_path, [req(20)], held=5)
    assert core._demand_matters([req(19)])


def test_a_rise_is_sent_even_by_one(tmp_path):
    core = core_told(tmp_path, [req(1000)], held=100)
    assert core._demand_matters([req(1001)])


def test_a_count_reaching_zero_is_sent(tmp_path):
    """1 -> 0 is inside the slack when 32 claims are held, and still sent."""
    core = core_told(tmp_path, [req(1)], held=DEMAND_SLACK)
    assert (DEMAND_SLACK + 0) // DEMAND_SLACK >= 1
    assert core._demand_matters([req(0)])


def test_a_key_that_appears_or_disappears_is_sent(tmp_path):
    core = core_told(tmp_path, [req(1000), req(5, key="j")], held=100)
    assert core._demand_matters([req(1000)])  # j gone
    core = core_told(tmp_path, [req(1000)], held=100)
    assert core._demand_matters([req(1000), req(5, key="j")])  # j new
    assert core._demand_matters([req(5, key="j")])  # k replaced by j


def test_another_field_changing_is_sent_with_the_count_alike(tmp_path):
    core = core_told(tmp_path, [req(1000)], held=100)
    assert core._demand_matters([req(1000, weight=2.0)])


def test_another_field_changing_is_sent_with_a_small_fall(tmp_path):
    core = core_told(tmp_path, [req(1000)], held=100)
    assert core._demand_matters([req(999, requirements="Memory > 1")])


def test_a_demand_refused_for_a_master_limit_goes_again_after_a_pause(tmp_path):
    """R8: other sessions of our host held its share of request entries, the master
    refused our demand ("limit") and kept nothing of it. Unchanged, it was never sent
    again: the submit hung for good after the others had gone. It goes again after
    DEMAND_RETRY seconds, and not at every event before that (each would be refused
    and charged to our host)."""
    core = make(tmp_path, "executable = /bin/true\nqueue 40\n")
    core.start(0.0)
    (first,) = demands(core.master_up())
    refusal = {"type": "error", "code": "limit", "re": "demand",
               "message": "would hold 16385 request entries; JRS_MASTER_REQUESTS_PER_HOST"}
    assert demands(core.from_master(refusal, 1.0)) == []
    assert demands(core.demand()) == []  # the shell's coalesced call: held back
    assert demands(core.tick(1.0 + C.DEMAND_RETRY - 0.1)) == []
    (again,) = demands(core.tick(1.0 + C.DEMAND_RETRY))
    assert again == first
    assert demands(core.tick(20.0)) == []  # told: nothing more until something changes
    # another error (not a demand refused for a limit) changes nothing
    core2 = make(tmp_path, "executable = /bin/true\nqueue 2\n")
    core2.start(0.0)
    core2.master_up()
    core2.from_master({"type": "error", "code": "bad-message", "re": "demand",
                       "message": "x"}, 1.0)
    assert demands(core2.tick(30.0)) == []
