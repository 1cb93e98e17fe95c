"""#13: the node's cgroup v2 paths with the `pids` and `memory` controllers, on a kernel
that has them on the unified hierarchy: tests/vm.py's guest (this machine's kernel
keeps them on v1 hierarchies it cannot give up: see tests/vm.py). What the guest ran
and why: tests/v2guest.py. A real master, node and submits there; here the facts they
left are checked, with the assertions the v1 and no-cgroup tests make
(test_confine.py's fork bomb and `rm`, test_confine_cgroups.py's layout)."""

from __future__ import annotations

import errno
import sys

from . import vm
from .conftest import ROOT

ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "HOME": "/root", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
       "JRS_STRICT": "1", "JRS_STRICT_LOG": f"{vm.OUT_DIR}/strict.log"}


def test_on_a_pure_v2_kernel_the_pids_controller_bounds_contains_and_kills_jobs(pyz, tmp_path):
    out = tmp_path / "out"
    r = vm.run([sys.executable, "-m", "tests.v2guest"], out, cwd=str(ROOT), env=ENV)
    f = vm.facts(out)
    logs = f.pop("logs", "")
    assert r["rc"] == 0 and "error" not in f, (r, f, logs)
    # a pure v2 kernel: every controller on the unified hierarchy, none on v1
    assert {"pids", "memory"} <= set(f["root_controllers"]), f["root_controllers"]
    assert all(line.split()[1] == "0" for line in f["proc_cgroups"].splitlines()[1:])
    assert f["hierarchies"] == {"v2": "/sys/fs/cgroup", "pids": None}
    # the node moved itself beside its jobs, so its service cgroup could hand them down
    daemon = f["daemon_cgroup"]["v2"]
    assert daemon.startswith("/jrs-node.service/jrs/n") and daemon.endswith(".daemon"), f
    ntag = daemon.rsplit("/", 1)[1][:-len(".daemon")]
    assert {"pids", "memory"} <= set(f["svc_subtree_control"]), f

    # 1. the fork bomb: in a job cgroup below the node's own, pids.max = --job-pids
    b = f["bomb"]
    assert f["bomb_submit"][0] == 0 and b, (f["bomb_submit"], logs)
    assert b["cgroup"].startswith(f"/jrs-node.service/jrs/{ntag}/"), b["cgroup"]
    assert {"pids", "memory"} <= set(b["controllers"]), b["controllers"]
    assert b["pids.max"] == "64"
    # stopped at the limit by the pids controller (EAGAIN): itself and 63 children
    assert b["fork_error"] == errno.EAGAIN and len(b["kids"]) == 63, b
    assert b["pids.current"] == "64" and b["pids.events"].split()[0] == "max" and \
        int(b["pids.events"].split()[1]) >= 1, b
    # ... not by RLIMIT_NPROC: that is set only where no pids cgroup is
    assert b["nproc"][0] != "64", b["nproc"]
    # every process of the job is in its v2 cgroup
    assert b["procs"] == sorted([b["self"], *b["kids"]]), b
    # the job ended with its 63 children asleep: the node killed them all
    assert f["bomb_left"] == [] and f["bomb_uid_left"] == [], f
    assert "populated 1" not in f["bomb_cgroup_after"]["events"], f["bomb_cgroup_after"]
    # memory: accounted in the job's cgroup (no limit is set: the node sets none)
    assert b["memory.max"] == "max" and int(b["memory.current"]) > 0, b

    # 2. setsid, double-forked and TERM-ignoring processes: all in the job's cgroup
    # while it runs (nothing of its uid outside), none alive after `jrs rm`
    s = f["stay"]
    assert s["cgroup"].startswith(f"/sys/fs/cgroup/jrs-node.service/jrs/{ntag}/"), s
    assert len(s["procs"]) == 5 and s["uid_procs"] == s["procs"], s
    assert s["rm"][0] == 0 and "1 removed" in s["submit"][1], s
    assert s["left"] == [] and s["uid_left"] == [], s
    assert "populated 1" not in s["cgroup_after"]["events"], s

    # 3. the node stopped cleanly and no job cgroup is left below its subtree
    assert f["job_cgroups_running"], f
    assert f["node_exit"] == 0 and f["job_cgroups_after_stop"] == [], (f, logs)

    # 4. started in the root cgroup, where nothing handed pids and memory down: the
    # node enabled them from the root, and the bomb stopped at the limit again
    assert not {"pids", "memory"} & set(f["root_subtree_before"]), f
    assert {"pids", "memory"} <= set(f["root_subtree_after"]), f
    assert f["root_daemon_cgroup"]["v2"] == "/", f  # (the root may hold processes)
    rb = f["root_bomb"]
    assert f["root_bomb_submit"][0] == 0 and rb, (f["root_bomb_submit"], logs)
    assert rb["cgroup"].startswith(f"/jrs/{ntag}/") and rb["pids.max"] == "64", rb
    assert rb["fork_error"] == errno.EAGAIN and len(rb["kids"]) == 63, rb
    assert rb["procs"] == sorted([rb["self"], *rb["kids"]]), rb
    assert f["root_bomb_left"] == [] and f["root_bomb_uid_left"] == [], f
    assert f["root_node_exit"] == 0 and f["root_job_cgroups_after_stop"] == [], (f, logs)

    # every message the guest's jrs processes sent matched the schema
    strict = out / "strict.log"
    bad = [line for line in strict.read_text().splitlines() if " BAD " in line] \
        if strict.exists() else []
    assert not bad, bad[:20]
