"""The jobs of a run, expanded once and spooled (client/spool.py)."""

from __future__ import annotations

import os

import pytest

from jrs.client import spool
from jrs.condor import SubmitError, expand_text


def test_round_trip_keeps_every_field(tmp_path):
    text = ("executable = /bin/echo\narguments = \"a 'b c'\"\nenvironment = \"X=1 Y=2\"\n"
            "getenv = true\noutput = o$(Process)\nrequest_memory = 2GB\n+Rack = 3\n"
            "transfer_input_files = a, b/\nmax_retries = 2\nqueue 3\n")
    jobs = list(expand_text(text, str(tmp_path), cluster=5))
    path = str(tmp_path / "j")
    assert spool.write(path, iter(jobs)) == 3
    assert os.stat(path).st_mode & 0o777 == 0o600
    back = list(spool.read(path))
    assert [j.to_json() for j in back] == [j.to_json() for j in jobs]
    assert [getattr(b, f) for b in back for f in spool.FIELDS] == \
        [getattr(j, f) for j in jobs for f in spool.FIELDS]


def test_a_failed_check_leaves_nothing(tmp_path):
    jobs = expand_text("executable = /bin/true\nqueue 5\n", str(tmp_path), cluster=1)

    def check(job):
        if job.process == 3:
            raise SubmitError("x.condor:2: no")

    path = tmp_path / "j"
    with pytest.raises(SubmitError):
        spool.write(str(path), jobs, check)
    assert list(tmp_path.iterdir()) == []


def test_the_count_is_the_expansion_that_runs(tmp_path):
    """A random count: what is spooled is what runs, however often it is read."""
    text = "executable = /bin/true\nN = $RANDOM_INTEGER(3,40)\nqueue $(N)\n"
    path = str(tmp_path / "j")
    n = spool.write(path, expand_text(text, str(tmp_path), cluster=1))
    assert len(list(spool.read(path))) == n == len(list(spool.read(path)))
