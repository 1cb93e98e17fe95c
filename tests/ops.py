"""Helpers for the operations tests: a scratch install the init script can run, a job
account, and a look at processes by id.

Nothing here touches the machine's /etc/jrs, /run/jrs or /var/lib/jrs: the init
script is pointed at a scratch tree through its defaults file (JRS_DEFAULTS).
"""

from __future__ import annotations

import json
import os
import pwd
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from .cluster import free_ports
from .conftest import ROOT, write_config

SCRIPT = ROOT / "init.d" / "jrs-daemon"
PYTHON = "/usr/bin/python3"  # what the init script runs jrs with; PATH may hold pyenv shims
# the real machine's LSB redirect to systemctl is off for every script we run
NO_REDIRECT = {"SYSTEMCTL_SKIP_REDIRECT": "1", "_SYSTEMCTL_SKIP_REDIRECT": "1"}


def need(tool: str) -> str:
    """The path of a tool the test needs; fail (never skip) when it is missing."""
    path = shutil.which(tool) or next((p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}")
                                       if os.access(p, os.X_OK)), None)
    assert path, f"{tool} is not installed; .ci/run installs it (apt-get)"
    return path


def procs(match: Callable[[int, list, int], bool]) -> list:
    """Pids of live processes whose (pid, argv, uid) satisfy `match`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            uid = os.stat(f"/proc/{pid}").st_uid
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        if argv and match(pid, argv, uid):
            out.append(pid)
    return out


def kill_pids(pids: list) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class MachineLock:
    """Serialize tests that change this machine (install a package) across every test
    process on it, waiting up to `timeout` seconds for the others."""

    def __init__(self, name: str, timeout: float = 600) -> None:
        self.path = f"/run/lock/{name}.lock"
        self.timeout = timeout

    def __enter__(self) -> MachineLock:
        import fcntl

        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise AssertionError(f"{self.path}: still held after {self.timeout}s")
                time.sleep(0.5)

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def wait_for(what: str, check: Callable[[], object], timeout: float, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


class JobUser:
    """A local account for jobs (production runs them unprivileged), removed afterwards."""

    def __init__(self, name: Optional[str] = None) -> None:
        # one per test process: suites of several worktrees may run at once
        self.name = name or f"jrsops{os.getpid()}"
        self.created = False

    def __enter__(self) -> JobUser:
        try:
            pwd.getpwnam(self.name)
        except KeyError:
            # an ordinary account (uid >= UID_MIN): a node with --same-user-accounts
            # runs its jobs as itself, as it never would a system account's
            subprocess.run([need("useradd"), "--no-create-home", "--shell",
                            "/usr/sbin/nologin", self.name], check=True, capture_output=True)
            self.created = True
        self.uid = pwd.getpwnam(self.name).pw_uid
        return self

    def __exit__(self, *exc) -> None:
        kill_pids(procs(lambda pid, argv, uid: uid == self.uid))
        if self.created:
            subprocess.run([need("userdel"), self.name], check=False, capture_output=True)


_CACHE: list = []


def shared_cache() -> Path:
    """One JRS_CACHE for every scratch tree of this test process: unpacking jrs.pyz
    into a fresh cache costs a second of each tree's first start."""
    if not _CACHE:
        import atexit

        path = Path(tempfile.mkdtemp(prefix="jrs-ops-cache-", dir="/tmp"))
        atexit.register(shutil.rmtree, path, True)
        _CACHE.append(path)
    return _CACHE[0]


class Scratch:
    """A scratch tree for the init script: config, state, run, log and cache dirs, a
    copy of jrs.pyz, and a defaults file pointing the script at them."""

    def __init__(self, pyz: Path, master: Optional[str] = None, nodes: Optional[str] = None,
                 extra_defaults: str = "") -> None:
        self.base = Path(tempfile.mkdtemp(prefix="jrs-ops-", dir="/tmp"))
        self.base.chmod(0o755)  # jobs run as another account reach their sandbox through it
        self.mport, self.nport = free_ports(2)
        self.master = master or f"127.0.0.1:{self.mport}"
        self.nodes = nodes if nodes is not None else f"127.0.0.1:{self.nport} slots=2\n"
        self.conf = write_config(self.base / "conf", master=self.master, nodes=self.nodes,
                                 secret=os.urandom(32).hex().encode() + b"\n")
        self.pyz = self.base / "jrs.pyz"
        shutil.copy(pyz, self.pyz)
        self.pyz.chmod(0o755)
        self.defaults = self.base / "defaults"
        # sandboxes and per-job uids of this tree's own (not /var/lib/jrs, not the
        # default range another node of this machine may hold); jobs of an ordinary
        # account run as that account, as the tests expect
        first = 1879113728 + random.randrange(1_000_000) * 256
        self.node_args = (f"--execute={self.base / 'execute'} --job-uids={first}-{first + 255} "
                          "--same-user-accounts")
        self.write_defaults(extra_defaults)
        self.env = {**os.environ, **NO_REDIRECT, "JRS_DEFAULTS": str(self.defaults)}
        self.env.pop("JRS_CONFIG", None)
        self.prefix: list = []  # e.g. a NetLab's `ip netns exec HOST`: run "on" that host

    def write_defaults(self, extra: str = "") -> None:
        b = self.base
        self.defaults.write_text(
            f"JRS_BIN={self.pyz}\nPYTHON={PYTHON}\nJRS_CONFIG={self.conf}\n"
            f"JRS_STATE={b / 'state'}\nJRS_RUN={b / 'run'}\nJRS_LOG={b / 'log'}\n"
            f"JRS_CACHE={shared_cache()}\nJRS_STOP_TIMEOUT=10\n"
            f"JRS_NODE_ARGS=\"{self.node_args}\"\n{extra}")

    def script(self, action: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix, str(SCRIPT), action], capture_output=True, text=True,
                              env=self.env, timeout=timeout)

    def pid(self, role: str) -> Optional[int]:
        try:
            return int((self.base / "run" / f"{role}.pid").read_text())
        except (OSError, ValueError):
            return None

    def log(self, role: str) -> str:
        try:
            return (self.base / "log" / f"{role}.log").read_text()
        except OSError:
            return ""

    def logs(self) -> str:
        return "\n".join(f"--- {r}.log\n{self.log(r)[-3000:]}" for r in ("master", "node"))

    def jrs(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix, PYTHON, str(self.pyz), *args], capture_output=True,
                              text=True,
                              timeout=timeout, env={**self.env,
                                                    "JRS_CACHE": str(shared_cache())})

    def nodes_up(self) -> int:
        r = self.jrs("status", "--json", "-c", str(self.conf))
        if r.returncode != 0:
            return 0
        return sum(n["state"] == "up" for n in json.loads(r.stdout)["nodes"])

    def ours(self) -> list:
        """Pids of every process started from this tree (daemons, launchers, executors:
        their command lines name the tree's pyz, or the cache and this tree's config)."""
        base = str(self.base)
        return procs(lambda pid, argv, uid: any(base in a for a in argv) or (
            any(str(shared_cache()) in a for a in argv) and self._mine(pid)))

    def _mine(self, pid: int) -> bool:
        """A launcher or executor of this tree: its taskfiles or parent are ours."""
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            links.append(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            return False
        return any(str(self.base) in link for link in links)

    def cleanup(self) -> None:
        try:
            self.script("stop", timeout=30)
        finally:
            kill_pids(self.ours())
            shutil.rmtree(self.base, ignore_errors=True)


def held_job(home: Path) -> Path:
    """A submit file in `home` whose job writes its pid to home/flags/starts (once per
    start) and then waits until home/flags/go exists, so a test decides when it ends.
    flags/ is world-writable: a root node may run the job under a uid of its own."""
    flags = home / "flags"
    flags.mkdir()
    flags.chmod(0o1777)
    path = home / "job.condor"
    path.write_text(
        "executable = /bin/sh\n"
        f"arguments = \"-c 'echo $$ >> {flags}/starts; "
        f"while [ ! -e {flags}/go ]; do sleep 0.1; done; id -u; echo done'\"\n"
        "output = job.out\nerror = job.err\nqueue\n")
    return path


def release(home: Path) -> None:
    (home / "flags" / "go").touch()


def starts(home: Path) -> list:
    try:
        return (home / "flags" / "starts").read_text().split()
    except OSError:
        return []


def job_pid(home: Path) -> Optional[int]:
    """The held job's pid, as it wrote it when it started."""
    found = starts(home)
    return int(found[0]) if found else None


def alive_unprivileged(pid: Optional[int]) -> bool:
    """`pid` is running, and not as root (the account or a uid of its own, by policy)."""
    return pid is not None and bool(procs(lambda p, argv, u: p == pid and u != 0))


def check_job_output(home: Path) -> None:
    uid, done = (home / "job.out").read_text().split("\n")[:2]
    assert uid.isdigit() and int(uid) != 0 and done == "done", (home / "job.out").read_text()
