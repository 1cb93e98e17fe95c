"""The pure node core, driven directly: claims, admission, task states, results."""

from __future__ import annotations

import hashlib
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jrs.node import core as nc
from jrs.node import taskfile
from jrs.node.core import Capacity, NodeCore

SUB = "ab" * 12
OTHER_SUB = "cd" * 12
TOKEN = "1f" * 32
WRONG = "2e" * 32
T0 = 1_700_000_000.0


def make(slots: int = 2, gpus: int = 0, retain: float = 3600.0,
         stall_after: float = nc.STALL_AFTER) -> NodeCore:
    c = NodeCore(Capacity("n1", slots, 1000, gpus, {}), "/state/tasks", "/state/sandbox",
                 boot="boot-1", notify="@n", retain=retain, stall_after=stall_after)
    c.master_up()
    return c


def claim_id(i: int) -> str:
    return f"{i:024x}"


def offer(c: NodeCore, i: int, cpus: int = 1, gpus: int = 0, sub: str = SUB) -> list:
    return c.from_master({"type": "claim-offer", "claim": claim_id(i), "submitter": sub,
                          "user": "alice", "cpus": cpus, "memory": 10, "gpus": gpus}, T0)


def of(actions: list, kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def sent(actions: list, sid: Optional[int] = None) -> list:
    return [a.msg for a in actions if isinstance(a, nc.ToSession) and sid in (None, a.sid)]


def to_master(actions: list) -> list:
    out = [a.msg for a in actions if isinstance(a, nc.ToMaster)]
    out += [a.reply for a in actions if isinstance(a, nc.SaveClaims) and a.reply]
    return out


def attach(c: NodeCore, sid: int, token: str = TOKEN, sub: str = SUB, jobs=()) -> list:
    msg = {"type": "attach", "submitter": sub, "jobs": [list(j) for j in jobs]}
    if token is not None:
        msg["token"] = token
    return c.attach(sid, msg, T0)


def run_msg(i: int = 1, job: str = "1.0", attempt: int = 0, **spec) -> dict:
    return {"type": "run", "claim": claim_id(i), "job": job, "attempt": attempt,
            "spec": {"executable": "/bin/true", "arguments": [], **spec},
            "files": [{"name": "in.txt", "size": 3, "mode": 0o644}]}


def start_job(c: NodeCore, sid: int = 1, i: int = 1, job: str = "1.0", attempt: int = 0,
              now: float = T0) -> nc.Task:
    """Run a job through admission, receipt, the taskfile and the launch."""
    t = c.run_offered(sid, run_msg(i, job, attempt))
    assert t.reason is None, t.reason
    c.box_made(t)
    acts = c.run_received(t, now)
    (prep,) = of(acts, nc.Prepare)
    spec = c.task_spec(prep.ticket, None, {}, now)
    assert spec["session"] == hashlib.sha256(TOKEN.encode()).hexdigest()
    acts = c.created(prep.ticket, None, now)
    assert of(acts, nc.Launch) == [nc.Launch(t.key, t.path)]
    return c.tasks[t.key]


def state(task: nc.Task, *events: dict, spec: Optional[dict] = None) -> taskfile.TaskState:
    base = {"argv": ["/bin/true"], "job": task.job, "attempt": task.attempt,
            "submitter": task.submitter, "session": task.session, "claim": task.claim,
            "sandbox": task.sandbox, "stdout": task.sandbox + "/_condor_stdout"}
    base.update(spec or {})
    return taskfile.parse(task.path, [base, *events])


def exited(task: nc.Task, code: int = 0, ended: float = T0 + 1) -> taskfile.TaskState:
    return state(task, {"e": "executor", "pid": 10, "start": 1, "boot": "boot-1"},
                 {"e": "running", "pid": 11, "start": 2, "t": T0},
                 {"e": "exit", "code": code, "signal": None, "rusage": None, "started": T0,
                  "ended": ended, "t": ended})


def finish(c: NodeCore, task: nc.Task, ended: float = T0 + 1) -> list:
    return c.loaded(task.key, exited(task, ended=ended), ended)


# ------------------------------------------------------------------ the claims book

def test_offers_fill_the_node_and_gpus_are_exclusive():
    c = make(slots=2, gpus=2)
    assert to_master(offer(c, 1, gpus=1)) == [
        {"type": "claim-ok", "claim": claim_id(1), "gpu_ids": [0]}]
    assert to_master(offer(c, 2, gpus=1))[0]["gpu_ids"] == [1]
    assert to_master(offer(c, 1, gpus=1))[0]["gpu_ids"] == [0]  # the same offer again
    refused = to_master(offer(c, 3))
    assert refused[0]["type"] == "claim-refused" and "free 0 slots" in refused[0]["reason"]
    c.from_master({"type": "claim-drop", "claim": claim_id(1), "kill": False}, T0)
    assert to_master(offer(c, 4, gpus=1))[0]["gpu_ids"] == [0]


def test_a_claim_is_answered_only_once_it_is_saved():
    c = make()
    acts = offer(c, 1)
    assert of(acts, nc.ToMaster) == []  # claim-ok rides on the SaveClaims
    (save,) = of(acts, nc.SaveClaims)
    assert save.offered == claim_id(1) and save.claims[0]["claim"] == claim_id(1)
    refused = to_master(c.offer_failed(claim_id(1), "No space left on device"))
    assert refused[0]["type"] == "claim-refused" and "No space" in refused[0]["reason"]
    assert c.claims == {}


def test_claim_drop_without_kill_never_kills():
    """Contract 3: a claim-drop that does not say kill=true lets the job finish."""
    c = make()
    offer(c, 1)
    attach(c, 1)
    task = start_job(c)
    assert of(c.from_master({"type": "claim-drop", "claim": claim_id(1)}, T0), nc.Kill) == []
    assert c.claims[claim_id(1)].releasing
    acts = finish(c, task)
    assert {"type": "claim-released", "claim": claim_id(1)} in to_master(acts)
    assert claim_id(1) not in c.claims
    offer(c, 2)
    c.run_offered(1, run_msg(2, "1.1"))
    acts = c.from_master({"type": "claim-drop", "claim": claim_id(2), "kill": True}, T0)
    assert of(acts, nc.Kill) == []  # nothing runs on it yet: it just goes
    assert claim_id(2) not in c.claims
    offer(c, 3)
    task3 = start_job(c, i=3, job="1.2")
    acts = c.from_master({"type": "claim-drop", "claim": claim_id(3), "kill": True}, T0)
    assert of(acts, nc.Kill) == [nc.Kill(task3.key, task3.path)]


def test_saved_claims_are_checked_when_read_back():
    c = make()
    warnings = c.restore_claims([
        {"claim": claim_id(1), "submitter": SUB, "user": "a", "cpus": 1, "memory": 1,
         "gpus": []},
        {"claim": "../x", "submitter": SUB, "user": "a", "cpus": 1, "memory": 1, "gpus": []},
        {"claim": claim_id(2), "submitter": SUB, "user": "a", "cpus": "1", "memory": 1},
        "junk"])
    assert list(c.claims) == [claim_id(1)] and len(warnings) == 3
    assert c.restore_claims({"a": 1})


def test_a_failed_claims_write_is_written_again_each_second_until_it_succeeds():
    """E1: a claims.json write that fails for a released claim left the file stale (the
    claim came back after a restart). The core is told and has `tick` write it again."""
    c = make()
    offer(c, 1)
    c.saved()
    acts = c.from_master({"type": "claim-drop", "claim": claim_id(1), "kill": False}, T0)
    (save,) = of(acts, nc.SaveClaims)
    assert save.claims == [] and save.offered is None
    (warn,) = of(c.save_failed(None, "Input/output error"), nc.Log)
    assert warn.level == "warning" and "Input/output error" in warn.text
    for second in range(3):  # each tick writes the current book again; warned once
        (again,) = of(c.tick(T0 + second), nc.SaveClaims)
        assert again.claims == [] and again.reply is None
        assert c.save_failed(None, "Input/output error") == []
    offer(c, 2)  # a new claim meanwhile: refused as before, and the retry goes on
    assert to_master(c.save_failed(claim_id(2), "No space"))[0]["type"] == "claim-refused"
    assert of(c.tick(T0 + 4), nc.SaveClaims)[0].claims == []
    assert of(c.saved(), nc.Log)[0].level == "info"
    assert of(c.tick(T0 + 5), nc.SaveClaims) == [] and c.saved() == []


# ------------------------------------------------------------------ admission

@pytest.mark.parametrize("job", ["/../../../../etc/x", "1", "1.0.0", "a.b", "1.-1", " 1.0",
                                 "1.0\n", "1" * 19 + ".0", "", "\uff11.\uff10"])
def test_job_ids_must_be_cluster_dot_proc(job):
    c = make()
    offer(c, 1)
    attach(c, 1)
    t = c.run_offered(1, run_msg(job=job))
    assert t.reason and "bad job id" in t.reason and not t.key and not t.box
    acts = c.run_received(t, T0)
    assert sent(acts)[0]["type"] == "rejected" and of(acts, nc.Prepare) == []


@pytest.mark.parametrize("attempt", [-1, True, 1.5, "1", None, 1 << 40])
def test_attempts_are_non_negative_integers(attempt):
    c = make()
    offer(c, 1)
    attach(c, 1)
    t = c.run_offered(1, run_msg(attempt=attempt))
    assert t.reason and "bad attempt" in t.reason
    assert sent(c.run_received(t, T0))[0]["type"] == "rejected"


@pytest.mark.parametrize("sub", ["h" * 24, "AB" * 12, "ab" * 11, "ab" * 13, 7, None, "../x"])
def test_submitter_ids_have_a_fixed_shape(sub):
    c = make()
    acts = c.attach(1, {"type": "attach", "submitter": sub, "jobs": []}, T0)
    assert sent(acts)[0]["type"] == "error" and of(acts, nc.CloseSession)
    assert 1 not in c.sessions
    bad_offer = c.from_master({"type": "claim-offer", "claim": claim_id(1), "submitter": sub,
                               "user": "u", "cpus": 1, "memory": 1, "gpus": 0}, T0)
    assert to_master(bad_offer)[0]["type"] == "error" and not c.claims


@pytest.mark.parametrize("cid", ["nope", "AB" * 12, "ab" * 13, "", "../" * 8])
def test_claim_ids_have_a_fixed_shape(cid):
    c = make()
    acts = c.from_master({"type": "claim-offer", "claim": cid, "submitter": SUB, "user": "u",
                          "cpus": 1, "memory": 1, "gpus": 0}, T0)
    assert to_master(acts)[0]["type"] == "error" and not c.claims
    attach(c, 1)
    t = c.run_offered(1, dict(run_msg(), claim=cid))
    assert "bad claim id" in t.reason


@pytest.mark.parametrize("token", ["x", "AB" * 32, "ab" * 31, 5])
def test_tokens_have_a_fixed_shape(token):
    c = make()
    acts = attach(c, 1, token=token)
    assert sent(acts)[0]["type"] == "error" and of(acts, nc.CloseSession)


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "a//b", "./a", "", "a\0b",
                                  7, None, "a/"])
def test_input_names_are_plain_relative_paths(name):
    c = make()
    offer(c, 1)
    attach(c, 1)
    t = c.run_offered(1, dict(run_msg(), files=[{"name": name, "size": 1}]))
    assert t.fatal and t.reason and t.heads == []
    assert sent(c.run_received(t, T0))[0]["type"] == "error"


@pytest.mark.parametrize("outputs", [["/root/flag"], ["../x"], ["a/../../b"], "out", [3],
                                     ["ok", "/etc"]])
def test_output_lists_are_plain_relative_paths(outputs):
    c = make()
    offer(c, 1)
    attach(c, 1)
    t = c.run_offered(1, run_msg(transfer_output_files=outputs))
    assert t.reason and "bad job" in t.reason


@pytest.mark.parametrize("field,value", [
    ("arguments", "rm -rf /"), ("arguments", [1]), ("environment", {"A": 1}),
    ("environment", ["A=1"]), ("getenv", {"A": None}), ("cpus", True), ("cpus", "2"),
    ("executable", ""), ("executable", 5), ("shared_fs", "yes"), ("output", 5),
    ("iwd", ["x"]), ("input", 3), ("when_to_transfer_output", 7)])
def test_every_spec_field_is_typed(field, value):
    c = make()
    offer(c, 1)
    attach(c, 1)
    t = c.run_offered(1, run_msg(**{field: value}))
    assert t.reason and t.reason.startswith("bad job"), t.reason


def test_a_transferred_executable_must_be_a_plain_name():
    c = make()
    offer(c, 1)
    attach(c, 1)
    t = c.run_offered(1, run_msg(executable="..", transfer_executable=True))
    assert t.reason and "bad job" in t.reason
    t = c.run_offered(1, run_msg(job="1.1", executable="/home/a/job.sh",
                                 transfer_executable=True))
    assert t.reason is None and t.exe_in_box == t.box + "/job.sh"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids,
                                                             max_size=3),
    max_leaves=12)
_types = st.sampled_from(["run", "ack", "kill", "release", "claim-offer", "claim-drop", "ping",
                          "attach", "nonsense", "pong", "error"])
_fields = st.dictionaries(st.sampled_from(["claim", "job", "attempt", "spec", "files",
                                           "submitter", "user", "cpus", "memory", "gpus",
                                           "kill", "seq", "jobs", "token"]), _json, max_size=8)


@settings(max_examples=400, deadline=None)
@given(_types, _fields)
def test_nothing_a_peer_sends_raises(kind, fields):
    c = make()
    offer(c, 1)
    attach(c, 1)
    msg = dict(fields, type=kind)
    c.from_master(msg, T0)
    c.attach(2, msg, T0)
    c.from_session(1, msg, T0)
    t = c.run_offered(1, msg)
    c.run_received(t, T0)


# ------------------------------------------------------------------ runs

def test_a_failed_taskfile_write_rejects_and_leaves_the_claim_free():
    """ENOSPC/EIO making the task: `rejected` with the reason, sandbox gone, claim free."""
    c = make()
    offer(c, 1)
    attach(c, 1)
    t = c.run_offered(1, run_msg())
    c.box_made(t)
    (prep,) = of(c.run_received(t, T0), nc.Prepare)
    acts = c.created(prep.ticket, "No space left on device", T0)
    (rej,) = sent(acts)
    assert rej["type"] == "rejected" and "No space left on device" in rej["reason"]
    assert nc.Remove(t.key, t.path, t.box, delivered=False) in acts
    assert c.tasks == {} and c.claims[claim_id(1)].job is None
    start_job(c, job="1.1")  # the claim takes the next job


def test_a_failed_launch_rejects_and_leaves_the_claim_free():
    c = make()
    offer(c, 1)
    attach(c, 1)
    task = start_job(c)
    acts = c.launch_failed(task.key, "Input/output error", T0)
    (rej,) = sent(acts)
    assert rej["type"] == "rejected" and "Input/output error" in rej["reason"]
    assert of(acts, nc.Remove) == [nc.Remove(task.key, task.path, task.sandbox, False)]
    assert c.tasks == {} and c.claims[claim_id(1)].job is None
    start_job(c, job="1.1")


def test_a_receive_failure_refuses_with_the_reason():
    c = make()
    offer(c, 1)
    attach(c, 1)
    t = c.run_offered(1, run_msg())
    c.box_made(t)
    c.refuse(t, "cannot write 'in.txt': No space left on device")
    acts = c.run_received(t, T0)
    assert of(acts, nc.RemoveBox) == [nc.RemoveBox(t.box)]
    assert "No space left" in sent(acts)[0]["reason"]


def test_a_claim_dropped_while_input_arrives_is_not_used():
    """No overcommit: the claim went (and was offered again elsewhere) during the data."""
    c = make(slots=1)
    offer(c, 1)
    attach(c, 1)
    t = c.run_offered(1, run_msg())
    assert t.reason is None
    c.box_made(t)
    acts = c.from_master({"type": "claim-drop", "claim": claim_id(1), "kill": False}, T0)
    assert {"type": "claim-released", "claim": claim_id(1)} in to_master(acts)
    assert to_master(offer(c, 2, sub=OTHER_SUB))[0]["type"] == "claim-ok"
    acts = c.run_received(t, T0)
    assert of(acts, nc.Prepare) == [] and "unknown claim" in sent(acts)[0]["reason"]
    assert of(acts, nc.RemoveBox) == [nc.RemoveBox(t.box)]


def test_one_claim_never_runs_two_jobs_from_two_sessions():
    c = make()
    offer(c, 1)
    attach(c, 1)
    attach(c, 2)  # the resumed submitter, while the old session still lives
    a = c.run_offered(1, run_msg(job="1.0"))
    b = c.run_offered(2, run_msg(job="1.1"))
    (pa,) = of(c.run_received(a, T0), nc.Prepare)
    (pb,) = of(c.run_received(b, T0), nc.Prepare)
    assert of(c.created(pa.ticket, None, T0), nc.Launch)
    acts = c.created(pb.ticket, None, T0)
    assert of(acts, nc.Launch) == [] and "busy" in sent(acts)[0]["reason"]
    assert nc.Remove(b.key, b.path, b.box, delivered=False) in acts


def test_the_same_run_arriving_twice_at_once_is_refused_once():
    c = make()
    offer(c, 1)
    attach(c, 1)
    attach(c, 2)
    a = c.run_offered(1, run_msg())
    b = c.run_offered(2, run_msg())
    assert a.reason is None and "already arriving" in b.reason
    acts = c.run_aborted(a)
    assert acts == []  # no box was made yet
    assert c.run_offered(2, run_msg()).reason is None


def test_a_run_sent_again_is_answered_started():
    c = make()
    offer(c, 1)
    attach(c, 1)
    start_job(c)
    t = c.run_offered(1, run_msg())
    assert sent(c.run_received(t, T0)) == [{"type": "started", "job": "1.0", "attempt": 0}]


def test_started_goes_out_only_if_the_job_still_runs():
    c = make()
    offer(c, 1)
    attach(c, 1)
    task = start_job(c)
    assert sent(c.announce(task.key)) == [{"type": "started", "job": "1.0", "attempt": 0}]
    assert c.announce(task.key) == []
    offer(c, 2)
    quick = start_job(c, i=2, job="1.1")
    finish(c, quick)
    assert c.announce(quick.key) == []


# ------------------------------------------------------------------ sessions (contract 1)

def test_sessions_see_only_the_tasks_of_their_token():
    c = make()
    offer(c, 1)
    attach(c, 1)
    task = start_job(c)
    acts = finish(c, task)
    assert of(acts, nc.Deliver) == [nc.Deliver(1, task.key)]
    c.delivery_done(task.key, 1, True)
    c.session_closed(1)
    # same submitter id (shown by `jrs status`), another token: learns and acks nothing
    acts = attach(c, 2, token=WRONG, jobs=[("1.0", 0)])
    assert sent(acts) == [{"type": "attached", "unknown": [["1.0", 0]]}]
    assert of(acts, nc.Deliver) == []
    (refused,) = sent(c.from_session(2, {"type": "ack", "job": "1.0", "attempt": 0}, T0))
    assert refused["type"] == "error" and refused["code"] == "session"
    assert task.key in c.tasks
    acts = attach(c, 3, token=None, jobs=[("1.0", 0)])  # contract 8: no token, no session
    assert sent(acts)[0]["code"] == "session" and of(acts, nc.CloseSession)
    # the real one does
    acts = attach(c, 4, jobs=[("1.0", 0)])
    assert sent(acts)[0] == {"type": "attached", "unknown": []}
    assert of(acts, nc.Deliver) == [nc.Deliver(4, task.key)]
    acts = c.from_session(4, {"type": "ack", "job": "1.0", "attempt": 0}, T0)
    assert of(acts, nc.Remove) == [nc.Remove(task.key, task.path, task.sandbox, True)]
    assert c.tasks == {}


def test_a_wrong_token_cannot_kill():
    c = make()
    offer(c, 1)
    attach(c, 1)
    task = start_job(c)
    attach(c, 2, token=WRONG)
    acts = c.from_session(2, {"type": "kill", "job": "1.0", "attempt": 0}, T0)
    assert of(acts, nc.Kill) == [] and sent(acts)[0]["code"] == "session"
    assert of(c.from_session(1, {"type": "kill", "job": "1.0", "attempt": 0}, T0), nc.Kill) == \
        [nc.Kill(task.key, task.path)]


def test_a_redelivery_skipped_while_an_old_session_drains_is_retried():
    c = make()
    offer(c, 1)
    attach(c, 1)
    task = start_job(c)
    assert of(finish(c, task), nc.Deliver) == [nc.Deliver(1, task.key)]
    acts = attach(c, 2)  # the submitter came back; session 1 is half-open, still sending
    assert of(acts, nc.Deliver) == []
    assert c.delivery_done(task.key, 1, False) == [nc.Deliver(2, task.key)]
    assert c.delivery_done(task.key, 2, True) == []


def test_bad_session_messages_are_answered_not_raised():
    c = make()
    attach(c, 1)
    for msg in ({"type": "ack", "job": "../1", "attempt": 0}, {"type": "kill", "job": "1.0"},
                {"type": "release", "claim": 5}, {"type": "nonsense"}):
        (reply,) = sent(c.from_session(1, msg, T0))
        assert reply["type"] == "error"


# ------------------------------------------------------------------ job lifetimes

def test_recovery_after_a_restart():
    c = make()
    c.restore_claims([{"claim": claim_id(1), "submitter": SUB, "user": "a", "cpus": 1,
                       "memory": 1, "gpus": []}])
    task = nc.Task("k", SUB, None, "1.0", 0, claim_id(1), "/state/tasks/k.task", "/b/k", T0)
    base = state(task)
    assert c.recover(base, alive=False, now=T0) == [nc.Launch("k", "/state/tasks/k.task")]
    assert c.claims[claim_id(1)].job == "k"
    running = state(task, {"e": "executor", "pid": 10, "start": 1, "boot": "boot-1"})
    c2 = make()
    assert of(c2.recover(running, alive=True, now=T0), nc.Log)
    c3 = make()
    (lost,) = c3.recover(running, alive=False, now=T0)
    assert isinstance(lost, nc.MarkLost) and "executor (pid 10) died" in lost.reason
    rebooted = state(task, {"e": "executor", "pid": 10, "start": 1, "boot": "boot-0"})
    (lost,) = make().recover(rebooted, alive=True, now=T0)
    assert isinstance(lost, nc.MarkLost) and "rebooted" in lost.reason
    done = state(task, {"e": "delivered"})
    assert make().recover(done, alive=False, now=T0) == [
        nc.Remove("k", "/state/tasks/k.task", "/b/k", delivered=False,
                  ident={"uid": None, "per_job_uid": False})]


def test_probes_relaunch_detect_deaths_and_repeat_kills_rarely():
    c = make()
    offer(c, 1)
    attach(c, 1)
    task = start_job(c)
    assert c.checks() == [(task.key, task.path)]
    assert c.probe(task.key, False, state(task), T0 + 1) == []
    assert c.probe(task.key, False, state(task), T0 + nc.LAUNCH_GRACE + 1) == [
        nc.Launch(task.key, task.path)]
    c.from_session(1, {"type": "kill", "job": "1.0", "attempt": 0}, T0 + 20)
    assert c.probe(task.key, True, None, T0 + 21) == []  # no TERM every second
    assert of(c.probe(task.key, True, None, T0 + 20 + nc.REKILL_EVERY), nc.Kill)
    died = state(task, {"e": "executor", "pid": 10, "start": 1, "boot": "boot-1"},
                 {"e": "running", "pid": 11, "start": 2, "t": T0})
    (lost,) = c.probe(task.key, False, died, T0 + 40)
    assert lost.pid == 11 and lost.pid_start == 2
    acts = c.loaded(task.key, state(task, {"e": "lost", "reason": "x"}), T0 + 41)
    assert of(acts, nc.Deliver) and c.claims[claim_id(1)].job is None
    assert c.checks() == []


# these tests tick seconds or minutes apart: not a stop (see test_a_node_back_from_a_stop_*)
NO_STOPS = 1e9


def test_results_not_collected_expire_and_the_report_shows_them():
    c = make(retain=30.0, stall_after=NO_STOPS)
    offer(c, 1)
    attach(c, 1)
    offer(c, 2)
    old = start_job(c)
    new = start_job(c, i=2, job="1.1")
    running = c.report(T0, 0.5)
    assert running["running"] == 2 and running["waiting"] == 0 and running["oldest_wait"] == 0
    finish(c, old, ended=T0 + 10)
    finish(c, new, ended=T0 + 20)
    for key in (old.key, new.key):
        c.delivery_done(key, 1, False)
    c.session_closed(1)
    rep = c.report(T0 + 25, 0.5)
    assert rep["waiting"] == 2 and rep["oldest_wait"] == 15 and rep["running"] == 0
    assert c.tick(T0 + 39) == []
    acts = c.tick(T0 + 41)
    assert of(acts, nc.Remove) == [nc.Remove(old.key, old.path, old.sandbox, False)]
    (line,) = of(acts, nc.Log)
    assert "1.0" in line.text and "30s" in line.text and "removed" in line.text
    assert c.report(T0 + 41, 0.5)["waiting"] == 1
    assert of(c.tick(T0 + 51), nc.Remove) == [nc.Remove(new.key, new.path, new.sandbox, False)]
    assert c.tasks == {}


def test_a_result_being_delivered_does_not_expire():
    c = make(retain=5.0, stall_after=NO_STOPS)
    offer(c, 1)
    attach(c, 1)
    task = start_job(c)
    finish(c, task, ended=T0)
    assert c.tick(T0 + 100) == []  # a slow delivery is under way on session 1
    c.delivery_done(task.key, 1, False)
    assert of(c.tick(T0 + 100), nc.Remove)


@pytest.mark.parametrize("text,seconds", [("7d", 604800), ("12h", 43200), ("30m", 1800),
                                          ("5s", 5), ("90", 90), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert nc.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "7w", "-1d", "d", "1 day"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        nc.parse_duration(text)


# ------------------------------------------------------------------ results

def test_results_from_taskfile_states():
    task = nc.Task("k", SUB, None, "1.0", 0, claim_id(1), "/t/k.task", "/b/k", T0)
    st = exited(task, code=3)
    r = nc.result_of(st, "n1")
    assert r["exit_code"] == 3 and r["node"] == "n1" and r["removed"] is False
    failed = state(task, {"e": "exec-failed", "errno": 2, "reason": "cannot run x"})
    r = nc.result_of(failed, "n1")
    assert r["exec_failed"] and r["errno"] == 2 and r["reason"] == "cannot run x"
    lost = state(task, {"e": "lost", "reason": "gone"})
    assert nc.result_of(lost, "n1")["lost"]
    # a "lost" a restarting daemon appended after the executor's exit (it read the job
    # running, then found the lock gone as the job ended) must not undo the exit: the
    # job would be reported lost and run a second time
    late = state(task, {"e": "executor", "pid": 10, "start": 1, "boot": "boot-1"},
                 {"e": "exit", "code": 0, "signal": None, "started": T0, "ended": T0 + 1},
                 {"e": "lost", "reason": "its executor (pid 10) died"})
    r = nc.result_of(late, "n1")
    assert late.finished and r["exit_code"] == 0 and "lost" not in r
    plan = nc.output_plan(st)
    assert plan.transfer and plan.skip == {"true"} and plan.report_missing
    on_success = exited(task, code=1)
    on_success.spec["when_to_transfer_output"] = "ON_SUCCESS"
    assert not nc.output_plan(on_success).transfer
    assert not nc.output_plan(failed).report_missing
    shared = state(task, spec={"shared_fs": True})
    assert nc.output_plan(shared) is None
    r = nc.add_outputs({}, plan, ["a", "b"], {"c": "a symbolic link"}, "over 100000 files")
    assert r == {"missing": ["a", "b"], "refused": {"c": "a symbolic link"},
                 "outputs_over_limit": "over 100000 files"}


def test_a_per_job_uid_is_released_only_with_its_task():
    c = make()
    offer(c, 1)
    attach(c, 1)
    t = c.run_offered(1, run_msg())
    c.box_made(t)
    t.ident = {"uid": 5000, "per_job_uid": True}
    refused = c.from_master({"type": "claim-drop", "claim": claim_id(1)}, T0)
    assert refused  # the claim went while the data arrived: the box goes with its uid
    assert nc.RemoveBox(t.box, t.ident) in c.run_received(t, T0)
    offer(c, 2)
    t = c.run_offered(1, run_msg(2))
    c.box_made(t)
    t.ident = {"uid": 5001, "per_job_uid": True}
    (prep,) = of(c.run_received(t, T0), nc.Prepare)
    c.created(prep.ticket, None, T0)
    task = c.tasks[t.key]
    finish(c, task)
    acts = c.from_session(1, {"type": "ack", "job": "1.0", "attempt": 0}, T0)
    assert of(acts, nc.Remove)[0].ident == {"uid": 5001, "per_job_uid": True}


def test_the_task_spec_of_an_admitted_run():
    c = make(gpus=1)
    offer(c, 1, gpus=1)
    attach(c, 1)
    t = c.run_offered(1, run_msg(output="out", error=None, input=True,
                                 environment={"A": "1"}))
    ident = {"uid": 1234, "gid": 1234, "groups": [], "run_as": "jrs-1234", "per_job_uid": True}
    spec = c.task_spec(t, ident, {"in.txt": [3, 1]}, T0, home=t.box)
    assert spec["uid"] == 1234 and spec["run_as"] == "jrs-1234" and spec["per_job_uid"]
    assert spec["env"]["USER"] == spec["env"]["LOGNAME"] == "jrs-1234"
    assert spec["env"]["HOME"] == t.box
    assert spec["stdin"] == t.box + "/_condor_stdin" and spec["stderr"] is None
    assert spec["env"]["A"] == "1" and spec["env"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert spec["sandbox"] == t.box and t.box.startswith("/state/sandbox/")
    assert spec["notify"] == "@n" and spec["snapshot"] == {"in.txt": [3, 1]}


# ------------------------------------------------------------------ contracts 8, 9, 10

def test_an_attach_without_a_token_is_refused_with_code_session():
    c = make()
    offer(c, 1)
    acts = attach(c, 1, token=None)
    assert sent(acts) == [{"type": "error", "code": "session", "re": "attach",
                           "message": sent(acts)[0]["message"]}]
    assert of(acts, nc.CloseSession) == [nc.CloseSession(1)] and c.sessions == {}
    t = c.run_offered(1, run_msg())
    assert t.reason == "no attach on this session"


def test_a_claim_is_bound_to_the_first_session_that_runs_on_it():
    """Contract 9: another secret holder reusing the submitter id and the claim id with
    its own token can neither run, release nor kill on the claim, nor ack its jobs."""
    c = make()
    offer(c, 1)
    attach(c, 1)
    attach(c, 2, token=WRONG)  # the hostile peer, same (public) submitter id
    t = c.run_offered(1, run_msg())
    c.box_made(t)
    (prep,) = of(c.run_received(t, T0), nc.Prepare)
    acts = c.created(prep.ticket, None, T0)
    (save,) = of(acts, nc.SaveClaims)  # the binding is persisted with the claim
    mine = hashlib.sha256(TOKEN.encode()).hexdigest()
    assert save.claims[0]["session"] == mine and c.claims[claim_id(1)].session == mine
    assert "session" not in c.hello()["claims"][0]  # the master never learns it
    task = c.tasks[t.key]

    def book() -> tuple:
        return ([(cl.to_json(), cl.job, cl.releasing) for cl in c.claims.values()],
                sorted(c.tasks), [x.kill_at for x in c.tasks.values()])

    before = book()
    for msg in ({"type": "release", "claim": claim_id(1)},
                {"type": "kill", "job": "1.0", "attempt": 0}):
        acts = c.from_session(2, msg, T0)
        assert [m["code"] for m in sent(acts)] == ["session"], acts
        assert of(acts, nc.Kill) == [] and of(acts, nc.SaveClaims) == []
    assert book() == before
    finish(c, task)
    before = book()
    (refused,) = sent(c.from_session(2, {"type": "ack", "job": "1.0", "attempt": 0}, T0))
    assert refused["code"] == "session" and task.key in c.tasks
    # its own run on the claim, now free: refused, nothing made
    h = c.run_offered(2, run_msg(job="1.1"))
    assert h.reason == "the claim belongs to another session" and not h.made_box
    assert sent(c.run_received(h, T0))[0]["type"] == "rejected"
    assert book() == before
    start_job(c, job="1.1")  # the claim's own session goes on using it
    # the binding survives a restart through claims.json
    c2 = make()
    assert c2.restore_claims(c._claims_json()) == []
    assert c2.claims[claim_id(1)].session == mine
    assert c2.restore_claims([dict(c._claims_json()[0], session="x" * 64)])


def test_recovered_tasks_bind_their_claim():
    """A claims.json of a jrs before contract 9 has no bindings: the tasks on disk bind
    their claims at start (and the binding is saved)."""
    c = make()
    c.restore_claims([{"claim": claim_id(1), "submitter": SUB, "user": "a", "cpus": 1,
                       "memory": 1, "gpus": []}])
    mine = hashlib.sha256(TOKEN.encode()).hexdigest()
    task = nc.Task("k", SUB, mine, "1.0", 0, claim_id(1), "/state/tasks/k.task", "/b/k", T0)
    acts = c.recover(state(task, {"e": "executor", "pid": 10, "start": 1, "boot": "boot-1"}),
                     alive=True, now=T0)
    assert of(acts, nc.SaveClaims)[0].claims[0]["session"] == mine
    attach(c, 2, token=WRONG)
    assert "another session" in c.run_offered(2, run_msg(job="1.1")).reason


def test_task_keys_come_from_the_submitter_id_and_its_session():
    """Contract 10: a submitter id sharing the victim's first 16 characters (ids are
    public) named its tasks like the victim's, and its run of 1.0 made the victim's run
    of 1.0 a "duplicate", refused: one job denied. Now both run."""
    mine = hashlib.sha256(TOKEN.encode()).hexdigest()
    key = nc.task_key(SUB, mine, "1.0", 0)
    want = hashlib.sha256(f"{SUB}\0{mine}".encode()).hexdigest()[:16] + "-1.0.0"
    assert key == want
    assert nc.task_key(SUB, hashlib.sha256(WRONG.encode()).hexdigest(), "1.0", 0) != key
    twin = SUB[:16] + "ef" * 4  # the attacker's own id, same prefix
    c = make(slots=2)
    offer(c, 1, sub=twin)
    offer(c, 2)
    attach(c, 1, token=WRONG, sub=twin)
    attach(c, 2)
    t = c.run_offered(1, run_msg(1, "1.0"))
    c.box_made(t)
    c.created(of(c.run_received(t, T0), nc.Prepare)[0].ticket, None, T0)
    assert t.key in c.tasks
    v = c.run_offered(2, run_msg(2, "1.0"))
    assert v.reason is None and v.key == key and v.key != t.key
    c.box_made(v)
    (prep,) = of(c.run_received(v, T0), nc.Prepare)
    assert of(c.created(prep.ticket, None, T0), nc.Launch) == [nc.Launch(v.key, v.path)]


def test_a_task_on_disk_under_its_old_key_is_still_found_by_its_job():
    """An upgrade while a job runs: its taskfile keeps its old name (the submitter id's
    first 16 characters); the resumed session finds it by job and attempt, a run sent
    again is `started`, the result is delivered and the ack removes the old files."""
    c = make()
    c.restore_claims([{"claim": claim_id(1), "submitter": SUB, "user": "a", "cpus": 1,
                       "memory": 1, "gpus": []}])
    mine = hashlib.sha256(TOKEN.encode()).hexdigest()
    old = f"{SUB[:16]}-1.0.0"
    path = f"/state/tasks/{old}.task"
    task = nc.Task(old, SUB, mine, "1.0", 0, claim_id(1), path, f"/state/sandbox/{old}", T0)
    running = state(task, {"e": "executor", "pid": 10, "start": 1, "boot": "boot-1"})
    assert running.key == old
    c.recover(running, alive=True, now=T0)
    acts = attach(c, 1, jobs=[("1.0", 0)])
    assert sent(acts) == [{"type": "attached", "unknown": []}]
    t = c.run_offered(1, run_msg())
    assert t.reason == "duplicate"
    assert sent(c.run_received(t, T0)) == [{"type": "started", "job": "1.0", "attempt": 0}]
    acts = c.loaded(old, exited(c.tasks[old]), T0 + 1)
    assert of(acts, nc.Deliver) == [nc.Deliver(1, old)]
    c.delivery_done(old, 1, True)
    acts = c.from_session(1, {"type": "ack", "job": "1.0", "attempt": 0}, T0)
    assert of(acts, nc.Remove) == [nc.Remove(old, path, f"/state/sandbox/{old}", True,
                                             ident={"uid": None, "per_job_uid": False})]
    assert c.tasks == {} and c.by_job == {}


# ------------------------------------------------------------------ back from a stop

def test_a_node_back_from_a_stop_starts_no_run_until_the_master_confirms_its_claims():
    """Sim seeds small 200970 / large 200962: a node SIGSTOPped past the master's node
    timeout woke with a run queued on a claim the master had revoked meanwhile (the
    submitter had already rerun the job elsewhere) and started it: twice at once."""
    c = make(slots=2)
    offer(c, 1)
    offer(c, 2)
    attach(c, 1)
    running = start_job(c, sid=1, i=2, job="2.0")
    c.tick(T0 + 1)
    assert c.tick(T0 + 2) == []  # ticking each second: nothing to confirm
    # stopped for 7 s; the first event after it is the queued run on claim 1
    woke = T0 + 9
    t = c.run_offered(1, run_msg(1, job="1.4", attempt=1))
    assert t.reason is None
    c.box_made(t)
    acts = c.run_received(t, woke)
    assert of(acts, nc.Prepare) == [] and sent(acts) == []  # held, not started nor refused
    asked = to_master(acts)
    assert [m["type"] for m in asked] == ["node-report", "ping"]
    assert sorted(asked[0]["claims"]) == [claim_id(1), claim_id(2)]
    seq = asked[1]["seq"]
    assert of(c.tick(woke + 0.5), nc.ToMaster) == []  # asked once per master session
    # the master's answer to the report: it took claim 1 away (and claim 2's job goes on)
    acts = c.from_master({"type": "claim-drop", "claim": claim_id(1), "kill": True}, woke)
    assert {"type": "claim-released", "claim": claim_id(1)} in to_master(acts)
    assert not of(acts, nc.Kill) and not c.tasks[running.key].finished
    assert c.from_master({"type": "pong", "seq": seq + 1}, woke) == []  # not our ping
    acts = c.from_master({"type": "pong", "seq": seq}, woke)
    assert of(acts, nc.Prepare) == [] and of(acts, nc.Launch) == []
    (msg,) = sent(acts, 1)
    assert msg["type"] == "rejected" and "unknown claim" in msg["reason"]
    assert of(acts, nc.RemoveBox) == [nc.RemoveBox(t.box)]
    assert c.held == [] and t.key not in c.receiving


def test_a_run_held_after_a_stop_starts_once_the_master_keeps_its_claim():
    c = make(slots=1)
    offer(c, 1)
    attach(c, 1)
    c.tick(T0)
    c.master_down()  # the master's session went while we were stopped
    assert c.tick(T0 + 8) == [nc.Log("warning", "the node was stopped for 8.0s: no new "
                                                "job starts until the master has "
                                                "confirmed its claims")]
    t = c.run_offered(1, run_msg(1))
    c.box_made(t)
    assert of(c.run_received(t, T0 + 8.1), nc.Prepare) == []
    assert c.run_offered(1, run_msg(1)).reason is not None  # the same run again: no
    c.master_up()  # hello + welcome on a new session: the tick asks on it
    asked = to_master(c.tick(T0 + 9))
    assert [m["type"] for m in asked] == ["node-report", "ping"]
    acts = c.from_master({"type": "pong", "seq": asked[1]["seq"]}, T0 + 9)
    assert of(acts, nc.Prepare) == [nc.Prepare(t)]
    acts = c.created(t, None, T0 + 9)
    assert of(acts, nc.Launch) == [nc.Launch(t.key, t.path)]
    # the next run starts at once: confirmed
    assert c.tick(T0 + 10) == []


def test_a_master_of_before_answering_the_ping_with_an_error_lets_held_runs_go():
    c = make(slots=1)
    offer(c, 1)
    attach(c, 1)
    c.tick(T0)
    t = c.run_offered(1, run_msg(1))
    c.box_made(t)
    assert of(c.run_received(t, T0 + 8), nc.Prepare) == []
    assert c.from_master({"type": "error", "code": "bad-message", "re": "pong"}, T0 + 8) == []
    acts = c.from_master({"type": "error", "code": "bad-message",
                          "message": "a node may not send 'ping'", "re": "ping"}, T0 + 8)
    assert of(acts, nc.Prepare) == [nc.Prepare(t)]


def test_a_run_held_after_a_stop_goes_with_its_session():
    c = make(slots=1)
    offer(c, 1)
    attach(c, 1)
    c.tick(T0)
    t = c.run_offered(1, run_msg(1))
    c.box_made(t)
    c.run_received(t, T0 + 8)
    assert c.session_closed(1) == [nc.RemoveBox(t.box)]
    asked = [m for m in to_master(c.tick(T0 + 8.5)) if m["type"] == "ping"] or None
    assert asked is None  # already asked at the run
    assert c.from_master({"type": "pong", "seq": 1}, T0 + 9) == [
        nc.Log("info", "the master confirmed the claims: jobs start again")]
    assert t.key not in c.receiving


def test_a_run_refused_because_its_claim_went_says_the_cause_is_the_claim():
    """A claim dropped (or being released, or busy, or the run arriving twice) is a
    race, not the job's fault: the refusal says `cause: "claim"`, so the submitter does
    not count it toward the refusals that hold a job. A refusal for the job itself
    (more cpus than the claim) says no cause; one for the node's disk says "node"."""
    c = make(slots=4)
    offer(c, 1)
    attach(c, 1)
    t = c.run_offered(1, run_msg(9))  # no such claim (dropped before the run came)
    (msg,) = sent(c.run_received(t, T0))
    assert msg["cause"] == "claim" and "unknown claim" in msg["reason"]
    t = c.run_offered(1, run_msg())  # dropped while its input arrived
    c.from_master({"type": "claim-drop", "claim": claim_id(1), "kill": False}, T0)
    (msg,) = sent(c.run_received(t, T0))
    assert msg["cause"] == "claim" and "unknown claim" in msg["reason"]
    offer(c, 2)
    start_job(c, i=2, job="1.1")
    c.from_master({"type": "claim-drop", "claim": claim_id(2), "kill": False}, T0)
    t = c.run_offered(1, run_msg(2, job="1.2"))  # its claim is being released
    (msg,) = sent(c.run_received(t, T0))
    assert msg["cause"] == "claim" and "being released" in msg["reason"]
    offer(c, 3)
    start_job(c, i=3, job="1.3")
    t = c.run_offered(1, run_msg(3, job="1.4"))  # busy with another job
    (msg,) = sent(c.run_received(t, T0))
    assert msg["cause"] == "claim" and "busy" in msg["reason"]
    attach(c, 2)
    offer(c, 4)
    a, b = c.run_offered(1, run_msg(4, job="1.5")), c.run_offered(2, run_msg(4, job="1.5"))
    assert a.reason is None and b.cause == "claim" and "already arriving" in b.reason
    c.run_aborted(a)
    t = c.run_offered(1, run_msg(4, job="1.6", cpus=2))  # the job's own fault
    (msg,) = sent(c.run_received(t, T0))
    assert "cause" not in msg and "asks for 2 cpus" in msg["reason"]
    t = c.run_offered(1, run_msg(4, job="1.7"))
    c.box_made(t)
    c.refuse(t, "cannot write 'in.txt': No space left on device")
    (msg,) = sent(c.run_received(t, T0))
    assert msg["cause"] == "node"
