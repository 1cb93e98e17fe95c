"""The cores are pure: no file, clock or randomness is reached from inside them.

Issue 12 asks for a submitter core and a node core that take events and return actions
"with no asyncio, sockets, files or clock reads inside", like the Pool (whose imports
tests/test_pool.py checks). An import check cannot see a core calling a helper that
touches the disk, so this runs the simulation, which drives the very core classes, with
the functions that reach the disk, the clock or a random source watched: a call made
while a core method is on the stack fails the test. What a core is handed is the
shell's business and is not counted: the job source (the expander in the simulation,
the spool in the runner) and the id source the Pool is given.
"""

from __future__ import annotations

import ast
import builtins
import os
import random
import sys
import time
from pathlib import Path

import pytest

CORES = ("jrs/client/core.py", "jrs/client/jobs.py", "jrs/node/core.py",
         "jrs/cluster/pool.py", "jrs/cluster/payload.py")
# injected by the shell: a frame of these between the watched call and the core is the
# shell's doing (the queue's job source)
INJECTED = ("jrs/condor/", "jrs/client/spool.py")
WATCHED = [
    (os, ["open", "stat", "lstat", "fstat", "listdir", "scandir", "readlink", "urandom",
          "replace", "rename", "unlink", "mkdir", "makedirs", "getpid", "getuid"]),
    (builtins, ["open"]),
    (time, ["time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "sleep"]),
    (random, ["random", "randrange", "randint", "choice", "getrandbits", "shuffle",
              "uniform", "sample"]),
]
# (core file, core function, watched call): why it is still there. A fix must remove
# its entry (the test fails on an entry no longer reached).
KNOWN: dict = {}


def _core_frame(frame):
    """The core file and function on the stack above `frame`, unless the call came
    from something a core was handed."""
    while frame is not None:
        name = frame.f_code.co_filename.replace(os.sep, "/")
        if any(part in name for part in INJECTED):
            return None
        for core in CORES:
            if name.endswith(core):
                return core, frame.f_code.co_name
        frame = frame.f_back
    return None


@pytest.fixture(scope="module")
def reached():
    from tests.sim import world

    hits: dict = {}
    saved = []

    def watch(mod, name):
        orig = getattr(mod, name)
        saved.append((mod, name, orig))
        label = f"{'os' if mod is os else mod.__name__}.{name}"

        def wrapped(*args, **kwargs):
            where = _core_frame(sys._getframe(1))
            if where is not None:
                hits.setdefault((*where, label), 0)
                hits[(*where, label)] += 1
            return orig(*args, **kwargs)

        setattr(mod, name, wrapped)

    try:
        for mod, names in WATCHED:
            for name in names:
                watch(mod, name)
        results = [world.run(seed, shape) for shape, seeds in
                   (("small", range(1, 9)), ("revoke", range(1, 5)), ("backlog", (1,)))
                   for seed in seeds]
    finally:
        for mod, name, orig in reversed(saved):
            setattr(mod, name, orig)
    assert all(r.ok for r in results), [r.replay() for r in results if not r.ok]
    assert sum(r.stats["execs"] for r in results) > 100  # the seeds ran jobs
    return hits


def test_no_core_reaches_the_disk_the_clock_or_randomness(reached):
    new = {k: v for k, v in reached.items() if k not in KNOWN}
    assert not new, "calls from inside a core: " + ", ".join(
        f"{core}::{fn} -> {call} ({n}x)" for (core, fn, call), n in sorted(new.items()))


def test_each_known_exception_is_still_reached(reached):
    stale = sorted(set(KNOWN) - set(reached))
    assert not stale, f"fixed? remove from KNOWN: {stale}"


@pytest.mark.parametrize("path", ["jrs/client/core.py", "jrs/client/jobs.py",
                                  "jrs/node/core.py"])
def test_a_core_imports_no_clock_randomness_process_or_network(path):
    tree = ast.parse((Path(__file__).resolve().parent.parent / path).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
             for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    assert not names & {"time", "random", "secrets", "socket", "asyncio", "threading",
                        "subprocess", "fcntl", "select", "signal"}, names
