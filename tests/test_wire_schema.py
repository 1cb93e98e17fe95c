"""The message schema: nested payloads described, bounded, and held to what is sent."""

from __future__ import annotations

import os
import re
import time

import pytest

from jrs.wire import messages
from jrs.wire.errors import MessageError
from jrs.wire.messages import SCHEMA, validate
from jrs.wire.schema import Obj, _Types, spec

from .cluster import Cluster
from .conftest import run_jrs

CLAIM = {"claim": "c" * 16, "submitter": "s" * 24, "user": "alice", "cpus": 1, "memory": 0,
         "gpus": [0, 1]}
RESULT = {"node": "127.0.0.1:7082", "exit_code": 0, "signal": None,
          "rusage": {"utime": 0.01, "stime": 0.0, "maxrss_kb": 2048}, "started": 1.5,
          "ended": 2.5, "removed": False}
SPEC = {"executable": "job.sh", "transfer_executable": True, "arguments": ["a", "b"],
        "environment": {"A": "1"}, "getenv": {}, "iwd": "/tmp/w", "shared_fs": False,
        "input": False, "output": "/tmp/w/out", "error": None,
        "transfer_output_files": None, "when_to_transfer_output": "ON_EXIT", "cpus": 1}
GOOD = [
    {"type": "node-hello", "name": "n:1", "slots": 2, "memory": 100, "gpus": 2,
     "attrs": {"Rack": "3"}, "claims": [CLAIM]},
    {"type": "node-report", "load": 0.5, "running": 1, "claims": ["c" * 16], "waiting": 0,
     "oldest_wait": 0},
    {"type": "demand", "requests": [{"key": "k", "count": 3, "cpus": 1, "memory": 0, "gpus": 0,
                                     "requirements": "", "ad": {"Owner": "a", "X": 1.5,
                                                                "B": True}, "weight": 1.0}]},
    {"type": "run", "claim": "c", "job": "1.0", "attempt": 1, "spec": SPEC,
     "files": [{"name": "job.sh", "size": 10, "mode": 0o755}]},
    {"type": "finished", "job": "1.0", "attempt": 1, "result": dict(RESULT, missing=["x"]),
     "files": [{"name": "_condor_stdout", "size": 3, "mode": 0o644}]},
    {"type": "attached", "unknown": [["1.0", 1]]},
    {"type": "submitter-hello", "submitter": "s", "user": "u", "host": "h", "pid": 1,
     "claims": [], "clusters": [{"id": 3, "file": "x.condor", "total": 2, "idle": 1,
                                 "running": 1, "done": 0, "failed": 0, "held": 0,
                                 "removed": 0}], "token": "t" * 64},
    {"type": "rm-reply", "results": [{"id": "3", "removed": 2}, {"id": "x", "error": "no"}]},
]


@pytest.mark.parametrize("msg", GOOD, ids=[m["type"] for m in GOOD])
def test_what_we_send_is_described_exactly(msg):
    assert validate(msg, strict=True) == msg


@pytest.mark.parametrize("msg, path", [
    (dict(GOOD[0], claims=[dict(CLAIM, gpus=[0, "1"])]), "claims[0].gpus[1]"),
    (dict(GOOD[0], attrs={"Rack": [3]}), "attrs.Rack"),
    (dict(GOOD[3], spec=dict(SPEC, arguments="a b")), "spec.arguments"),
    (dict(GOOD[3], files=[{"name": "a", "size": -1}]), "files[0].size"),
    (dict(GOOD[4], result=dict(RESULT, rusage={"utime": "1", "stime": 0, "maxrss_kb": 1})),
     "result.rusage"),
    (dict(GOOD[4], result=dict(RESULT, exit_code=True)), "result.exit_code"),
    (dict(GOOD[2], requests=[{"key": "k", "count": 1, "ad": {"A": [1]}}]), "ad.A"),
    (dict(GOOD[1], claims=["x" * 257]), "claims[0]"),
])
def test_wrong_nested_types_are_refused_naming_the_place(msg, path):
    with pytest.raises(MessageError, match=path.replace("[", r"\[").replace("]", r"\]")):
        validate(msg)


def test_unknown_nested_fields_are_dropped_on_receipt_and_refused_when_sent():
    newer = dict(GOOD[0], claims=[dict(CLAIM, colour="blue")])
    assert validate(newer)["claims"] == [CLAIM]
    with pytest.raises(MessageError, match="claims\\[0\\]: fields not in the schema: colour"):
        validate(newer, strict=True)


def test_bounds_on_counts_and_lengths():
    with pytest.raises(MessageError, match="more than 100000 items"):
        validate(dict(GOOD[3], files=[{"name": "f", "size": 0}] * 100_001))
    with pytest.raises(MessageError, match="too long"):
        validate({"type": "error", "code": "x", "message": "m" * (1 << 17)})


def test_job_lists_keep_the_items_that_fit():
    """attach/attached job lists are taken item by item: a bad item is dropped on receipt
    (the node answers for the rest), never sent."""
    msg = {"type": "attach", "submitter": "s", "jobs": [[1, 2, 3], "x", ["9.9", -1], ["1.0"]]}
    assert validate(msg)["jobs"] == [["9.9", -1]]
    with pytest.raises(MessageError):
        validate(msg, strict=True)


def test_every_payload_has_a_described_shape():
    """No field of SCHEMA is an opaque object or list: each nested payload is spelled out."""
    for kind, fields in SCHEMA.items():
        for name, (s, _req) in fields.items():
            checker = spec(s)
            opaque = isinstance(checker, _Types) and {dict, list} & set(checker.types)
            assert not opaque, f"{kind}.{name} is an opaque {checker.what}"


def test_nesting_beyond_the_schema_is_refused_without_recursion():
    deep: object = "x"
    for _ in range(50_000):
        deep = {"a": deep}
    with pytest.raises(MessageError):
        validate(dict(GOOD[0], attrs=deep))
    with pytest.raises(MessageError):
        validate(dict(GOOD[2], requests=[{"key": "k", "count": 1, "ad": deep}]))


def test_strict_senders_refuse_a_mismatch(monkeypatch, tmp_path):
    from jrs.wire import strict
    from jrs.wire.connection import Connection
    from jrs.wire.keys import root_key
    from jrs.wire.strict import SchemaViolation
    log = tmp_path / "strict.log"
    monkeypatch.setenv("JRS_STRICT_LOG", str(log))
    monkeypatch.setattr(strict, "_seen", set())
    root = root_key(b"x" * 32)
    client = Connection(root, "submit", is_client=True)
    server = Connection(root, "node", is_client=False)
    assert client.strict  # the suite runs with JRS_STRICT=1
    server.receive(client.initiate())
    client.receive(server.data_to_send())
    with pytest.raises(SchemaViolation, match=r"result\.rusage"):
        client.send_message(dict(GOOD[4], result=dict(RESULT, rusage=[1, 2])))
    client.send_message({"type": "ping", "seq": 1})
    lines = log.read_text().splitlines()
    assert any(" BAD submit sent a 'finished'" in line for line in lines)
    assert any(line.endswith(" ok submit ping") for line in lines)
    log.write_text("")  # the deliberate mismatch must not fail this test's suite check


# Every message type the end-to-end run below must exercise (the rest have tests of
# their own: rm, node-lost, unmatchable, give-back, claim-refused, rejected, ...).
EXERCISED = {"hello", "node-hello", "node-report", "welcome", "claim-offer", "claim-ok",
             "submitter-hello", "new-cluster", "cluster", "demand", "claim", "progress",
             "attach", "attached", "run", "started", "finished", "ack", "query",
             "status-reply", "queue-reply"}


def test_every_message_of_a_real_cluster_matches_the_schema(pyz, tmp_path):
    """Real processes, JRS_STRICT on: a submit with files both ways, status and q. Every
    message each process sent was checked against SCHEMA as it went out (a mismatch
    raises in the sender and is logged BAD); the log also shows what was exercised."""
    log = tmp_path / "strict.log"
    env = {"JRS_STRICT": "1", "JRS_STRICT_LOG": str(log)}
    c = Cluster(pyz, tmp_path, slots=[2], env=env).start()
    try:
        work = tmp_path / "w"
        work.mkdir()
        (work / "in.txt").write_bytes(os.urandom(100_000))
        (work / "job.sh").write_text("#!/bin/sh\nwc -c < in.txt\necho made > made.txt\nsleep 0.3\n")
        os.chmod(work / "job.sh", 0o755)
        (work / "j.condor").write_text(
            "executable = job.sh\ntransfer_input_files = in.txt\noutput = out.$(Process)\n"
            "+Rack = 3\nqueue 3\n")
        code, _out, err = c.run_submit("j.condor", cwd=work)
        assert code == 0, err + c.logs()
        assert (work / "out.0").read_text().strip() == "100000"
        assert (work / "made.txt").read_text() == "made\n"
        for what in ("status", "q"):
            r = run_jrs(pyz, what, "-c", str(c.conf), env=env)
            assert r.returncode == 0, r.stderr
        time.sleep(1.2)  # a heartbeat after the jobs
    finally:
        c.stop()
    lines = log.read_text().splitlines()
    bad = [line for line in lines if " BAD " in line]
    assert not bad, "\n".join(bad)
    seen = {line.split()[-1] for line in lines if " ok " in line}
    assert seen >= EXERCISED, f"never sent: {sorted(EXERCISED - seen)}"
    # the log is plain text, one message per line: `PID ok ROLE TYPE` or `PID BAD ...`,
    # so `seen` above really holds message types
    odd = [line for line in lines if not re.fullmatch(r"\d+ (ok [a-z]+ [a-z-]+|BAD .*)", line)]
    assert lines and not odd, odd[:5]
    assert messages.TRANSFER_TYPES & seen == {"run", "finished"}


def test_obj_spec_is_reusable():
    o = Obj({"a": ((int,), True)})
    assert o.check({"a": 1, "b": 2}, "x", False) == {"a": 1}
