"""The master with real processes on loopback: lost offers do not hang a submit.

Resume right after kill -9 with running jobs (fixed on the master side by a release that
never kills) is test_submit_resume.py::test_resume_after_kill9_reattaches_running_jobs."""

from __future__ import annotations

import time

from .cluster import Cluster, wait_for


def test_a_node_killed_and_restarted_while_a_one_job_submit_waits(pyz, tmp_path):
    """Issue 12: the offer went to the dead node's channel, the Pool kept the claim as
    pending, the restarted node's hello did not reconcile it, and the submit hung."""
    c = Cluster(pyz, tmp_path, slots=[1])
    c.env["JRS_NODE_TIMEOUT"] = "10"  # back well within it, however loaded the machine
    # the offer time-out is the last resort: with it at 10 s the submit also ended with
    # node_gone, the hello's and the reports' reconciliation all removed (A12 checked)
    c.env["JRS_OFFER_TIMEOUT"] = "300"
    c.start()
    try:
        (tmp_path / "one.condor").write_text("executable = /bin/echo\narguments = done\n"
                                             "output = out.txt\nqueue 1\n")
        c.kill9(c.nodes[0])
        killed = time.monotonic()
        p = c.submit("one.condor", cwd=tmp_path)
        # the submitter's demand reached the master while the node was away
        wait_for(lambda: any(s["idle"] >= 1 or s["claims"]
                             for s in c.status()["submitters"]), timeout=10)
        c.start_node(0)
        assert time.monotonic() - killed < 5
        out, err = p.communicate(timeout=40)
        assert p.returncode == 0, (out, err, c.logs())
        assert (tmp_path / "out.txt").read_text() == "done\n"
        assert "node-lost" not in (tmp_path / "master.log").read_text()  # a restart, not a loss
    finally:
        c.stop()

