"""Fuzzing: whatever bytes a submit file holds, we return jobs or raise SubmitError."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jrs.condor import SubmitError, expand_file

FRAGMENTS = ["queue", "queue 2", " in (", ")", "from", "matching", "$(", "$(Process)", "$INT(",
             "$CHOICE(", "$SUBSTR(", "$Fpnx(", "$ENV(", ":", "=", "\\\n", "\n", "#", "if ",
             "elif", "else", "endif", "defined", "include : ", "\"", "'", "arguments",
             "environment", "executable = /bin/true\n", "request_memory = ", "initialdir",
             "[1:]", ",", " ", "x", "1", "-", "universe", "+A", "$$(", "getenv"]


def check(tmp_path, data: bytes) -> None:
    path = tmp_path / "job.sub"
    path.write_bytes(data)
    try:
        for _ in itertools.islice(expand_file(str(path), environ={}), 200):
            pass
    except SubmitError as exc:
        message = str(exc)
        assert message.startswith(f"{path}:") or message.startswith(f"{tmp_path}/"), message
        assert "\n" not in message


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_arbitrary_bytes(tmp_path, data):
    check(tmp_path, data)


@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40))
def test_submit_like_fragments(tmp_path, parts):
    check(tmp_path, "".join(parts).encode())
