"""Cluster benchmarks, each against a baseline measured in the same run.

    python3 bench/cluster.py [--jobs 2000]

1. throughput: N x /bin/true on a master and two nodes with 2 slots each (loopback),
   against `seq N | xargs -P 2 -n 1 /bin/true` (the local floor) and, when the
   `hyperqueue` package is installed, HyperQueue's LocalCluster with one 2-core worker;
2. latency: one `echo` job from `jrs submit` to its exit, against `python3 -c pass`;
3. utilization: 100 x `sleep 1` on 4 slots (ideal 25 s).
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--skip-utilization", action="store_true")
    args = ap.parse_args()
    pyz = ROOT / "dist" / "jrs.pyz"
    n = args.jobs
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        c = Cluster(pyz, base, slots=[2, 2]).start()
        try:
            (base / "t.condor").write_text(f"executable = /bin/true\nqueue {n}\n")
            floor = timed(f"seq {n} | xargs -P 2 -n 1 /bin/true", shell=True)
            code, _, err = c.run_submit("t.condor", cwd=base, timeout=600)
            assert code == 0, err
            t = time.perf_counter()
            code, _, err = c.run_submit("t.condor", cwd=base, timeout=600)
            ours = time.perf_counter() - t
            assert code == 0, err
            print(f"throughput: {n} x /bin/true: jrs {n / ours:.0f} jobs/s, xargs -P 2 "
                  f"{n / floor:.0f} jobs/s -> {floor / ours:.2f} of the floor (target >= 0.25)")
            hq = hyperqueue_rate(n, base / "hq")
            if hq is None:
                print("hyperqueue: not installed (pip install hyperqueue) - no comparison")
            else:
                print(f"hyperqueue: {hq[0]:.0f} jobs/s end to end (its client polls each "
                      f"second), {hq[1]:.0f} jobs/s steady -> jrs is {n / ours / hq[0]:.2f} "
                      f"and {n / ours / hq[1]:.2f} of them (target >= 1)")
            (base / "e.condor").write_text("executable = /bin/echo\narguments = hi\n"
                                           "output = e.out\nqueue\n")
            bare = min(timed([sys.executable, "-c", "pass"]) for _ in range(5))
            lat = min(timed([sys.executable, str(pyz), "submit", "-c", str(c.conf),
                             "--no-progress", "e.condor"], cwd=base, capture_output=True)
                      for _ in range(5))
            print(f"latency: one echo job {lat * 1000:.0f} ms, python3 -c pass "
                  f"{bare * 1000:.0f} ms -> +{(lat - bare) * 1000:.0f} ms (target <= 150)")
        finally:
            c.stop()
        if not args.skip_utilization:
            c = Cluster(pyz, base / "u", slots=[2, 2]) if (base / "u").mkdir() is None else None
            c.start()
            try:
                (base / "u" / "s.condor").write_text("executable = /bin/sleep\narguments = 1\n"
                                                     "queue 100\n")
                t = time.perf_counter()
                code, _, err = c.run_submit("s.condor", cwd=base / "u", timeout=600)
                took = time.perf_counter() - t
                print(f"utilization: 100 x sleep 1 on 4 slots: {took:.1f} s (ideal 25.0, "
                      f"target <= 26)")
            finally:
                c.stop()


if __name__ == "__main__":
    main()
