#!/usr/bin/env python3
"""Size of jrs.pyz and its start-up time, against a bare interpreter in the same run.

Cold: first run after the native cache is removed (includes extraction, via
`selftest`). Warm: `jrs.pyz --version` with everything cached, compared with
`python3 -c pass` (target: warm <= 2x the bare interpreter).

    python3 bench/startup.py [--pyz dist/jrs.pyz] [--python python3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def median_time(cmd: list, env: dict, n: int = 30) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyz", default=str(ROOT / "dist" / "jrs.pyz"))
    parser.add_argument("--python", default=sys.executable)
    opts = parser.parse_args()
    py, pyz = opts.python, opts.pyz
    cache = tempfile.mkdtemp(prefix="jrs-bench-cache-")
    env = {**os.environ, "JRS_CACHE": cache}
    bare = median_time([py, "-c", "pass"], env)
    warm = median_time([py, pyz, "--version"], env)
    colds = []
    for _ in range(5):
        shutil.rmtree(cache, ignore_errors=True)
        t = time.perf_counter()
        subprocess.run([py, pyz, "selftest"], env=env, stdout=subprocess.DEVNULL, check=True)
        colds.append(time.perf_counter() - t)
    warm_selftest = median_time([py, pyz, "selftest"], env, 10)
    shutil.rmtree(cache, ignore_errors=True)
    size = os.path.getsize(pyz)
    print(f"jrs.pyz size: {size / 1e6:.1f} MB")
    print(f"python3 -c pass: {bare * 1e3:.1f} ms; jrs.pyz --version warm: {warm * 1e3:.1f} ms; "
          f"ratio {warm / bare:.2f} (target <= 2.0)")
    print(f"selftest (crypto) cold, extracting: {statistics.median(colds) * 1e3:.0f} ms; "
          f"warm: {warm_selftest * 1e3:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
