"""Where a root node puts its jobs' cgroups: below its own cgroup (systemd's delegated
service cgroup, a container's), below a configured one, or nowhere (`--cgroup=none`),
with the controllers of the unified hierarchy enabled down to the jobs so limits can
go on them later. Real node processes started inside cgroups this test makes (in the
unified hierarchy and in v1's pids one: what this machine has), real jobs reporting
their /proc/self/cgroup.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from jrs.node import unit

from .cluster import Cluster, scratch_cluster, wait_for
from .conftest import run_jrs

HIER = unit.hierarchies()
UNIFIED = HIER["v2"]
PIDS = HIER["pids"]


def test_own_cgroups_are_read_from_proc_self_cgroup():
    text = ("12:pids:/system.slice/jrs-node.service\n4:memory:/x\n1:name=systemd:/s\n"
            "0::/system.slice/jrs-node.service\n")
    assert unit.own_cgroups(text) == {"v2": "/system.slice/jrs-node.service",
                                      "pids": "/system.slice/jrs-node.service"}
    assert unit.own_cgroups("3:cpu,pids:/a\n") == {"pids": "/a"}
    assert unit.own_cgroups("garbage\n0::relative\n") == {}


class _Started(Cluster):
    """A node started inside the cgroups `where` ({"v2": dir, "pids": dir}): a shell
    enters them and execs the node, so the daemon's own cgroups are those."""

    where: dict = {}

    def _spawn(self, host: int, *args: str, log: str) -> subprocess.Popen:
        if args[0] != "node" or not self.where:
            return super()._spawn(host, *args, log=log)
        out = open(self.base / log, "ab")
        enter = "; ".join(f"echo $$ > {d}/cgroup.procs" for d in self.where.values())
        return subprocess.Popen(["/bin/sh", "-c", f'{enter}; exec "$@"', "sh", sys.executable,
                                 str(self.pyz), *args, "-c", str(self.conf), "-v"],
                                stdout=out, stderr=out, env=self.env, start_new_session=True)


def _cgroup_of(text: str) -> dict:
    return unit.own_cgroups(text)


def _remove_tree(mount: str, path: Path) -> None:
    """Move whatever is left to the hierarchy's root, remove the cgroups bottom-up."""
    for _ in range(50):
        if not path.exists():
            return
        for top, _dirs, _files in os.walk(path, topdown=False):
            for pid in Path(top, "cgroup.procs").read_text().split():
                try:
                    Path(mount, "cgroup.procs").write_text(pid)
                except OSError:
                    pass
            try:
                os.rmdir(top)
            except OSError:
                pass
        time.sleep(0.1)


@contextlib.contextmanager
def _own_cgroups_cluster(pyz, name: str):
    """(scratch cluster, its cgroups): a one-slot cluster, not started, whose node
    starts in cgroups of its own, `name` in the v2 and the v1 pids hierarchies (as a
    supervisor would place it), and a submit file whose job prints its cgroups, then
    `---`, then the controllers its v2 cgroup has; the cgroups are removed after."""
    own = {"v2": Path(UNIFIED) / name, "pids": Path(PIDS) / name}
    for d in own.values():
        d.mkdir()
    try:
        with scratch_cluster(pyz, "jrs-cg-", start=False, work_mode=0o777,
                             make=lambda base: _Started(pyz, base, slots=[1])) as sc:
            sc.c.where = {k: str(v) for k, v in own.items()}
            (sc.work / "c.condor").write_text(
                "executable = /bin/sh\narguments = \"-c 'cat /proc/self/cgroup; echo ---; "
                f"cat {UNIFIED}$(sed -n s/^0:://p /proc/self/cgroup)/cgroup.controllers'\"\n"
                "output = out\nqueue\n")
            yield sc, own
    finally:
        for mount in (UNIFIED, PIDS):
            _remove_tree(mount, Path(mount) / name)


def test_job_cgroups_go_below_the_nodes_own_or_the_configured_one(pyz):
    tag = secrets.token_hex(4)
    conf_rel = f"/jrs-conf-{tag}/sub"
    try:
        with _own_cgroups_cluster(pyz, f"jrs-own-{tag}") as (sc, own):
            c, base, work = sc.c, sc.base, sc.work
            c.start_master()
            runs = {}
            for label, extra in (("own", []), ("configured", [f"--cgroup={conf_rel}"]),
                                 ("none", ["--cgroup=none"])):
                c.start_node(0, *extra)
                c.wait_up(1)
                code, _out, err = c.run_submit("c.condor", cwd=work)
                assert code == 0, err + c.logs()
                text, _, controllers = (work / "out").read_text().partition("---\n")
                runs[label] = (_cgroup_of(text), controllers.split(),
                               _cgroup_of(Path(f"/proc/{c.nodes[0].pid}/cgroup").read_text()))
                c.nodes[0].terminate()
                c.nodes[0].wait(10)
            ntag = next(p.name for p in (own["v2"] / "jrs").iterdir() if p.name.endswith(".daemon"))
            ntag = ntag[:-len(".daemon")]
            job, controllers, daemon = runs["own"]
            # below the node's own cgroups, in both hierarchies
            assert job["v2"].startswith(f"/{own['v2'].name}/jrs/{ntag}/"), job
            assert job["pids"].startswith(f"/{own['pids'].name}/jrs/{ntag}/"), job
            # the daemon moved itself into a leaf beside its jobs (v2), so its own cgroup
            # could hand the controllers down: the job's cgroup has them
            assert daemon["v2"] == f"/{own['v2'].name}/jrs/{ntag}.daemon", daemon
            have = Path(UNIFIED, "cgroup.controllers").read_text().split()
            want = [x for x in unit.CONTROLLERS if x in have]
            assert want and set(want) <= set(controllers), (want, controllers)
            job, controllers, _daemon = runs["configured"]
            assert job["v2"].startswith(f"{conf_rel}/jrs/{ntag}/"), job
            assert job["pids"].startswith(f"{conf_rel}/jrs/{ntag}/"), job
            assert set(want) <= set(controllers), controllers
            job, _controllers, daemon = runs["none"]
            assert "/jrs/" + ntag + "/" not in job["v2"] and "/jrs/" + ntag + "/" not in job["pids"]
            r = run_jrs(pyz, "node", "-c", str(c.conf), f"--name={c.names()[0]}",
                        f"--state={base / 's'}", f"--execute={c.execute / 'x'}",
                        f"--job-uids={c.uid_ranges[0]}", "--cgroup=relative/x")
            assert r.returncode == 2 and "--cgroup=relative/x" in r.stderr, r.stderr
    finally:
        for mount in (UNIFIED, PIDS):
            _remove_tree(mount, Path(mount) / f"jrs-conf-{tag}")


def _child_cgroups(path: Path) -> list:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")
                  if p.is_dir()) if path.exists() else []


def test_a_node_restarted_from_inside_its_daemon_leaf_keeps_its_layout(pyz):
    """#13: a root node moves itself into `<base>/jrs/<node>.daemon` at start. Started
    again from inside that leaf (a re-exec, a supervisor whose restart inherits the
    old daemon's cgroup), it must take `<base>` as its base again, not nest a
    `<node>.daemon/jrs/<node>` below its own leaf: its jobs' cgroups go in the same
    `<base>/jrs/<node>/` with the controllers handed down, the daemon stays in its
    leaf, and every job cgroup is gone again once the node stopped."""
    tag = secrets.token_hex(4)
    have = Path(UNIFIED, "cgroup.controllers").read_text().split()
    want = [x for x in unit.CONTROLLERS if x in have]
    with _own_cgroups_cluster(pyz, f"jrs-re-{tag}") as (sc, own):
        c, work = sc.c, sc.work
        c.start_master()
        runs = []
        for _ in range(3):  # the first start, then twice from inside the leaf
            c.start_node(0)
            c.wait_up(1)
            code, _out, err = c.run_submit("c.condor", cwd=work)
            assert code == 0, err + c.logs()
            text, _, controllers = (work / "out").read_text().partition("---\n")
            job = _cgroup_of(text)
            daemon = _cgroup_of(Path(f"/proc/{c.nodes[0].pid}/cgroup").read_text())
            runs.append((job, controllers.split(), daemon))
            c.nodes[0].terminate()
            assert c.nodes[0].wait(10) == 0, c.logs()
            (leaf,) = [p for p in (own["v2"] / "jrs").iterdir() if p.name.endswith(".daemon")]
            ntag = leaf.name[:-len(".daemon")]
            # every job cgroup went with its executor; the daemon's leaf holds no cgroup
            for d in own.values():
                mine = d / "jrs" / ntag
                wait_for(lambda mine=mine: _child_cgroups(mine) == [], 10)
            assert _child_cgroups(leaf) == [], _child_cgroups(leaf)
            c.where = {"v2": str(leaf), "pids": str(own["pids"])}  # restart from inside
        for job, controllers, daemon in runs:
            assert job["v2"].startswith(f"/{own['v2'].name}/jrs/{ntag}/"), runs
            assert job["pids"].startswith(f"/{own['pids'].name}/jrs/{ntag}/"), runs
            assert daemon["v2"] == f"/{own['v2'].name}/jrs/{ntag}.daemon", runs
            assert want and set(want) <= set(controllers), runs
        # nothing beside the node's two (its subtree may be gone: it was empty)
        assert {p.name for p in (own["v2"] / "jrs").iterdir() if p.is_dir()} <= \
            {ntag, f"{ntag}.daemon"}


class _PureV2(Cluster):
    """A node on a pure cgroup v2 layout: in a private mount namespace (`unshare -m`,
    propagation private: the host's mounts are untouched) the unified hierarchy is
    mounted over /sys/fs/cgroup, hiding the v1 ones, and the node is exec'ed inside
    `where` there, as on a host booted with cgroup v2 alone."""

    where = ""

    def _spawn(self, host: int, *args: str, log: str) -> subprocess.Popen:
        if args[0] != "node":
            return super()._spawn(host, *args, log=log)
        out = open(self.base / log, "ab")
        script = (f"mount -t cgroup2 cgroup2 {unit.CGROUP} && "
                  f"echo $$ > {unit.CGROUP}/{self.where}/cgroup.procs && exec \"$@\"")
        return subprocess.Popen(["unshare", "-m", "--propagation", "private", "/bin/sh", "-c",
                                 script, "sh", sys.executable, str(self.pyz), *args, "-c",
                                 str(self.conf), "-v"],
                                stdout=out, stderr=out, env=self.env, start_new_session=True)


def test_a_node_on_a_pure_v2_layout_uses_the_unified_hierarchy_alone(pyz):
    """#13: only the hybrid layout (v1 controllers, the unified hierarchy beside them)
    ran before. Here the node sees what a pure v2 host shows: cgroup2 at
    /sys/fs/cgroup, no v1 pids hierarchy. Its jobs get cgroups below its own in the
    unified hierarchy, with every controller the hierarchy has handed down (here the
    kernel binds pids and memory to this machine's v1 hierarchies, so hugetlb
    alone), their pids bounded by RLIMIT_NPROC instead of a pids cgroup the layout
    does not give, and nothing of them is left once the node stopped. (With pids and
    memory on the unified hierarchy, in a kernel of its own: test_cgroup_v2_vm.py.)"""
    tag = secrets.token_hex(4)
    own = Path(UNIFIED) / f"jrs-v2-{tag}"
    own.mkdir()
    have = Path(UNIFIED, "cgroup.controllers").read_text().split()
    try:
        with scratch_cluster(pyz, "jrs-cg-", start=False, work_mode=0o777,
                             make=lambda base: _PureV2(pyz, base, slots=[1])) as sc:
            c, work = sc.c, sc.work
            c.where = own.name
            (work / "c.condor").write_text(
                "executable = /bin/sh\narguments = \"-c 'cat /proc/self/cgroup; echo ---; "
                f"cat {unit.CGROUP}$(sed -n s/^0:://p /proc/self/cgroup)/cgroup.controllers; "
                "echo ---; grep processes /proc/self/limits'\"\n"
                "output = out\nerror = err\nqueue\n")
            c.start()
            code, _out, err = c.run_submit("c.condor", cwd=work)
            assert code == 0, err + c.logs()
            text, controllers, nproc = (work / "out").read_text().split("---\n")
            job = _cgroup_of(text)
            daemon = _cgroup_of(Path(f"/proc/{c.nodes[0].pid}/cgroup").read_text())
            (leaf,) = [p for p in (own / "jrs").iterdir() if p.name.endswith(".daemon")]
            ntag = leaf.name[:-len(".daemon")]
            assert job["v2"].startswith(f"/{own.name}/jrs/{ntag}/"), (job, c.logs())
            assert daemon["v2"] == f"/{own.name}/jrs/{ntag}.daemon", daemon
            assert "/jrs/" not in job.get("pids", "/"), job  # v1's pids: not seen, not used
            assert have and set(controllers.split()) == set(have), (have, controllers)
            assert "pids" not in have  # (else pids.max bounds the job, not RLIMIT_NPROC)
            assert nproc.split()[2:4] == [str(unit.DEFAULT_PIDS)] * 2, nproc  # Max processes
            c.nodes[0].terminate()
            assert c.nodes[0].wait(10) == 0, c.logs()
            wait_for(lambda: _child_cgroups(own / "jrs" / ntag) == [], 10)
            assert _child_cgroups(leaf) == []
    finally:
        _remove_tree(UNIFIED, own)
