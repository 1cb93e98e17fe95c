"""A failing simulation seed prints the one command that replays it (issue 12, "What to
build" 5), and that command, run as printed, replays that very run.

tests/test_sim.py checks that a seed replays in another process through
`world.run`; this runs the printed text itself, with its `--shape`, `--without` and
`--switch`, so a replay line that drops one of them (the run it names would then be
another, perhaps a passing one) fails here.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sim import world
from tests.sim.shapes import SHAPES

ROOT = Path(__file__).resolve().parent.parent


def _replay(cmd: str) -> subprocess.CompletedProcess:
    argv = shlex.split(cmd)
    assert argv[:3] == ["python", "-m", "tests.sim"], cmd
    return subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


# switched-on defects that fail these seeds (tests/test_sim_regressions.py, REACH)
@pytest.mark.parametrize("seed,shape,without,switch", [
    (3, "small", "", "stall-blames-peers"),
    (45, "small", "ctrl-c,stall", "refusals-blame-job"),
])
def test_the_printed_replay_command_runs_the_failing_run_again(seed, shape, without, switch):
    out = set(without.split(",")) if without else set()
    base = SHAPES[shape]
    res = world.run(seed, dataclasses.replace(
        base, faults=tuple(k for k in base.faults if k not in out)), switches={switch})
    assert not res.ok, "the seed no longer fails with its switch: pick another from REACH"
    cmd = res.replay()
    said = re.search(r"--without (\S+)", cmd)
    assert f"--switch {switch}" in cmd and set(said.group(1).split(",") if said else ()) == out
    r = _replay(cmd)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    digest = re.search(r"digest (\w+)\)", r.stdout)
    assert digest and digest.group(1) == res.digest, r.stdout[:500]
    assert res.failures[0][:200] in r.stdout
    assert f"replay: {cmd}" in r.stdout


def test_a_passing_seeds_command_passes():
    res = world.run(3, "small")
    assert res.ok
    r = _replay(res.replay())
    assert r.returncode == 0 and f"digest {res.digest})" in r.stdout, r.stdout + r.stderr
