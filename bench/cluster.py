"""Cluster benchmarks, each against a baseline measured in the same run.

    python3 bench/cluster.py [--jobs 2000] [--baseline OLD.pyz [--rounds N]]

1. throughput: N x /bin/true on a master and two nodes with 2 slots each (loopback),
   against `seq N | xargs -P 2 -n 1 /bin/true` (the local floor) and, when the
   `hyperqueue` package is installed, HyperQueue's LocalCluster with one 2-core worker;
2. latency: one `echo` job from `jrs submit` to its exit, against `python3 -c pass`;
3. utilization: 100 x `sleep 1` on 4 slots (ideal 25 s).

With --baseline OLD.pyz, 1 and 2 also run with the older build (its root nodes in
its production configuration: jobs as nobody), alternating with this build, and the
ratios are printed (this build / baseline); 3 runs with this build only.
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

from tests.cluster import Cluster  # noqa: E402


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


def throughput_and_latency(pyz: Path, base: Path, n: int, samples: int,
                           legacy: str = "") -> dict:
    """One cluster of `pyz` (master + 2 nodes x 2 slots, root nodes in the build's
    production configuration; `legacy` names an old build's job mode, see
    tests/cluster.py): a warm-up and a timed run of n x /bin/true, then the best of
    `samples` one-echo-job latencies. Returns jobs/s and seconds; the cluster is gone."""
    base.mkdir()
    os.chmod(base, 0o755)  # an old build keeps sandboxes under --state: nobody passes here
    c = Cluster(pyz, base, slots=[2, 2], legacy=legacy).start()
    try:
        (base / "t.condor").write_text(f"executable = /bin/true\nqueue {n}\n")
        code, _, err = c.run_submit("t.condor", cwd=base, timeout=600)
        assert code == 0, err
        t = time.perf_counter()
        code, _, err = c.run_submit("t.condor", cwd=base, timeout=600)
        took = time.perf_counter() - t
        assert code == 0, err
        (base / "e.condor").write_text("executable = /bin/echo\narguments = hi\n"
                                       "output = e.out\nqueue\n")
        lat = min(timed([sys.executable, str(pyz), "submit", "-c", str(c.conf),
                         "--no-progress", "e.condor"], cwd=base, capture_output=True)
                  for _ in range(samples))
        assert (base / "e.out").read_text() == "hi\n", "the echo job's output is missing"
        return {"rate": n / took, "latency": lat}
    finally:
        c.stop()


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
    args = ap.parse_args()
    pyz = Path(os.environ.get("JRS_PYZ") or ROOT / "dist" / "jrs.pyz")
    n = args.jobs
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        os.chmod(base, 0o755)
        floor = timed(f"seq {n} | xargs -P 2 -n 1 /bin/true", shell=True)
        bare = min(timed([sys.executable, "-c", "pass"]) for _ in range(5))
        ratios: dict = {"jobs/s": [], "latency": []}
        rounds = args.rounds if args.baseline else 1
        for r in range(rounds):  # A/B interleaved: the machine's load hits both alike
            print(f"round {r + 1}: machine load average "
                  f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
            new = throughput_and_latency(pyz, base / f"new{r}", n, args.latency_samples)
            print(f"throughput: {n} x /bin/true: jrs {new['rate']:.0f} jobs/s, xargs -P 2 "
                  f"{n / floor:.0f} jobs/s -> {new['rate'] * floor / n:.2f} of the floor "
                  "(target >= 0.25)")
            print(f"latency: one echo job {new['latency'] * 1000:.0f} ms, python3 -c pass "
                  f"{bare * 1000:.0f} ms -> +{(new['latency'] - bare) * 1000:.0f} ms "
                  "(target <= 150)")
            if not args.baseline:
                continue
            # the old build's root node ran a root submitter's jobs as nobody (fork,
            # switch, exec): its production; --allow-root-jobs is not used
            old = throughput_and_latency(Path(args.baseline), base / f"old{r}", n,
                                         args.latency_samples, legacy="nobody")
            ratios["jobs/s"].append(new["rate"] / old["rate"])
            ratios["latency"].append(new["latency"] / old["latency"])
            print(f"[baseline, jobs as nobody] throughput {old['rate']:.0f} jobs/s, latency "
                  f"{old['latency'] * 1000:.0f} ms -> this build / baseline: jobs/s "
                  f"{ratios['jobs/s'][-1]:.2f}, latency {ratios['latency'][-1]:.2f} "
                  "(within 10 %: jobs/s >= 0.90, latency <= 1.10)")
        if args.baseline:
            print(f"over {rounds} rounds, this build / baseline: jobs/s "
                  f"{spread(ratios['jobs/s'])}; latency {spread(ratios['latency'])}; "
                  f"load average now {os.getloadavg()[0]:.1f}")
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
