"""R1 (review), real processes on loopback: a node that says every run was lost, or
killed not by its submitter, cannot make a submit run forever."""

from __future__ import annotations

import pytest

from jrs.client.core import MAX_LOST_RUNS

from .cluster import Cluster
from .test_submit_malicious import start_evil


@pytest.mark.parametrize("mode", ["removed", "lost"])
def test_a_node_losing_every_run_ends_the_submit_with_the_job_held(pyz, tmp_path, mode):
    """The only node is hostile: every run comes back `removed: true` (a revocation the
    submitter never heard of) or `lost: true`. Each is rerun uncounted, on the same
    claim, at once; before the bound the submit never ended (and its journal grew by
    two records a run). Now the job is held after MAX_LOST_RUNS runs, naming the node."""
    c = Cluster(pyz, tmp_path, slots=[1])
    c.start_master()
    marker = tmp_path / "delivered"
    start_evil(c, 0, mode, marker)
    try:
        c.wait_up(1)
        work = tmp_path / "w"
        work.mkdir()
        (work / "j.condor").write_text("executable = /bin/true\nmax_retries = 0\nqueue\n")
        code, _out, err = c.run_submit("j.condor", cwd=work, timeout=90)
        assert marker.exists(), "the evil node never got a job: the test proved nothing"
        assert "Traceback" not in err
        assert code == 1, err + c.logs()
        assert f"its run was lost {MAX_LOST_RUNS} times; last on {c.names()[0]}" in err, err
        assert "1 jobs, 0 done, 1 failed" in err or "1 job, 0 done, 1 failed" in err, err
    finally:
        c.stop()
