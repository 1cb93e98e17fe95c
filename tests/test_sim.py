"""The deterministic cluster simulation (tests/sim) in CI: seeds replay, shares are fair,
and seeds of the small and large shapes keep every invariant (tests/sim/check.py).

A failing seed prints the command that replays it (`python -m tests.sim --seed N
--shape S`); tests/test_sim_regressions.py pins the seeds that found bugs.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import pytest

from tests.sim import world
from tests.sim.shapes import SHAPES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The seeds are independent and CPU-bound, and CI has 2 cores: split between 2 forked
# workers (each the same seeds as before, only alongside), the sim's ~2 minutes of the
# suite take about half as long.
WORKERS = min(2, os.cpu_count() or 1)


def _run_seeds(shape, seeds) -> list:
    bad = []
    for seed in seeds:
        res = world.run(seed, shape)
        if not res.ok:
            bad.append((seed, f"{res.replay()}: " +
                        "; ".join(f[:400] for f in res.failures[:3])))
    return bad


def _run_many(shape, seeds) -> list:
    seeds = list(seeds)
    if WORKERS < 2 or len(seeds) < 20:
        return [text for _, text in _run_seeds(shape, seeds)]
    chunks = [seeds[i::WORKERS] for i in range(WORKERS)]
    with ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("fork")) as pool:
        found = [bad for part in pool.map(_run_seeds, [shape] * WORKERS, chunks)
                 for bad in part]
    return [text for _, text in sorted(found)]


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def test_a_seed_replays_exactly_in_this_and_another_process():
    a = world.run(11, "small")
    b = world.run(11, "small")
    assert (a.digest, a.steps, a.sim_time) == (b.digest, b.steps, b.sim_time)
    assert a.stats["execs"] > 0 and a.faults, "seed 11 should run jobs and inject faults"
    code = ("from tests.sim import world; r = world.run(11, 'small'); "
            "print(r.digest, r.steps)")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                         capture_output=True, timeout=60, check=True).stdout.split()
    assert out == [a.digest, str(a.steps)]
    assert world.run(12, "small").digest != a.digest


@pytest.mark.parametrize("shape", ["fair", "fair-weighted"])
def test_backlogged_users_get_their_weighted_share(shape):
    assert _run_many(shape, range(1, 4)) == []


def test_the_checker_sees_a_submit_that_never_ends():
    """The liveness check can fail: with no node daemon ever up, nothing runs."""
    w = world.World(3, dataclasses.replace(SHAPES["small"], faults=()))
    w.hosts = {}
    res = w.run()
    assert any("liveness" in f and "has not ended" in f for f in res.failures), res.failures


def test_the_checker_sees_held_jobs():
    """Jobs no node can ever run end held, and the checker says so."""
    res = world.run(3, dataclasses.replace(SHAPES["small"], faults=(), nodes=(0, 0)))
    assert any("held" in f for f in res.failures), res.failures


CI_SEEDS = {"small": 1700, "large": 300,  # 2,000 seeds with faults, about a minute of CPU
            # plus revocations the submitter never hears of (D5's kind), ~10 s of CPU
            "revoke": 250,
            # and big submits, the demand hold-back under faults (~0.3 s of CPU a seed):
            # paid for by large 500 -> 300 (small 1500 -> 1700), revoke 300 -> 250 and
            # 40 fault-free seeds a shape (was 50), the file's time as before (12-01)
            "backlog": 40}
# Every fault kind runs in CI (bench/sim_soak.py runs many more seeds): ctrl-c and disk
# are back since D1, D3, D4 (and D5) were fixed, stall since C2 was (README "The cluster
# simulation"). A kind a new finding makes fail goes here until it is fixed.
CI_WITHOUT: tuple = ()
# Seeds of the CI set that fail for an open finding (its id in README): reported, not
# counted. Each leaves this list for tests/test_sim_regressions.py once it is fixed
# (E2, large 193, did: the task spec records the boot id).
KNOWN_OPEN: dict = {}


@pytest.mark.parametrize("name", sorted(CI_SEEDS))
def test_seeds_keep_every_invariant_under_faults(name):
    base = SHAPES[name]
    shape = dataclasses.replace(base, faults=tuple(k for k in base.faults
                                                   if k not in CI_WITHOUT))
    t0 = _cpu()
    known = [s for (n, s) in KNOWN_OPEN if n == name]
    bad = _run_many(shape, [s for s in range(1, CI_SEEDS[name] + 1) if s not in known])
    print(f"{CI_SEEDS[name]} seeds of {name} in {_cpu() - t0:.1f}s CPU; "
          f"open findings not counted: {known}")
    assert bad == []


def test_fault_free_seeds_keep_every_invariant():
    for name in ("small", "large"):
        shape = dataclasses.replace(SHAPES[name], faults=())
        assert _run_many(shape, range(1, 41)) == []


def test_a_job_lost_at_every_resume_is_held_after_max_lost_runs_in_all(monkeypatch):
    """The bound on lost runs survives kill -9 (it is journaled): a node that takes every
    run and never starts it, then answers the resumed submitter's attach that it does
    not know the job, with the submit killed and run again every 3 s. Each resume is a
    lost run; after MAX_LOST_RUNS in all (not per resume) the job is held."""
    from jrs.client import core as C
    from jrs.node import core as nc

    def swallow(self, t, now):  # the run's data is read, then nothing: no task, no reply
        self.receiving.discard(t.key)
        return []
    monkeypatch.setattr(nc.NodeCore, "run_received", swallow)
    shape = dataclasses.replace(SHAPES["small"], faults=(), nodes=(1,), max_retries=(0,),
                                submitters=(("alice", 1, 1, 0, 0.0),))
    w = world.World(5, shape)
    kills: list = []

    def kill() -> None:
        p = w.subs.get("alice1")
        if p is not None and p.alive and "alice1" not in w.done:
            p.die()
            kills.append(w.sim.now)
            w.sim.after(0.5, w.start_submitter, p.spec)
        if len(kills) < 3 * C.MAX_LOST_RUNS:
            w.sim.after(3.0, kill)
    w.sim.after(3.0, kill)
    res = w.run()
    ends = [r for _, r in w.journals[w.specs[0].sid] if r.get("e") == "end"]
    assert [e["state"] for e in ends] == ["held"], (res.failures[:3], len(kills))
    assert f"lost {C.MAX_LOST_RUNS} times" in ends[0]["reason"]
    assert len(kills) == C.MAX_LOST_RUNS
    assert [f for f in res.failures if "held" not in f] == []
