"""A long campaign of the cluster simulation (tests/sim): many seeds, failures grouped.

    nice -n 19 python3 bench/sim_soak.py [--count 100000] [--start 1]
                              [--shapes small,large,backlog] [--without KINDS] [--workers 2]
                              [--minutes 60] [--out soak.json] [--switch NAME]

Runs seeds start, start+1, ... over the shapes (each seed number once per shape) until
`count` runs were made or `minutes` passed, in `workers` processes, and writes (and
rewrites every 30 s) a JSON summary: the commit, runs per shape, CPU seconds per run and
runs per second, and each distinct failure (its first line with numbers and ids blanked)
with how often it occurred and the first seeds that show it, each a replay command.
`next_seed` there is the first seed not yet run for every shape (runs are taken in
order): a campaign stopped to change its workers continues with `--start` at it, or a
second process takes a disjoint range. Exit 1 if any seed failed. The shape `backlog` (big
submits: the submitter's demand hold-back under faults) costs ~7x a `small` run and ~3.5x a
`large` one, so it is about 2/3 of the default mix's CPU; `--shapes small,large` leaves it out.

What the campaigns found is in README.md ("The cluster simulation"); the figures there
are from runs of this script, with the seed counts actually run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.sim import world  # noqa: E402
from tests.sim.shapes import SHAPES  # noqa: E402

_CFG: dict = {}


def signature(failure: str) -> str:
    """A failure's kind: its text without times, ids, counts and job numbers."""
    text = failure.split("\n", 1)[0]
    text = re.sub(r"t=[0-9.]+:?", "", text)
    text = re.sub(r"\b(alice|bob|carol)\d+", "USER", text)
    text = re.sub(r"[0-9a-f]{6,}", "ID", text)
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    text = re.sub(r"\[.*", "[...]", text)
    return text.strip()[:200]


def _init(without: tuple, switches: tuple) -> None:
    _CFG["without"], _CFG["switches"] = without, switches


def _one(task: tuple) -> tuple:
    """Run one (seed, shape) in a worker: (shape, ok, signature, replay, first failure, cpu)."""
    seed, name = task
    base = SHAPES[name]
    shape = dataclasses.replace(base, faults=tuple(k for k in base.faults
                                                   if k not in _CFG["without"]))
    t0 = time.process_time()
    res = world.run(seed, shape, switches=set(_CFG["switches"]))
    cpu = time.process_time() - t0
    if res.ok:
        return name, True, "", "", "", cpu
    return name, False, signature(res.failures[0]), res.replay(), res.failures[0][:600], cpu


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100_000, help="runs in all")
    ap.add_argument("--start", type=int, default=1)
    ap.add_argument("--shapes", default="small,large,backlog")
    ap.add_argument("--without", default="", help="fault kinds left out, comma-separated")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--out", default="sim-soak.json")
    ap.add_argument("--switch", action="append", default=[])
    args = ap.parse_args(argv)
    shapes = args.shapes.split(",")
    without = tuple(k for k in args.without.split(",") if k)
    t0 = time.monotonic()
    runs = {s: 0 for s in shapes}
    cpu = {s: 0.0 for s in shapes}
    kinds: dict = {}
    state = {"n": 0, "last": 0.0}
    commit = _commit()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())

    def write() -> None:
        n = state["n"]
        wall = time.monotonic() - t0
        total = sum(cpu.values())
        summary = {"commit": commit, "started": started,
                   "updated": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                   "runs": n, "per_shape": runs, "start": args.start,
                   "next_seed": args.start + n // len(shapes),
                   "without": list(without), "switches": args.switch,
                   "workers": args.workers, "cpu_seconds": round(total, 1),
                   "cpu_per_run_ms": {s: round(1000 * cpu[s] / max(1, runs[s]), 1)
                                      for s in shapes},
                   "wall_seconds": round(wall, 1),
                   "runs_per_second": round(n / max(wall, 1e-9), 2),
                   "failing_runs": sum(k["count"] for k in kinds.values()),
                   "failures": sorted(kinds.values(), key=lambda k: -k["count"])}
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(summary, f, indent=1)
        os.replace(tmp, args.out)

    def tasks():
        """Exactly `count` runs (the pool's feeder reads its iterable ahead)."""
        for i in range(args.count):
            yield args.start + i // len(shapes), shapes[i % len(shapes)]

    def take(out: tuple) -> bool:
        name, ok, sig, replay, first, used = out
        runs[name] += 1
        cpu[name] += used
        state["n"] += 1
        if not ok:
            k = kinds.setdefault(sig, {"kind": sig, "count": 0, "seeds": [], "first": first})
            k["count"] += 1
            if len(k["seeds"]) < 5:
                k["seeds"].append(replay)
        if time.monotonic() - state["last"] > 30:
            write()
            state["last"] = time.monotonic()
        return state["n"] >= args.count or time.monotonic() - t0 > args.minutes * 60

    _init(without, tuple(args.switch))

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # `kill PID` ends the campaign with its summary
    try:
        if args.workers <= 1:
            for task in tasks():
                if take(_one(task)):
                    break
        else:
            with multiprocessing.Pool(args.workers, _init, (without, tuple(args.switch))) \
                    as pool:
                for out in pool.imap(_one, tasks(), chunksize=4):
                    if take(out):
                        break
    except KeyboardInterrupt:
        pass
    write()
    print(f"{state['n']} runs ({runs}), {sum(k['count'] for k in kinds.values())} failed, "
          f"{len(kinds)} kinds; summary in {args.out}")
    return 1 if kinds else 0


if __name__ == "__main__":
    sys.exit(main())
