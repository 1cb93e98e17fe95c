"""A long campaign of the cluster simulation (tests/sim): many seeds, failures grouped.

    python3 bench/sim_soak.py [--count 100000] [--start 1] [--shapes small,large]
                              [--minutes 60] [--out soak.json] [--switch NAME]

Runs seeds start, start+1, ... alternating over the shapes until `count` seeds
ran or `minutes` passed, and writes (and rewrites every 30 s) a JSON summary:
seeds run per shape, CPU seconds per seed, and each distinct failure (its first
line with numbers and ids blanked) with how often it occurred and the first
seeds that show it, each a replay command. Exit 1 if any seed failed.

What the campaigns found is in README.md ("The cluster simulation"); the
figures there are from runs of this script, with the seed counts actually run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.sim import world


def signature(failure: str) -> str:
    """A failure's kind: its text without times, ids, counts and job numbers."""
    text = failure.split("\n", 1)[0]
    text = re.sub(r"t=[0-9.]+:?", "", text)
    text = re.sub(r"\b(alice|bob|carol)\d+", "USER", text)
    text = re.sub(r"[0-9a-f]{6,}", "ID", text)
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    text = re.sub(r"\[.*", "[...]", text)
    return text.strip()[:200]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--start", type=int, default=1)
    ap.add_argument("--shapes", default="small,large")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--out", default="sim-soak.json")
    ap.add_argument("--switch", action="append", default=[])
    args = ap.parse_args(argv)
    shapes = args.shapes.split(",")
    t0, cpu0 = time.monotonic(), time.process_time()
    runs = {s: 0 for s in shapes}
    kinds: dict = {}
    last_write = 0.0
    n = 0

    def write() -> None:
        cpu = time.process_time() - cpu0
        summary = {"seeds_run": n, "per_shape": runs, "start": args.start,
                   "switches": args.switch, "cpu_seconds": round(cpu, 1),
                   "cpu_per_seed_ms": round(1000 * cpu / max(1, n), 2),
                   "wall_seconds": round(time.monotonic() - t0, 1),
                   "failing_seeds": sum(k["count"] for k in kinds.values()),
                   "failures": sorted(kinds.values(), key=lambda k: -k["count"])}
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(summary, f, indent=1)
        os.replace(tmp, args.out)

    seed = args.start
    while n < args.count and time.monotonic() - t0 < args.minutes * 60:
        shape = shapes[n % len(shapes)]
        res = world.run(seed, shape, switches=set(args.switch))
        runs[shape] += 1
        n += 1
        if not res.ok:
            sig = signature(res.failures[0])
            k = kinds.setdefault(sig, {"kind": sig, "count": 0, "seeds": []})
            k["count"] += 1
            if len(k["seeds"]) < 5:
                k["seeds"].append(res.replay())
        if n % len(shapes) == 0:
            seed += 1
        if time.monotonic() - last_write > 30:
            write()
            last_write = time.monotonic()
    write()
    print(f"{n} seeds ({runs}), {sum(k['count'] for k in kinds.values())} failed, "
          f"{len(kinds)} kinds; summary in {args.out}")
    return 1 if kinds else 0


if __name__ == "__main__":
    sys.exit(main())
