"""The submitter core (client/core.py) driven by events, no sockets: each defect of
issues 12 and 13 on the submitter side, pinned."""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys

import pytest

from jrs.client import core as C
from jrs.client import journal as J
from jrs.client import transfer
from jrs.client.jobs import DONE, HELD, IDLE, RUNNING, Summary, resumed_queue
from jrs.condor import expand_text

KEY = bytes(range(32))


def make(tmp_path, text: str, prev: J.Previous | None = None, **cfg) -> C.SubmitCore:
    js = list(expand_text(text, str(tmp_path), cluster=7))
    q = resumed_queue(iter(js), len(js), prev)
    conf = C.CoreConfig(7, "sub1", "alice", "submithost", KEY, len(js), **cfg)
    return C.SubmitCore(conf, q, prev)


def claim(cid: str, node: str = "n1", key: str = "1/0/0/") -> dict:
    return {"type": "claim", "claim": cid, "node": node, "host": "127.0.0.1", "port": 9,
            "cpus": 1, "memory": 100, "gpus": 0, "key": key}


def finished(job: str, attempt: int, files=(), **result) -> dict:
    res = {"exit_code": 0, "signal": None, "rusage": {"utime": 0.1, "stime": 0.0},
           "started": 1.0, "ended": 2.0, "removed": False}
    res.update(result)
    return {"type": "finished", "job": job, "attempt": attempt, "result": res,
            "files": list(files)}


def of(actions: list, kind) -> list:
    return [a for a in actions if isinstance(a, kind)]


def msgs(actions: list, kind, mtype: str) -> list:
    return [a.msg for a in of(actions, kind) if a.msg.get("type") == mtype]


def collect(core: C.SubmitCore, node: str, msg: dict, error=None) -> list:
    """A node's `finished`, its data written (or failed with `error`)."""
    acts = core.from_node(node, msg, 0.0)
    recv = of(acts, C.ReceiveOutputs)
    out = list(acts)
    for r in recv:
        out += core.outputs_done(r.ref, error)
    return out


def started_one(tmp_path, text="executable = /bin/true\nqueue\n", **cfg):
    core = make(tmp_path, text, **cfg)
    core.start(0.0)
    acts = core.from_master(claim("c1"), 0.0)
    assert of(acts, C.Connect) == [C.Connect("n1", "127.0.0.1", 9)]
    assert of(acts, C.StartRun) == []  # the link is not up yet
    acts = core.node_up("n1", 0.0)
    (run,) = of(acts, C.StartRun)
    assert run.msg == {"type": "run", "claim": "c1", "job": "7.0", "attempt": 1}
    core.run_sent("n1", 0, 1)
    return core


# ------------------------------------------------------------ happy path, journal


def test_one_job_start_to_end_and_journal_records(tmp_path):
    core = make(tmp_path, "executable = /bin/true\nlog = l.log\nqueue\n")
    acts = core.start(0.0)
    assert [a.kind for a in of(acts, C.Event)] == ["submitted"]
    acts = core.from_master(claim("c1"), 0.0) + core.node_up("n1", 0.0)
    (rec,) = [a.rec for a in of(acts, C.Record) if a.rec["e"] == "run"]
    assert rec == {"e": "run", "proc": 0, "attempt": 1, "node": "n1", "claim": "c1",
                   "host": "127.0.0.1", "port": 9}
    core.run_sent("n1", 0, 1)
    acts = collect(core, "n1", finished("7.0", 1))
    assert msgs(acts, C.ToNode, "ack") == [{"type": "ack", "job": "7.0", "attempt": 1}]
    assert [a.kind for a in of(acts, C.Event)] == ["executing", "terminated"]
    assert core.finished and core.queue.final[0].state == DONE
    # no job left: the claim goes back, through the node we are connected to, not killing
    assert msgs(acts, C.ToNode, "release") == [{"type": "release", "claim": "c1",
                                                "kill": False}]


def test_session_tokens_in_attach_and_hello(tmp_path):
    core = make(tmp_path, "executable = /bin/true\nqueue\n")
    core.start(0.0)
    core.from_master(claim("c1"), 0.0)
    (attach,) = msgs(core.node_up("n1", 0.0), C.ToNode, "attach")
    want = hashlib.blake2b(b"jrs-session:n1", key=KEY, digest_size=32).hexdigest()
    assert attach["token"] == want and attach["submitter"] == "sub1"
    hello = core.hello(123)
    assert hello["token"] == C.token(KEY, "master") != want
    assert KEY.hex() not in repr(hello) + repr(attach)  # the key itself is never sent


# ------------------------------------------------------------ issue 12


def previous_with_running() -> J.Previous:
    prev = J.Previous(7, "sub1", "h", 3, key=KEY)
    prev.final[0] = Summary(DONE)
    prev.running[1] = (2, "n1", "c1", "127.0.0.1", 9)
    prev.attempts[1] = (2, 0)
    return prev


def test_resume_reattaches_and_never_releases_a_busy_claim(tmp_path):
    prev = previous_with_running()
    core = make(tmp_path, "executable = /bin/true\nqueue 3\n", prev=prev)
    js = list(expand_text("executable = /bin/true\nqueue 3\n", str(tmp_path), cluster=7))
    acts = core.start(0.0, [js[1]])
    assert of(acts, C.Connect) == [C.Connect("n1", "127.0.0.1", 9)]
    assert core.queue.live[1].state == RUNNING and core.queue.live[1].attempt == 2
    acts = core.node_up("n1", 0.0)
    (attach,) = msgs(acts, C.ToNode, "attach")
    assert attach["jobs"] == [["7.1", 2]]
    assert of(acts, C.StartRun) == []  # job 7.1 is not sent again
    # the master re-offers the claim of the running job: it stays bound, nothing released
    acts = core.from_master(claim("c1"), 0.0) + core.from_master(
        {"type": "give-back", "count": 1}, 0.0)
    assert not msgs(acts, C.ToNode, "release") and not msgs(acts, C.ToMaster, "release")
    assert not [a for a in of(acts, C.StartRun) if a.msg["claim"] == "c1"]
    acts = collect(core, "n1", finished("7.1", 2))
    assert core.queue.final[1].state == DONE
    # once its job ended the re-attached claim is retired, never killing
    assert {"type": "release", "claim": "c1", "kill": False} in msgs(acts, C.ToNode, "release")


def test_rejected_releases_the_claim(tmp_path):
    core = started_one(tmp_path)
    acts = core.from_node("n1", {"type": "rejected", "job": "7.0", "attempt": 1,
                                 "reason": "claim is being released"}, 0.0)
    assert "c1" not in core.claims
    assert msgs(acts, C.ToNode, "release") == [{"type": "release", "claim": "c1",
                                                "kill": False}]
    assert core.queue.live[0].state == IDLE
    (req,) = [a.rec for a in of(acts, C.Record) if a.rec["e"] == "requeue"]
    assert req == {"e": "requeue", "proc": 0, "attempt": 1, "completions": 0, "refused": 1}


def test_a_job_every_node_rejects_is_held_not_bounced_forever(tmp_path):
    core = make(tmp_path, "executable = /bin/true\nqueue\n")
    core.start(0.0)
    core.node_up("n1", 0.0)
    for i in range(1, C.MAX_REJECTIONS + 1):
        core.from_master(claim(f"c{i}"), 0.0)
        core.node_up("n1", 0.0)
        core.from_node("n1", {"type": "rejected", "job": "7.0", "attempt": i,
                              "reason": "bad job: x"}, 0.0)
    assert core.queue.final[0].state == HELD and "bad job" in core.queue.final[0].reason
    assert core.claims == {}


def test_attached_unknown_releases_the_claim_and_reruns(tmp_path):
    core = started_one(tmp_path)
    core.node_down("n1", 1.0, "reset")
    acts = core.node_up("n1", 2.0)
    assert msgs(acts, C.ToNode, "attach")[0]["jobs"] == [["7.0", 1]]
    acts = core.from_node("n1", {"type": "attached", "unknown": [["7.0", 1]]}, 2.0)
    assert {"type": "release", "claim": "c1", "kill": False} in msgs(acts, C.ToNode, "release")
    assert "c1" not in core.claims and core.queue.live[0].state == IDLE


def test_local_write_error_holds_the_job_and_keeps_the_link(tmp_path):
    core = started_one(tmp_path, "executable = /bin/true\noutput = o\nqueue\n")
    acts = collect(core, "n1", finished("7.0", 1, [{"name": "_condor_stdout", "size": 3}]),
                   error="o: Permission denied")
    assert core.queue.final[0].state == HELD
    assert "Permission denied" in core.queue.final[0].reason
    assert msgs(acts, C.ToNode, "ack")  # the node may forget the result
    assert not of(acts, C.ResetNode)
    assert core.nodes["n1"].up and core.nodes["n1"].failing_since is None


def test_retry_state_survives_resume_through_the_journal(tmp_path):
    text = "executable = /bin/true\nmax_retries = 2\nqueue\n"
    core = started_one(tmp_path, text)
    path = str(tmp_path / "j")
    j = J.Journal(path)
    j.start(7, "sub1", "h", 1, KEY)
    acts = collect(core, "n1", finished("7.0", 1, exit_code=3))
    (run,) = of(acts, C.StartRun)  # the claim takes the retry at once
    assert run.msg["attempt"] == 2
    for a in of(acts, C.Record):
        j.append(a.rec)
    j.close()  # ... and the submitter is killed here
    assert os.stat(path).st_mode & 0o777 == 0o600
    prev = J.read(path)
    assert prev.key == KEY and prev.attempts == {0: (2, 1)}
    assert prev.running == {0: (2, "n1", "c1", "127.0.0.1", 9)}
    core2 = make(tmp_path, text, prev=prev)
    (job,) = expand_text(text, str(tmp_path), cluster=7)
    core2.start(0.0, [job])
    core2.node_up("n1", 0.0)
    acts = collect(core2, "n1", finished("7.0", 2, exit_code=3))
    assert core2.queue.live[0].completions == 2 and core2.queue.live[0].state == IDLE
    core2.from_master(claim("c6"), 0.0)
    (run,) = of(core2.node_up("n1", 0.0), C.StartRun)
    assert run.msg["attempt"] == 3  # never an attempt an unacked taskfile may still hold
    core2.run_sent("n1", 0, 3)
    collect(core2, "n1", finished("7.0", 3, exit_code=3))
    assert core2.queue.final[0].state == "failed"  # 3 runs in all: max_retries = 2


def test_give_up_on_an_unreachable_node_after_the_timeout(tmp_path):
    core = started_one(tmp_path, give_up=20.0)
    core.node_down("n1", 100.0, "refused")
    assert not msgs(core.tick(110.0), C.ToMaster, "release")
    core.node_down("n1", 115.0, "refused")  # failing again does not reset the timer
    acts = core.tick(121.0)
    assert msgs(acts, C.ToMaster, "release") == [{"type": "release", "claim": "c1",
                                                  "kill": True}]
    assert core.queue.live[0].state == IDLE


def test_the_node_give_up_is_20_s_unless_jrs_node_give_up_says_otherwise():
    """The real-process tests shorten JRS_NODE_GIVE_UP (a dead node's jobs rerun after
    it); this holds the default a user gets, in the shell and in the core."""
    env = {k: v for k, v in os.environ.items() if k != "JRS_NODE_GIVE_UP"}
    code = ("from jrs.client import core, runner; "
            "print(runner.NODE_GIVE_UP, core.CoreConfig.give_up)")
    for extra, want in (({}, "20.0 20.0"), ({"JRS_NODE_GIVE_UP": "5"}, "5.0 20.0")):
        out = subprocess.run([sys.executable, "-c", code], env={**env, **extra},
                             capture_output=True, text=True, timeout=60, check=True).stdout
        assert out.split() == want.split(), out


def test_remove_a_job_not_yet_materialized(tmp_path):
    core = make(tmp_path, "executable = /bin/true\nmax_idle = 2\nqueue 5\n")
    core.start(0.0)
    acts = core.from_master({"type": "rm", "re": "x", "ids": ["7.4", "8.1"]}, 0.0)
    assert msgs(acts, C.ToMaster, "removed") == [{"type": "removed", "re": "x", "count": 1}]
    assert core.queue.final[4].state == "removed"


def test_rm_of_a_running_job_kills_it_and_reports_removed(tmp_path):
    core = started_one(tmp_path)
    acts = core.remove(["7"], "removed by Ctrl-C")
    assert msgs(acts, C.ToNode, "kill") == [{"type": "kill", "job": "7.0", "attempt": 1}]
    collect(core, "n1", finished("7.0", 1, exit_code=None, signal=15, removed=True))
    assert core.queue.final[0].state == "removed" and core.finished


# ------------------------------------------------------------ issue 13: a malicious node


def drained_then_acked(core: C.SubmitCore, acts: list, total: int) -> list:
    """A refused result: its data is drained to nowhere, then acknowledged (no reset: a
    reset would lose the ack and the node would deliver again)."""
    assert not of(acts, C.ResetNode) and not msgs(acts, C.ToNode, "ack")
    (recv,) = of(acts, C.ReceiveOutputs)
    assert all(d is None for _h, d in recv.plan)
    assert sum(h["size"] for h, _d in recv.plan) == total
    after = core.outputs_done(recv.ref, None)
    assert msgs(after, C.ToNode, "ack") == [{"type": "ack", "job": recv.ref[1],
                                             "attempt": recv.ref[2]}]
    return after


@pytest.mark.parametrize("bad", [
    {"rusage": "lots"}, {"exit_code": "0"}, {"signal": [9]}, {"rusage": {"utime": "x"}},
    {"missing": [1, 2]}, {"removed": "yes"}, {"started": {}},
])
def test_wrong_payload_types_hold_the_job(tmp_path, bad):
    core = started_one(tmp_path)
    acts = core.from_node("n1", finished("7.0", 1, [{"name": "o", "size": 5}], **bad), 0.0)
    assert core.queue.final[0].state == HELD and "bad result" in core.queue.final[0].reason
    assert all(len(a.text) < 400 for a in of(acts, C.Say))
    drained_then_acked(core, acts, 5)
    assert core.finished


def test_a_result_that_is_not_an_object(tmp_path):
    core = started_one(tmp_path)
    msg = finished("7.0", 1)
    msg["result"] = "x" * 10_000
    acts = core.from_node("n1", msg, 0.0)
    assert core.queue.final[0].state == HELD
    assert all(len(a.text) < 400 for a in of(acts, C.Say))
    drained_then_acked(core, acts, 0)


def test_too_many_output_files_hold_with_code_33(tmp_path):
    core = started_one(tmp_path, "executable = /bin/true\nlog = l\nqueue\n")
    files = [{"name": f"f{i}", "size": 1} for i in range(120_000)]
    acts = core.from_node("n1", finished("7.0", 1, files), 0.0)
    assert core.queue.final[0].state == HELD and "120000" in core.queue.final[0].reason
    (held,) = [a for a in of(acts, C.Event) if a.kind == "held"]
    assert held.args[-1] == 33
    drained_then_acked(core, acts, 120_000)


def test_a_node_that_stopped_collecting_at_its_limit_has_the_job_held_33(tmp_path):
    """#13 rule 10 (audit A13): the node collects at most its limit of files and says
    so (`outputs_over_limit`); the exactly 100,000 files it sends are within ours, so
    the job ended DONE with part of its outputs. It is held (HTCondor's code 33), and
    none of what came is written. A job being removed ends REMOVED all the same."""
    core = started_one(tmp_path, "executable = /bin/true\nlog = l\nqueue\n")
    files = [{"name": f"f{i}", "size": 1} for i in range(1000)]
    acts = core.from_node("n1", finished("7.0", 1, files,
                                         outputs_over_limit="more than 100000 output files"),
                          0.0)
    final = core.queue.final[0]
    assert final.state == HELD and "more than 100000 output files" in final.reason
    (held,) = [a for a in of(acts, C.Event) if a.kind == "held"]
    assert held.args[-1] == C.HOLD_OUTPUT_LIMIT == 33
    (recv,) = of(acts, C.ReceiveOutputs)
    assert all(dest is None for _h, dest in recv.plan)  # drained, nothing written
    drained_then_acked(core, acts, 1000)
    (tmp_path / "rm").mkdir()
    core = started_one(tmp_path / "rm", "executable = /bin/true\nqueue\n")
    core.remove(["7.0"], "via jrs rm")
    collect(core, "n1", finished("7.0", 1, files, removed=True, outputs_over_limit="x"))
    assert core.queue.final[0].state == "removed"


def test_byte_cap_holds_with_code_33(tmp_path):
    core = started_one(tmp_path, "executable = /bin/true\nlog = l\nqueue\n",
                       max_output_bytes=1000)
    acts = core.from_node("n1", finished("7.0", 1, [{"name": "big", "size": 1001}]), 0.0)
    assert core.queue.final[0].state == HELD and "1001 bytes" in core.queue.final[0].reason
    (held,) = [a for a in of(acts, C.Event) if a.kind == "held"]
    assert held.args[-1] == C.HOLD_OUTPUT_LIMIT == 33
    drained_then_acked(core, acts, 1001)


def test_absurd_sizes_hold_the_job_at_once(tmp_path):
    """The drain of 2**60 announced bytes may never end: the job is final before it, so
    the submit ends without waiting for it."""
    core = started_one(tmp_path)
    acts = core.from_node("n1", finished("7.0", 1, [{"name": "x", "size": 1 << 60}]), 0.0)
    assert core.queue.final[0].state == HELD and core.finished
    assert of(acts, C.ReceiveOutputs)


def test_files_that_are_no_transfer_reset_the_session(tmp_path):
    core = started_one(tmp_path)
    msg = finished("7.0", 1)
    msg["files"] = {"a": 1}
    acts = core.from_node("n1", msg, 0.0)
    assert of(acts, C.ResetNode) and not of(acts, C.ReceiveOutputs)


def test_another_nodes_result_for_our_job_is_not_taken(tmp_path):
    core = started_one(tmp_path)
    acts = collect(core, "n2", finished("7.0", 1))
    assert core.queue.live[0].state == RUNNING  # still waiting for n1
    assert msgs(acts, C.ToNode, "ack") == [{"type": "ack", "job": "7.0", "attempt": 1}]


# ------------------------------------------------------------ issue 13 item 10: where outputs land


def plan_for(tmp_path, text: str, names: list, protected=frozenset()) -> dict:
    (job,) = expand_text(text, str(tmp_path), cluster=7)
    heads = [{"name": n, "size": 1} for n in names]
    return {h["name"]: d for h, d in transfer.output_plan(job, heads, protected)}


def test_explicit_outputs_land_by_base_name_only(tmp_path):
    plan = plan_for(tmp_path, "executable = x\ntransfer_output_files = out/b.txt, res\nqueue\n",
                    ["b.txt", "res/deep/c", "a.txt", ".bashrc", "../x", "/etc/x", "res/../../x"])
    w = str(tmp_path)
    assert plan["b.txt"] == (w, "b.txt") and plan["res/deep/c"] == (w, "res/deep/c")
    assert plan["a.txt"] is None and plan[".bashrc"] is None
    assert plan["../x"] is None and plan["/etc/x"] is None and plan["res/../../x"] is None


def test_automatic_outputs_are_top_level_only(tmp_path):
    plan = plan_for(tmp_path, "executable = x\noutput = o.txt\nqueue\n",
                    ["new.txt", "deep/a/b/c", "_condor_stdout", "_condor_stdin", "."])
    assert plan["new.txt"] == (str(tmp_path), "new.txt") and plan["deep/a/b/c"] is None
    assert plan["_condor_stdout"] == (str(tmp_path), "o.txt")
    assert plan["_condor_stdin"] is None and plan["."] is None


def test_outputs_never_land_on_protected_files(tmp_path):
    sub = os.path.join(str(tmp_path), "s.condor")
    plan = plan_for(tmp_path, "executable = x\nqueue\n", ["s.condor", "ok"],
                    frozenset({sub}))
    assert plan["s.condor"] is None and plan["ok"] is not None


def test_an_iwd_through_a_symlink_cannot_name_the_submit_file_and_dirs_resolve_once(
        tmp_path):
    """The protected files are compared by real path through the shell's `realdir`,
    asked once per directory (a 5,000-file result costs 2 calls, not 5,000)."""
    work = tmp_path / "w"
    work.mkdir()
    os.symlink(work, tmp_path / "alias")
    (job,) = expand_text(f"executable = x\niwd = {tmp_path / 'alias'}\nqueue\n",
                         str(work), cluster=7)
    asked = []

    def realdir(d: str) -> str:
        asked.append(d)
        return os.path.realpath(d)

    heads = [{"name": n, "size": 1} for n in ["s.condor"] + [f"f{i}" for i in range(5000)]]
    protected = frozenset({str(work / "s.condor")})
    plan = dict((h["name"], d) for h, d in
                transfer.output_plan(job, heads, protected, functools.lru_cache()(realdir)))
    assert plan["s.condor"] is None and plan["f1"] == (str(tmp_path / "alias"), "f1")
    assert sorted(asked) == sorted({str(work), str(tmp_path / "alias")})
    unguarded = dict((h["name"], d) for h, d in transfer.output_plan(job, heads, protected))
    assert unguarded["s.condor"] is not None  # by spelling alone it would land there


def test_job_logs_are_protected_by_the_core(tmp_path):
    core = started_one(tmp_path, "executable = /bin/true\nlog = job.log\nqueue\n")
    acts = core.from_node("n1", finished("7.0", 1, [{"name": "job.log", "size": 5},
                                                    {"name": "fine", "size": 5}]), 0.0)
    (recv,) = of(acts, C.ReceiveOutputs)
    assert [d for _h, d in recv.plan] == [None, (str(tmp_path), "fine")]


def test_output_file_never_writes_through_a_symlink(tmp_path):
    target = tmp_path / "secret"
    target.write_text("keep")
    (tmp_path / "w").mkdir()
    os.symlink(target, tmp_path / "w" / "out")
    f = transfer.OutputFile((str(tmp_path / "w"), "out"))
    f.write(b"new")
    f.commit()
    assert target.read_text() == "keep"
    assert not os.path.islink(tmp_path / "w" / "out")
    assert (tmp_path / "w" / "out").read_text() == "new"
    # a directory component that is a link is refused (ELOOP/ENOTDIR), nothing written
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "w" / "d")
    with pytest.raises(OSError):
        transfer.OutputFile((str(tmp_path / "w"), "d/x"))
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert [p.name for p in (tmp_path / "w").iterdir() if "jrs-part" in p.name] == []


def test_a_node_that_keeps_breaking_the_protocol_is_not_used_again(tmp_path):
    """A bad transfer header closes the session before the core sees the job: the node
    would deliver it again and again. After STRIKES such breaks in a minute the run stops
    using the node, its jobs run elsewhere, and no reconnect loop holds the submit."""
    core = started_one(tmp_path, "executable = /bin/true\nqueue 2\n")
    for t in (1.0, 2.0):
        acts = core.node_down("n1", t, "bad transfer header", protocol=True)
        assert not of(acts, C.Disconnect)
        core.node_up("n1", t)
    acts = core.node_down("n1", 3.0, "bad transfer header", protocol=True)
    assert of(acts, C.Disconnect) == [C.Disconnect("n1")]
    assert any("broke the protocol 3 times" in a.text for a in of(acts, C.Say))
    assert core.queue.counts[RUNNING] == 0 and core.queue.counts[IDLE] == 2
    # its claims stay unused (no start there), and count for nothing in the demand
    acts = core.from_master(claim("c2"), 4.0) + core.demand()
    assert not of(acts, C.StartRun)
    assert "c1" in core.claims and "c2" in core.claims
    (demand,) = msgs(core.master_up(), C.ToMaster, "demand")
    assert demand["requests"][0]["count"] == 2
    # a healthy node takes the jobs
    core.from_master(claim("c3", node="n2"), 5.0)
    assert len(of(core.node_up("n2", 5.0), C.StartRun)) == 1
    assert not msgs(core.tick(100.0), C.ToMaster, "release")  # no give-up churn for n1


def test_protocol_breaks_spread_out_do_not_ban(tmp_path):
    core = started_one(tmp_path)
    for t in (0.0, 70.0, 140.0, 210.0):
        assert not of(core.node_down("n1", t, "x", protocol=True), C.Disconnect)
        core.node_up("n1", t)


# ------------------------------------------------------------ simulation findings D1 D3 D4 D5


def _lose_by_master(core):
    return core.from_master({"type": "node-lost", "node": "n1", "claims": ["c1"]}, 1.0)


def _lose_by_lost_result(core):
    return collect(core, "n1", finished("7.0", 1, exit_code=None, started=None, ended=None,
                                        lost=True, reason="the node rebooted while the job ran"))


def _lose_by_giving_up(core):
    core.node_down("n1", 1.0, "refused")
    return core.tick(30.0)


def _lose_by_attached_unknown(core):
    core.node_down("n1", 1.0, "reset")
    core.node_up("n1", 2.0)
    return core.from_node("n1", {"type": "attached", "unknown": [["7.0", 1]]}, 2.0)


@pytest.mark.parametrize("lose", [_lose_by_master, _lose_by_lost_result, _lose_by_giving_up,
                                  _lose_by_attached_unknown],
                         ids=["node-lost", "lost-result", "give-up", "attached-unknown"])
@pytest.mark.parametrize("ids", [["7"], ["7.0"]], ids=["cluster", "job"])
def test_a_job_being_removed_whose_node_is_lost_ends_removed(tmp_path, lose, ids):
    """D3 (sim seeds small 62, 141, 180): Ctrl-C (or `jrs rm 7.0`) while the job runs,
    then its node is lost: the job must end REMOVED, not go back to a queue that
    nothing serves any more (the submit never ended)."""
    core = started_one(tmp_path)
    core.remove(ids, "removed by Ctrl-C")
    acts = lose(core)
    assert core.queue.final[0].state == "removed" and core.finished
    assert core.queue.final[0].reason == "removed by Ctrl-C"
    assert not [a for a in of(acts, C.Record) if a.rec["e"] == "requeue"]
    assert not of(acts, C.StartRun)


def test_a_removing_job_refused_by_its_node_ends_removed(tmp_path):
    core = started_one(tmp_path)
    core.remove(["7.0"], "via jrs rm")
    core.from_node("n1", {"type": "rejected", "job": "7.0", "attempt": 1, "cause": "node",
                          "reason": "the node cannot take the job: EIO"}, 1.0)
    assert core.queue.final[0].state == "removed" and core.finished


def journal_of(actions: list, total: int = 1) -> list:
    """The journal records a run wrote: its head, then each core.Record in order."""
    return [{"e": "cluster", "id": 7, "submitter": "sub1", "hash": "h", "total": total,
             "key": KEY.hex()}] + [a.rec for a in of(actions, C.Record)]


def test_a_removal_cut_short_by_kill9_is_finished_on_resume(tmp_path):
    """D4 (sim seed small 65): Ctrl-C sends the kill, then `kill -9` before the job's end
    is journaled. The rerun must know of the removal: it kills again (the first kill
    may not have landed) and the killed run ends the job REMOVED, not judged as its
    own exit (FAILED, or run again and DONE)."""
    text = "executable = /bin/true\nqueue 2\n"
    core = make(tmp_path, text)
    acts = core.start(0.0)
    acts += core.from_master(claim("c1"), 0.0) + core.node_up("n1", 0.0)
    core.run_sent("n1", 0, 1)
    acts += core.remove(["7"], "removed by Ctrl-C")
    assert {"e": "remove", "ids": ["7"], "reason": "removed by Ctrl-C"} in [
        a.rec for a in of(acts, C.Record)]
    prev = J.parse(journal_of(acts, 2))  # ... killed here
    assert prev.removes == [(["7"], "removed by Ctrl-C")] and 0 in prev.running
    assert prev.final[1].state == "removed"  # the idle one ended at once
    core2 = make(tmp_path, text, prev=prev)
    jobs = list(expand_text(text, str(tmp_path), cluster=7))
    acts = core2.start(1.0, [jobs[0]])
    assert not msgs(acts, C.ToMaster, "demand") or \
        msgs(acts, C.ToMaster, "demand")[-1]["requests"] == []
    acts = core2.node_up("n1", 1.0)
    assert msgs(acts, C.ToNode, "kill") == [{"type": "kill", "job": "7.0", "attempt": 1}]
    collect(core2, "n1", finished("7.0", 1, exit_code=None, signal=15, removed=True))
    assert core2.finished and core2.queue.final[0].state == "removed"
    assert core2.queue.final[0].reason == "removed by Ctrl-C"


def test_a_removal_by_jrs_rm_of_one_job_is_journaled_and_applied_again(tmp_path):
    text = "executable = /bin/true\nqueue 2\n"
    core = started_one(tmp_path, text)
    acts = core.from_master({"type": "rm", "re": "r", "ids": ["7.0"]}, 1.0)
    prev = J.parse(journal_of(acts, 2))
    assert prev.removes == [(["7.0"], "via jrs rm")]
    prev.running[0] = (1, "n1", "c1", "127.0.0.1", 9)
    core2 = make(tmp_path, text, prev=prev)
    core2.start(2.0, [next(iter(expand_text(text, str(tmp_path), cluster=7)))])
    assert core2.removing == {0} and core2.remove_reason is None  # only that job
    assert msgs(core2.node_up("n1", 2.0), C.ToNode, "kill") == [
        {"type": "kill", "job": "7.0", "attempt": 1}]


def test_a_run_killed_without_our_asking_runs_again_uncounted(tmp_path):
    """D5 (sim seed small 1164): the master revoked the claim with kill (it declared the
    node lost; we never heard, being partitioned from it), so the node delivers
    `removed: true, signal 15` for a job we are not removing. That is a lost run, not
    the job's exit: run it again, no completion counted (max_retries = 0 here)."""
    text = "executable = /bin/true\nmax_retries = 0\nqueue\n"
    core = started_one(tmp_path, text)
    acts = collect(core, "n1", finished("7.0", 1, exit_code=None, signal=15, removed=True))
    rec = core.queue.live[0]
    assert rec.completions == 0 and not core.queue.final
    assert [a.rec for a in of(acts, C.Record) if a.rec["e"] == "requeue"] == [
        {"e": "requeue", "proc": 0, "attempt": 1, "completions": 0, "lost": 1}]
    assert not [a for a in of(acts, C.Event) if a.kind == "terminated"]
    assert not of(acts, C.StartRun)  # not on that claim: the node dropped it with the job
    assert msgs(acts, C.ToMaster, "release") == [{"type": "release", "claim": "c1",
                                                  "kill": False}]
    (run,) = of(core.from_master(claim("c2"), 1.0), C.StartRun)
    assert run.msg["attempt"] == 2 and run.msg["claim"] == "c2" and rec.state == RUNNING
    core.run_sent("n1", 0, 2)
    collect(core, "n1", finished("7.0", 2))
    assert core.queue.final[0].state == DONE


def refuse(core, attempt: int, now: float, node: str = "n1", cause="node") -> list:
    msg = {"type": "rejected", "job": "7.0", "attempt": attempt,
           "reason": "cannot write 'input': [Errno 5] EIO"}
    if cause is not None:
        msg["cause"] = cause
    return core.from_node(node, msg, now)


def test_a_node_with_a_failing_disk_does_not_eat_the_job(tmp_path):
    """D1 (sim seeds small 45, 124, 211): a node whose disk fails for a few seconds
    refuses the run again and again (the Pool re-offers its free slot at once). Those
    refusals name the node's own trouble (cause "node"): the job is not held for
    them; the node is rested (its claims kept unused, so not offered again at once)
    for a pause that doubles, and the job runs as soon as a healthy claim comes."""
    core = started_one(tmp_path)
    now = 10.0
    for attempt in range(1, C.MAX_REJECTIONS + 2):  # more than would hold a job
        acts = refuse(core, attempt, now)
        assert core.queue.live[0].state == IDLE  # not held
        pause = min(C.REST_MAX, C.REST_FIRST * 2 ** (attempt - 1))
        assert any(f"not using it for {pause:.0f}s" in a.text for a in of(acts, C.Say))
        # the Pool offers the same node's slot again at once: kept, unused
        acts = core.from_master(claim(f"r{attempt}"), now)
        assert not of(acts, C.StartRun) and f"r{attempt}" in core.claims
        (demand,) = msgs(core.demand(), C.ToMaster, "demand") or [None]
        assert demand is None or demand["requests"][0]["count"] == 1  # still wanted
        assert not of(core.tick(now + pause - 0.01), C.StartRun)  # still resting
        (run,) = of(core.tick(now + pause), C.StartRun)  # rested: tried again
        assert run.msg["attempt"] == attempt + 1
        core.run_sent("n1", 0, attempt + 1)
        now += pause
    # a healthy node's claim takes it at once even while n1 rests
    refuse(core, C.MAX_REJECTIONS + 2, now)
    core.from_master(claim("h1", node="n2"), now)
    (run,) = of(core.node_up("n2", now), C.StartRun)
    assert run.node == "n2"
    core.run_sent("n2", 0, run.msg["attempt"])
    collect(core, "n2", finished("7.0", run.msg["attempt"]))
    assert core.finished and core.queue.final[0].state == DONE


def test_a_job_started_ends_the_nodes_rest_streak(tmp_path):
    core = started_one(tmp_path, "executable = /bin/true\nqueue 2\n")
    refuse(core, 1, 0.0)
    refuse(core, 1, 0.0)  # repeated: not the running job any more, ignored
    assert core.nodes["n1"].rest_streak == 1
    core.from_master(claim("c2"), 0.0)
    (run,) = of(core.tick(1.0), C.StartRun)
    core.run_sent("n1", int(run.msg["job"].split(".")[1]), run.msg["attempt"])
    core.from_node("n1", {"type": "started", "job": run.msg["job"],
                          "attempt": run.msg["attempt"]}, 1.5)
    assert core.nodes["n1"].rest_streak == 0


def test_a_job_no_node_can_take_is_still_held_with_the_reason(tmp_path):
    """Every node refuses it for its own trouble (say its input fills any disk): after
    MAX_NODE_REJECTIONS refusals, spaced by the rests, it is held, never looped on."""
    core = started_one(tmp_path)
    now = 0.0
    for attempt in range(1, C.MAX_NODE_REJECTIONS + 1):
        refuse(core, attempt, now, node="n1" if attempt % 2 else "n2")
        if attempt == C.MAX_NODE_REJECTIONS:
            break
        now += C.REST_MAX
        node = "n1" if (attempt + 1) % 2 else "n2"
        core.from_master(claim(f"c{attempt + 1}", node=node), now)
        core.node_up(node, now)
        core.tick(now)
        core.run_sent(node, 0, attempt + 1)
    (s,) = core.queue.final.values()
    assert s.state == HELD and f"{C.MAX_NODE_REJECTIONS} times" in s.reason
    assert "EIO" in s.reason and core.finished


def test_a_refusal_without_a_cause_still_counts_against_the_job(tmp_path):
    """A node of an older build names no cause: its refusals count as before."""
    core = started_one(tmp_path)
    for attempt in range(1, C.MAX_REJECTIONS + 1):
        refuse(core, attempt, 0.0, cause=None)
        if attempt < C.MAX_REJECTIONS:
            core.from_master(claim(f"c{attempt + 1}"), 0.0)
            core.run_sent("n1", 0, attempt + 1)
    assert core.queue.final[0].state == HELD
    assert core.nodes["n1"].rest_until == float("-inf")


def test_a_node_back_from_its_rest_is_probed_by_one_run(tmp_path):
    """The slots kept while a node rested are not all thrown at it at once: one run
    probes it; once a job started there, the others go too."""
    core = started_one(tmp_path, "executable = /bin/true\nqueue 4\n")
    for i in range(2, 5):
        core.from_master(claim(f"c{i}"), 0.0)
    for p in (1, 2, 3):
        core.run_sent("n1", p, 1)
    for p in (0, 1, 2, 3):
        core.from_node("n1", {"type": "rejected", "job": f"7.{p}", "attempt": 1,
                              "cause": "node", "reason": "EIO"}, 0.0)
    for i in range(5, 9):  # the Pool offers the node's free slots again: kept unused
        assert not of(core.from_master(claim(f"c{i}"), 0.0), C.StartRun)
    rest = C.REST_FIRST * 2 ** 3
    (probe,) = of(core.tick(rest), C.StartRun)
    assert not of(core.tick(rest + 1.0), C.StartRun)
    core.run_sent("n1", int(probe.msg["job"].split(".")[1]), probe.msg["attempt"])
    acts = core.from_node("n1", {"type": "started", "job": probe.msg["job"],
                                 "attempt": probe.msg["attempt"]}, rest + 1.5)
    assert len(of(acts, C.StartRun)) == 3


def test_a_run_sent_before_the_refusal_does_not_end_the_rest(tmp_path):
    """sim B (backlog 221, 582, 867): a node whose disk fails half its writes. Runs
    already out when it refused one start there; each start ended its rest, so it was
    sent the refused job again at once, 10 times in 1.3 s, and the job was held. Only
    the run that probes the node after its rest ends it."""
    core = started_one(tmp_path, "executable = /bin/true\nqueue 3\n")
    core.from_master(claim("c2"), 0.0)
    core.run_sent("n1", 1, 1)  # 7.0 on c1 and 7.1 on c2 are out
    refuse(core, 1, 0.1)  # 7.0 refused (its claim goes back): the node rests 1 s
    assert not of(core.from_master(claim("c3"), 0.15), C.StartRun)  # kept unused
    acts = core.from_node("n1", {"type": "started", "job": "7.1", "attempt": 1}, 0.2)
    ns = core.nodes["n1"]
    assert ns.rest_streak == 1 and ns.rest_until == 1.1
    assert not of(acts, C.StartRun)  # c3 stays unused: 7.0 is not sent there again
    assert not of(core.tick(0.5), C.StartRun)
    (probe,) = of(core.tick(1.2), C.StartRun)
    assert probe.msg["claim"] == "c3"
    proc = int(probe.msg["job"].split(".")[1])
    core.run_sent("n1", proc, probe.msg["attempt"])
    core.from_node("n1", {"type": "started", "job": probe.msg["job"],
                          "attempt": probe.msg["attempt"]}, 1.3)
    assert ns.rest_streak == 0 and ns.probe is None


@pytest.mark.parametrize("how", ["removed", "lost", "unknown"])
def test_a_node_that_loses_every_run_does_not_rerun_a_job_forever(tmp_path, how):
    """R1: a hostile (or broken) node answers every run with `removed: true` (a
    revocation we never heard of), `lost: true`, or `attached` saying it does not know
    the job. Each is rerun uncounted, at once, on the same claim: without a bound the
    submit never ends and its journal grows by two records a run, at network speed.
    After MAX_LOST_RUNS such runs the job is held, naming the node."""
    text = "executable = /bin/true\nmax_retries = 0\nqueue\n"
    core = started_one(tmp_path, text)
    records = 0
    for attempt in range(1, 10 * C.MAX_LOST_RUNS):
        if how == "unknown":
            acts = core.from_node("n1", {"type": "attached", "unknown": [["7.0", attempt]]},
                                  0.0)  # its claim goes back: the Pool grants the slot again
            acts += core.from_master(claim(f"c{attempt + 1}"), 0.0)
        else:
            extra = ({"removed": True, "exit_code": None, "signal": 15} if how == "removed"
                     else {"lost": True, "reason": "node rebooted"})
            acts = collect(core, "n1", finished("7.0", attempt, **extra))
            if how == "removed":  # its claim went with the job: the Pool grants another
                acts += core.from_master(claim(f"c{attempt + 1}"), 0.0)
        records += len(of(acts, C.Record))
        if not of(acts, C.StartRun):
            break
        core.run_sent("n1", 0, attempt + 1)
    assert attempt == C.MAX_LOST_RUNS
    final = core.queue.final[0]
    assert final.state == HELD and "lost 20 times" in final.reason and "n1" in final.reason
    assert records <= 2 * C.MAX_LOST_RUNS
    assert core.queue.live == {}


def test_a_few_lost_runs_still_run_again_and_end_done(tmp_path):
    """The bound is far above what a honest cluster does: a job lost a few times with its
    node still runs to its end."""
    core = started_one(tmp_path, "executable = /bin/true\nmax_retries = 0\nqueue\n")
    for attempt in range(1, 4):
        acts = collect(core, "n1", finished("7.0", attempt, lost=True, reason="reboot"))
        (run,) = of(acts, C.StartRun)
        assert run.msg["attempt"] == attempt + 1
        core.run_sent("n1", 0, attempt + 1)
    collect(core, "n1", finished("7.0", 4))
    assert core.queue.final[0].state == DONE


def test_lost_runs_are_counted_across_resumes(tmp_path):
    """A node that loses every run, and a submit resumed (kill -9, run again) after each
    loss: the count of lost runs is journaled with each requeue, so the job is held
    after MAX_LOST_RUNS lost runs in all, not MAX_LOST_RUNS per resume (a resume loop
    would otherwise rerun it forever)."""
    text = "executable = /bin/true\nmax_retries = 0\nqueue\n"
    job = next(iter(expand_text(text, str(tmp_path), cluster=7)))
    core = make(tmp_path, text)
    acts = core.start(0.0) + core.from_master(claim("c1"), 0.0) + core.node_up("n1", 0.0)
    core.run_sent("n1", 0, 1)
    records = journal_of(acts)
    attempt, resumes = 1, 0
    for i in range(3 * C.MAX_LOST_RUNS):
        acts = collect(core, "n1", finished("7.0", attempt, lost=True, reason="reboot"))
        records += [a.rec for a in of(acts, C.Record)]
        if core.finished:
            break
        if not of(acts, C.StartRun):  # the re-attached claim retired with its job
            acts = core.from_master(claim(f"c{i + 2}"), float(i))
            records += [a.rec for a in of(acts, C.Record)]
        (run,) = of(acts, C.StartRun)
        attempt = run.msg["attempt"]
        core.run_sent("n1", 0, attempt)
        # kill -9 while the rerun runs; the same command is run again and re-attaches it
        prev = J.parse(records)
        assert prev.counts[0][0] == i + 1 and prev.running[0][0] == attempt
        core = make(tmp_path, text, prev=prev)
        resumes += 1
        acts = core.start(float(i), [job]) + core.node_up("n1", float(i))
        records += [a.rec for a in of(acts, C.Record)]
        assert not of(acts, C.StartRun)  # re-attached, not sent again
    final = core.queue.final[0]
    assert final.state == HELD and f"lost {C.MAX_LOST_RUNS} times" in final.reason
    assert resumes == C.MAX_LOST_RUNS - 1


def test_refusals_are_counted_across_resumes_and_old_journals_still_resume(tmp_path):
    text = "executable = /bin/true\nqueue\n"
    core = started_one(tmp_path, text)
    acts = refuse(core, 1, 0.0, cause=None) + refuse(core, 1, 0.0)  # the 2nd: stale
    acts += core.from_master(claim("c2", node="n2"), 0.0) + core.node_up("n2", 0.0)
    core.run_sent("n2", 0, 2)
    acts += refuse(core, 2, 0.0, node="n2")
    requeues = [a.rec for a in of(acts, C.Record) if a.rec["e"] == "requeue"]
    assert requeues == [
        {"e": "requeue", "proc": 0, "attempt": 1, "completions": 0, "refused": 1},
        {"e": "requeue", "proc": 0, "attempt": 2, "completions": 0, "refused": 1,
         "refused_node": 1}]
    prev = J.parse(journal_of(acts))
    assert prev.counts == {0: (0, 1, 1)}
    rec = make(tmp_path, text, prev=prev).queue.fill()[0]
    assert (rec.attempt, rec.lost_runs, rec.rejections, rec.node_rejections) == (2, 0, 1, 1)
    # a journal of an older build: requeue records without the counts
    old = [r if r["e"] != "requeue" else {k: r[k] for k in ("e", "proc", "attempt",
                                                            "completions")}
           for r in journal_of(acts)]
    prev = J.parse(old)
    assert prev.counts == {} and prev.attempts == {0: (2, 0)}
    rec = make(tmp_path, text, prev=prev).queue.fill()[0]
    assert (rec.attempt, rec.lost_runs, rec.rejections) == (2, 0, 0)


@pytest.mark.parametrize("reason", ["unknown claim (it may have been dropped)",
                                    "claim is being released",
                                    "the claim is busy with another job"])
def test_a_refusal_for_a_claim_race_does_not_count_toward_holding_the_job(tmp_path, reason):
    """The node refused the run because its claim was dropped (or is going, or busy)
    meanwhile: a race, not the job's fault (the node says `cause: "claim"`). Before,
    MAX_REJECTIONS of those held the job. Now each is an uncounted rerun, bounded as
    lost runs are, and the node is not rested either."""
    core = started_one(tmp_path)
    for attempt in range(1, C.MAX_REJECTIONS + 3):
        acts = core.from_node("n1", {"type": "rejected", "job": "7.0", "attempt": attempt,
                                     "reason": reason, "cause": "claim"}, 0.0)
        assert core.queue.live[0].state == IDLE and not core.queue.final
        assert {"type": "release", "claim": f"c{attempt}" if attempt > 1 else "c1",
                "kill": False} in msgs(acts, C.ToNode, "release")
        requeue = [a.rec for a in of(acts, C.Record) if a.rec["e"] == "requeue"]
        assert requeue[0]["lost"] == attempt and "refused" not in requeue[0]
        acts = core.from_master(claim(f"c{attempt + 1}"), 0.0)
        (run,) = of(acts, C.StartRun)  # at once: the node is not rested
        core.run_sent("n1", 0, run.msg["attempt"])
    rec = core.queue.live[0]
    assert rec.rejections == 0 and rec.lost_runs == C.MAX_REJECTIONS + 2
    assert core.nodes["n1"].rest_until == float("-inf")
    collect(core, "n1", finished("7.0", rec.attempt))
    assert core.queue.final[0].state == DONE


def test_a_node_that_says_every_run_raced_its_claim_still_gets_the_job_held(tmp_path):
    core = started_one(tmp_path)
    for attempt in range(1, 3 * C.MAX_LOST_RUNS):
        core.from_node("n1", {"type": "rejected", "job": "7.0", "attempt": attempt,
                              "reason": "unknown claim", "cause": "claim"}, 0.0)
        if core.finished:
            break
        (run,) = of(core.from_master(claim(f"c{attempt + 1}"), 0.0), C.StartRun)
        core.run_sent("n1", 0, run.msg["attempt"])
    assert attempt == C.MAX_LOST_RUNS and core.queue.final[0].state == HELD


def _d7(tmp_path) -> C.SubmitCore:
    """7.0 runs on n1 (reachable), 7.1 on n2 (link down); the master then loses both."""
    core = make(tmp_path, "executable = /bin/true\nqueue 2\n")
    core.start(0.0)
    core.from_master(claim("c1"), 0.0)
    core.from_master(claim("c2", node="n2"), 0.0)
    core.node_up("n1", 0.0)
    core.node_up("n2", 0.0)
    core.run_sent("n1", 0, 1)
    core.run_sent("n2", 1, 1)
    core.node_down("n2", 1.0, "connection lost")
    return core


def test_a_run_abandoned_on_a_node_the_master_lost_is_killed_if_we_still_reach_it(tmp_path):
    """D7 (sim, revoke 500075): the master's claims on a node and its `node-lost` for the
    node reach us in one burst; a run already went out on such a claim. The node is cut
    off only from the master: rerun at once, it would run twice. We still reach it, so
    we kill the run there and the node's answer decides (S1, below): killed, it reruns
    as a lost run. A node whose link is down gets the kill when the link is back."""
    core = _d7(tmp_path)
    acts = core.from_master({"type": "node-lost", "node": "n1", "claims": ["c1"]}, 2.0)
    assert msgs(acts, C.ToNode, "kill") == [{"type": "kill", "job": "7.0", "attempt": 1}]
    assert core.queue.live[0].state == RUNNING and not of(acts, C.StartRun)
    (say,) = [a.text for a in of(acts, C.Say) if "lost" in a.text]  # says it waits
    assert "1 of them once the node confirms their kill (at most 20s" in say, say
    assert acts.index(next(a for a in acts if isinstance(a, C.Say))) == 0  # said first
    collect(core, "n1", finished("7.0", 1, exit_code=None, signal=15, removed=True))
    rec = core.queue.live[0]
    assert rec.state == IDLE and rec.lost_runs == 1 and rec.completions == 0
    acts = core.from_master({"type": "node-lost", "node": "n2", "claims": ["c2"]}, 2.0)
    assert msgs(acts, C.ToNode, "kill") == [] and core.queue.live[1].state == RUNNING
    acts = core.node_up("n2", 3.0)
    assert msgs(acts, C.ToNode, "kill") == [{"type": "kill", "job": "7.1", "attempt": 1}]


def test_a_revoked_run_whose_node_never_answers_runs_again_after_give_up(tmp_path):
    """R7: a hung daemon keeps its TCP link (the kernel still acks): nothing breaks the
    link, so the wait for its answer is bounded by `give_up` (20 s); the same bound
    holds for a node whose link stays down."""
    core = _d7(tmp_path)
    core.from_master({"type": "node-lost", "node": "n1", "claims": ["c1"]}, 2.0)
    core.from_master({"type": "node-lost", "node": "n2", "claims": ["c2"]}, 2.0)
    core.tick(20.9)
    assert core.queue.live[0].state == RUNNING and core.queue.live[1].state == RUNNING
    core.tick(21.5)  # n2's link down since 1.0: the node itself is given up
    assert core.queue.live[0].state == RUNNING and core.queue.live[1].state == IDLE
    acts = core.tick(22.0)
    assert core.queue.live[0].state == IDLE and core.queue.live[0].lost_runs == 1
    assert core.queue.live[1].state == IDLE and core.queue.live[1].lost_runs == 1
    assert any("did not answer the kill of job 7.0" in a.text for a in of(acts, C.Say))
    assert not core.revoking
    # the old run's answer, if it ever comes, is stale: it changes nothing
    collect(core, "n1", finished("7.0", 1))
    assert core.queue.live[0].state == IDLE and 0 not in core.queue.final


def test_a_run_never_all_sent_is_rerun_at_once_when_its_link_is_down(tmp_path):
    """Its inputs were still going out when the link broke: the node cannot have it
    (the run and its data are one unit), so nothing waits for it."""
    core = make(tmp_path, "executable = /bin/true\nqueue 1\n")
    core.start(0.0)
    core.from_master(claim("c1"), 0.0)
    core.node_up("n1", 0.0)  # the run goes out, not all sent
    core.node_down("n1", 0.5, "connection lost")
    core.from_master({"type": "node-lost", "node": "n1", "claims": ["c1"]}, 1.0)
    rec = core.queue.live[0]
    assert rec.state == IDLE and rec.lost_runs == 1 and not core.revoking


def test_a_resumed_run_revoked_before_its_node_link_is_up_waits_for_the_node(tmp_path):
    """R7 (sim, revoke 135): a resumed submitter reads the master's welcome before any
    node link is up. The run it re-attaches may be running: the kill goes when the link
    comes up, and the node's answer decides (here: the run had ended exit 0 first)."""
    prev = previous_with_running()
    core = make(tmp_path, "executable = /bin/true\nqueue 3\n", prev=prev)
    js = list(expand_text("executable = /bin/true\nqueue 3\n", str(tmp_path), cluster=7))
    core.start(0.0, [js[1]])
    core.master_up({"type": "welcome", "dropped": ["c1"], "killed": ["c1"]})
    rec = core.queue.live[1]
    assert rec.state == RUNNING and rec.attempt == 2
    acts = core.from_master(claim("c9", node="n2"), 1.0) + core.node_up("n2", 1.0)
    assert [(r.msg["job"], r.msg["attempt"]) for r in of(acts, C.StartRun)] \
        == [("7.2", 1)]  # not 7.1 again
    acts = core.node_up("n1", 1.5)
    assert msgs(acts, C.ToNode, "kill") == [{"type": "kill", "job": "7.1", "attempt": 2}]
    collect(core, "n1", finished("7.1", 2))
    assert core.queue.final[1].state == DONE


def test_a_revoked_and_killed_run_leaves_no_kill_for_its_rerun_on_the_same_node(tmp_path):
    """R7 (mutation M5): the rerun of a revoked and killed job, on the same node, must
    not be killed at a reconnect or at its start for its old attempt's sake."""
    core = _d7(tmp_path)
    core.from_master({"type": "node-lost", "node": "n1", "claims": ["c1"]}, 2.0)
    collect(core, "n1", finished("7.0", 1, exit_code=None, signal=15, removed=True))
    acts = core.from_master(claim("c3"), 2.5)
    assert [(r.msg["job"], r.msg["attempt"]) for r in of(acts, C.StartRun)] == [("7.0", 2)]
    core.run_sent("n1", 0, 2)
    core.node_down("n1", 3.0, "connection lost")
    acts = core.node_up("n1", 4.0)
    assert msgs(acts, C.ToNode, "kill") == []
    acts = core.from_node("n1", {"type": "started", "job": "7.0", "attempt": 2}, 4.5)
    assert msgs(acts, C.ToNode, "kill") == [] and not core.revoking


def test_a_run_abandoned_on_a_reachable_node_that_ends_first_is_not_run_again(tmp_path):
    """S1 (sim, revoke 802139 and 802570): the node was slow, not gone: the run ended
    exit 0 before our kill landed. Rerun at the revoke, the job ran twice to success.
    Its result stands; nothing runs again, and the claim is never used again."""
    core = _d7(tmp_path)
    core.from_master({"type": "node-lost", "node": "n1", "claims": ["c1"]}, 2.0)
    acts = core.from_master(claim("c3"), 2.5)  # a new claim on n1 meanwhile: 7.0 waits
    assert not of(acts, C.StartRun)
    acts = collect(core, "n1", finished("7.0", 1))
    assert core.queue.final[0].state == "done" and 0 not in core.queue.live
    assert not [a for a in of(acts, C.Record) if a.rec["e"] == "requeue"]


def test_a_kill_for_an_abandoned_run_goes_again_after_a_reconnect(tmp_path):
    """The link to the node broke with our kill in flight: it may not have landed.
    The run is still the node's to answer (attach names it), and the kill goes again."""
    core = _d7(tmp_path)
    core.from_master({"type": "node-lost", "node": "n1", "claims": ["c1"]}, 2.0)
    core.node_down("n1", 3.0, "connection lost")
    acts = core.node_up("n1", 4.0)
    (attach,) = msgs(acts, C.ToNode, "attach")
    assert attach["jobs"] == [["7.0", 1]]
    assert msgs(acts, C.ToNode, "kill") == [{"type": "kill", "job": "7.0", "attempt": 1}]
    assert core.queue.live[0].state == RUNNING
    collect(core, "n1", finished("7.0", 1, exit_code=None, signal=15, removed=True))
    assert core.queue.live[0].state == IDLE and core.queue.live[0].lost_runs == 1


def test_an_abandoned_run_still_in_transfer_is_killed_once_it_starts(tmp_path):
    """The run's inputs were still going out when the master lost the node, and the link
    broke: the run goes again at the reconnect (it may never have arrived), and the
    kill follows once the node says it started it."""
    core = make(tmp_path, "executable = /bin/true\nqueue 1\n")
    core.start(0.0)
    core.from_master(claim("c1"), 0.0)
    core.node_up("n1", 0.0)  # the run is out, not yet all sent (no run_sent)
    core.from_master({"type": "node-lost", "node": "n1", "claims": ["c1"]}, 1.0)
    core.node_down("n1", 1.5, "connection lost")
    acts = core.node_up("n1", 2.0)
    assert [r.msg["job"] for r in of(acts, C.StartRun)] == ["7.0"]
    assert msgs(acts, C.ToNode, "kill") == []
    core.run_sent("n1", 0, 1)
    acts = core.from_node("n1", {"type": "started", "job": "7.0", "attempt": 1}, 2.5)
    assert msgs(acts, C.ToNode, "kill") == [{"type": "kill", "job": "7.0", "attempt": 1}]
    assert core.queue.live[0].state == RUNNING
