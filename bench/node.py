"""The compute node's cost per job, against `subprocess` in the same run.

    python3 bench/node.py [--jobs 1000]

A master and one node with 2 slots on loopback run N x /bin/true from one
submitter. Reported:
- jobs/s on the node (target >= 300);
- the extra time each slot spends per job over starting /bin/true with
  `subprocess.run` from Python (target <= 3 ms);
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

from tests.cluster import Cluster  # noqa: E402

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


def children(pid: int) -> list:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000)
    n = ap.parse_args().jobs
    pyz = Path(os.environ.get("JRS_PYZ") or ROOT / "dist" / "jrs.pyz")
    t = time.perf_counter()
    for _ in range(n):
        subprocess.run(["/bin/true"], check=True)
    baseline = (time.perf_counter() - t) / n
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        c = Cluster(pyz, base, slots=[2]).start()
        try:
            (base / "t.condor").write_text(f"executable = /bin/true\nqueue {n}\n")
            node = c.nodes[0].pid
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
            used = {k: proc_cpu(p) - before[k] for k, p in procs.items()}
            per_slot = 2 * wall / n
            print(f"node: {n} x /bin/true on 2 slots: {n / wall:.0f} jobs/s (target >= 300)")
            print(f"per job per slot {per_slot * 1000:.2f} ms, subprocess.run(/bin/true) "
                  f"{baseline * 1000:.2f} ms -> +{(per_slot - baseline) * 1000:.2f} ms "
                  f"(target <= 3)")
            submit = (s1.children_user + s1.children_system
                      - s0.children_user - s0.children_system)
            print(f"CPU per job: machine {(m1 - m0) / n * 1000:.2f} ms; submit "
                  f"{submit / n * 1000:.2f} ms; " +
                  "; ".join(f"{k} {v / n * 1000:.2f} ms" for k, v in used.items()))
            print(f"node daemon peak RSS {vm_hwm_mb(node):.1f} MB (target <= 40)")
            time.sleep(2)
            a = proc_cpu(node)
            time.sleep(10)
            print(f"node daemon idle: {(proc_cpu(node) - a) * 1000:.0f} ms CPU in 10 s")
        finally:
            c.stop()


if __name__ == "__main__":
    main()
