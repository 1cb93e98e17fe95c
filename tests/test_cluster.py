"""End to end: a master, nodes and submitters as real processes on loopback."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import htcondor
import pytest

from .cluster import Cluster
from .conftest import run_jrs


@pytest.fixture
def cluster(pyz, tmp_path):
    c = Cluster(pyz, tmp_path, slots=[2, 2, 2]).start()
    yield c
    c.stop()


def test_sweep_of_200_jobs_outputs_byte_for_byte(cluster, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "job.sh").write_text("#!/bin/sh\nprintf '%s-%s\\n' $1 $2\nprintf err$2 >&2\n")
    os.chmod(work / "job.sh", 0o755)
    (work / "sweep.condor").write_text(
        "executable = job.sh\narguments = $(Cluster) $(Process)\n"
        "output = out/$(Process).out\nerror = out/$(Process).err\nlog = sweep.log\n"
        "queue 200\n")
    code, _out, err = cluster.run_submit("sweep.condor", cwd=work)
    assert code == 0, err + cluster.logs()
    cluster_id = None
    for i in range(200):
        text = (work / "out" / f"{i}.out").read_text()
        cluster_id = cluster_id or text.split("-")[0]
        assert text == f"{cluster_id}-{i}\n"
        assert (work / "out" / f"{i}.err").read_text() == f"err{i}"
    assert "200 jobs, 200 done, 0 failed" in err
    events = list(htcondor.JobEventLog(str(work / "sweep.log")).events(0))
    kinds = [e.type for e in events]
    assert kinds.count(htcondor.JobEventType.SUBMIT) == 200
    assert kinds.count(htcondor.JobEventType.EXECUTE) == 200
    ends = [e for e in events if e.type == htcondor.JobEventType.JOB_TERMINATED]
    assert len(ends) == 200 and all(e["ReturnValue"] == 0 for e in ends)
    assert sorted(e.proc for e in ends) == list(range(200))
    # the jobs were spread over the nodes
    nodes = {e["ExecuteHost"] for e in events if e.type == htcondor.JobEventType.EXECUTE}
    assert len(nodes) == 3
    assert not (work / ".sweep.condor.jrs").exists()  # journal gone after a complete run


def test_files_both_ways(cluster, tmp_path):
    work = tmp_path / "w"
    (work / "data" / "sub").mkdir(parents=True)
    (work / "data" / "sub" / "deep.txt").write_text("deep")
    (work / "in.txt").write_bytes(os.urandom(300_000))
    (work / "stdin.txt").write_text("from stdin\n")
    (work / "job.sh").write_text(
        "#!/bin/sh\nset -e\ncat in.txt > copy.bin\ncat data/sub/deep.txt > deep.out\n"
        "cat > stdin.copy\nmkdir -p ignored_dir\necho $JRS_JOB_ID $OMP_NUM_THREADS > ids.txt\n"
        "test \"$_CONDOR_SCRATCH_DIR\" = \"$PWD\"\necho $FOO > env.txt\n")
    os.chmod(work / "job.sh", 0o755)
    (work / "f.condor").write_text(
        "executable = job.sh\ntransfer_input_files = in.txt, data\ninput = stdin.txt\n"
        "environment = \"FOO=bar\"\nrequest_cpus = 2\noutput = o.txt\nerror = e.txt\nqueue\n")
    code, _out, err = cluster.run_submit("f.condor", cwd=work)
    assert code == 0, err + (work / "e.txt").read_text() + cluster.logs()
    assert (work / "copy.bin").read_bytes() == (work / "in.txt").read_bytes()
    assert (work / "deep.out").read_text() == "deep"
    assert (work / "stdin.copy").read_text() == "from stdin\n"
    assert (work / "env.txt").read_text() == "bar\n"
    cid = (work / "ids.txt").read_text().split()
    assert cid[0].endswith(".0") and cid[1] == "2"
    assert not (work / "in.txt.jrs-part").exists()
    # explicit transfer_output_files: only what is named comes back; missing -> held
    (work / "g.condor").write_text(
        "executable = /bin/sh\narguments = \"-c 'echo a > a.txt; echo b > b.txt'\"\n"
        "transfer_output_files = b.txt\ninitialdir = g\nqueue\n"
        "transfer_output_files = nothere.txt\nqueue\n")
    (work / "g").mkdir()
    code, _out, err = cluster.run_submit("g.condor", cwd=work)
    assert code == 1
    assert (work / "g" / "b.txt").read_text() == "b\n"
    assert not (work / "g" / "a.txt").exists()
    assert "nothere.txt" in err


def test_requirements_route_jobs(pyz, tmp_path):
    c = Cluster(pyz, tmp_path, slots=[1, 1], attrs=["+Gpu=\"big\" +Rack=3", "+Rack=4"]).start()
    try:
        (tmp_path / "r.condor").write_text(
            "executable = /bin/true\nlog = r.log\n"
            "requirements = TARGET.Gpu == \"BIG\"\nqueue 4\n"
            "requirements = Rack >= 4 && isUndefined(Gpu)\nqueue 4\n"
            "requirements = Rack > 10\nqueue 2\n"
            "requirements = true\nrequest_cpus = 8\nqueue 1\n")
        attrs = {n["name"]: n["attrs"] for n in c.status()["nodes"]}
        assert attrs[c.names()[0]]["Gpu"] == "big" and attrs[c.names()[0]]["Rack"] == 3
        assert attrs[c.names()[1]]["Rack"] == 4 and "Gpu" not in attrs[c.names()[1]]
        assert attrs[c.names()[1]]["OpSys"] == "LINUX"
        code, _out, err = c.run_submit("r.condor", cwd=tmp_path)
        assert code == 1, err
        hosts: dict = {}
        for e in htcondor.JobEventLog(str(tmp_path / "r.log")).events(0):
            if e.type == htcondor.JobEventType.EXECUTE:
                hosts[e.proc] = e["ExecuteHost"].strip("<>")
        n1, n2 = c.names()
        assert all(hosts[p] == n1 for p in range(4))
        assert all(hosts[p] == n2 for p in range(4, 8))
        assert "8 done" in err and "3 failed" in err
        assert "match none of the 2 nodes" in err
        assert "no node is that big" in err
    finally:
        c.stop()


def test_exit_statuses(cluster, tmp_path, pyz):
    (tmp_path / "ok.condor").write_text("executable = /bin/true\nqueue 3\n")
    (tmp_path / "bad.condor").write_text(
        "executable = /bin/sh\narguments = \"-c 'exit $(Process)'\"\nerror = e$(Process)\n"
        "queue 3\n")
    (tmp_path / "sig.condor").write_text(
        "executable = /bin/sh\narguments = \"-c 'kill -9 $$'\"\nqueue\n")
    (tmp_path / "broken.condor").write_text("executable = /bin/true\nqueue 2\nfoo = $INT(x)\n"
                                            "arguments = $INT(nope)\nqueue\n")
    # a shared-filesystem job runs in iwd under its per-job uid: an iwd it may write
    shared = Path(tempfile.mkdtemp(prefix="jrs-shared-", dir="/tmp"))
    os.chmod(shared, 0o777)
    (tmp_path / "retry.condor").write_text(
        "executable = /bin/sh\narguments = \"-c 'umask 0; echo x >> tries; exit 3'\"\n"
        f"iwd = {shared}\nshould_transfer_files = NO\nmax_retries = 2\nqueue\n")
    assert cluster.run_submit("ok.condor", cwd=tmp_path)[0] == 0
    code, _out, err = cluster.run_submit("bad.condor", cwd=tmp_path)
    assert code == 1
    assert ".1 exit code 1 on 127.0.0.1:" in err and f"stderr: {tmp_path}/e1" in err
    assert ".2 exit code 2" in err and ".0 exit" not in err
    code, _out, err = cluster.run_submit("sig.condor", cwd=tmp_path)
    assert code == 1 and "killed by signal 9" in err
    code, _out, err = cluster.run_submit("broken.condor", cwd=tmp_path)
    assert code == 2 and "broken.condor:5:" in err
    code, _out, err = cluster.run_submit("retry.condor", cwd=tmp_path)
    assert code == 1 and (shared / "tries").exists(), err
    assert (shared / "tries").read_text() == "x\nx\nx\n"
    shutil.rmtree(shared)
    # 3: no master there, and a master that does not hold our secret
    other = tmp_path / "other"
    from .conftest import write_config
    write_config(other, master=f"127.0.0.1:{cluster.mport}", secret=b"x" * 40)
    r = run_jrs(pyz, "submit", "-c", str(other), str(tmp_path / "ok.condor"),
                env={"JRS_CONNECT_TIMEOUT": "2"})
    assert r.returncode == 3 and "refused" in r.stderr
    from .cluster import free_port
    write_config(other, master=f"127.0.0.1:{free_port()}")
    r = run_jrs(pyz, "submit", "-c", str(other), str(tmp_path / "ok.condor"),
                env={"JRS_CONNECT_TIMEOUT": "1"})
    assert r.returncode == 3 and "cannot reach the master" in r.stderr
    for tool in (["status"], ["q"], ["rm", "1"]):
        r = run_jrs(pyz, *tool, "-c", str(other))
        assert r.returncode == 3, tool


def test_status_q_and_rm(cluster, tmp_path, pyz):
    (tmp_path / "s.condor").write_text("executable = /bin/sleep\narguments = 30\n"
                                       "log = s.log\nqueue 8\n")
    p = cluster.submit("s.condor", cwd=tmp_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st = cluster.status()
        if sum(n["slots_used"] for n in st["nodes"]) == 6:
            break
        time.sleep(0.2)
    st = cluster.status()
    assert {n["name"] for n in st["nodes"]} == set(cluster.names())
    assert all(n["slots"] == 2 and n["state"] == "up" and "memory" in n and "address" in n
               for n in st["nodes"])
    assert sum(n["slots_used"] for n in st["nodes"]) == 6
    assert st["submitters"][0]["claims"] == 6
    time.sleep(1.2)
    q = json.loads(run_jrs(pyz, "q", "--json", "-c", str(cluster.conf)).stdout)
    (cl,) = q["clusters"]
    assert cl["running"] == 6 and cl["idle"] == 2 and cl["total"] == 8
    text = run_jrs(pyz, "status", "-c", str(cluster.conf)).stdout
    assert "3/3 nodes up" in text
    r = run_jrs(pyz, "rm", f"{cl['id']}.7", "-c", str(cluster.conf))
    assert r.returncode == 0 and "removed 1" in r.stdout
    r = run_jrs(pyz, "rm", str(cl["id"]), "-c", str(cluster.conf))
    assert r.returncode == 0 and "removed 7" in r.stdout, r.stdout + r.stderr
    _out, err = p.communicate(timeout=30)
    assert p.returncode == 1
    assert "0 done, 0 failed, 8 removed" in err
    events = list(htcondor.JobEventLog(str(tmp_path / "s.log")).events(0))
    assert sum(e.type == htcondor.JobEventType.JOB_ABORTED for e in events) == 8
    r = run_jrs(pyz, "rm", "99999", "-c", str(cluster.conf))
    assert r.returncode == 1 and "no such cluster" in r.stderr


def test_trace_shows_each_message_with_a_timestamp(cluster, tmp_path):
    """JRS_TRACE=1: the path of one job, message by message, for timing it."""
    (tmp_path / "t.condor").write_text("executable = /bin/true\nqueue\n")
    code, _out, err = cluster.run_submit("t.condor", cwd=tmp_path, env={"JRS_TRACE": "1"})
    assert code == 0, err
    lines = [line.split() for line in err.splitlines() if line[:1].isdigit()]
    kinds = [(parts[2], parts[-1]) for parts in lines]
    for step in ((">", "submitter-hello"), ("<", "claim"), (">", "run"), ("<", "finished"),
                 (">", "ack")):
        assert step in kinds, kinds
    stamps = [float(parts[0]) for parts in lines]
    assert stamps == sorted(stamps)
