"""The systemd units: `systemd-analyze verify` always, their command lines run as systemd
would run them, and a real start where systemd is PID 1.

This test machine (a container) does not run systemd as PID 1, so here the real
start is not possible; `test_real_start_where_systemd_runs` says so and runs the
start on any host where it is.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import ROOT
from .ops import Scratch, need, wait_for

UNITS = ROOT / "systemd"
NAMES = ("jrs-daemon.service", "jrs-master.service", "jrs-node.service")


def render(text: str, s: Scratch) -> str:
    """A unit pointed at a scratch tree, as `make install` points it at its prefix."""
    return (text.replace("/usr/bin/jrs", str(s.pyz)).replace("/etc/jrs", str(s.conf))
            .replace("/var/lib/jrs", str(s.base / "state"))
            .replace("/var/cache/jrs", str(s.base / "cache")))


def directives(text: str) -> dict:
    out: dict = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def systemd_argv(line: str, env: dict) -> list:
    """Expand ${VAR} (one word) and $VAR (split into words) as systemd does."""
    words = []
    for word in shlex.split(line):
        if re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", word):
            words += env.get(word[1:], "").split()
        else:
            words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                                lambda m: env.get(m.group(1), ""), word))
    return words


def unit_env(text: str) -> dict:
    env = {}
    for value in directives(text).get("Environment", []):
        for item in shlex.split(value):
            key, _, val = item.partition("=")
            env[key] = val
    return env


@pytest.fixture
def scratch(pyz):
    s = Scratch(pyz)
    try:
        yield s
    finally:
        s.cleanup()


def verify(paths: list) -> subprocess.CompletedProcess:
    return subprocess.run([need("systemd-analyze"), "verify", "--man=no", *map(str, paths)],
                          capture_output=True, text=True, timeout=60)


def test_units_verify():
    r = verify([UNITS / n for n in NAMES])
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_verify_can_fail(tmp_path):
    """The check above is not vacuous: a broken unit fails it."""
    bad = tmp_path / "jrs-node.service"
    bad.write_text((UNITS / "jrs-node.service").read_text()
                   .replace("ExecStart=/usr/bin/python3", "ExecStart=/nonexistent/python3")
                   .replace("KillMode=process", "KillMode=process\nKilMode=typo"))
    r = verify([bad])
    assert r.returncode != 0 and "is not executable" in r.stderr
    assert "Unknown key 'KilMode'" in r.stderr


def test_units_keep_jobs_and_need_a_secret():
    node = directives((UNITS / "jrs-node.service").read_text())
    assert node["KillMode"] == ["process"] and node["Delegate"] == ["yes"]
    for name in NAMES:
        d = directives((UNITS / name).read_text())
        assert d["ConditionPathExists"] == ["/etc/jrs/secret"], name
    for name in NAMES[1:]:
        d = directives((UNITS / name).read_text())
        assert d["PartOf"] == ["jrs-daemon.service"]
        assert "2" in d["RestartPreventExitStatus"]
    umbrella = directives((UNITS / "jrs-daemon.service").read_text())
    assert umbrella["Wants"] == ["jrs-master.service jrs-node.service"]
    assert umbrella["WantedBy"] == ["multi-user.target"]


def test_unit_commands_do_what_the_init_script_does(scratch):
    """ExecCondition and ExecStart, expanded as systemd expands them, run for real:
    the condition follows node.list and node.master, and the daemons start and stop."""
    procs = []
    try:
        for role in ("master", "node"):
            text = render((UNITS / f"jrs-{role}.service").read_text(), scratch)
            d = directives(text)
            env = {**os.environ, **unit_env(text), "JRS_CACHE": str(scratch.base / "cache")}
            cond = systemd_argv(d["ExecCondition"][0], env)
            r = subprocess.run(cond, capture_output=True, text=True, env=env, timeout=30)
            assert r.returncode == 0, r.stderr
            start = systemd_argv(d["ExecStart"][0], env)
            log = open(scratch.base / f"{role}.log", "wb")
            procs.append(subprocess.Popen(start, env=env, stdout=log, stderr=log))
            logfile = scratch.base / f"{role}.log"
            wait_for(f"the {role} to listen",
                     lambda f=logfile: "listening on" in f.read_text(), 15)
        wait_for("the node in `jrs status`", lambda: scratch.nodes_up() == 1, 5)
        assert (scratch.base / "state" / "node" / "tasks").is_dir()
        # a host not in node.list: the node's condition says skip (exit 1, not a failure)
        (scratch.conf / "node.list").write_text("203.0.113.9\n")
        text = render((UNITS / "jrs-node.service").read_text(), scratch)
        env = {**os.environ, **unit_env(text), "JRS_CACHE": str(scratch.base / "cache")}
        r = subprocess.run(systemd_argv(directives(text)["ExecCondition"][0], env),
                           capture_output=True, text=True, env=env, timeout=30)
        assert r.returncode == 1 and "not in node.list" in r.stderr
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert p.wait(15) == 0


def systemd_is_pid1() -> bool:
    return Path("/proc/1/comm").read_text().strip() == "systemd"


def test_real_start_where_systemd_runs(scratch, tmp_path):
    """Test copies of the units pointed at a scratch tree: verified everywhere, started
    for real where systemd is PID 1. This machine (the CI container, too) is not such
    a host, so here they are only verified."""
    names = [n.replace("jrs-", "jrs-test-") for n in NAMES]
    for name, new in zip(NAMES, names):
        text = render((UNITS / name).read_text(), scratch)
        for unit, test_unit in zip(NAMES, names):
            text = text.replace(unit, test_unit)
        # the scratch tree lives in /tmp: no private /tmp or read-only system for the
        # test copies, no /etc/default/jrs of this host, no /var/lib or /var/cache dirs
        text = text.replace("EnvironmentFile=-/etc/default/jrs",
                            f'Environment="JRS_NODE_ARGS={scratch.node_args}"')
        text = "\n".join(line for line in text.splitlines() if not line.startswith(
            ("StateDirectory", "CacheDirectory", "PrivateTmp", "ProtectSystem"))) + "\n"
        (tmp_path / new).write_text(text)
    r = verify([tmp_path / n for n in names])
    assert r.returncode == 0 and r.stderr == "", r.stderr
    if not systemd_is_pid1():
        return  # not such a host: nothing here could start a unit
    runtime = Path("/run/systemd/system")
    try:
        for name in names:
            shutil.copy(tmp_path / name, runtime / name)
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        subprocess.run(["systemctl", "start", names[0]], check=True, timeout=60)
        wait_for("the node up", lambda: scratch.nodes_up() == 1, 10)
        for name in names[1:]:
            assert subprocess.run(["systemctl", "is-active", "--quiet", name]).returncode == 0
        subprocess.run(["systemctl", "stop", names[0]], check=True, timeout=60)
        time.sleep(0.5)
        for name in names[1:]:
            assert subprocess.run(["systemctl", "is-active", "--quiet", name]).returncode != 0
    finally:
        subprocess.run(["systemctl", "stop", *names], check=False)
        for name in names:
            (runtime / name).unlink(missing_ok=True)
        subprocess.run(["systemctl", "daemon-reload"], check=False)
