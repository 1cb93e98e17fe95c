"""Cluster benchmarks, each against a baseline measured in the same run.

    python3 bench/cluster.py [--jobs 2000] [--baseline OLD.pyz [--rounds N]]
                             [--cpu-breakdown]

1. throughput: N x /bin/true on a master and two nodes with 2 slots each (loopback),
   against `seq N | xargs -P 2 -n 1 /bin/true` (the local floor) and, when the
   `hyperqueue` package is installed, HyperQueue's LocalCluster with one 2-core worker;
2. latency: one `echo` job from `jrs submit` to its exit, against `python3 -c pass`;
3. utilization: 100 x `sleep 1` on 4 slots (ideal 25 s).

With --baseline OLD.pyz, 1 and 2 also run with the older build (its root nodes in
its production configuration: jobs as nobody), alternating with this build, and the
ratios are printed (this build / baseline); 3 runs with this build only.

The timed throughput run starts after a warm-up run of the same jobs and, for a
build with per-job uids, after each node's start-up scan for world-writable
directories (a child of ~1 s of CPU at node start and every 30 minutes, no part
of any job's cost). `--cpu-breakdown` (root) prints the timed run's CPU per job of
each process kind (see Roles) and the machine's rest; each run also says how
often the temporary directories changed meanwhile (TmpWatch).
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

sys.path.insert(0, str(ROOT / "bench"))
from node import cg_usage  # noqa: E402  (the same cgroup reading as bench/node.py)

HZ = os.sysconf("SC_CLK_TCK")
UNIFIED = next((p for p in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
                if os.path.exists(os.path.join(p, "cgroup.procs"))), None)
KINDS = ("submitter", "master", "node daemons", "launchers+executors", "jobs' cgroups")


def machine() -> tuple:
    """(busy CPU seconds of the whole machine, processes forked since boot)."""
    with open("/proc/stat") as f:
        lines = f.read().splitlines()
    vals = [int(v) for v in lines[0].split()[1:]]
    forks = next(int(x.split()[1]) for x in lines if x.startswith("processes "))
    return (sum(vals) - vals[3] - vals[4]) / HZ, forks


def children(pid: int) -> list:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


class Roles:
    """CPU per process kind through cgroups of the unified hierarchy (no controller is
    enabled in them, so the scheduler treats the processes as before; cpu.stat counts
    every descendant, ended ones too). The master and each node daemon are moved into
    their kind's cgroup after they started, a node's launcher (so every executor it
    forks, and the clean-up children those fork) into "launchers+executors", each
    submit into "submitter" before it execs. A build with per-job cgroups moves each
    job into them (below `<its own cgroup>/jrs/<node tag>`): "jobs' cgroups"; an older
    build's jobs stay in "launchers+executors"."""

    def __init__(self, label: str) -> None:
        if UNIFIED is None or os.geteuid() != 0:
            raise SystemExit("--cpu-breakdown: needs root and a unified cgroup hierarchy")
        self.top = Path(UNIFIED) / f"jrs-bench-{os.getpid()}-{label}"
        self.dirs = {k: self.top / k.replace(" ", "-").replace("'", "").replace("+", "-")
                     for k in KINDS[:4]}
        for d in (self.top, *self.dirs.values()):
            d.mkdir(exist_ok=True)
        self.jobs: list = []

    def adopt(self, c: Cluster) -> None:
        from jrs.node.confine import _tag

        (self.dirs["master"] / "cgroup.procs").write_text(str(c.master.pid))
        for i, node in enumerate(c.nodes):
            (self.dirs["node daemons"] / "cgroup.procs").write_text(str(node.pid))
            for pid in children(node.pid):  # the launcher (started with the daemon)
                (self.dirs["launchers+executors"] / "cgroup.procs").write_text(str(pid))
            self.jobs.append(Path(UNIFIED) / "jrs" / _tag(str(c.execute / f"node{i}")))

    def preexec(self) -> None:
        """In a submit child before its exec: join the submitter kind."""
        with open(self.dirs["submitter"] / "cgroup.procs", "w") as f:
            f.write(str(os.getpid()))

    def usage(self) -> dict:
        out = {k: cg_usage(d) for k, d in self.dirs.items()}
        out["jobs' cgroups"] = sum(cg_usage(j) for j in self.jobs)
        out["machine"], out["forks"] = machine()
        return out

    def close(self) -> None:
        root = Path(UNIFIED) / "cgroup.procs"
        for d in (*self.dirs.values(), self.top):
            try:
                for pid in (d / "cgroup.procs").read_text().split():
                    root.write_text(pid)
                d.rmdir()
            except OSError:
                pass


def timed(cmd, **kw) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)
    return time.perf_counter() - t


def hyperqueue_rate(n: int, where: Path) -> tuple | None:
    """N x /bin/true through HyperQueue (server and one 2-core worker), or None if absent.

    Returns (end to end, steady): jobs/s from submit to its client seeing the end
    (the client polls once a second, so this is quantized), and jobs/s between the
    first and last progress reports before the end (HyperQueue's real pace).
    """
    try:
        from hyperqueue import Job, LocalCluster
        from hyperqueue.cluster import WorkerConfig
    except ImportError:
        return None
    with LocalCluster(str(where)) as cluster:
        cluster.start_worker(WorkerConfig(cores=2))
        client = cluster.client()
        job = Job()
        for _ in range(n):
            job.program(["/bin/true"], stdout=None, stderr=None)
        stamps: list = []
        t = time.perf_counter()
        submitted = client.submit(job)
        client.connection.wait_for_jobs(
            [submitted.id], lambda jobs: stamps.append(
                (time.perf_counter(), sum(s["finished"] for s in jobs.values()))))
        end_to_end = n / (time.perf_counter() - t)
        mid = [(ts, done) for ts, done in stamps if 0 < done < n]
        steady = ((mid[-1][1] - mid[0][1]) / (mid[-1][0] - mid[0][0])
                  if len(mid) >= 2 else end_to_end)
        return end_to_end, steady


def wait_scanned(c: Cluster, timeout: float = 120) -> None:
    """Until every node logged the end of its start-up scan for world-writable
    directories (a root node with per-job uids: a child of ~1 s of CPU, once at start
    and every 30 minutes, no part of any job's cost)."""
    deadline = time.monotonic() + timeout
    for i in range(len(c.nodes)):
        while "world-writable directories:" not in (c.base / f"node{i}.log").read_text():
            if time.monotonic() > deadline:
                raise SystemExit(f"node{i}: its start-up scan did not end in {timeout} s")
            time.sleep(0.2)


class TmpWatch:
    """How often the temporary directories' mtimes changed during a run (polled every
    5 ms in a thread): a root node with per-job uids pays a clean-up child for a job
    that ran while one changed (unit.Unit.needs_uid_visit), so a busy /tmp (other
    users, other test suites on a shared machine) costs this build CPU the old one
    never spent. A figure to read the others with."""

    def __init__(self) -> None:
        import threading

        self.changes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    @staticmethod
    def _mtimes() -> list:
        out = []
        for d in ("/tmp", "/var/tmp", "/dev/shm"):
            try:
                out.append(os.stat(d).st_mtime_ns)
            except OSError:
                out.append(0)
        return out

    def _poll(self) -> None:
        last = self._mtimes()
        while not self._stop.wait(0.005):
            now = self._mtimes()
            self.changes += sum(a != b for a, b in zip(last, now))
            last = now

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.changes


def run_submit(c: Cluster, base: Path, roles) -> None:
    cmd = [sys.executable, str(c.pyz), "submit", "-c", str(c.conf), "--no-progress",
           "t.condor"]
    p = subprocess.run(cmd, cwd=base, env=c.env, capture_output=True, text=True, timeout=600,
                       preexec_fn=roles.preexec if roles else None)
    assert p.returncode == 0, p.stderr


def throughput_and_latency(pyz: Path, base: Path, n: int, samples: int,
                           legacy: str = "", breakdown: bool = False, user: str = "") -> dict:
    """One cluster of `pyz` (master + 2 nodes x 2 slots, root nodes in the build's
    production configuration; `legacy` names an old build's job mode, see
    tests/cluster.py): a warm-up and a timed run of n x /bin/true, then the best of
    `samples` one-echo-job latencies. Returns jobs/s and seconds (and with `breakdown`
    the CPU per job of each process kind, see Roles); the cluster is gone. `user`: the
    nodes run as that account (a non-root node, both builds alike)."""
    base.mkdir()
    os.chmod(base, 0o755)  # an old build keeps sandboxes under --state: nobody passes here
    if user:  # non-root nodes: every job runs as the node's account, no cgroups
        c = NonRootCluster(pyz, base, user, slots=[2, 2]).start()
    else:
        c = Cluster(pyz, base, slots=[2, 2], legacy=legacy).start()
    roles = Roles(base.name) if breakdown else None
    cpu: dict = {}
    try:
        if roles:
            roles.adopt(c)
        (base / "t.condor").write_text(f"executable = /bin/true\nqueue {n}\n")
        run_submit(c, base, roles)
        if not legacy and not user:
            wait_scanned(c)
        u0 = roles.usage() if roles else {}
        watch = TmpWatch()
        t = time.perf_counter()
        run_submit(c, base, roles)
        took = time.perf_counter() - t
        tmp_changes = watch.stop()
        if roles:
            u1 = roles.usage()
            cpu = {k: (u1[k] - u0[k]) / n * (1 if k == "forks" else 1000) for k in u1}
        (base / "e.condor").write_text("executable = /bin/echo\narguments = hi\n"
                                       "output = e.out\nqueue\n")
        lat = min(timed([sys.executable, str(pyz), "submit", "-c", str(c.conf),
                         "--no-progress", "e.condor"], cwd=base, capture_output=True)
                  for _ in range(samples))
        assert (base / "e.out").read_text() == "hi\n", "the echo job's output is missing"
        return {"rate": n / took, "latency": lat, "cpu": cpu, "tmp": tmp_changes}
    finally:
        c.stop()
        if roles:
            roles.close()


def show_cpu(label: str, cpu: dict) -> None:
    """One line: CPU ms per job of each kind, their sum, and the rest of the machine."""
    if not cpu:
        return
    ours = sum(cpu[k] for k in KINDS)
    print(f"  [{label}] CPU ms per job: " + ", ".join(f"{k} {cpu[k]:.2f}" for k in KINDS) +
          f"; sum {ours:.2f}; rest of the machine {cpu['machine'] - ours:.2f}; "
          f"forks per job (machine-wide) {cpu['forks']:.3f}")


def spread(values: list) -> str:
    return (f"{min(values):.2f}-{max(values):.2f} (median "
            f"{sorted(values)[len(values) // 2]:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--latency-samples", type=int, default=5,
                    help="one-echo-job latency: the best of this many")
    ap.add_argument("--skip-utilization", action="store_true")
    ap.add_argument("--baseline", metavar="PYZ",
                    help="also run the throughput and latency measurements with this older "
                         "jrs.pyz (its root nodes as of its day: jobs as nobody), alternating "
                         "with this build, and print the ratios")
    ap.add_argument("--rounds", type=int, default=1,
                    help="with --baseline: alternate the two builds this many times")
    ap.add_argument("--baseline-is-current", action="store_true",
                    help="the baseline is a build with per-job uids (e.g. main before a "
                         "change): its nodes take this build's flags")
    ap.add_argument("--as-user", metavar="NAME", default="",
                    help="run the nodes of both builds as this account (non-root nodes: "
                         "jobs as that account, no per-job uids, no cgroups)")
    ap.add_argument("--cpu-breakdown", action="store_true",
                    help="the timed throughput run's CPU per job of each process kind "
                         "(submitter, master, node daemons, launchers and executors, the "
                         "jobs' cgroups), through cgroups of the unified hierarchy; root")
    args = ap.parse_args()
    pyz = Path(os.environ.get("JRS_PYZ") or ROOT / "dist" / "jrs.pyz")
    n = args.jobs
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        os.chmod(base, 0o755)
        floor = timed(f"seq {n} | xargs -P 2 -n 1 /bin/true", shell=True)
        bare = min(timed([sys.executable, "-c", "pass"]) for _ in range(5))
        ratios: dict = {"jobs/s": [], "latency": []}
        breakdowns: dict = {}
        rounds = args.rounds if args.baseline else 1
        for r in range(rounds):  # A/B interleaved: the machine's load hits both alike
            print(f"round {r + 1}: machine load average "
                  f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
            new = throughput_and_latency(pyz, base / f"new{r}", n, args.latency_samples,
                                         breakdown=args.cpu_breakdown, user=args.as_user)
            print(f"throughput: {n} x /bin/true: jrs {new['rate']:.0f} jobs/s, xargs -P 2 "
                  f"{n / floor:.0f} jobs/s -> {new['rate'] * floor / n:.2f} of the floor "
                  "(target >= 0.25)")
            print(f"latency: one echo job {new['latency'] * 1000:.0f} ms, python3 -c pass "
                  f"{bare * 1000:.0f} ms -> +{(new['latency'] - bare) * 1000:.0f} ms "
                  "(target <= 150)")
            print(f"  the temporary directories changed {new['tmp']} times during the run")
            show_cpu("this build", new["cpu"])
            breakdowns.setdefault("this build", []).append(new["cpu"])
            if not args.baseline:
                continue
            # the old build's root node ran a root submitter's jobs as nobody (fork,
            # switch, exec): its production; --allow-root-jobs is not used
            old = throughput_and_latency(Path(args.baseline), base / f"old{r}", n,
                                         args.latency_samples,
                                         legacy="" if args.baseline_is_current else "nobody",
                                         breakdown=args.cpu_breakdown, user=args.as_user)
            print(f"  the temporary directories changed {old['tmp']} times during the run")
            show_cpu("baseline", old["cpu"])
            breakdowns.setdefault("baseline", []).append(old["cpu"])
            ratios["jobs/s"].append(new["rate"] / old["rate"])
            ratios["latency"].append(new["latency"] / old["latency"])
            mode = "" if args.baseline_is_current or args.as_user else ", jobs as nobody"
            print(f"[baseline{mode}] throughput {old['rate']:.0f} jobs/s, latency "
                  f"{old['latency'] * 1000:.0f} ms -> this build / baseline: jobs/s "
                  f"{ratios['jobs/s'][-1]:.2f}, latency {ratios['latency'][-1]:.2f} "
                  "(within 10 %: jobs/s >= 0.90, latency <= 1.10)")
        if args.baseline:
            print(f"over {rounds} rounds, this build / baseline: jobs/s "
                  f"{spread(ratios['jobs/s'])}; latency {spread(ratios['latency'])}; "
                  f"load average now {os.getloadavg()[0]:.1f}")
        for label, runs in breakdowns.items():
            if runs and runs[0]:
                show_cpu(f"{label}, median of {len(runs)}",
                         {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in runs[0]})
        hq = hyperqueue_rate(n, base / "hq")
        if hq is None:
            print("hyperqueue: not installed (pip install hyperqueue) - no comparison")
        else:
            print(f"hyperqueue: {hq[0]:.0f} jobs/s end to end (its client polls each "
                  f"second), {hq[1]:.0f} jobs/s steady -> jrs is {new['rate'] / hq[0]:.2f} "
                  f"and {new['rate'] / hq[1]:.2f} of them (target >= 1)")
        if not args.skip_utilization:
            # this build only: 100 x sleep 1 is ~25 s of sleeping per build, and an old
            # build's slot scheduling is not what issues 12 and 13 changed
            (base / "u").mkdir()
            c = Cluster(pyz, base / "u", slots=[2, 2]).start()
            try:
                (base / "u" / "s.condor").write_text("executable = /bin/sleep\narguments = 1\n"
                                                     "queue 100\n")
                t = time.perf_counter()
                code, _, err = c.run_submit("s.condor", cwd=base / "u", timeout=600)
                took = time.perf_counter() - t
                assert code == 0, err
                print(f"utilization: 100 x sleep 1 on 4 slots: {took:.1f} s (ideal 25.0, "
                      f"target <= 26)")
            finally:
                c.stop()


if __name__ == "__main__":
    main()
