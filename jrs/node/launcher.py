"""A small long-lived process that starts executors and hands them jobs.

A new interpreter per job costs 10-65 ms; a fork of a small process costs well
under a millisecond, and fork cost grows with the size of the process. So the
node daemon starts the launcher once, as a fresh minimal interpreter (`-I -S`,
importing only what an executor needs: no asyncio, no crypto, none of the
daemon's memory or sockets), and hands it taskfile paths through a pipe. The
launcher gives each path to an idle executor, or forks a new one: an executor
runs many jobs over its life, one at a time, each with its own locked taskfile
(so a fork, its page faults and a process teardown are not paid per job). Each
executor starts its own session, so it outlives both the launcher and the
daemon: the launcher exits when the daemon goes away (EOF on the pipe), a busy
executor finishes its job (its result stays in the taskfile for the next
daemon) and then exits, an idle one exits at once. Nothing is re-adopted: a new
daemon starts a new launcher and new executors.

A launcher started for a cluster that must not outlive its owner (`jrs submit
--local`: master, node and submitter are one process) is given that cluster's
directory. Its EOF then means the owner is gone, however it went (`kill -9`
included): it kills every job still running, waits for their executors, and
removes the directory. Nothing could ever collect those jobs.
"""

from __future__ import annotations

import _signal
import gc
import os
import sys
import time

from . import executor

_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from jrs.node.launcher import serve; serve(0, sys.argv[2])")


def code_home() -> str:
    """The directory (or zip) our `jrs` package is imported from."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Launcher:
    """The daemon's handle on its launcher process."""

    def __init__(self, owned_dir: str = "") -> None:
        """`owned_dir`: the directory of a cluster that ends with this process (see the
        module's docstring); empty for a node daemon, whose jobs outlive it."""
        self.proc = None
        self.owned_dir = owned_dir
        self.start()

    def start(self) -> None:
        import subprocess  # the daemon's side only: the launcher stays small to fork fast

        self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _BOOT, code_home(),
                                      self.owned_dir],
                                     stdin=subprocess.PIPE, start_new_session=True)

    def launch(self, taskfile: str) -> None:
        """Ask for an executor for `taskfile` (restarting the launcher if it died)."""
        line = taskfile.encode() + b"\n"
        try:
            os.write(self.proc.stdin.fileno(), line)
        except BrokenPipeError:
            self.close()
            self.start()
            os.write(self.proc.stdin.fileno(), line)

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            self.proc.wait()


def name_process(name: bytes) -> None:
    """Set the name `ps -o comm`, `top` and `pgrep` show (best effort): launcher and
    executors share the launcher's command line, so this is how to tell them apart."""
    try:
        fd = os.open("/proc/self/comm", os.O_WRONLY)
    except OSError:
        return
    try:
        os.write(fd, name)
    except OSError:
        pass
    finally:
        os.close(fd)


MAX_JOBS = 1000  # an executor retires after this many jobs (whatever it leaks stays bounded)
WAIT_FOR_IDLE = 0.05  # seconds a job waits for an executor that is reaping its last one
MAX_IDLE = 16  # idle executors kept; one more announcing itself is told to exit
IDLE_FOR = 300.0  # an idle executor offers to retire after this many seconds without work


def serve(fd: int, owned_dir: str = "") -> None:
    """The launcher's main loop: each taskfile path read from `fd` goes to an idle
    executor, or to a new one forked for it. At EOF with `owned_dir`, end the
    cluster's jobs and remove it (`_Pool.end_all`).

    Each executor has two pipes to us: it writes b"i" on its status pipe when it is
    idle (b"r" when it would like to retire) and reads its next taskfile path from
    its command pipe. EOF on a status pipe means that executor is gone. We hold the
    only write end of each command pipe, so when we exit (the daemon went away)
    every idle executor reads EOF and exits, and a busy one finishes its job, finds
    us gone, and exits too.
    """
    import select

    name_process(b"jrs-launcher")
    for sig in (_signal.SIGINT, _signal.SIGHUP, _signal.SIGTERM):
        _signal.signal(sig, _signal.SIG_IGN)
    executor.prepare()
    executor.become_subreaper()  # a dead executor's orphans come to us (_Pool.sweep)
    gc.freeze()  # keep collections in the children from touching (copying) our pages
    pool = _Pool(fd)
    buf = b""
    while True:
        try:
            ready, _, _ = select.select([fd, *pool.status], [], [], pool.timeout())
        except InterruptedError:
            continue
        pool.reap()
        pool.expire()
        for r in ready:  # idle announcements first: they may take this very work
            if r != fd:
                pool.heard(r)
        if fd in ready:
            data = os.read(fd, 65536)
            if not data:
                if owned_dir:
                    pool.end_all(owned_dir)
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line:
                    pool.hand(os.fsdecode(line))


class _Pool:
    """The launcher's executors and the pipes to each."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.status: dict = {}  # status pipe (read end) -> pid
        self.command: dict = {}  # pid -> command pipe (write end)
        self.idle: list = []  # most recently idle last: it is handed the next job
        self.finishing: set = set()  # wrote its job's end, reaping it: idle in a moment
        self.waiting: list = []  # [(path, deadline)] for an executor that is finishing
        self.forked = 0
        self.executors: set = set()  # every executor we forked and have not reaped yet
        self.gone: set = set()  # executors whose status pipe closed: to reap, then sweep
        self.last: dict = {}  # pid -> the taskfile last handed to it (end_all's to kill)

    def hand(self, path: str) -> None:
        while self.idle:
            if self._give(self.idle.pop(), path):
                return
        if len(self.finishing) > len(self.waiting):  # one is about to be free: wait a bit
            self.waiting.append((path, time.monotonic() + WAIT_FOR_IDLE))
            return
        self._fork(path)

    def _give(self, pid: int, path: str) -> bool:
        try:
            os.write(self.command[pid], os.fsencode(path) + b"\n")
            self.last[pid] = path
            return True
        except OSError:  # it died meanwhile (its status pipe's EOF is on its way)
            self._forget(pid)
            return False

    def timeout(self) -> float | None:
        if self.gone:  # an executor is exiting: reap it, then sweep what it left
            return 0.01
        if not self.waiting:
            return None
        return max(0.0, self.waiting[0][1] - time.monotonic())

    def reap(self) -> None:
        """Collect ended children; once an executor is collected (its orphans have
        been handed to us by then: the kernel reparents them before the parent
        hears of the exit), KILL every child that is not an executor."""
        swept = False
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                break
            if pid in self.executors:
                self.executors.discard(pid)
                self.gone.discard(pid)
                self.last.pop(pid, None)
                swept = True
        if swept:
            self.sweep()

    def sweep(self) -> None:
        """KILL our children that are not executors, round after round (a killed
        one's children come to us in turn), each reaped before the next round.
        Bounded: 1,000 rounds, 2 s (one stuck in the kernel, state D, is left for the
        next sweep and reaped whenever it ends: it stays our child, so its pid stays
        its own)."""
        deadline = time.monotonic() + 2.0
        for _ in range(1000):
            foreign = [p for p in executor.children_of(os.getpid())
                       if p not in self.executors]
            if not foreign or time.monotonic() > deadline:
                return
            for pid in foreign:
                try:
                    os.kill(pid, _signal.SIGKILL)
                except OSError:
                    pass
            left = set(foreign)
            while left and time.monotonic() <= deadline:
                for pid in list(left):
                    try:
                        if os.waitpid(pid, os.WNOHANG)[0]:
                            left.discard(pid)
                    except ChildProcessError:
                        left.discard(pid)
                if left:
                    time.sleep(0.001)

    def end_all(self, owned_dir: str) -> None:
        """The owner of our cluster is gone: kill each job still running (as the node
        daemon does: `killed` in its taskfile, then TERM to its executor, which TERMs
        the job's unit and KILLs it after the job's grace period), let idle executors
        go, wait for every executor (bounded: the longest grace plus 10 s, at most
        5 minutes), then remove the cluster's directory."""
        import shutil

        from . import taskfile

        wait = 0.0
        for pid, path in list(self.last.items()):
            try:
                st = taskfile.load(path)
                if st.finished:
                    continue
                if st.killed is None:
                    taskfile.append_event(path, {"e": "killed", "signal": _signal.SIGTERM,
                                                 "t": time.time()}, sync=False)
                os.kill(pid, _signal.SIGTERM)
                wait = max(wait, float(st.spec.get("kill_grace", 5)))
            except (OSError, ValueError, TypeError):
                continue
        for pid in list(self.command):
            self._forget(pid)  # EOF on their command pipes: the idle ones exit now
        deadline = time.monotonic() + min(wait + 10.0, 300.0)
        while self.executors and time.monotonic() < deadline:
            self.reap()
            if self.executors:
                time.sleep(0.02)
        self.reap()
        shutil.rmtree(owned_dir, ignore_errors=True)

    def expire(self) -> None:
        """Work that waited too long for a finishing executor gets a new one."""
        now = time.monotonic()
        while self.waiting and (self.waiting[0][1] <= now
                                or len(self.waiting) > len(self.finishing)):
            self._fork(self.waiting.pop(0)[0])

    def heard(self, r: int) -> None:
        pid = self.status[r]
        try:
            said = os.read(r, 64)
        except OSError:
            said = b""
        if not said:  # gone
            self._forget(pid)
            self.gone.add(pid)
            return
        for c in said:
            if pid not in self.command:
                return
            if c == ord("f"):
                self.finishing.add(pid)
            elif c == ord("r") and pid in self.idle:  # idle too long, nothing handed to it
                self._forget(pid)  # EOF on its command pipe: it exits
            elif c == ord("i") and pid not in self.idle:
                self.finishing.discard(pid)
                if self.waiting:
                    if not self._give(pid, self.waiting.pop(0)[0]):
                        return
                elif len(self.idle) >= MAX_IDLE:
                    self._forget(pid)
                else:
                    self.idle.append(pid)

    def _forget(self, pid: int) -> None:
        w = self.command.pop(pid, None)
        if w is not None:
            os.close(w)
        for r, p in list(self.status.items()):
            if p == pid:
                del self.status[r]
                os.close(r)
        if pid in self.idle:
            self.idle.remove(pid)
        self.finishing.discard(pid)

    def _fork(self, path: str) -> None:
        try:
            cmd_rd, cmd_wr = os.pipe()
            st_rd, st_wr = os.pipe()
        except OSError as exc:
            print(f"jrs launcher: cannot start an executor for {path}: {exc}", file=sys.stderr)
            return
        try:
            pid = os.fork()
        except OSError as exc:
            for f in (cmd_rd, cmd_wr, st_rd, st_wr):
                os.close(f)
            print(f"jrs launcher: cannot fork an executor for {path}: {exc}", file=sys.stderr)
            return
        if pid:
            os.close(cmd_rd)
            os.close(st_wr)
            self.command[pid] = cmd_wr
            self.status[st_rd] = pid
            self.executors.add(pid)
            self.last[pid] = path
            self.forked += 1
            return
        code = 0
        try:
            # only the launcher may hold these: an executor holding another's command
            # pipe would keep it from seeing EOF when the launcher goes
            for f in (self.fd, cmd_wr, st_rd, *self.command.values(), *self.status):
                os.close(f)
            name_process(b"jrs-executor")
            os.setsid()
            _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
            executor.become_executor()
            code = _executor_loop(path, cmd_rd, st_wr)
        except BaseException as exc:  # never let a broken job take anything else down
            print(f"jrs executor {path}: {exc!r}", file=sys.stderr)
            code = 1
        finally:
            try:
                executor.retire()  # the cgroups it kept for its jobs
            finally:
                os._exit(code)


def _say(wr: int, what: bytes) -> None:
    try:
        os.write(wr, what)
    except OSError:
        pass


def _executor_loop(path: str, rd: int, wr: int) -> int:
    """A reused executor: one job at a time, each from its own locked taskfile, until
    the launcher goes away, MAX_JOBS is reached, or it was let go after idling."""
    import select

    _signal.signal(_signal.SIGTERM, executor._ignore)  # kills bind to taskfiles (_Killer)
    buf = b""
    for n in range(MAX_JOBS):
        try:
            executor.run(path, bound=True, on_result=lambda: _say(wr, b"f"))
        except executor.TaskBusy:
            pass
        executor.reap_orphans()
        if n == MAX_JOBS - 1:
            break
        try:
            os.write(wr, b"i")
        except OSError:  # the launcher is gone: so is our daemon
            return 0
        idle = 0.0
        while b"\n" not in buf:
            try:
                ready, _, _ = select.select([rd], [], [], 1.0)
            except InterruptedError:
                continue
            if not ready:
                executor.reap_orphans()  # an orphan that ended just after its job
                idle += 1.0
                if idle >= IDLE_FOR:
                    idle = float("-inf")  # ask once; the answer is EOF or a path
                    try:
                        os.write(wr, b"r")
                    except OSError:
                        return 0
                continue
            data = os.read(rd, 4096)
            if not data:
                return 0
            buf += data
        line, buf = buf.split(b"\n", 1)
        path = os.fsdecode(line)
    return 0
