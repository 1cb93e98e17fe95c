"""Real processes on loopback: a malicious node (tests/evil_node.py) cannot hang or
crash the submitter (issue 13): a bad result holds its job, a node that keeps breaking
the protocol is dropped for the run, and the honest node beside it does the work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jrs.wire.connection import MAX_UNITS, json_units
from jrs.wire.messages import MessageError, validate

from .cluster import Cluster
from .evil_node import bad_finished

REPO = Path(__file__).resolve().parent.parent


def start_evil(c: Cluster, i: int, mode: str, marker: Path) -> subprocess.Popen:
    out = open(c.base / f"evil{i}.log", "ab")
    env = {k: v for k, v in c.env.items() if not k.startswith("JRS_STRICT")}  # it lies
    p = subprocess.Popen([sys.executable, "-m", "tests.evil_node", str(c.conf),
                          c.names()[i], mode, str(marker)], cwd=REPO, stdout=out, stderr=out,
                         env=dict(env, PYTHONPATH=str(REPO)), start_new_session=True)
    c.nodes[i] = p  # stopped with the cluster
    return p


def test_the_evil_results_break_only_their_own_rule():
    """Each mode's `finished` fails the schema for its attack alone (a valid baseline)."""
    for mode, where in [("rusage", "rusage"), ("files", "files"), ("huge", "size")]:
        header, _raw = bad_finished(mode, "1.0", 1, "127.0.0.1:1")
        with pytest.raises(MessageError, match=where):
            validate(header)
    header, _raw = bad_finished("none", "1.0", 1, "127.0.0.1:1")
    assert validate(header)["result"]["rusage"]["maxrss_kb"] == 0
    header, _raw = bad_finished("dense", "1.0", 1, "127.0.0.1:1")
    validate(header)  # valid: only the wire's cap on its JSON values refuses it
    assert json_units(json.dumps(header).encode()) > MAX_UNITS


@pytest.mark.parametrize("mode", ["header", "rusage", "files", "huge", "dense"])
def test_a_malicious_node_cannot_hang_the_submit_and_the_honest_one_works(pyz, tmp_path,
                                                                          mode):
    """Whichever layer refuses the result (the wire's schema or the submitter core),
    the submit goes on: a bad result holds its job, or a node that keeps breaking the
    protocol is dropped and its jobs run on the honest node."""
    c = Cluster(pyz, tmp_path, slots=[1, 1])
    c.start_master()
    c.start_node(0)
    marker = tmp_path / "delivered"
    start_evil(c, 1, mode, marker)
    try:
        c.wait_up(2)
        work = tmp_path / "w"
        work.mkdir()
        (work / "j.condor").write_text("executable = /bin/sh\n"
                                       "arguments = \"-c 'sleep 0.5; echo $(Process)'\"\n"
                                       "output = out.$(Process)\nqueue 4\n")
        code, _out, err = c.run_submit("j.condor", cwd=work, timeout=90)
        assert marker.exists(), "the evil node never got a job: the test proved nothing"
        assert "Traceback" not in err
        assert f"node {c.names()[1]} broke the protocol 3 times" in err or \
            f"node {c.names()[1]} sent a bad result" in err, err
        held = err.count("held: bad result from")
        if mode == "dense":  # not decoded: a protocol fault, its jobs run elsewhere
            assert "over the wire's cap" in err and held == 0, err
        elif mode != "header":  # a result naming its job: held with the reason, named node
            assert f"node {c.names()[1]} sent a bad result" in err and held >= 1, err
        assert code == (1 if held else 0), err + c.logs()
        assert f"4 jobs, {4 - held} done, {held} failed" in err, err
        done = [i for i in range(4) if (work / f"out.{i}").exists()]
        assert len(done) == 4 - held
        assert all((work / f"out.{i}").read_text() == f"{i}\n" for i in done)
    finally:
        c.stop()
