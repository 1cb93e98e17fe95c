"""The known gap of issue 13, closed: a per-job uid's setuid program (and, in a
temporary place, any file) in a world-writable directory other than /tmp & co.
Real processes: a root node, per-job uids."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

from jrs.node import unit

from .cluster import Cluster, wait_for


def test_world_writable_dirs_are_found_without_following_links():
    tag = secrets.token_hex(4)
    ww = Path(f"/var/jrs-ww-{tag}")
    closed = Path(f"/var/jrs-closed-{tag}")
    link = Path(f"/var/jrs-link-{tag}")
    shared = Path(tempfile.mkdtemp(prefix="jrs-share-", dir="/tmp"))
    sticky = Path(tempfile.mkdtemp(prefix="jrs-sticky-", dir="/tmp"))
    try:
        ww.mkdir()
        ww.chmod(0o777)
        closed.mkdir()
        closed.chmod(0o755)
        link.symlink_to(ww)
        shared.chmod(0o777)
        sticky.chmod(0o1777)
        temporary, shared_dirs = unit.world_writable_dirs()
        assert {"/tmp", "/var/tmp", "/dev/shm", str(ww), str(sticky)} <= set(temporary)
        assert str(shared) in shared_dirs and str(shared) not in temporary
        assert str(link) not in temporary and str(closed) not in temporary
        assert "/var/lock" not in temporary  # a link to /run/lock here: found as that
        assert len(set(temporary)) == len(temporary)
    finally:
        for p in (link,):
            p.unlink()
        for p in (ww, closed, shared, sticky):
            shutil.rmtree(p)


def test_a_jobs_setuid_program_does_not_outlive_it(pyz, tmp_path):
    """A job (per-job uid, root node) leaves a setuid copy of a program and a plain file
    in a world-writable directory below /var and in a shared 0777 directory in /tmp,
    both made before the node started: after the job, both files are gone from the
    first (a temporary place), the setuid one from the second (a shared place keeps
    plain files: a shared-filesystem job's outputs)."""
    tag = secrets.token_hex(4)
    ww = Path(f"/var/jrs-ww-{tag}")
    ww.mkdir()
    ww.chmod(0o777)
    shared = Path(tempfile.mkdtemp(prefix="jrs-share-", dir="/tmp"))
    shared.chmod(0o777)
    base = Path(tempfile.mkdtemp(prefix="jrs-gap-", dir="/tmp"))
    base.chmod(0o755)
    c = Cluster(pyz, base, slots=[1])
    try:
        c.start()
        work = base / "w"
        work.mkdir()
        work.chmod(0o755)
        script = "; ".join(
            f"cp /bin/true {d}/suid; chmod 4755 {d}/suid; echo x > {d}/plain; ls -ln {d}"
            for d in (ww, shared))
        (work / "c.condor").write_text(f"executable = /bin/sh\narguments = \"-c 'id -u; "
                                       f"{script}'\"\noutput = out\nerror = err\nqueue\n")
        code, _out, err = c.run_submit("c.condor", cwd=work)
        assert code == 0, err + c.logs()
        out = (work / "out").read_text()
        uid = int(out.split()[0])
        assert uid >= 1879048192, out  # a per-job uid, not root or nobody
        assert out.count("-rwsr-xr-x") == 2 and out.count(f" {uid} ") >= 4, out
        # the executor reaps the uid just after the result went out (before the uid is
        # handed out again, not before the submitter has the result)
        wait_for(lambda: not (ww / "suid").exists() and not (ww / "plain").exists()
                 and not (shared / "suid").exists(), timeout=20)
        assert (shared / "plain").read_text() == "x\n"
    finally:
        c.stop()
        for p in (ww, shared, base):
            shutil.rmtree(p, ignore_errors=True)
    assert os.path.exists("/tmp")
