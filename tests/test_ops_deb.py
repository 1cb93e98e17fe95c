"""build-deb.sh: build, inspect and lint both packages, then install one on this machine,
start it through its init script, run a job across a stop and an upgrade, and purge.

The install test is the one place the suite touches this machine's /etc/jrs,
/var/lib/jrs and friends: it refuses to start if jrs is installed or /etc/jrs
exists, and purges whatever it installed even when it fails.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from .cluster import free_ports
from .conftest import ROOT
from .ops import (
    NO_REDIRECT,
    PYTHON,
    JobUser,
    MachineLock,
    alive_unprivileged,
    check_job_output,
    held_job,
    job_pid,
    kill_pids,
    need,
    procs,
    release,
    starts,
    wait_for,
)

V1, V2 = "0.1.0+ops1", "0.1.0+ops2"
EXPECTED = {
    "etc/default/jrs", "etc/init.d/jrs-daemon", "etc/jrs/node.list", "etc/jrs/node.master",
    "etc/logrotate.d/jrs", "lib/systemd/system/jrs-daemon.service",
    "lib/systemd/system/jrs-master.service", "lib/systemd/system/jrs-node.service",
    "usr/bin/jrs", "usr/share/doc/jrs/changelog.gz", "usr/share/doc/jrs/copyright",
    "usr/share/lintian/overrides/jrs", "usr/share/man/man1/jrs.1.gz",
}
LEFTOVERS = ["/etc/jrs", "/var/lib/jrs", "/var/log/jrs", "/var/cache/jrs", "/usr/bin/jrs",
             "/etc/init.d/jrs-daemon", "/etc/default/jrs", "/etc/logrotate.d/jrs",
             "/lib/systemd/system/jrs-daemon.service", "/usr/share/doc/jrs",
             "/usr/share/man/man1/jrs.1.gz"]


@pytest.fixture(scope="module")
def debs(pyz, tmp_path_factory) -> dict:
    need("dpkg-deb")
    out = tmp_path_factory.mktemp("debs")
    for version in (V1, V2):
        r = subprocess.run([str(ROOT / "build-deb.sh"), "--version", version, "--pyz", str(pyz),
                            "--out", str(out)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [f"{out}/jrs_{version}_{a}.deb" for a in ("amd64", "arm64")]
    return {(v, a): out / f"jrs_{v}_{a}.deb" for v in (V1, V2) for a in ("amd64", "arm64")}


def deb_files(deb: Path) -> dict:
    """path -> (mode string, size) from `dpkg-deb -c`."""
    r = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True)
    out = {}
    for line in r.stdout.splitlines():
        mode, owner, size, _, _, path = line.split(None, 5)
        assert owner == "root/root", line
        if not mode.startswith("d"):
            out[path[2:]] = (mode, int(size))
    return out


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_both_architectures_carry_the_same_files(debs, pyz, tmp_path):
    for arch in ("amd64", "arm64"):
        deb = debs[(V1, arch)]
        assert field(deb, "Package") == "jrs" and field(deb, "Version") == V1
        assert field(deb, "Architecture") == arch
        assert field(deb, "Depends") == "python3 (>= 3.9)"
        files = deb_files(deb)
        assert set(files) == EXPECTED  # no secret among them
        assert files["usr/bin/jrs"] == ("-rwxr-xr-x", pyz.stat().st_size)
        assert files["etc/init.d/jrs-daemon"][0] == "-rwxr-xr-x"
        info = subprocess.run(["dpkg-deb", "-I", str(deb)], capture_output=True, text=True,
                              check=True).stdout
        for script in ("postinst", "prerm", "postrm", "conffiles", "md5sums"):
            assert re.search(rf"\b{script}\b", info), script
    root = tmp_path / "x"
    subprocess.run(["dpkg-deb", "-R", str(debs[(V1, "amd64")]), str(root)], check=True)
    assert (root / "usr/bin/jrs").read_bytes() == pyz.read_bytes()
    conffiles = (root / "DEBIAN/conffiles").read_text().split()
    assert sorted(conffiles) == sorted("/" + p for p in EXPECTED if p.startswith("etc/"))
    # the man page is the usage text: every usage line and every command is in it
    import jrs.__main__ as cli

    man = gzip.decompress((root / "usr/share/man/man1/jrs.1.gz").read_bytes()).decode()
    plain = man.replace("\\-", "-")
    for line in cli.__doc__.split("Usage:")[1].split("Commands:")[0].splitlines():
        if line.strip().startswith("jrs "):
            assert line.strip() in plain, line
    for command in cli.COMMAND_HELP:
        assert f'.SS "jrs {command}"' in man
    r = subprocess.run(["man", "--warnings", "-l", "-Tutf8", "-Z", "-"], input=man,
                       capture_output=True, text=True, env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_lintian_clean_or_justified(debs):
    lintian = need("lintian")
    r = subprocess.run([lintian, "--pedantic", "-E", "--show-overrides", "--fail-on",
                        "error,warning,info,pedantic",
                        str(debs[(V1, "amd64")]), str(debs[(V1, "arm64")])],
                       capture_output=True, text=True, timeout=300)
    tags = [line for line in r.stdout.splitlines() if not line.startswith(("N:", "O:"))]
    assert r.returncode == 0 and tags == [], r.stdout + r.stderr
    # every override carries its reason: a comment right above it
    lines = (ROOT / "debian/lintian-overrides").read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert i > 0 and lines[i - 1].startswith("#"), line


class PolicyAllowsJrs:
    """This container's policy-rc.d forbids invoke-rc.d to start anything (exit 101);
    let it start jrs-daemon only, as on a real host, and put it back after."""

    PATH = Path("/usr/sbin/policy-rc.d")

    def __enter__(self):
        self.saved = self.PATH.read_bytes() if self.PATH.exists() else None
        self.PATH.write_text('#!/bin/sh\n[ "$1" = jrs-daemon ] && exit 0\nexit 101\n')
        self.PATH.chmod(0o755)
        return self

    def __exit__(self, *exc):
        if self.saved is None:
            self.PATH.unlink()
        else:
            self.PATH.write_bytes(self.saved)


def dpkg(*args: str) -> subprocess.CompletedProcess:
    """dpkg, leaving other packages' triggers (man-db's index: 2-16 s a time) for the end."""
    return subprocess.run(["dpkg", "--force-confold", "--no-triggers", *args],
                          capture_output=True, text=True,
                          timeout=180, stdin=subprocess.DEVNULL,
                          env={**os.environ, **NO_REDIRECT, "DEBIAN_FRONTEND": "noninteractive"})


def installed() -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", "jrs"], capture_output=True,
                       text=True)
    return r.returncode == 0 and "not-installed" not in r.stdout


def init(action: str) -> subprocess.CompletedProcess:
    return subprocess.run(["/etc/init.d/jrs-daemon", action], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **NO_REDIRECT})


def pidof(role: str):
    try:
        return int(Path(f"/run/jrs/{role}.pid").read_text())
    except (OSError, ValueError):
        return None


def jrs_processes() -> list:
    """Daemons, launchers and executors of the installed package."""
    return procs(lambda pid, argv, uid: "/usr/bin/jrs" in argv or any(
        a.startswith("/var/cache/jrs") for a in argv))


def test_install_run_upgrade_purge(debs):
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert arch in ("amd64", "arm64")
    with MachineLock("jrs-ops-package-test"):
        assert not installed(), "jrs is installed on this machine: the test will not touch it"
        assert not Path("/etc/jrs").exists(), "/etc/jrs exists here: the test will not touch it"
        install_story(debs, arch)


def install_story(debs, arch) -> None:
    base = Path(tempfile.mkdtemp(prefix="jrs-deb-", dir="/tmp"))
    base.chmod(0o755)  # the job's account reaches its submit directory through it
    with PolicyAllowsJrs(), JobUser() as user:
        try:
            run_package_story(debs, arch, base, base / "cache", user)
        finally:
            shutil.rmtree(base, ignore_errors=True)
            kill_pids(jrs_processes())
            if installed():
                dpkg("--purge", "jrs")
            for path in ("/etc/jrs", "/var/lib/jrs", "/var/log/jrs", "/var/cache/jrs"):
                shutil.rmtree(path, ignore_errors=True)
            for pidfile in Path("/run/jrs").glob("*.pid"):
                pidfile.unlink()
            # the triggers our dpkg calls left pending (man-db): leave dpkg's state clean
            subprocess.run(["dpkg", "--triggers-only", "--pending"], capture_output=True,
                           timeout=300, stdin=subprocess.DEVNULL)


def run_package_story(debs, arch, tmp_path, cache, user) -> None:
    r = dpkg("-i", str(debs[(V1, arch)]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not started: this host has no /etc/jrs/secret yet" in r.stdout
    assert "jrs keygen -c /etc/jrs" in r.stdout
    assert init("status").returncode == 3 and not jrs_processes()
    assert list(Path("/etc").glob("rc2.d/S*jrs-daemon")), "not registered with update-rc.d"
    r = init("start")
    assert r.returncode == 6 and "no secret in /etc/jrs/secret" in r.stderr

    # finish the set-up as the README says: the pool's files, a secret, start; this
    # test's job checks it ran as its submitter's ordinary account: the node opt-in
    with open("/etc/default/jrs", "a") as f:
        f.write('JRS_NODE_ARGS="--same-user-accounts"\n')
    mport, nport = free_ports(2)
    Path("/etc/jrs/node.master").write_text(f"127.0.0.1:{mport}\n")
    Path("/etc/jrs/node.list").write_text(f"127.0.0.1:{nport} slots=2\n")
    env = {**os.environ, "JRS_CACHE": str(cache)}
    env.pop("JRS_CONFIG", None)
    r = subprocess.run([PYTHON, "/usr/bin/jrs", "keygen", "-c", "/etc/jrs"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat("/etc/jrs/secret").st_mode) == 0o600
    r = init("start")
    assert r.returncode == 0, r.stdout + r.stderr
    # start returns once the daemons listen; from then the pool shows within 5 s
    wait_for("the pool in `jrs status`", lambda: '"up"' in subprocess.run(
        [PYTHON, "/usr/bin/jrs", "status", "--json", "-c", "/etc/jrs"], env=env,
        capture_output=True, text=True).stdout, 5)
    assert Path("/var/log/jrs/node.log").is_file() and Path("/var/log/jrs/master.log").is_file()

    # a job of an ordinary account, through a stop and an upgrade
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree("/etc/jrs", home / "conf")
    for p in (home, home / "conf", *(home / "conf").iterdir()):
        os.chown(p, user.uid, -1)
    held_job(home)
    submit = subprocess.Popen(
        ["runuser", "-u", user.name, "--", PYTHON, "/usr/bin/jrs", "submit", "-c",
         str(home / "conf"), "--no-progress", "job.condor"], cwd=home,
        env={**env, "JRS_CACHE": str(home / "cache")}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        job = wait_for("the job", lambda: job_pid(home), 20)
        r = init("stop")
        assert r.returncode == 0, r.stderr
        assert init("status").returncode == 3
        assert alive_unprivileged(job), "stop killed the job"
        assert init("start").returncode == 0
        old_node = pidof("node")

        r = dpkg("-i", str(debs[(V2, arch)]))  # the upgrade, while the job runs
        assert r.returncode == 0, r.stdout + r.stderr
        assert subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "jrs"],
                              capture_output=True, text=True).stdout == V2
        assert init("status").returncode == 0
        assert pidof("node") not in (None, old_node), "postinst did not restart the node"
        assert alive_unprivileged(job), "the upgrade killed the job"
        release(home)
        _, err = submit.communicate(timeout=60)
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.wait()
    assert submit.returncode == 0, err + Path("/var/log/jrs/node.log").read_text()[-2000:]
    check_job_output(home)
    assert starts(home) == [str(job)]  # re-adopted, never rerun

    r = dpkg("--purge", "jrs")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not installed()
    left = [p for p in LEFTOVERS if os.path.lexists(p)]
    left += [str(p) for p in Path("/etc").glob("rc?.d/*jrs*")]
    left += [str(p) for p in Path("/etc/systemd/system").rglob("jrs*")]
    left += [str(p) for p in Path("/run/jrs").glob("*.pid")]
    assert left == [], left
    assert jrs_processes() == []
    r = subprocess.run(["dpkg", "--audit"], capture_output=True, text=True)
    assert "jrs" not in r.stdout, r.stdout
