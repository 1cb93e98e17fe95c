"""A real cluster of jrs.pyz processes on loopback for end-to-end tests."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from .conftest import run_jrs, write_config


def free_ports(count: int) -> list:
    """`count` distinct free ports: the sockets stay bound until all are taken, since
    a port closed at once may be handed out again by the next bind."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


class Cluster:
    """A master and nodes. By default all on 127.0.0.1 with free ports; with `hosts`
    (a NetLab's addresses: master first, then one per node) each runs in its own
    network namespace on the default ports, as on separate machines."""

    def __init__(self, pyz: Path, base: Path, slots: list, attrs: list | None = None,
                 env: dict | None = None, lab=None, legacy: str = "",
                 scratch_in: str = "/tmp") -> None:
        self.pyz = pyz
        self.base = base
        self.lab = lab
        if lab is None:
            self.hosts = ["127.0.0.1"] * (len(slots) + 1)
            self.mport, *self.ports = free_ports(len(slots) + 1)
        else:
            self.hosts = lab.addresses[:len(slots) + 1]
            self.mport = 7083
            self.ports = [7082] * len(slots)
        lines = []
        for i, (port, n) in enumerate(zip(self.ports, slots)):
            extra = (attrs[i] if attrs else "")
            lines.append(f"{self.hosts[i + 1]}:{port} slots={n} {extra}".rstrip())
        self.conf = write_config(base / "conf", master=f"{self.hosts[0]}:{self.mport}",
                                 nodes="\n".join(lines) + "\n")
        self.env = dict(os.environ, JRS_NODE_TIMEOUT="3", **(env or {}))
        self.env.pop("JRS_CONFIG", None)
        self.master: subprocess.Popen | None = None
        self.nodes: list = [None] * len(slots)
        self._submits: list = []
        # root nodes as in production: a per-job uid each, from a block of this node's
        # own (nodes on one machine may not share one), sandboxes in an execute
        # directory job identities can reach (pytest's tmp_path is 0700), in /tmp or
        # `scratch_in`
        self.execute = Path(tempfile.mkdtemp(prefix="jrs-exec-", dir=scratch_in))
        os.chmod(self.execute, 0o711)
        self.legacy = legacy
        self.uid_ranges = []
        for _ in slots:
            first = 1879113728 + random.randrange(1_000_000) * 256
            self.uid_ranges.append(f"{first}-{first + 255}")

    def names(self) -> list:
        return [f"{h}:{p}" for h, p in zip(self.hosts[1:], self.ports)]

    def _spawn(self, host: int, *args: str, log: str) -> subprocess.Popen:
        out = open(self.base / log, "ab")
        where = self.lab.run_in(host) if self.lab is not None else []
        return subprocess.Popen([*where, sys.executable, str(self.pyz), *args, "-c",
                                 str(self.conf), "-v"],
                                stdout=out, stderr=out, env=self.env, start_new_session=True)

    def start_master(self) -> None:
        self.master = self._spawn(0, "master", f"--state={self.base / 'master'}",
                                  log="master.log")

    def node_flags(self, i: int) -> list:
        if self.legacy:  # a build from before per-job uids (bench/ baselines): its jobs
            return ["--allow-root-jobs"] if self.legacy == "root" else []  # as root/nobody
        return [f"--execute={self.execute / f'node{i}'}", f"--job-uids={self.uid_ranges[i]}"]

    def start_node(self, i: int, *extra: str) -> None:
        self.nodes[i] = self._spawn(i + 1, "node", f"--name={self.names()[i]}",
                                    *self.node_flags(i), *extra,
                                    f"--state={self.base / f'node{i}'}", log=f"node{i}.log")

    def start(self) -> Cluster:
        self.start_master()
        for i in range(len(self.ports)):
            self.start_node(i)
        self.wait_up(len(self.ports))
        return self

    def status(self) -> dict:
        r = run_jrs(self.pyz, "status", "--json", "-c", str(self.conf))
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def wait_up(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = run_jrs(self.pyz, "status", "--json", "-c", str(self.conf))
            if r.returncode == 0 and sum(
                    n["state"] == "up" for n in json.loads(r.stdout)["nodes"]) >= count:
                return
            time.sleep(0.2)
        raise AssertionError(f"nodes not up: {self.logs()}")

    def submit(self, *args: str, cwd=None, timeout: float = 120, env=None):
        p = subprocess.Popen([sys.executable, str(self.pyz), "submit", "-c", str(self.conf),
                                 "--no-progress", *args], cwd=cwd,
                                env=dict(self.env, **(env or {})),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._submits.append(p)
        return p

    def run_submit(self, *args: str, cwd=None, timeout: float = 120, env=None):
        p = self.submit(*args, cwd=cwd, env=env)
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err

    def kill9(self, proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.base.glob("*.log"))

    def stop(self) -> None:
        # a submit a failed test left waiting would otherwise retry the master for ever
        for p in self._submits:
            if p.poll() is None:
                p.kill()
                p.wait()
        for p in [self.master, *self.nodes]:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [self.master, *self.nodes]:
            if p is not None:
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(self.execute, ignore_errors=True)


class NonRootCluster(Cluster):
    """The master as root, the node as another account: a non-root node (every job runs
    as that account, no cgroups of its own). The configuration and the node's state
    directory are the account's (root still reads them); `setpriv` execs the node
    directly, so its pid is the node daemon's. /usr/bin/python3: our venv's interpreter
    may live under a directory the account cannot enter. `account`: a name or a pwd
    entry."""

    def __init__(self, pyz: Path, base: Path, account, slots: list | None = None) -> None:
        super().__init__(pyz, base, slots=slots or [1])
        self.pw = pwd.getpwnam(account) if isinstance(account, str) else account
        for path in (self.conf, *self.conf.iterdir()):
            os.chown(path, self.pw.pw_uid, self.pw.pw_gid)
        for i in range(len(self.nodes)):
            (base / f"node{i}").mkdir()
            os.chown(base / f"node{i}", self.pw.pw_uid, self.pw.pw_gid)

    def node_flags(self, i: int) -> list:
        return []

    def _spawn(self, host: int, *args: str, log: str) -> subprocess.Popen:
        if args[0] != "node":
            return super()._spawn(host, *args, log=log)
        out = open(self.base / log, "ab")
        home = next(a.split("=", 1)[1] for a in args if a.startswith("--state="))
        return subprocess.Popen(["setpriv", f"--reuid={self.pw.pw_uid}",
                                 f"--regid={self.pw.pw_gid}", "--clear-groups",
                                 "/usr/bin/python3", str(self.pyz), *args, "-c", str(self.conf),
                                 "-v"], stdout=out, stderr=out, start_new_session=True,
                                env=dict(self.env, HOME=home))


def honest_job_cluster(pyz: Path, base: Path, word: str = "through") -> tuple:
    """(a started master and one 1-slot node in `base`, base/w) with base/w/j.condor: one
    /bin/echo job writing `word` to ok.out. The flood tests' set-up: a hostile peer
    floods a daemon, and this honest job must still get through it. The caller stops
    the cluster (c.stop() in its own `finally`)."""
    c = Cluster(pyz, base, slots=[1]).start()
    work = base / "w"
    work.mkdir()
    (work / "j.condor").write_text(f"executable = /bin/echo\narguments = {word}\n"
                                   "output = ok.out\nqueue\n")
    return c, work


# ------------------------------------------------------------------ scratch clusters
# (the set-up the confinement tests share: a directory the jobs' identities can enter,
# a cluster in it, a work directory, a gate file the jobs wait for)

def scratch(prefix: str, parent: str = "/tmp") -> Path:
    """A new directory others may enter (0755): jobs run under uids of their own, and
    pytest's tmp_path is 0700."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(d, 0o755)
    return d


@contextlib.contextmanager
def memory_dir(prefix: str) -> Iterator[Path]:
    """A new 0755 directory in /tmp with a tmpfs of its own mounted on it, unmounted
    and removed after: for the tests whose jobs make 100,000 files. On the test
    machine's ext4 (mounted with `discard`) making and removing them alone took 40 s
    of the test's 90, in memory 2 s. The node code is the same on either file system.
    Where mounting is refused (no CAP_SYS_ADMIN) it is a plain directory: the same
    test, only slower."""
    d = scratch(prefix)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "jrs-test", str(d)],
                             capture_output=True).returncode == 0
    try:
        yield d
    finally:
        if mounted:
            subprocess.run(["umount", "--lazy", str(d)], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def gate_sh(gate: Path, seconds: int = 60) -> str:
    """Shell that waits (at most `seconds`) until `gate` exists."""
    return (f"i=0; while [ ! -e {gate} ] && [ $i -lt {seconds * 10} ]; do sleep 0.1; "
            "i=$((i+1)); done")


@dataclass
class Scratch:
    c: Cluster
    base: Path  # the cluster's directory (logs, state), 0755
    work: Path  # base/w, where the test submits from
    gate: Path  # work/go, made by the test when the jobs waiting for it may end


@contextlib.contextmanager
def scratch_cluster(pyz: Path, prefix: str, slots: tuple = (1,), *, start: bool = True,
                    work_mode: Optional[int] = 0o755, in_memory: bool = False,
                    make: Optional[Callable[[Path], Cluster]] = None,
                    **kw) -> Iterator[Scratch]:
    """A cluster (Cluster(pyz, base, slots, **kw), or `make(base)`) in a new directory
    of /tmp (`scratch`; with `in_memory` on a tmpfs, the nodes' execute directories
    too), started unless `start` is false, with the work directory made (chmod
    `work_mode` unless None); stopped and removed after."""
    with contextlib.ExitStack() as stack:
        if in_memory:
            base = stack.enter_context(memory_dir(prefix))
            kw.setdefault("scratch_in", str(base))
        else:
            base = scratch(prefix)
            stack.callback(shutil.rmtree, base, ignore_errors=True)
        c = make(base) if make is not None else Cluster(pyz, base, slots=list(slots), **kw)
        stack.callback(c.stop)
        work = base / "w"
        work.mkdir()
        if work_mode is not None:
            work.chmod(work_mode)
        if start:
            c.start()
        yield Scratch(c, base, work, work / "go")


# ------------------------------------------------------------------ sweeps with a ledger
# (the set-up the crash and resume tests share: jobs that note each run in one file)

def shared_ledger() -> Path:
    """A ledger the jobs can append to: they run under per-job uids, and pytest's
    tmp_path is 0700."""
    shared = Path(tempfile.mkdtemp(prefix="jrs-ledger-", dir="/tmp"))
    os.chmod(shared, 0o755)
    ledger = shared / "ledger"
    ledger.touch()
    os.chmod(ledger, 0o666)
    return ledger


def sweep(work: Path, n: int, seconds: float, gated: bool = False) -> Path:
    """n jobs that each append their id to a ledger (shared: same machine), sleep, and
    write `done ID` to out/PROC; the log is c.log. Returns the ledger. `gated`: instead
    of sleeping, each waits (at most `seconds`, whole) until `ledger_gate(ledger)`
    exists, for a test whose jobs must run until something has happened, however long
    that takes on a loaded machine, and no longer."""
    work.mkdir(exist_ok=True)
    ledger = shared_ledger()
    wait = gate_sh(ledger_gate(ledger), int(seconds)) if gated else f"sleep {seconds}"
    (work / "job.sh").write_text(f"#!/bin/sh\necho $JRS_JOB_ID >> {ledger}\n{wait}\n"
                                 "echo done $JRS_JOB_ID\n")
    os.chmod(work / "job.sh", 0o755)
    (work / "c.condor").write_text("executable = job.sh\noutput = out/$(Process)\n"
                                   f"log = c.log\nqueue {n}\n")
    return ledger


def ledger_gate(ledger: Path) -> Path:
    """The gate of a `gated` sweep: beside its ledger, where the jobs' uids can see it."""
    return ledger.parent / "go"


def runs(ledger: Path) -> collections.Counter:
    """How often each job id ran."""
    return collections.Counter(ledger.read_text().split()) if ledger.exists() else \
        collections.Counter()


def process_alive(pid: int) -> bool:
    """`pid` exists and is not a zombie (its state read past the last ")" of its
    name, which a process may choose)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_for(pred: Callable[[], object], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def check_outputs(work: Path, n: int) -> None:
    """Each of the sweep's n jobs wrote its `done` line."""
    for i in range(n):
        text = (work / "out" / str(i)).read_text()
        assert text.startswith("done ") and text.strip().endswith(f".{i}")
