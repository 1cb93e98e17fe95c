"""Cluster benchmarks, each against a baseline measured in the same run.

    python3 bench/cluster.py [--jobs 2000]

1. throughput: N x /bin/true on a master and two nodes with 2 slots each (loopback),
   against `seq N | xargs -P 2 -n 1 /bin/true` (the local floor);
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
                  f"{n / floor:.0f} jobs/s -> {floor / ours:.2f} of the floor")
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
