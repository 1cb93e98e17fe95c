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
    m0 = machine_cpu()
    t = time.perf_counter()
    for _ in range(n):
        subprocess.run(["/bin/true"], check=True)
    baseline = (time.perf_counter() - t) / n
    baseline_cpu = (machine_cpu() - m0) / n
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
            submit = (s1.children_user + s1.children_system
                      - s0.children_user - s0.children_system)
            node_cpu = (m1 - m0 - submit - used["master"]) / n
            print(f"node: {n} x /bin/true on 2 slots: {n / wall:.0f} jobs/s (target >= 300)")
            extra = (node_cpu - baseline_cpu) * 1000
            print(f"node CPU per job {node_cpu * 1000:.2f} ms, subprocess.run(/bin/true) "
                  f"{baseline_cpu * 1000:.2f} ms -> overhead +{extra:.2f} ms (target <= 3)")
            print(f"wall per job per slot {per_slot * 1000:.2f} ms (submitter and master "
                  f"included), subprocess.run(/bin/true) {baseline * 1000:.2f} ms -> "
                  f"+{(per_slot - baseline) * 1000:.2f} ms")
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
