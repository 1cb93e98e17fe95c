"""Multi-host behaviour: master and nodes in their own network namespaces (needs root).

The submitter runs in the root namespace, reaching the hosts over a bridge as
over a LAN. Partitions are real: a host's link goes down, packets vanish and
connections hang without a reset, exactly what a pulled cable does.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from jrs.node import taskfile

from .cluster import Cluster
from .netlab import NetLab

JOBS = 8
SCRIPT = """#!/bin/sh
sleep "$1"
echo "job $2 ran in $(pwd)" > "out.$2"
echo "stdout of $2"
"""


@pytest.fixture
def lab():
    lab = NetLab(3)  # host 0: master; hosts 1 and 2: nodes
    yield lab
    lab.destroy()


@pytest.fixture
def cluster(pyz, tmp_path, lab):
    c = Cluster(pyz, tmp_path, slots=[2, 2], lab=lab).start()
    yield c
    c.stop()


def sweep(where: Path, seconds: int) -> Path:
    where.mkdir()
    (where / "job.sh").write_text(SCRIPT)
    (where / "s.condor").write_text(
        "executable = job.sh\n"
        f"arguments = {seconds} $(Process)\n"
        "output = o/$(Process).out\n"
        "log = jobs.log\n"
        f"queue {JOBS}\n")
    return where


def wait_for(what, timeout: float, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s")


def node_state(c: Cluster, i: int) -> dict:
    return next(n for n in c.status()["nodes"] if n["name"] == c.names()[i])


def check_results(where: Path) -> list:
    """Every job ended exactly once, with its output; returns the node dir of each."""
    ran_in = []
    for p in range(JOBS):
        assert (where / "o" / f"{p}.out").read_text() == f"stdout of {p}\n"
        text = (where / f"out.{p}").read_text()
        m = re.fullmatch(rf"job {p} ran in .*/(node\d)/(?:sandbox/)?[^/]+\n", text)
        assert m, text
        ran_in.append(m.group(1))
    log = (where / "jobs.log").read_text()
    for p in range(JOBS):
        ends = re.findall(rf"^005 \(\d+\.{p:03d}\.000\)", log, re.M)
        assert len(ends) == 1, f"job {p} terminated {len(ends)} times in the log"
    return ran_in


def test_sweep_across_hosts(cluster, tmp_path):
    """Master and two nodes on three 'machines', submit from a fourth: all jobs come home."""
    where = sweep(tmp_path / "w", 0)
    code, _out, err = cluster.run_submit("s.condor", cwd=where, timeout=120)
    assert code == 0, err + cluster.logs()
    assert set(check_results(where)) == {"node0", "node1"}


def test_partitioned_node_jobs_rerun_elsewhere_then_it_rejoins(cluster, lab, tmp_path):
    """A node cut off mid-run: the master declares it lost; the submitter kills its
    runs there (the kill waits in the cut) and, with no answer within JRS_NODE_GIVE_UP
    (2 s here, 20 s by default), reruns them on the other node without counting them
    as failures; after the cut heals, its late results are ignored, and it rejoins."""
    where = sweep(tmp_path / "w", 4)
    sub = cluster.submit("s.condor", cwd=where, timeout=180, env={"JRS_NODE_GIVE_UP": "2"})
    wait_for(lambda: node_state(cluster, 1)["slots_used"] == 2, 20)
    lab.cut(2)
    wait_for(lambda: node_state(cluster, 1)["state"] != "up", 15)
    time.sleep(6)  # its jobs end while it is cut off; their results wait for the heal
    lab.heal(2)
    _out, err = sub.communicate(timeout=120)
    assert sub.returncode == 0, err + cluster.logs()
    assert "node " + cluster.names()[1] + " lost" in err
    ran_in = check_results(where)
    assert ran_in.count("node0") >= 2  # the cut-off node's first jobs ran again here
    # it rejoins, and the claims taken from it while it was away are gone from it too
    wait_for(lambda: node_state(cluster, 1)["state"] == "up", 20)
    claims = tmp_path / "node1" / "claims.json"
    wait_for(lambda: json.loads(claims.read_text()) == [], 10)


def test_master_cut_off_running_jobs_finish(cluster, lab, tmp_path):
    """The master unreachable mid-run: nodes keep their claims, the submitter keeps
    reusing them, the run completes; afterwards the master serves again."""
    where = sweep(tmp_path / "w", 2)
    sub = cluster.submit("s.condor", cwd=where, timeout=180)
    wait_for(lambda: sum(n["slots_used"] for n in cluster.status()["nodes"]) == 4, 20)
    lab.cut(0)
    try:
        _out, err = sub.communicate(timeout=120)
    finally:
        lab.heal(0)
    assert sub.returncode == 0, err + cluster.logs()
    assert set(check_results(where)) == {"node0", "node1"}
    wait_for(lambda: all(n["state"] == "up" for n in cluster.status()["nodes"]), 20)


def test_vanished_node_jobs_rerun_elsewhere(cluster, lab, tmp_path):
    """A node's machine disappears (processes and network gone): its jobs rerun. (The
    submitter waits JRS_NODE_GIVE_UP for the lost node's answer to its kill before it
    reruns them: 5 s here, not 20.)"""
    where = sweep(tmp_path / "w", 3)
    sub = cluster.submit("s.condor", cwd=where, timeout=180, env={"JRS_NODE_GIVE_UP": "5"})
    wait_for(lambda: node_state(cluster, 1)["slots_used"] == 2, 20)
    lab.vanish(2)
    _out, err = sub.communicate(timeout=120)
    assert sub.returncode == 0, err + cluster.logs()
    assert check_results(where).count("node0") >= 6  # all but the two it finished first


def test_node_the_submitter_cannot_reach_but_the_master_can(cluster, lab, tmp_path):
    """A one-sided partition: node 1 stays in the pool (the master hears it) but its
    answers to the submitter vanish, so connections to it hang without a reset. The
    submitter notices (TCP keepalive and user timeout), gives up on the node, reruns its
    jobs on the other one, and hands the claims back through the master, so the node
    stops the abandoned jobs and frees its slots."""
    where = sweep(tmp_path / "w", 4)
    sub = cluster.submit("s.condor", cwd=where, timeout=180,
                         env={"JRS_PEER_TIMEOUT": "3", "JRS_NODE_GIVE_UP": "3"})
    wait_for(lambda: node_state(cluster, 1)["slots_used"] == 2, 20)
    lab.blackhole(2, lab.gateway)
    # while the run goes on elsewhere, the node gets its slots back and stops the jobs
    wait_for(lambda: node_state(cluster, 1)["slots_used"] == 0, 20)
    assert sub.poll() is None, "the run should still be going"
    claims = tmp_path / "node1" / "claims.json"
    wait_for(lambda: json.loads(claims.read_text()) == [], 10)
    assert all(taskfile.load(str(t)).finished
               for t in (tmp_path / "node1" / "tasks").glob("*.task"))
    _out, err = sub.communicate(timeout=120)
    assert sub.returncode == 0, err + cluster.logs()
    assert f"node {cluster.names()[1]} lost (unreachable" in err, err
    assert check_results(where).count("node0") >= 6
    assert node_state(cluster, 1)["state"] == "up"  # the master never lost it
