"""The compute node's cost per job, against `subprocess` in the same run.

    python3 bench/node.py [--jobs 1000]

A master and one node with 2 slots on loopback run N x /bin/true from one
submitter. Reported:
- jobs/s on the node (target >= 300);
- the node's overhead per job (target <= 3 ms): the CPU the node spends per job
  (the whole machine's busy time less the submitter's and the master's: the
  node daemon, launcher, executors, the jobs and the kernel work they cause),
  over the whole machine's busy time per job for `subprocess.run(/bin/true)`
  from Python. CPU, not wall time, because the submitter and the master share
  the same two cores here, and wall time per slot would charge their work to
  the node (that figure is printed too);
- CPU per job of each of our processes (the rest of the machine's CPU is the
  executors, the jobs and the kernel);
- the node daemon's peak RSS (target <= 40 MB) and its CPU over 10 idle seconds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster import Cluster, NonRootCluster  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """utime + stime of a live process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine so far."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    return (sum(vals) - vals[3] - vals[4]) / HZ


def vm_hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def unit_comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def children(pid: int) -> list:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


UNIFIED = next((p for p in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
                if os.path.exists(os.path.join(p, "cgroup.procs"))), None)


def cg_usage(path: Path) -> float:
    """CPU seconds used so far by a v2 cgroup and its descendants (removed ones too)."""
    try:
        for line in (path / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return 0.0


def node_cgroups(c: Cluster, label: str) -> list:
    """Put the node daemon and its launcher (so every executor, and an old build's
    jobs) in a cgroup of their own; return it and the new build's job cgroup root:
    their CPU is the node's own, whatever else loads the machine."""
    if UNIFIED is None or os.geteuid() != 0:
        return []
    own = Path(UNIFIED) / f"jrs-bench-{os.getpid()}-{label.replace(' ', '-')}"
    own.mkdir(exist_ok=True)
    node = c.nodes[0].pid
    for pid in [node, *children(node)]:
        (own / "cgroup.procs").write_text(str(pid))
    from jrs.node.confine import _tag

    return [own, Path(UNIFIED) / "jrs" / _tag(str(c.execute / "node0"))]


def wait_scanned(log: Path, timeout: float = 120) -> None:
    """Until the node logged the end of its scan for world-writable directories."""
    deadline = time.monotonic() + timeout
    while "world-writable directories:" not in log.read_text():
        if time.monotonic() > deadline:
            raise SystemExit(f"{log}: the node's start-up scan did not end in {timeout} s")
        time.sleep(0.2)


def run_cluster(pyz: Path, n: int, legacy: str, baseline: float, baseline_cpu: float,
                label: str, idle: bool, user: str = "") -> dict:
    """One node run of n x /bin/true; prints its figures, returns the main ones.
    `user`: run the node as that account (a non-root node)."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        os.chmod(base, 0o755)  # an old build keeps sandboxes under --state: jobs pass here
        if user:
            c = NonRootCluster(pyz, base, user, slots=[2]).start()
        else:
            c = Cluster(pyz, base, slots=[2], legacy=legacy).start()
        try:
            if not user and not legacy:  # a root node's start-up scan (its child, ~1 s of
                wait_scanned(base / "node0.log")  # CPU) is no part of any job's cost
            (base / "t.condor").write_text(f"executable = /bin/true\nqueue {n}\n")
            node = c.nodes[0].pid
            groups = node_cgroups(c, label)
            g0 = sum(cg_usage(g) for g in groups)
            procs = {"node daemon": node, "master": c.master.pid}
            procs.update((f"launcher {p}", p) for p in children(node))
            before = {k: proc_cpu(p) for k, p in procs.items()}
            m0 = machine_cpu()
            s0 = os.times()
            t = time.perf_counter()
            code, _, err = c.run_submit("t.condor", cwd=base, timeout=600)
            wall = time.perf_counter() - t
            s1 = os.times()
            assert code == 0, err
            m1 = machine_cpu()
            own = (sum(cg_usage(g) for g in groups) - g0) / n if groups else None
            used = {k: proc_cpu(p) - before[k] for k, p in procs.items()}
            per_slot = 2 * wall / n
            submit = (s1.children_user + s1.children_system
                      - s0.children_user - s0.children_system)
            node_cpu = (m1 - m0 - submit - used["master"]) / n
            print(f"[{label}] node: {n} x /bin/true on 2 slots: {n / wall:.0f} jobs/s "
                  "(target >= 300)")
            extra = (node_cpu - baseline_cpu) * 1000
            print(f"[{label}] node CPU per job {node_cpu * 1000:.2f} ms, subprocess.run(/bin/true)"
                  f" {baseline_cpu * 1000:.2f} ms -> overhead +{extra:.2f} ms (target <= 3)")
            print(f"[{label}] wall per job per slot {per_slot * 1000:.2f} ms (submitter and "
                  f"master included), subprocess.run(/bin/true) {baseline * 1000:.2f} ms -> "
                  f"+{(per_slot - baseline) * 1000:.2f} ms")
            print(f"[{label}] CPU per job: machine {(m1 - m0) / n * 1000:.2f} ms; submit "
                  f"{submit / n * 1000:.2f} ms; " +
                  "; ".join(f"{k} {v / n * 1000:.2f} ms" for k, v in used.items()))
            if own is not None:
                print(f"[{label}] node's own CPU per job (its cgroups: daemon, launcher, "
                      f"executors, jobs) {own * 1000:.2f} ms")
            print(f"[{label}] node daemon peak RSS {vm_hwm_mb(node):.1f} MB (target <= 40)")
            if idle:
                time.sleep(2)
                a = proc_cpu(node)
                time.sleep(10)
                print(f"[{label}] node daemon idle: {(proc_cpu(node) - a) * 1000:.0f} ms CPU "
                      "in 10 s")
            if groups:
                alive = [p for p in (groups[0] / "cgroup.procs").read_text().split()
                         if unit_comm(p) == "jrs-executor"]
                print(f"[{label}] executors alive after the run: {len(alive)}")
            return {"rate": n / wall, "node_cpu": node_cpu, "own": own}
        finally:
            c.stop()
            if groups:
                try:
                    for pid in (groups[0] / "cgroup.procs").read_text().split():
                        (Path(UNIFIED) / "cgroup.procs").write_text(pid)
                    groups[0].rmdir()
                except OSError:
                    pass


_STEPS = r"""
import os, sys, time, resource, shutil
sys.path.insert(0, sys.argv[1])
from jrs.node import executor, unit
n = int(sys.argv[2])
cg = unit.prepare_root("bench-%d" % os.getpid())
uid = 1879999000
spec = {"argv": ["/bin/true"], "env": {}, "uid": uid, "gid": uid, "per_job_uid": True,
        "cwd": "/", "stdin": None, "stdout": None, "stderr": None}
def cpu():
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
def measure(fn):
    w, c = time.perf_counter(), cpu()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - w) / n * 1000, (cpu() - c) / n * 1000
def as_root(i):  # the old root node's way for a nobody job: fork, switch, exec
    pid = os.fork()
    if pid == 0:
        os.setgroups([65534]); os.setgid(65534); os.setuid(65534)
        os.execve("/bin/true", ["/bin/true"], {})
    os.waitpid(pid, 0)
visits = []
def per_job(dirs, forced=False, clean=True):
    def go(i):
        u = unit.Unit(dirs, "j%d" % i, uid, uid, True, 4096)
        k = executor._Killer(-1, 1.0, u)
        t = time.time()
        u.create()
        os.waitpid(executor._spawn(spec, k), 0)
        if not clean:
            return
        u.kill_all()
        if not forced:
            visits.append(not (u.contained and not u.needs_uid_visit(t)))
        u.reap(since=0.0 if forced else t)
    return go
both = "cgroups " + "+".join(sorted(cg))
out = [("fork, switch to nobody, exec (the old way)", measure(as_root), ""),
       ("per-job uid: start only, " + both, measure(per_job(cg, clean=False)), ""),
       ("per-job uid, no cgroups (uid child always)", measure(per_job({})), "")]
visits.clear()
out.append(("per-job uid, " + both + " (fast path)", measure(per_job(cg)),
            " (uid child in %d of %d: a temp dir changed)" % (sum(visits), len(visits))))
out.append(("per-job uid, " + both + ", uid child forced", measure(per_job(cg, True)), ""))
def reused(i):  # a reused executor's jobs: one cgroup for all, checked empty before each
    u = unit.Unit(cg, "j%d" % i, uid, uid, True, 4096)
    u.reuse("xbench")
    k = executor._Killer(-1, 1.0, u)
    t = time.time()
    u.create()
    os.waitpid(executor._spawn(spec, k), 0)
    u.kill_all()
    u.reap(since=t)
out.append(("per-job uid, " + both + " reused per executor (fast path)", measure(reused), ""))
unit.remove_made()
for i in range(n):
    for path in cg.values():
        try:
            os.rmdir(os.path.join(path, "j%d" % i))
        except OSError:
            pass
for path in cg.values():
    os.rmdir(path)
for k, (w, c), note in out:
    print("  %-56s wall %6.2f ms, CPU %5.2f ms%s" % (k, w, c, note))
"""


def identity_steps(n: int) -> None:
    """The per-job cost of a root node's confinement steps, in a small interpreter
    like the launcher's: the job started under a per-job uid (with and without its
    cgroups) and the uid reaped afterwards (kill(-1) as the uid, the temporary
    directories, IPC, cgroup removal), against the old way of running a job as
    nobody (fork, switch, exec). One job at a time; /bin/true."""
    if os.geteuid() != 0:
        print("identity steps: not root (a non-root node runs jobs as itself)")
        return
    print(f"identity steps per job ({n} jobs each; this machine's load: "
          f"{os.getloadavg()[0]:.1f}):")
    subprocess.run([sys.executable, "-I", "-S", "-c", _STEPS, str(ROOT), str(n)], check=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--baseline", metavar="PYZ",
                    help="also run this older jrs.pyz (one from before per-job uids) and "
                         "print the ratios")
    ap.add_argument("--as-user", metavar="NAME", default="",
                    help="run the node as this account (a non-root node) instead of root")
    ap.add_argument("--no-steps", action="store_true", help="skip the identity steps")
    ap.add_argument("--baseline-is-current", action="store_true",
                    help="the baseline takes this build's node flags (a build with per-job "
                         "uids, e.g. main before a change): one baseline run, jobs as per-job "
                         "uids")
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate this build and the baseline this many times")
    opts = ap.parse_args()
    n = opts.jobs
    pyz = Path(os.environ.get("JRS_PYZ") or ROOT / "dist" / "jrs.pyz")
    m0 = machine_cpu()
    t = time.perf_counter()
    for _ in range(n):
        subprocess.run(["/bin/true"], check=True)
    baseline = (time.perf_counter() - t) / n
    baseline_cpu = (machine_cpu() - m0) / n
    if not opts.no_steps:
        identity_steps(min(n, 500))
    user = opts.as_user
    modes = (f"node as {user}",) if user else ("nobody", "root")
    if opts.baseline_is_current:
        modes = (f"node as {user}",) if user else ("per-job uids",)
    ratios: dict = {}
    for r in range(opts.rounds):  # A/B interleaved: the machine's load hits both alike
        print(f"round {r + 1}: machine load average {os.getloadavg()[0]:.1f}")
        new = run_cluster(pyz, n, "", baseline, baseline_cpu, "this build",
                          not opts.baseline and r == opts.rounds - 1, user)
        if not opts.baseline:
            continue
        # the old build's root node ran a root submitter's jobs as nobody (fork, switch,
        # exec: production) or, with --allow-root-jobs, as root (posix_spawn); a
        # non-root node runs them as itself
        for mode in modes:
            old = run_cluster(Path(opts.baseline), n,
                              "" if opts.baseline_is_current else mode, baseline, baseline_cpu,
                              f"baseline, jobs as {mode}", False, user)
            got = ratios.setdefault(mode, {"jobs/s": [], "node CPU": [], "node's own CPU": []})
            got["jobs/s"].append(new["rate"] / old["rate"])
            got["node CPU"].append(new["node_cpu"] / old["node_cpu"])
            if new["own"] and old["own"]:
                got["node's own CPU"].append(new["own"] / old["own"])
            print(f"this build / baseline (jobs as {mode}): jobs/s "
                  f"{new['rate'] / old['rate']:.2f}, node CPU per job "
                  f"{new['node_cpu'] / old['node_cpu']:.2f} "
                  f"({(new['node_cpu'] - old['node_cpu']) * 1000:+.2f} ms)" +
                  (f", node's own CPU per job {new['own'] / old['own']:.2f} "
                   f"({(new['own'] - old['own']) * 1000:+.2f} ms)"
                   if new["own"] and old["own"] else ""))
    for mode, got in ratios.items():
        print(f"over {opts.rounds} rounds, this build / baseline (jobs as {mode}): " +
              "; ".join(f"{k} {min(v):.2f}-{max(v):.2f} (median {sorted(v)[len(v) // 2]:.2f})"
                        for k, v in got.items() if v))

if __name__ == "__main__":
    main()
