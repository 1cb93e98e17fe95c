"""Where a root node puts its jobs' cgroups: below its own cgroup (systemd's delegated
service cgroup, a container's), below a configured one, or nowhere (`--cgroup=none`),
with the controllers of the unified hierarchy enabled down to the jobs so limits can
go on them later. Real node processes started inside cgroups this test makes (in the
unified hierarchy and in v1's pids one: what this machine has), real jobs reporting
their /proc/self/cgroup.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jrs.node import unit

from .cluster import Cluster
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


def test_job_cgroups_go_below_the_nodes_own_or_the_configured_one(pyz):
    tag = secrets.token_hex(4)
    own = {"v2": Path(UNIFIED) / f"jrs-own-{tag}", "pids": Path(PIDS) / f"jrs-own-{tag}"}
    conf_rel = f"/jrs-conf-{tag}/sub"
    base = Path(tempfile.mkdtemp(prefix="jrs-cg-", dir="/tmp"))
    os.chmod(base, 0o755)
    for d in own.values():
        d.mkdir()
    c = _Started(pyz, base, slots=[1])
    c.where = {k: str(v) for k, v in own.items()}
    work = base / "w"
    work.mkdir()
    work.chmod(0o777)
    (work / "c.condor").write_text(
        "executable = /bin/sh\narguments = \"-c 'cat /proc/self/cgroup; echo ---; "
        f"cat {UNIFIED}$(sed -n s/^0:://p /proc/self/cgroup)/cgroup.controllers'\"\n"
        "output = out\nqueue\n")
    try:
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
        c.stop()
        for mount in (UNIFIED, PIDS):
            for name in (f"jrs-own-{tag}", f"jrs-conf-{tag}"):
                _remove_tree(mount, Path(mount) / name)
        shutil.rmtree(base, ignore_errors=True)
