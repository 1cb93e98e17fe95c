"""Real processes on loopback: outputs land only where the job asked for them (issue 13
item 10), within the per-job limits, and a write error on the submit host holds the job."""

from __future__ import annotations

import os
import re

import pytest

from .cluster import Cluster


@pytest.fixture(scope="module")
def one_node(pyz, tmp_path_factory):
    base = tmp_path_factory.mktemp("outputs")
    c = Cluster(pyz, base, slots=[2]).start()
    yield c
    c.stop()


def test_outputs_never_land_on_the_submit_file_journal_log_or_through_links(one_node,
                                                                             tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("untouched\n")
    os.symlink(secret, work / "linked.txt")  # planted where an output will land
    (work / "a.condor").write_text(
        "executable = /bin/sh\n"
        "arguments = \"-c 'echo evil > a.condor; echo evil > a.log; echo evil > .a.condor.jrs;"
        " echo new > linked.txt; echo fine > fine.txt; mkdir -p sub; echo x > sub/deep'\"\n"
        "log = a.log\nqueue\n")
    before = (work / "a.condor").read_text()
    code, _out, err = one_node.run_submit("a.condor", cwd=work)
    assert code == 0, err + one_node.logs()
    assert (work / "a.condor").read_text() == before
    assert "evil" not in (work / "a.log").read_text()
    assert secret.read_text() == "untouched\n"  # the link was replaced, not written through
    assert not os.path.islink(work / "linked.txt")
    assert (work / "linked.txt").read_text() == "new\n"
    assert (work / "fine.txt").read_text() == "fine\n"
    assert not (work / "sub").exists()  # automatic mode: top-level files only
    assert not list(work.glob("*.jrs-part")) and not list(work.glob(".*.jrs-part"))


def test_explicit_outputs_land_by_base_name(one_node, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / "b.condor").write_text(
        "executable = /bin/sh\n"
        "arguments = \"-c 'mkdir -p out res/d; echo b > out/b.txt; echo c > res/d/c;"
        " echo no > other.txt'\"\n"
        "transfer_output_files = out/b.txt, res\nqueue\n")
    code, _out, err = one_node.run_submit("b.condor", cwd=work)
    assert code == 0, err + one_node.logs()
    assert (work / "b.txt").read_text() == "b\n" and not (work / "out").exists()
    assert (work / "res" / "d" / "c").read_text() == "c\n"
    assert not (work / "other.txt").exists()


def test_byte_cap_holds_the_job_with_code_33(one_node, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / "c.condor").write_text(
        "executable = /bin/sh\n"
        "arguments = \"-c 'head -c 3000000 /dev/zero > big.bin'\"\nlog = c.log\nqueue\n"
        "arguments = \"-c 'echo small > small.txt'\"\nqueue\n")
    code, _out, err = one_node.run_submit("c.condor", cwd=work,
                                          env={"JRS_MAX_TRANSFER_OUTPUT_MB": "1"}, timeout=60)
    assert code == 1, err
    assert "2 jobs, 1 done, 1 failed" in err and "exceeds the limit" in err
    assert not (work / "big.bin").exists() and (work / "small.txt").read_text() == "small\n"
    log = (work / "c.log").read_text()
    assert re.search(r"^012 \(\d+\.000\.000\)", log, re.M) and "Code 33 Subcode 0" in log


def test_an_output_that_cannot_be_written_holds_the_job_without_a_hang(one_node, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / "d.condor").write_text("executable = /bin/echo\narguments = hi\n"
                                   "output = /proc/jrs-cannot-write-here\nqueue\n"
                                   "output = fine.out\nqueue\n")
    code, _out, err = one_node.run_submit("d.condor", cwd=work, timeout=60)
    assert code == 1, err
    assert "held: cannot write its output: /proc/jrs-cannot-write-here" in err, err
    assert (work / "fine.out").read_text() == "hi\n"


def test_outputs_never_land_on_the_submit_file_through_an_aliased_iwd(one_node, tmp_path):
    """iwd spelled through a symlink to the submit directory: a job writing `a.condor`
    must not overwrite the submit file (it was compared by spelling only)."""
    work = tmp_path / "w"
    work.mkdir()
    alias = tmp_path / "alias"
    os.symlink(work, alias)
    (work / "a.condor").write_text(
        f"iwd = {alias}\nexecutable = /bin/sh\n"
        "arguments = \"-c 'echo evil > a.condor; echo fine > fine.txt'\"\nqueue\n")
    before = (work / "a.condor").read_text()
    code, _out, err = one_node.run_submit("a.condor", cwd=work)
    assert code == 0, err + one_node.logs()
    assert (work / "a.condor").read_text() == before
    assert (work / "fine.txt").read_text() == "fine\n"
