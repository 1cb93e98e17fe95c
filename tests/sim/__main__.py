"""python -m tests.sim --seed N [--shape small] [--switch NAME]... [--seeds COUNT] [-v]

Replays one seed (or COUNT seeds from N) and prints what failed, with the
faults injected and the end of the trace. Exit 1 if any seed failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from . import bugs
from .shapes import SHAPES
from .world import run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.sim")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--shape", default="small", choices=sorted(SHAPES))
    ap.add_argument("--seeds", type=int, default=1, help="run this many seeds from --seed")
    ap.add_argument("--switch", action="append", default=[], choices=sorted(bugs.SWITCHES),
                    help="turn a test-only defect on")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the whole trace")
    ap.add_argument("-m", "--messages", action="store_true", help="trace every message")
    ap.add_argument("--without", default="", help="fault kinds left out, comma-separated")
    args = ap.parse_args(argv)
    bad = 0
    t0 = time.process_time()
    for seed in range(args.seed, args.seed + args.seeds):
        shape = SHAPES[args.shape]
        if args.without:
            out = set(args.without.split(","))
            shape = dataclasses.replace(shape, faults=tuple(k for k in shape.faults
                                                            if k not in out))
        res = run(seed, shape, switches=set(args.switch),
                  trace_messages=args.messages)
        if res.ok and args.seeds > 1:
            continue
        print(f"seed {seed} shape {args.shape}: {'ok' if res.ok else 'FAILED'} "
              f"({res.steps} steps, {res.sim_time:.1f} simulated s, {res.stats}, "
              f"digest {res.digest})")
        if not res.ok:
            bad += 1
            for f in res.failures:
                print("  " + f)
            print("  faults: " + ("; ".join(res.faults) or "none"))
            for line in (res.trace if args.verbose else res.trace[-40:]):
                print("    " + line)
            print(f"  replay: {res.replay()}")
    if args.seeds > 1:
        print(f"{args.seeds - bad}/{args.seeds} seeds ok in {time.process_time() - t0:.1f}s CPU")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
