"""The submitter core gives up at once the claims the master's welcome names as dropped
while we were away (issue 12, the root of sim D6): kept, each took a job whose run its
node refused "unknown claim", a wasted input transfer and a delay each time."""

from __future__ import annotations

from jrs.client import core as C
from jrs.client.jobs import IDLE, RUNNING
from tests.test_submit_core import claim, collect, finished, make, msgs, of

THREE = "executable = /bin/true\nqueue 3\n"


def _two_running(tmp_path) -> C.SubmitCore:
    """Jobs 7.0 on c1 and 7.1 on c2 (node n1) running, 7.2 idle."""
    core = make(tmp_path, THREE)
    core.start(0.0)
    core.from_master(claim("c1"), 0.0)
    core.from_master(claim("c2"), 0.0)
    core.node_up("n1", 0.0)
    core.run_sent("n1", 0, 1)
    core.run_sent("n1", 1, 1)
    for p in (0, 1):
        core.from_node("n1", {"type": "started", "job": f"7.{p}", "attempt": 1}, 1.0)
    return core


def test_a_claim_whose_job_goes_on_is_not_used_again_after_it(tmp_path):
    """kill False: the node lets the claim go when its job ends; the job's result comes
    as usual, and the next job must not be sent there (it would be refused)."""
    core = _two_running(tmp_path)
    acts = core.master_up({"type": "welcome", "dropped": ["c1"]})
    assert of(acts, C.StartRun) == [] and msgs(acts, C.ToNode, "kill") == []
    assert core.queue.live[0].state == RUNNING  # runs on, not rerun elsewhere
    acts = collect(core, "n1", finished("7.0", 1))
    assert 0 not in core.queue.live  # final (done)
    assert of(acts, C.StartRun) == []  # 7.2 waits for a claim the master holds
    assert "c1" not in core.claims and core.queue.live[2].state == IDLE
    acts = collect(core, "n1", finished("7.1", 1))  # c2, still held: 7.2 goes there
    (run,) = of(acts, C.StartRun)
    assert run.msg["claim"] == "c2" and run.msg["job"] == "7.2"


def test_a_claim_whose_job_the_node_was_told_to_kill_reruns_it_uncounted(tmp_path):
    """killed, and we still reach the node: we kill the run there too and the node's
    answer decides (D7's path, S1). Killed, it runs again elsewhere as a lost run; the
    claim is retired meanwhile, never given a job again."""
    core = _two_running(tmp_path)
    acts = core.master_up({"type": "welcome", "dropped": ["c1"], "killed": ["c1"]})
    assert msgs(acts, C.ToNode, "kill") == [{"type": "kill", "job": "7.0", "attempt": 1}]
    assert core.queue.live[0].state == RUNNING and not of(acts, C.StartRun)
    assert core.claims["c1"].retire
    acts = collect(core, "n1", finished("7.0", 1, exit_code=None, signal=15, removed=True))
    rec = core.queue.live[0]
    assert rec.state == IDLE and rec.lost_runs == 1 and rec.rejections == 0
    assert not [r for r in of(acts, C.StartRun) if r.msg["claim"] == "c1"]
    assert "c1" not in core.claims and "c1" not in core.hello(1)["claims"]
    acts = core.from_master(claim("c3", node="n2"), 2.0) + core.node_up("n2", 2.0)
    assert [(r.msg["claim"], r.msg["job"], r.msg["attempt"]) for r in of(acts, C.StartRun)] \
        == [("c3", "7.0", 2)]


def test_a_killed_claims_job_that_ends_first_on_its_own_is_not_run_again(tmp_path):
    """S1 (sim, revoke 802139): the node was stalled, not gone; the run ended exit 0
    before any kill landed. Rerun at the welcome, the job ran twice to success."""
    core = _two_running(tmp_path)
    core.master_up({"type": "welcome", "dropped": ["c1"], "killed": ["c1"]})
    core.from_master(claim("c3", node="n2"), 2.0)
    acts = core.node_up("n2", 2.0)
    assert [r.msg["job"] for r in of(acts, C.StartRun)] == ["7.2"]  # not 7.0 again
    collect(core, "n1", finished("7.0", 1))
    assert core.queue.final[0].state == "done" and "c1" not in core.claims


def test_a_killed_claim_on_a_node_whose_link_is_down_waits_for_it(tmp_path):
    """The link to the node is down (reconnecting) when the welcome comes: the run may
    still be there, so the kill goes when the link is back and the node's answer
    decides; the wait is bounded by give_up (then it runs again, uncounted)."""
    core = _two_running(tmp_path)
    core.node_down("n1", 1.5, "connection lost")
    acts = core.master_up({"type": "welcome", "dropped": ["c1"], "killed": ["c1"]})
    assert msgs(acts, C.ToNode, "kill") == [] and core.queue.live[0].state == RUNNING
    acts = core.node_up("n1", 3.0)
    assert msgs(acts, C.ToNode, "kill") == [{"type": "kill", "job": "7.0", "attempt": 1}]
    core.node_down("n1", 4.0, "connection lost")
    core.tick(10.0)
    assert core.queue.live[0].state == RUNNING
    core.tick(30.0)  # give_up (20 s) after the welcome, before the node's own give-up
    rec = core.queue.live[0]
    assert rec.state == IDLE and rec.lost_runs == 1


def test_a_free_claim_the_master_dropped_is_forgotten_without_a_release(tmp_path):
    """A claim kept unused (its node rests after refusing a run for its own trouble)."""
    core = make(tmp_path, THREE)
    core.start(0.0)
    core.from_master(claim("c1"), 0.0)
    core.node_up("n1", 0.0)
    core.run_sent("n1", 0, 1)
    core.from_node("n1", {"type": "rejected", "job": "7.0", "attempt": 1, "cause": "node",
                          "reason": "ENOSPC"}, 1.0)
    core.from_master(claim("c2"), 1.0)  # n1 rests: c2 is kept free
    assert core.claims["c2"].proc is None
    acts = core.master_up({"type": "welcome", "dropped": ["c2", "c-unknown"]})
    assert "c2" not in core.claims
    assert msgs(acts, C.ToNode, "release") == [] and msgs(acts, C.ToMaster, "release") == []
    acts = core.tick(100.0)  # the rest is over: nothing goes out on c2
    assert of(acts, C.StartRun) == []


def test_an_older_masters_welcome_changes_nothing(tmp_path):
    """No `dropped` field: today's behaviour (the node's refusal, cause "claim", is the
    fallback). Claims not named stay, whatever the welcome."""
    core = _two_running(tmp_path)
    for welcome in (None, {"type": "welcome"}, {"type": "welcome", "dropped": ["c9"]}):
        core.master_up(welcome)
        assert set(core.claims) == {"c1", "c2"} and not core.claims["c1"].retire
    acts = collect(core, "n1", finished("7.0", 1))
    (run,) = of(acts, C.StartRun)
    assert run.msg["claim"] == "c1"


def test_a_bad_welcome_from_the_master_is_ignored(tmp_path):
    core = _two_running(tmp_path)
    for welcome in ({"type": "welcome", "dropped": "c1"},
                    {"type": "welcome", "dropped": [1, None, ["c1"]]},
                    {"type": "welcome", "dropped": ["c2"], "killed": "c2"}):
        core.master_up(welcome)
    assert set(core.claims) == {"c1", "c2"} and core.claims["c2"].retire
    assert core.queue.live[1].state == RUNNING


def test_a_claim_whose_job_was_killed_not_by_us_is_not_used_again(tmp_path):
    """A `removed` result for a job we did not kill: the master revoked its claim (its
    node-lost, its lease of a submitter it lost) while we were cut off from it, and the
    node dropped the claim as it killed the job. The job runs again as a lost run, but
    not on that claim: every run sent there was refused "unknown claim", a wasted input
    transfer (sim, `revoke` 1-300: 13 of the 19 such refusals; seed 13 is one)."""
    core = _two_running(tmp_path)
    acts = collect(core, "n1", finished("7.0", 1, exit_code=None, signal=15, removed=True))
    rec = core.queue.live[0]
    assert rec.state == IDLE and rec.lost_runs == 1 and rec.rejections == 0
    assert not [r for r in of(acts, C.StartRun) if r.msg["claim"] == "c1"]
    assert "c1" not in core.claims and "c1" not in core.hello(1)["claims"]
    assert msgs(acts, C.ToMaster, "release") == [{"type": "release", "claim": "c1",
                                                  "kill": False}]
    acts = collect(core, "n1", finished("7.1", 1))  # c2, ours still: the rerun goes there
    assert [(r.msg["claim"], r.msg["job"], r.msg["attempt"]) for r in of(acts, C.StartRun)] \
        == [("c2", "7.0", 2)]
