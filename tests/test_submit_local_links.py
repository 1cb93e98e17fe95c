"""R11: kill -9 of a `jrs submit --local` and a hostile job (real processes).

The launcher that owns the throw-away cluster removes its directory at the submit's
death (f064605). A job runs as whoever submits (root too), in that directory, so it
may plant links there before the end: a symlink to a directory outside, a symlink
inside a subdirectory, a hard link to a file outside. Removing the directory removes
the links, never what they name. A job's process that left its session (`setsid`) and
ignores TERM is ended with the job (the executor is its child subreaper)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from .cluster import process_alive, wait_for


def test_the_kill_9_clean_up_removes_a_jobs_links_not_what_they_name(pyz, tmp_path):
    tmp, victim, marks, work = (tmp_path / n for n in ("tmp", "victim", "marks", "w"))
    for d in (tmp, victim, marks, work):
        d.mkdir()
    (victim / "precious").write_text("keep\n")
    (victim / "sub").mkdir()
    (victim / "sub" / "deep").write_text("keep too\n")
    (work / "job.sh").write_text(
        "#!/bin/sh\n"
        f"d=$(ls -d {tmp}/jrs-local-* | head -1)\n"
        f"ln -s {victim} $d/to-victim\n"
        f"mkdir -p $d/x/y && ln -s {victim} $d/x/y/z && ln -s {victim}/precious $d/x/f\n"
        f"ln {victim}/precious $d/hard\n"
        "setsid sh -c 'trap \"\" TERM; while :; do sleep 1; done' </dev/null >/dev/null 2>&1 &\n"
        f"echo $! > {marks}/escapee\n"
        f"echo $$ > {marks}/job\n"
        "exec sleep 60\n")
    os.chmod(work / "job.sh", 0o755)
    (work / "c.condor").write_text("executable = job.sh\nlog = c.log\nqueue\n")
    p = subprocess.Popen([sys.executable, str(pyz), "submit", "--local", "--no-progress",
                          "c.condor"], cwd=work, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=dict(os.environ, TMPDIR=str(tmp)))
    pids: list = []
    try:
        wait_for(lambda: (marks / "job").exists() and (marks / "escapee").exists(),
                 timeout=60)
        time.sleep(0.3)
        pids = [int((marks / n).read_text()) for n in ("job", "escapee")]
        local = [d for d in tmp.iterdir() if d.name.startswith("jrs-local-")]
        assert len(local) == 1 and (local[0] / "to-victim").is_symlink()
        p.kill()
        p.communicate(timeout=10)
        wait_for(lambda: not any(d.name.startswith("jrs-local-") for d in tmp.iterdir()),
                 timeout=30)
        wait_for(lambda: not any(process_alive(pid) for pid in pids), timeout=10)
        assert (victim / "precious").read_text() == "keep\n"
        assert (victim / "sub" / "deep").read_text() == "keep too\n"
        assert (victim / "precious").stat().st_nlink == 1  # the hard link went, not it
    finally:
        for pid in pids:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if p.poll() is None:
            p.kill()
