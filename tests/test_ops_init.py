"""The LSB init script, really run (with the systemctl redirect off) on a scratch tree.

Production shape: root daemons started by init.d/jrs-daemon, jobs submitted by an
unprivileged account and run under it on the node.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from .ops import (
    PYTHON,
    SCRIPT,
    JobUser,
    Scratch,
    alive_unprivileged,
    check_job_output,
    held_job,
    job_pid,
    procs,
    release,
    starts,
    wait_for,
)


@pytest.fixture
def scratch(pyz):
    s = Scratch(pyz)
    try:
        yield s
    finally:
        s.cleanup()


@pytest.fixture(scope="module")
def job_user():
    with JobUser() as user:
        yield user


def alive(pid) -> bool:
    return bool(pid) and bool(procs(lambda p, argv, uid: p == pid))


def test_lsb_header_and_actions():
    text = SCRIPT.read_text()
    header = text[text.index("### BEGIN INIT INFO"):text.index("### END INIT INFO")]
    for key in ("Provides:          jrs-daemon", "Required-Start:", "Required-Stop:",
                "Default-Start:     2 3 4 5", "Default-Stop:      0 1 6",
                "Short-Description:"):
        assert key in header
    assert os.access(SCRIPT, os.X_OK)
    assert "start-stop-daemon" in text
    r = subprocess.run([str(SCRIPT), "frobnicate"], capture_output=True, text=True,
                       env={**os.environ, "JRS_DEFAULTS": "/nonexistent"})
    assert r.returncode == 2
    assert "start|stop|restart|force-reload|status" in r.stderr


def test_start_status_stop_exit_codes(scratch):
    r = scratch.script("status")
    assert r.returncode == 3, r.stdout + r.stderr
    assert r.stdout.splitlines() == ["jrs master: not running", "jrs node: not running"]

    r = scratch.script("start")
    assert r.returncode == 0, r.stdout + r.stderr + scratch.logs()
    assert re.search(r"jrs master: started \(pid \d+\)", r.stdout)
    assert re.search(r"jrs node: started \(pid \d+\)", r.stdout)
    master, node = scratch.pid("master"), scratch.pid("node")
    assert (scratch.base / "run" / "master.pid").is_file() and alive(master) and alive(node)
    assert "listening on" in scratch.log("master") and "listening on" in scratch.log("node")

    r = scratch.script("status")
    assert r.returncode == 0
    assert r.stdout.splitlines() == [f"jrs master: running (pid {master})",
                                     f"jrs node: running (pid {node})"]
    r = scratch.script("start")  # idempotent
    assert r.returncode == 0 and "already running" in r.stdout
    assert scratch.pid("master") == master

    os.kill(node, 9)  # one daemon dead, its pid file left behind: LSB 1
    wait_for("the node to die", lambda: not alive(node), 10)
    r = scratch.script("status")
    assert r.returncode == 1, r.stdout
    assert r.stdout.splitlines()[1].startswith("jrs node: dead, but ")

    r = scratch.script("restart")
    assert r.returncode == 0, r.stdout + r.stderr
    assert scratch.pid("master") != master and alive(scratch.pid("node"))

    node = scratch.pid("node")
    r = scratch.script("force-reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not alive(node) and alive(scratch.pid("node"))
    r = scratch.script("stop")
    assert r.returncode == 0 and "jrs node: stopped" in r.stdout
    assert not scratch.ours()
    assert scratch.script("status").returncode == 3
    assert scratch.script("stop").returncode == 0  # stopping a stopped service is success


def test_partly_running_is_not_ok(scratch):
    assert scratch.script("start").returncode == 0
    master = scratch.pid("master")
    subprocess.run(["start-stop-daemon", "--stop", "--quiet", "--pidfile",
                    str(scratch.base / "run" / "master.pid"), "--remove-pidfile"], check=True)
    wait_for("the master to exit", lambda: not alive(master), 10)
    r = scratch.script("status")
    assert r.returncode == 4, r.stdout
    assert r.stdout.splitlines() == ["jrs master: not running",
                                     f"jrs node: running (pid {scratch.pid('node')})"]


def test_only_the_daemons_this_host_runs(pyz):
    """node.list naming other machines only: the master starts, no node; and the reverse."""
    from jrs.roles.hostroles import is_local_address

    assert not any(map(is_local_address, ("203.0.113.9", "198.51.100.7", "198.51.100.8")))
    s = Scratch(pyz, nodes="203.0.113.9 slots=4\n198.51.100.7:7082\n")
    try:
        r = s.script("start")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "jrs master: started" in r.stdout and "node" not in r.stdout
        assert s.pid("node") is None
        r = s.script("status")
        assert r.returncode == 0
        assert r.stdout.splitlines()[1] == "jrs node: not run here (this host is not in node.list)"
    finally:
        s.cleanup()
    s = Scratch(pyz, master="203.0.113.9:7083")
    try:
        r = s.script("start")
        assert r.returncode == 0, r.stdout + r.stderr + s.logs()
        assert "jrs node: started" in r.stdout and "master" not in r.stdout
        r = s.script("status")
        assert r.returncode == 0
        assert r.stdout.splitlines()[0] == \
            "jrs master: not run here (this host is not node.master)"
    finally:
        s.cleanup()
    s = Scratch(pyz, master="203.0.113.9:7083", nodes="198.51.100.8\n")
    try:
        r = s.script("start")
        assert r.returncode == 0 and "nothing to start" in r.stdout
        assert s.script("status").returncode == 3 and not s.ours()
    finally:
        s.cleanup()


def test_unconfigured_host_says_how_to_finish(scratch):
    (scratch.conf / "secret").unlink()
    r = scratch.script("start")
    assert r.returncode == 6  # LSB: program is not configured
    assert f"jrs keygen -c {scratch.conf}" in r.stderr
    assert not scratch.ours() and scratch.script("status").returncode == 3


def test_bad_secret_is_reported_by_start(scratch):
    (scratch.conf / "secret").chmod(0o644)
    r = scratch.script("start")
    assert r.returncode == 1
    assert f"permissions 0644 let others read or change the secret; run: chmod 600 " \
           f"{scratch.conf / 'secret'}" in r.stderr
    assert f"see {scratch.base / 'log'}/master.log" in r.stderr
    assert not scratch.ours()
    assert not (scratch.base / "run" / "master.pid").exists()


def test_broken_config_is_reported(scratch):
    (scratch.conf / "node.list").write_text("127.0.0.1 slots=two\n")
    r = scratch.script("start")
    assert r.returncode == 6
    assert f"{scratch.conf / 'node.list'}:1: slots must be a whole number" in r.stderr
    r = scratch.script("status")
    assert r.returncode == 4 and "slots must be" in r.stderr


def test_jobs_survive_stop_and_are_readopted(scratch, job_user):
    """Start, submit a sleeping job as an ordinary account, stop: the job goes on; start
    again: the new node re-adopts it and its result reaches the submitter."""
    r = scratch.script("start")
    assert r.returncode == 0, r.stdout + r.stderr
    # start returns once the daemons listen; from then the pool shows within 5 s
    wait_for("`jrs status` to show the node", lambda: scratch.nodes_up() == 1, 5)

    home = scratch.base / "user"
    home.mkdir()
    shutil.copytree(scratch.conf, home / "conf")
    for p in (home, home / "conf", *(home / "conf").iterdir()):
        os.chown(p, job_user.uid, -1)
    held_job(home)
    submit = subprocess.Popen(
        ["runuser", "-u", job_user.name, "--", PYTHON, str(scratch.pyz), "submit", "-c",
         str(home / "conf"), "--no-progress", "job.condor"], cwd=home,
        env={**scratch.env, "JRS_CACHE": str(home / "cache")}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        job = wait_for("the job to start", lambda: job_pid(home), 20)
        assert alive_unprivileged(job)
        node = scratch.pid("node")

        r = scratch.script("stop")
        assert r.returncode == 0, r.stdout + r.stderr
        assert not alive(node) and not alive(scratch.pid("master"))
        assert alive_unprivileged(job), "stopping the daemons killed the job"

        r = scratch.script("start")
        assert r.returncode == 0, r.stdout + r.stderr
        assert alive_unprivileged(job)
        release(home)
        _, err = submit.communicate(timeout=60)
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.wait()
    assert submit.returncode == 0, err + scratch.logs()
    check_job_output(home)
    assert starts(home) == [str(job)]  # re-adopted, not run again


def test_host_roles_match_exactly_never_a_substring():
    from jrs.config import Endpoint, NodeEntry
    from jrs.roles.hostroles import host_roles

    names = {"alpha", "alpha.example.org"}
    local = {"10.0.0.5"}.__contains__
    entries = [NodeEntry(Endpoint(h, 7082)) for h in
               ("alph", "alpha2", "lpha.example.org", "alpha.example", "10.0.0.50")]
    assert host_roles(Endpoint("alphabet", 7083), entries, names, local) == (False, [])
    assert host_roles(Endpoint("10.0.0.5", 7083), entries, names, local)[0] is True
    hit = NodeEntry(Endpoint("alpha.example.org", 7082))
    assert host_roles(Endpoint("x", 7083), [*entries, hit], names, local) == (False, [hit])
    by_addr = NodeEntry(Endpoint("10.0.0.5", 7090))
    assert host_roles(Endpoint("x", 7083), [*entries, by_addr], names, local)[1] == [by_addr]
    # a name match wins over an address match, as `jrs node` decides
    assert host_roles(Endpoint("x", 1), [by_addr, hit], names, local)[1] == [hit]
    assert host_roles(Endpoint("x", 1), [by_addr, hit], names, local,
                      name="10.0.0.5:7090")[1] == [by_addr]


def test_roles_command(scratch):
    r = scratch.jrs("roles", "-c", str(scratch.conf))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"master {scratch.master}", f"node 127.0.0.1:{scratch.nport}"]
    (scratch.conf / "node.list").write_text("203.0.113.9\n")
    r = scratch.jrs("roles", "-c", str(scratch.conf), "node")
    assert r.returncode == 1 and r.stdout == "master " + scratch.master + "\n"
    assert "is not in node.list" in r.stderr
    assert scratch.jrs("roles", "-c", str(scratch.conf), "master").returncode == 0
    r = scratch.jrs("roles", "-c", str(scratch.conf), "submitter")
    assert r.returncode == 2 and "unknown role 'submitter'" in r.stderr


def test_logs_rotate_while_the_daemons_run(scratch):
    """The logrotate file rotates /var/log/jrs/*.log under running daemons (copytruncate),
    and what they log next starts the fresh file (the script opens logs for appending)."""
    from .conftest import ROOT, write_config
    from .ops import need

    assert scratch.script("start").returncode == 0
    conf = scratch.base / "logrotate.conf"
    conf.write_text((ROOT / "debian/logrotate").read_text()
                    .replace("/var/log/jrs", str(scratch.base / "log")))
    r = subprocess.run([need("logrotate"), "-f", "-s", str(scratch.base / "lr.state"),
                        str(conf)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    log = scratch.base / "log"
    assert "listening on" in (log / "master.log.1").read_text()
    assert (log / "master.log").stat().st_size == 0
    stranger = write_config(scratch.base / "stranger", master=scratch.master,
                            nodes=scratch.nodes, secret=os.urandom(32).hex().encode())
    assert scratch.jrs("status", "-c", str(stranger)).returncode == 3
    wait_for("the refusal in the fresh log", lambda: "does not hold our secret" in
             (log / "master.log").read_text(), 10)
    assert (log / "master.log").read_bytes()[:1] != b"\0"  # appended, not written at the old offset


def test_status_and_stop_survive_an_interpreter_upgrade(scratch):
    """A python3 update replaces the interpreter under running daemons: status and stop
    must still find them (their pid files and command lines, not the executable)."""
    python = scratch.base / "python3"
    shutil.copy(os.path.realpath(PYTHON), python)
    scratch.write_defaults(f"PYTHON={python}\n")
    r = scratch.script("start")
    assert r.returncode == 0, r.stdout + r.stderr
    pids = [scratch.pid("master"), scratch.pid("node")]
    new = scratch.base / "python3.new"
    shutil.copy(os.path.realpath(PYTHON), new)
    os.replace(new, python)  # as dpkg does: the running daemons' executable is now deleted
    assert os.readlink(f"/proc/{pids[0]}/exe").endswith("(deleted)")
    assert scratch.script("status").returncode == 0
    assert scratch.script("start").stdout.count("already running") == 2
    r = scratch.script("stop")
    assert r.returncode == 0 and r.stdout.count("stopped") == 2, r.stdout + r.stderr
    assert not any(alive(p) for p in pids)


def test_not_installed(scratch):
    scratch.write_defaults(f"JRS_BIN={scratch.base / 'missing.pyz'}\n")
    r = scratch.script("start")
    assert r.returncode == 5  # LSB: program is not installed
    assert f"jrs: {scratch.base / 'missing.pyz'} or {PYTHON} is missing" in r.stderr
    assert scratch.script("status").returncode == 4
