"""Issue 13's regexp attack with real processes on loopback (rule 9): a submit file with
`requirements = !regexp("^(a|a)*$", "aaaa...a!")` once pinned the master at 100 % CPU
until its submitter died. Now the master's bounded engine judges it in linear steps:
the hostile job itself runs (the requirement is true), an honest submit beside it
finishes, and `jrs status` answers within STATUS_SLACK seconds of its time before.

(tests/test_pool_regex.py holds the engine and the Pool to this without processes.)"""

from __future__ import annotations

import subprocess
import sys
import time

from .cluster import Cluster

STATUS_SLACK = 10.0  # as tests/test_pool_dos_cluster.py: process start-up on a loaded machine


def _status(c: Cluster) -> float:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, str(c.pyz), "status", "-c", str(c.conf)],
                       capture_output=True, text=True, timeout=60, env=c.env)
    assert r.returncode == 0, r.stderr
    return time.monotonic() - t0


def test_a_catastrophic_regexp_requirement_does_not_stall_the_master(pyz, tmp_path):
    c = Cluster(pyz, tmp_path, slots=[2, 2]).start()
    try:
        before = [_status(c) for _ in range(3)]
        evil = tmp_path / "evil"
        evil.mkdir()
        hostile = '!regexp("^(a|a)*$", "' + "a" * 4000 + '!")'
        (evil / "e.condor").write_text(f"executable = /bin/echo\narguments = evil\n"
                                       f"requirements = {hostile}\noutput = e.out\nqueue 4\n")
        attack = c.submit("e.condor", cwd=evil)
        work = tmp_path / "w"
        work.mkdir()
        (work / "j.condor").write_text("executable = /bin/echo\narguments = $(Process)\n"
                                       "output = out.$(Process)\nqueue 4\n")
        t0 = time.monotonic()
        honest = c.submit("j.condor", cwd=work)
        times = []
        while honest.poll() is None and time.monotonic() - t0 < 90:
            times.append(_status(c))
            time.sleep(0.2)
        _out, err = honest.communicate(timeout=60)
        took = time.monotonic() - t0
        _aout, aerr = attack.communicate(timeout=90)
        print(f"status at most {max([*times, 0]):.2f} s under attack "
              f"({max(before):.2f} s before), honest submit {took:.1f} s")
        assert honest.returncode == 0 and "4 jobs, 4 done, 0 failed" in err, err + c.logs()
        assert [(work / f"out.{i}").read_text() for i in range(4)] == [f"{i}\n"
                                                                      for i in range(4)]
        assert attack.returncode == 0 and "4 jobs, 4 done, 0 failed" in aerr, aerr
        assert (evil / "e.out").read_text() == "evil\n"
        assert times and max(times) < max(before) + STATUS_SLACK, (times, before)
        assert took < 60, took
        assert c.master.poll() is None
    finally:
        c.stop()
