#!/usr/bin/env python3
"""Submit-file expansion speed and memory.

Expands `queue N` with a few per-job macros and reports jobs/s, for the
expansion alone and for the whole `jrs submit --dry-run` path (expansion, the
JSON objects, the spool), against a same-run baseline: a bare Python loop that
formats the same per-job strings with f-strings (the floor for any Python
expander). Times are this process's CPU seconds (best of 3), so other load on
a shared machine moves them less than wall time would. Memory is the
tracemalloc peak while streaming N jobs without keeping them, for two N, to
show it does not grow with the cluster.

    python3 bench/condor_expand.py [--jobs 100000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jrs.condor import expand_file

SUBMIT = """\
executable     = sim.sh
dataset        = run2018D
arguments      = --dataset $(dataset) --seed $(Process) --out out/r_$(Process).root
output         = logs/sim_$(Cluster)_$(Process).out
error          = logs/sim_$(Cluster)_$(Process).err
log            = logs/sim.log
request_memory = 2 GB
request_cpus   = 1
queue {n}
"""


def baseline(n: int) -> None:
    for p in range(n):
        {"arguments": ["--dataset", "run2018D", "--seed", str(p), "--out",
                       f"out/r_{p}.root"],
         "output": f"logs/sim_1_{p}.out", "error": f"logs/sim_1_{p}.err"}


def expand(path: str) -> int:
    count = 0
    for _ in expand_file(path):
        count += 1
    return count


def dry_run(path: str) -> None:
    from jrs.roles.submit import dry_run as run

    with open(os.devnull, "w") as out:
        run(path, out)


def timed(fn, *args) -> float:
    start = time.process_time()
    fn(*args)
    return time.process_time() - start


def peak(fn, *args) -> int:
    tracemalloc.start()
    fn(*args)
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    n = parser.parse_args().jobs
    with tempfile.TemporaryDirectory() as d:
        for name, size in (("big", n), ("small", n // 10)):
            Path(d, f"{name}.sub").write_text(SUBMIT.format(n=size))
        big = str(Path(d, "big.sub"))
        t_ours = min(timed(expand, big) for _ in range(3))
        t_dry = min(timed(dry_run, big) for _ in range(3))
        t_base = min(timed(baseline, n) for _ in range(3))
        mem_small = peak(expand, str(Path(d, "small.sub")))
        mem_big = peak(expand, big)
    print(f"expand queue {n}: {n / t_ours:,.0f} jobs/s; --dry-run {n / t_dry:,.0f} jobs/s; "
          f"f-string floor {n / t_base:,.0f} jobs/s; ratios {t_base / t_ours:.3f} and "
          f"{t_base / t_dry:.3f} of the floor")
    print(f"peak memory streaming {n // 10:,} jobs: {mem_small / 1e6:.2f} MB; {n:,} jobs: "
          f"{mem_big / 1e6:.2f} MB; growth x{mem_big / mem_small:.2f} for 10x the jobs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
