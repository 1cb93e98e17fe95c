"""What runs inside tests/vm.py's guest (`python -m tests.v2guest`): a kernel with
cgroup v2 alone, pids and memory on it. Not a test module: test_cgroup_v2_vm.py
boots the guest and asserts on the facts this writes to vm.OUT_DIR/facts.json.

As on a systemd host: the root cgroup hands pids and memory down, and the node starts
in a service cgroup of its own (`Delegate=yes`), /jrs-node.service. A real master, a
real root node with per-job uids and `--job-pids=64`, real submits:
1. a fork bomb (Python, one process per fork, each sleeping) reports its cgroup, the
   limits in it, how many forks it got before the kernel refused one, and the
   cgroup's processes at that moment; it exits with its children still asleep, which
   the node must kill (the job is over);
2. a job that leaves `setsid`, double-forked and TERM-ignoring processes and sleeps,
   removed with `jrs rm`: every process of its uid must be in its cgroup before, and
   none alive after;
3. the node stops: no job cgroup is left below its subtree;
4. the node again, now started in the root cgroup (no service cgroup: a container's
   init, a host without systemd), with the root handing nothing down: it enables
   pids and memory from the root itself, and the fork bomb stops at the limit again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

from jrs.node import unit

from .cluster import scratch_cluster, wait_for
from .conftest import PYZ, run_jrs
from .test_confine_cgroups import _child_cgroups, _remove_tree, _Started
from .vm import OUT_DIR

PIDS = 64
OUT = Path(OUT_DIR)
facts: dict = {}

BOMB = r"""#!/usr/bin/python3
import json, os, time
cg = [l[3:] for l in open("/proc/self/cgroup").read().splitlines() if l.startswith("0::")][0]
d = "/sys/fs/cgroup" + cg
def rd(name):
    try:
        return open(os.path.join(d, name)).read().strip()
    except OSError as e:
        return "error %d" % e.errno
limits = [l for l in open("/proc/self/limits") if l.startswith("Max processes")][0]
info = {"cgroup": cg, "self": os.getpid(), "uid": os.getuid(),
        "controllers": rd("cgroup.controllers").split(), "pids.max": rd("pids.max"),
        "memory.max": rd("memory.max"), "memory.current": rd("memory.current"),
        "nproc": limits.split()[2:4]}
kids = []
while len(kids) < 1000:
    try:
        pid = os.fork()
    except OSError as e:
        info["fork_error"] = e.errno
        break
    if pid == 0:
        time.sleep(300)
        os._exit(0)
    kids.append(pid)
info["kids"] = kids
info["procs"] = sorted(int(p) for p in rd("cgroup.procs").split())
info["pids.current"] = rd("pids.current")
info["pids.events"] = rd("pids.events")
print(json.dumps(info), flush=True)
"""


def save() -> None:
    (OUT / "facts.json").write_text(json.dumps(facts, indent=1, default=str))


def alive(pid: int) -> bool:
    """Running (a zombie has ended: only its parent's wait is left)."""
    return unit.process_state(pid) not in ("", "Z")


def procs_of(uid: int) -> list:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if p.stat().st_uid == uid and alive(int(p.name)):
                    out.append(int(p.name))
            except OSError:
                continue
    return sorted(out)


def run_bomb(c, work: Path, name: str) -> dict:
    """Submit the fork bomb and wait for the node to end what it left: facts[name] (what
    the bomb reported), and name_submit, name_left (its children still alive),
    name_uid_left, name_cgroup_after."""
    root = Path(unit.CGROUP)
    (work / "bomb.py").write_text(BOMB)
    os.chmod(work / "bomb.py", 0o755)
    (work / f"{name}.condor").write_text(f"executable = bomb.py\noutput = {name}.out\n"
                                         f"error = {name}.err\nqueue\n")
    code, _out, err = c.run_submit(f"{name}.condor", cwd=work, timeout=600)
    out, errs = work / f"{name}.out", work / f"{name}.err"
    facts[f"{name}_submit"] = [code, err[-2000:], errs.read_text() if errs.exists() else None]
    facts[name] = json.loads(out.read_text()) if out.exists() and out.read_text().strip() \
        else None
    save()
    bomb = facts[name] or {}
    try:  # the job is over: the node kills what it left (a moment after the submit ends)
        wait_for(lambda: not [p for p in bomb.get("kids", []) if alive(p)] and not (
            bomb and procs_of(bomb["uid"])), 60)
    except AssertionError:
        pass
    facts[f"{name}_left"] = [p for p in bomb.get("kids", []) if alive(p)]
    facts[f"{name}_uid_left"] = procs_of(bomb["uid"]) if bomb else None
    cg = root / bomb.get("cgroup", "/nowhere").lstrip("/")
    facts[f"{name}_cgroup_after"] = {"exists": cg.exists(), "events": (
        cg / "cgroup.events").read_text() if cg.exists() else ""}
    save()
    return bomb


def main() -> None:
    root = Path(unit.CGROUP)
    facts["proc_cgroups"] = Path("/proc/cgroups").read_text()
    facts["hierarchies"] = unit.hierarchies()
    facts["root_controllers"] = (root / "cgroup.controllers").read_text().split()
    (root / "cgroup.subtree_control").write_text("+pids +memory")
    svc = root / "jrs-node.service"
    svc.mkdir()
    shared = Path("/tmp/jrs-v2-shared")
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    with scratch_cluster(PYZ, "jrs-v2-", start=False, work_mode=0o777,
                         make=lambda base: _Started(PYZ, base, slots=[1])) as sc:
        c, work = sc.c, sc.work
        c.env["JRS_NODE_TIMEOUT"] = "60"  # (software emulation: everything is slower)
        c.where = {"v2": str(svc)}
        c.start_master()
        c.start_node(0, f"--job-pids={PIDS}")
        c.wait_up(1, timeout=300)
        node_pid = c.nodes[0].pid
        facts["daemon_cgroup"] = unit.own_cgroups(Path(f"/proc/{node_pid}/cgroup").read_text())
        facts["svc_subtree_control"] = (svc / "cgroup.subtree_control").read_text().split()
        save()

        # 1. the fork bomb
        run_bomb(c, work, "bomb")

        # 2. a job that leaves processes of all kinds behind, removed with `jrs rm`
        (work / "stay.sh").write_text(
            "#!/bin/sh\nsetsid sleep 300 &\n(sleep 300 &)\n"
            "sh -c 'trap \"\" TERM; exec sleep 300' &\n"
            f"id -u > {shared}/uid\nsed -n 's/^0:://p' /proc/self/cgroup > {shared}/cg.tmp\n"
            f"mv {shared}/cg.tmp {shared}/cg\nsleep 300\n")
        os.chmod(work / "stay.sh", 0o755)
        (work / "stay.condor").write_text("executable = stay.sh\noutput = stay.out\n"
                                          "error = stay.err\nqueue\n")
        p = c.submit("stay.condor", cwd=work)
        wait_for(lambda: (shared / "cg").exists(), 300)
        uid = int((shared / "uid").read_text())
        stay_cg = root / (shared / "cg").read_text().strip().lstrip("/")

        def in_cgroup_now() -> list:
            return sorted(int(x) for x in (stay_cg / "cgroup.procs").read_text().split())

        try:  # all five started: the script, its three sleeps left behind, its own sleep
            wait_for(lambda: len(in_cgroup_now()) == 5 and in_cgroup_now() == procs_of(uid),
                     60)
        except AssertionError:
            pass
        in_cgroup = in_cgroup_now()
        facts["stay"] = {"uid": uid, "cgroup": str(stay_cg), "procs": in_cgroup,
                         "uid_procs": procs_of(uid)}
        save()
        r = run_jrs(PYZ, "q", "--json", "-c", str(c.conf), timeout=300)
        cluster = max(x["id"] for x in json.loads(r.stdout)["clusters"])
        r = run_jrs(PYZ, "rm", f"{cluster}.0", "-c", str(c.conf), timeout=300)
        facts["stay"]["rm"] = [r.returncode, r.stderr[-1000:]]
        try:
            _out, err = p.communicate(timeout=600)
            facts["stay"]["submit"] = [p.returncode, err[-2000:]]
        except subprocess.TimeoutExpired:
            facts["stay"]["submit"] = ["timeout", ""]
        try:
            wait_for(lambda: not [x for x in in_cgroup if alive(x)] and not procs_of(uid), 60)
        except AssertionError:
            pass
        facts["stay"]["left"] = [x for x in in_cgroup if alive(x)]
        facts["stay"]["uid_left"] = procs_of(uid)
        facts["stay"]["cgroup_after"] = {"exists": stay_cg.exists(), "events": (
            stay_cg / "cgroup.events").read_text() if stay_cg.exists() else ""}
        save()

        # 3. the node stops: its jobs' cgroups go (each with its executor)
        ntag = facts["daemon_cgroup"]["v2"].rsplit("/", 1)[1][:-len(".daemon")]
        mine = svc / "jrs" / ntag
        facts["job_cgroups_running"] = _child_cgroups(mine)
        c.nodes[0].terminate()
        facts["node_exit"] = c.nodes[0].wait(120)
        try:
            wait_for(lambda: _child_cgroups(mine) == [], 60)
        except AssertionError:
            pass
        facts["job_cgroups_after_stop"] = _child_cgroups(mine)
        save()

        # 4. a node started in the root cgroup (no service cgroup: a container's init,
        # a host without systemd) enables pids and memory from the root itself
        _remove_tree(str(root), svc)
        (root / "cgroup.subtree_control").write_text("-pids -memory")
        facts["root_subtree_before"] = (root / "cgroup.subtree_control").read_text().split()
        c.where = {}
        c.start_node(0, f"--job-pids={PIDS}")
        # (the master may still count the node that stopped as up: its log says when
        # this one, its cgroups made, listens)
        wait_for(lambda: (c.base / "node0.log").read_text().count(" listening on ") == 2, 300)
        c.wait_up(1, timeout=300)
        facts["root_daemon_cgroup"] = unit.own_cgroups(
            Path(f"/proc/{c.nodes[0].pid}/cgroup").read_text())
        facts["root_subtree_after"] = (root / "cgroup.subtree_control").read_text().split()
        run_bomb(c, work, "root_bomb")
        c.nodes[0].terminate()
        facts["root_node_exit"] = c.nodes[0].wait(120)
        mine = root / "jrs" / ntag
        try:
            wait_for(lambda: _child_cgroups(mine) == [], 60)
        except AssertionError:
            pass
        facts["root_job_cgroups_after_stop"] = _child_cgroups(mine)
        facts["logs"] = c.logs()[-6000:]
        save()
        _remove_tree(str(root), root / "jrs")


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        facts["error"] = traceback.format_exc()
        save()
        sys.exit(1)
    save()
