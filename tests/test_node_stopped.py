"""A node daemon stopped (SIGSTOP) past the master's node timeout while a submit runs,
then continued: its executors ran on meanwhile and the master declared the node dead.
The submitter, which still reached the node, killed its runs there and waited for its
answer: the runs that ended during the stop keep their results and run only once.
Nothing runs twice (no attempt of a job executes twice), every job ends once (one
result, one end in the job log), the attempts the node kept running are stopped once
it is back, and the submit ends with every job done. Real master, nodes and submitter
on loopback; jobs note each execution in a shared ledger (job id, sandbox: the sandbox
name ends with the attempt)."""

from __future__ import annotations

import collections
import os
import re
import secrets
import signal
from pathlib import Path

from .cluster import Cluster, check_outputs, shared_ledger, wait_for


def _procs_with(text: str) -> list:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if text in (p / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    out.append(int(p.name))
            except OSError:
                pass
    return out


def _uid(pid: int) -> int:
    """The real uid of process `pid` (-1 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
    except (OSError, StopIteration):
        return -1


def test_a_node_daemon_stopped_past_the_node_timeout_runs_nothing_twice(pyz, tmp_path):
    n = 12
    c = Cluster(pyz, tmp_path, slots=[2, 2])  # JRS_NODE_TIMEOUT=3 (Cluster's)
    c.start()
    mark = f"{1 + secrets.randbelow(10 ** 6) / 10 ** 7:.7f}"
    stopped = False
    try:
        work = tmp_path / "w"
        work.mkdir()
        ledger = shared_ledger()
        (work / "job.sh").write_text(
            "#!/bin/sh\n"
            f"echo $JRS_JOB_ID $(basename $(dirname $PWD)) $(basename $PWD) >> {ledger}\n"
            f"sleep 3{mark[1:]}\necho done $JRS_JOB_ID\n")
        os.chmod(work / "job.sh", 0o755)
        (work / "c.condor").write_text("executable = job.sh\noutput = out/$(Process)\n"
                                       f"log = c.log\nqueue {n}\n")
        p = c.submit("c.condor", cwd=work)

        def lines() -> list:
            return [line.split() for line in ledger.read_text().splitlines()]

        wait_for(lambda: sum(node == "node0" for _, node, _ in lines()) >= 2, timeout=60)
        on_node0 = {job for job, node, _ in lines() if node == "node0"}
        c.nodes[0].send_signal(signal.SIGSTOP)
        stopped = True
        # past the master's node timeout (3 s): it declared the node dead and told the
        # submitter, and node0's runs ended meanwhile (their executors are not stopped)
        log = tmp_path / "master.log"
        wait_for(lambda: "'node-lost'" in log.read_text(), timeout=30)
        first, last = map(int, c.uid_ranges[0].split("-"))
        wait_for(lambda: not [pid for pid in _procs_with(f"sleep 3{mark[1:]}")
                              if first <= _uid(pid) <= last], timeout=30)
        c.nodes[0].send_signal(signal.SIGCONT)
        stopped = False
        _out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err + c.logs()
        assert f"{n} jobs, {n} done" in err, err
        got = lines()
        runs = collections.Counter((job, box) for job, _, box in got)
        assert set(runs.values()) == {1}, runs  # no attempt executed twice
        per_job = collections.Counter(job for job, _, _ in got)
        assert len(per_job) == n, per_job
        # the master declared the node dead, but the submitter still reached it (a
        # stopped daemon's kernel keeps its connections): it killed the runs there and
        # waited for the node's answer (S1, R7). The runs had ended on their own during
        # the stop, so their results stand: each ran once, none again elsewhere.
        assert all(per_job[job] == 1 for job in on_node0), (on_node0, got)
        again = {job for job, k in per_job.items() if k > 1}
        assert again <= {job for job, node, _ in got if node == "node0"}, (again, got)
        assert all(k <= 2 for k in per_job.values()), per_job
        log = (work / "c.log").read_text()
        ends = re.findall(r"^005 \(001\.(\d+)\.000\)", log, re.M)
        assert sorted(map(int, ends)) == list(range(n)), ends  # each job ends once
        check_outputs(work, n)
        # what the stopped node kept running is stopped (or has ended) once it is back
        wait_for(lambda: not _procs_with(f"sleep 3{mark[1:]}"), timeout=30)
        assert c.nodes[0].poll() is None and c.nodes[1].poll() is None
    finally:
        if stopped:
            c.nodes[0].send_signal(signal.SIGCONT)
        c.stop()
