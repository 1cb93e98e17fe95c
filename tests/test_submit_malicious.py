"""Real processes on loopback: a malicious node (tests/evil_node.py) cannot hang or
crash the submitter (issue 13): a bad result holds its job, a node that keeps breaking
the protocol is dropped for the run, and the honest node beside it does the work."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from .cluster import Cluster

REPO = Path(__file__).resolve().parent.parent


def start_evil(c: Cluster, i: int, mode: str, marker: Path) -> subprocess.Popen:
    out = open(c.base / f"evil{i}.log", "ab")
    p = subprocess.Popen([sys.executable, "-m", "tests.evil_node", str(c.conf),
                          c.names()[i], mode, str(marker)], cwd=REPO, stdout=out, stderr=out,
                         env=dict(c.env, PYTHONPATH=str(REPO)), start_new_session=True)
    c.nodes[i] = p  # stopped with the cluster
    return p


@pytest.mark.parametrize("mode, reason", [
    ("rusage", "result field 'rusage' has the wrong type"),
    ("files", "120000 output files exceed the limit of 100000"),
    ("huge", "bad size for 'x'"),
])
def test_a_bad_result_holds_the_job_and_the_submit_ends(pyz, tmp_path, mode, reason):
    c = Cluster(pyz, tmp_path, slots=[1])
    c.start_master()
    marker = tmp_path / "delivered"
    start_evil(c, 0, mode, marker)
    try:
        c.wait_up(1)
        (tmp_path / "j.condor").write_text("executable = /bin/true\nlog = j.log\nqueue\n")
        t0 = time.monotonic()
        code, _out, err = c.run_submit("j.condor", cwd=tmp_path, timeout=60)
        assert marker.exists()
        assert code == 1, err + c.logs()
        assert "1 jobs, 0 done, 1 failed" in err and reason in err, err
        assert "Traceback" not in err and time.monotonic() - t0 < 30
        assert "Job was held." in (tmp_path / "j.log").read_text()
    finally:
        c.stop()


def test_a_node_breaking_the_protocol_is_dropped_and_the_honest_one_works(pyz, tmp_path):
    c = Cluster(pyz, tmp_path, slots=[1, 1])
    c.start_master()
    c.start_node(0)
    marker = tmp_path / "delivered"
    start_evil(c, 1, "header", marker)
    try:
        c.wait_up(2)
        work = tmp_path / "w"
        work.mkdir()
        (work / "j.condor").write_text("executable = /bin/sh\n"
                                       "arguments = \"-c 'sleep 0.5; echo $(Process)'\"\n"
                                       "output = out.$(Process)\nqueue 4\n")
        code, _out, err = c.run_submit("j.condor", cwd=work, timeout=90)
        assert marker.exists(), "the evil node never got a job: the test proved nothing"
        assert code == 0, err + c.logs()
        assert "4 jobs, 4 done, 0 failed" in err
        assert f"node {c.names()[1]} broke the protocol 3 times" in err, err
        for i in range(4):
            assert (work / f"out.{i}").read_text() == f"{i}\n"
    finally:
        c.stop()
