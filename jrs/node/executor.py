"""The executor: owns one job for its whole life and records it in the taskfile.

It holds an exclusive lock on the taskfile while it lives (that is how the
node daemon knows it is alive, immune to pid reuse), starts the user process
in the job's containment unit (its cgroup, its per-job uid, its process group:
see unit.py), waits for it, kills whatever the job left behind, reaps the
per-job uid (processes, temporary files, IPC), and appends the outcome. It
runs in its own session and ignores hangups, so the node daemon may die and
come back at any moment.

SIGTERM means "remove this job": the unit gets TERM, then KILL after the
spec's grace period.

It uses the C modules `_signal` and `_socket` rather than `signal` and
`socket`: those wrappers import `enum` (and `socket` also `selectors`), which
makes the launcher that forks us 1 MB bigger, and their enum conversions touch
(so copy) dozens of pages in every freshly forked executor.
"""

from __future__ import annotations

import _signal
import _socket
import os
import resource
import time

from .. import records
from . import taskfile, unit


class TaskBusy(Exception):
    """Another executor owns this taskfile, or the job already finished."""


def _open_locked(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TaskBusy(f"{path}: the job is gone") from None
    try:
        taskfile.lock(fd)  # a lock the daemon's liveness probe tests without taking
    except taskfile.Locked:
        os.close(fd)
        raise TaskBusy(f"{path}: another executor owns this job") from None
    except OSError:
        os.close(fd)
        raise
    return fd


def _open_std(path: str | None, write: bool, nofollow: bool) -> int:
    """Open one of the job's standard streams. On a root node this runs in the
    job's child after the identity switch, so the job's rights decide what it
    may open (`output = /etc/cron.d/x` is refused by the kernel, not by us);
    sandbox streams are never opened through a symbolic link."""
    if not path:
        return os.open(os.devnull, os.O_RDWR)
    flags = os.O_NOFOLLOW if nofollow else 0
    if write:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flags, 0o644)
    return os.open(path, os.O_RDONLY | flags)


def _rusage(ru) -> dict:
    return {"utime": round(ru.ru_utime, 6), "stime": round(ru.ru_stime, 6),
            "maxrss_kb": ru.ru_maxrss}


_notify_sock: _socket.socket | None = None
_prctl = None
_subreaper = False  # we are our jobs' child subreaper (unit.Unit.subreaper)
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36


def prepare() -> None:
    """Do once in the launcher what every forked executor would otherwise do itself."""
    global _notify_sock, _prctl
    import shutil  # noqa: F401  (a per-job uid's clean-up needs it after the identity switch)

    taskfile.boot_id()
    _notify_sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    try:
        import ctypes

        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):  # not Linux: nothing to set
        _prctl = None


def become_executor() -> None:
    """In a freshly forked executor: be the child subreaper of the job (its orphans,
    a double-forked daemon too, come to us and are reaped, even where PID 1 does not
    reap), and not dumpable (a job of our own uid on a non-root node cannot ptrace
    us or read our memory; a root executor is out of its reach anyway). Linux only;
    elsewhere nothing happens."""
    global _subreaper
    if _prctl is None:
        return
    _subreaper = become_subreaper()
    _prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def become_subreaper() -> bool:
    """Be a child subreaper (orphans below us come to us); True when we are one and
    the kernel lists our children (/proc/PID/task/TID/children). Linux only."""
    if _prctl is None:
        return False
    return _prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0 and \
        os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def children_of(pid: int) -> list:
    """The children of `pid`, from the kernel's lists (no /proc walk)."""
    return unit._children_of(pid)


_leaf: str | None = None  # the cgroup name of a reused executor (unit.Unit.reuse)


def _own_leaf() -> str:
    global _leaf
    if _leaf is None:
        _leaf = f"x{os.getpid()}-{os.urandom(4).hex()}"
    return _leaf


def _record_executor(fd: int, job_unit: unit.Unit) -> None:
    """We own the job (and, reused, which cgroups it runs in: the daemon reaps those
    if we die)."""
    me = os.getpid()
    rec = {"e": "executor", "pid": me, "start": taskfile.process_start(me),
           "boot": taskfile.boot_id(), "t": time.time()}
    if job_unit.reused:
        rec["cgroup_leaf"] = job_unit.leaf
    records.append(fd, rec)


def retire() -> None:
    """A reused executor is leaving: its cgroups go (empty: its last job was reaped)."""
    unit.remove_made()


def reap_orphans() -> None:
    """Collect whatever children have ended (orphans of the job that came to us)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _notify(spec: dict, key: str) -> None:
    """Tell the node daemon a job ended, if it listens (best effort: it also rescans)."""
    address = spec.get("notify")
    if not address:
        return
    try:
        if _notify_sock is not None:
            _notify_sock.sendto(key.encode(), address)
            return
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        try:
            s.sendto(key.encode(), address)
        finally:
            s.close()
    except OSError:
        pass


def _kill_recorded(fd: int, since: int = 0) -> bool:
    """Does the taskfile open on `fd` carry a `killed` record (the daemon's kill)?
    `since`: only the records from that offset on (a record boundary: the end of
    what was read before, every record being one appended line), so a job's start
    does not decode its spec a second time."""
    try:
        size = os.fstat(fd).st_size
        recs, _ = records.decode(os.pread(fd, max(0, size - since), since))
    except (OSError, ValueError):
        return False
    return any(r.get("e") == "killed" for r in (recs if since else recs[1:]))


class _Killer:
    """SIGTERM handling: TERM the job's unit, KILL it after the grace period.

    `bound`: a reused executor (one launched by the launcher) runs many jobs over its
    life, so a TERM alone does not say which job to remove (one sent for its previous
    job may arrive late). The kill binds to the taskfile: the daemon appends `killed`
    to the job's taskfile and then sends TERM, and a bound killer acts only when its
    own taskfile says so. A one-shot executor (`jrs executor PATH`) takes a bare TERM
    as "remove this job" and records it itself."""

    def __init__(self, fd: int, grace: float, job_unit: unit.Unit, bound: bool = False) -> None:
        self.fd = fd
        self.grace = grace
        self.unit = job_unit
        self.bound = bound
        self.started = False
        self.requested = False

    def on_term(self, signum, frame) -> None:
        if not self.requested:
            if self.bound:
                if not _kill_recorded(self.fd):
                    return  # not for this job
            else:
                records.append(self.fd, {"e": "killed", "signal": _signal.SIGTERM,
                                         "t": time.time()})
            self.requested = True
        self._signal(_signal.SIGTERM)
        _signal.signal(_signal.SIGALRM, self.on_alarm)
        _signal.setitimer(_signal.ITIMER_REAL, max(self.grace, 0.01))

    def on_alarm(self, signum, frame) -> None:
        self._signal(_signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.started:
            self.unit.signal(sig)


def _ignore(signum, frame) -> None:
    """A handler that does nothing. Unlike SIG_IGN it is reset by exec, so the job
    starts with default dispositions (a shell treats signals ignored at entry as
    unignorable)."""


# Every standard signal back to its default in the job, not only the ones we change: a
# node started from a background shell (`jrs node &` in a script, an init script) has
# SIGQUIT and SIGINT ignored from birth, and the job would inherit that.
_RESET = tuple(s for s in _signal.valid_signals()
               if 0 < s < 32 and s not in (_signal.SIGKILL, _signal.SIGSTOP))


def run(path: str, bound: bool = False, on_result=None) -> dict | None:
    """Run the job of taskfile `path` to its end; return the exit record (None if done).
    `bound`: this executor is reused (see _Killer). Returns once the job's unit is
    reaped and the taskfile unlocked (the daemon may then hand out its uid again).
    `on_result()` is called once the exit record is written, before the reaping."""
    for sig in (_signal.SIGHUP, _signal.SIGINT, _signal.SIGPIPE, _signal.SIGUSR1):
        _signal.signal(sig, _ignore)
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    fd = _open_locked(path)
    try:
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        state = taskfile.parse(path, *records.decode(data))
        if state.finished:
            raise TaskBusy(f"{path}: the job already ended")
        # the taskfile's bytes and name are made durable before the job can have
        # effects (the daemon's create leaves both to us, off its event loop): a power
        # cut after this cannot make the node forget a job that ran. A failure (a
        # broken disk) raises: the job does not start, and the daemon reports it
        # lost, so it reruns elsewhere.
        taskfile.sync_name(path, fd)
        spec = state.spec
        job_unit = unit.Unit.from_spec(spec, state.key)
        job_unit.subreaper = _subreaper
        if bound and job_unit.roots:  # a reused executor: its jobs share its cgroups
            job_unit.reuse(_own_leaf())
        _record_executor(fd, job_unit)
        killer = _Killer(fd, float(spec.get("kill_grace", 5)), job_unit, bound)
        _signal.signal(_signal.SIGTERM, killer.on_term)
        # removed before it could start (a bound killer also looks again now that its
        # handler is in place: a kill recorded meanwhile had its TERM ignored)
        seen = data.rfind(b"\n") + 1  # (a torn last line is read again)
        if state.killed is not None or (bound and _kill_recorded(fd, seen)):
            _signal.signal(_signal.SIGTERM, _ignore if bound else _signal.SIG_DFL)
            now = time.time()
            result = {"e": "exit", "code": None,
                      "signal": int(state.killed or _signal.SIGTERM), "rusage": None,
                      "started": now, "ended": now, "t": now}
            records.append(fd, result)
            _notify(spec, state.key)
            return result
        begun = time.time()
        result = _run_user_process(fd, spec, killer)
        # not fsynced: a crash of the daemon or of this process loses nothing the page
        # cache holds, and after a power loss a job without its exit record is reported
        # lost and reruns, like every job the reboot interrupted
        records.append(fd, result)
        _notify(spec, state.key)
        if on_result is not None:
            on_result()
        # The unit is dead already (its cgroup emptied: nothing can touch the sandbox
        # while the node collects it); reaping a per-job uid (its stray processes, its
        # temporary files and IPC) and removing the cgroups happen after the result is
        # out. The uid is handed out again only once we let go of the taskfile (the
        # daemon waits for our lock on it).
        reaped = killer.unit.reap(since=begun)
        if not reaped["clean"]:
            records.append(fd, {"e": "reaped", "clean": False, "t": time.time()})
        return result
    finally:
        if bound:  # nothing of this job may act later (its uid goes to another job)
            _signal.setitimer(_signal.ITIMER_REAL, 0)
            _signal.signal(_signal.SIGTERM, _ignore)
            _signal.signal(_signal.SIGALRM, _ignore)
        os.close(fd)


class StartFailed(Exception):
    """The job could not be started; `reason` says which step failed and why."""

    def __init__(self, errno_: int, reason: str) -> None:
        super().__init__(reason)
        self.errno = errno_
        self.reason = reason


_STEPS = {b"s": "cannot start a session", b"d": "cannot set up stdin/stdout/stderr",
          b"g": "cannot take on the job's groups", b"G": "cannot take on the job's group",
          b"u": "cannot take on the job's user id", b"c": "cannot enter the working directory",
          b"x": "cannot run", b"0": "cannot open its stdin", b"1": "cannot open its stdout",
          b"2": "cannot open its stderr", b"j": "cannot enter the job's cgroup",
          b"l": "cannot set the job's process limit"}


def _failed(step: bytes, code: int, argv0: str, cwd: str | None,
            std: tuple = ()) -> StartFailed:
    what = _STEPS.get(step, "cannot start the job")
    if step == b"x":
        what += f" {argv0}"
    elif step == b"c":
        what += f" {cwd}"
    elif step in (b"0", b"1", b"2") and std:
        what += f" {std[int(step)]}"
    return StartFailed(code, f"{what}: {os.strerror(code) if code else 'failed'}")


def _std_paths(spec: dict) -> tuple:
    return tuple(spec.get(n) or None for n in ("stdin", "stdout", "stderr"))


def _open_all_std(spec: dict) -> list:
    """The job's three streams (as whoever we are now); raises StartFailed."""
    std: list = []
    nofollow = not spec.get("shared_fs")
    try:
        for i, path in enumerate(_std_paths(spec)):
            try:
                std.append(_open_std(path, i > 0, nofollow))
            except OSError as exc:
                raise _failed(b"%d" % i, exc.errno or 0, "", None, _std_paths(spec)) from None
    except BaseException:
        for f in std:
            os.close(f)
        raise
    return std


def _spawn(spec: dict, killer: _Killer) -> int:
    """Start the user process in its own session and unit; return its pid.

    As ourselves (a non-root node), `posix_spawn` (vfork and exec: cheap, and it
    reports exec failures as OSError); this process is the job's alone, so it
    may chdir. As another identity (a root node), fork, enter the cgroup, switch
    identity, open the streams as the job, and exec.
    """
    argv = [str(a) for a in spec["argv"]]
    env = {str(k): str(v) for k, v in spec["env"].items()}
    cwd = spec.get("cwd") or None
    if spec.get("uid") is None:
        std = _open_all_std(spec)
        try:
            if cwd:
                try:
                    os.chdir(cwd)
                except OSError as exc:
                    raise _failed(b"c", exc.errno or 0, argv[0], cwd) from None
            actions = [(os.POSIX_SPAWN_DUP2, f, i) for i, f in enumerate(std)]
            try:
                pid = os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True,
                                     setsigdef=_RESET, setsigmask=())
            except OSError as exc:
                raise _failed(b"x", exc.errno or 0, argv[0], cwd) from None
        finally:
            for f in std:
                os.close(f)
            if cwd:  # a reused executor must not keep (or start its next job in) this one's
                os.chdir("/")
        killer.unit.pgid = pid
        killer.started = True
        return pid
    return _fork_exec_as(spec, argv, env, killer)


def _fork_exec_as(spec: dict, argv: list, env: dict, killer: _Killer) -> int:
    """fork, enter the unit, switch to the job's identity, open its streams, exec;
    a failure comes back as StartFailed.

    The child reports the failed step and errno through a close-on-exec pipe:
    EOF means exec worked. The streams are opened after the switch: a path the
    job names is opened with the job's rights, never root's.
    """
    uid, gid = int(spec["uid"]), int(spec["gid"])
    per_job = bool(spec.get("per_job_uid"))
    groups = [] if per_job else [int(g) for g in spec.get("groups") or [gid]]
    cwd = spec.get("cwd")
    job_unit = killer.unit
    nproc = None if job_unit.pids_limited or not per_job else job_unit.pids_max
    paths = _std_paths(spec)
    nofollow = not spec.get("shared_fs")
    rd, wr = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child
        step = b"s"
        try:
            os.close(rd)
            os.setsid()
            step = b"j"
            job_unit.join_self()
            step = b"l"
            if nproc is not None:  # no pids cgroup: the per-job uid's process count
                resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
            step = b"g"
            os.setgroups(groups)
            step = b"G"
            os.setresgid(gid, gid, gid)
            step = b"u"
            os.setresuid(uid, uid, uid)
            for i, path in enumerate(paths):
                step = b"%d" % i
                f = _open_std(path, i > 0, nofollow)
                if f != i:
                    os.dup2(f, i)
                    os.close(f)
            step = b"c"
            if cwd:
                os.chdir(cwd)
            for sig in _RESET:
                _signal.signal(sig, _signal.SIG_DFL)
            step = b"x"
            os.execve(argv[0], argv, env)
        except OSError as exc:
            os.write(wr, step + b"%d" % (exc.errno or 0))
        finally:
            os._exit(127)
    os.close(wr)
    job_unit.pgid = pid
    killer.started = True
    with os.fdopen(rd, "rb") as r:
        report = r.read()
    if report:
        os.waitpid(pid, 0)
        job_unit.kill_all()
        raise _failed(report[:1], int(report[1:] or 0), argv[0], cwd, paths)
    return pid


def _kill_descendants() -> None:
    """KILL every process below this executor. Without a cgroup or a per-job uid the
    unit is the job's process group and its pid's descendants; a daemon it started
    in a session of its own through a double fork is in neither, but it came to us
    (a child subreaper): what is below us once the job ended is the job's alone (an
    executor runs one job at a time), and must not live on into the next job's time.
    Bounded: 100 rounds."""
    me = os.getpid()
    for _ in range(100):
        reap_orphans()
        left = unit.descendants(me)
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, _signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.001)


def _run_user_process(fd: int, spec: dict, killer: _Killer) -> dict:
    global _leaf
    started = time.time()
    job_unit = killer.unit
    leaf = job_unit.leaf
    job_unit.create()
    if job_unit.leaf != leaf:  # its cgroups could not be emptied: new ones, recorded
        _leaf = job_unit.leaf
        _record_executor(fd, job_unit)
    try:
        pid = _spawn(spec, killer)
    except StartFailed as exc:
        job_unit.kill_all()
        return {"e": "exec-failed", "errno": exc.errno, "t": time.time(), "reason": exc.reason}
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        job_unit.kill_all()
        return {"e": "exec-failed", "errno": 0, "t": time.time(),
                "reason": f"bad job spec: {exc}"}
    records.append(fd, {"e": "running", "pid": pid, "start": taskfile.process_start(pid),
                        "t": started})
    if killer.requested:  # a TERM that came before the pid was known
        killer.on_term(_signal.SIGTERM, None)
    while True:  # orphans of the job come to us (a child subreaper): reap them as they end
        got, status, usage = os.wait4(-1, 0)
        if got == pid:
            break
    ended = time.time()
    _signal.setitimer(_signal.ITIMER_REAL, 0)
    job_unit.kill_all()  # whatever the job left running in its unit goes with it
    if not job_unit.dirs and not job_unit.per_job and not job_unit.subreaper:
        _kill_descendants()  # (as a subreaper kill_all did it, without a /proc walk)
    if os.WIFSIGNALED(status):
        code, sig = None, os.WTERMSIG(status)
    else:
        code, sig = os.waitstatus_to_exitcode(status), None
    return {"e": "exit", "code": code, "signal": sig, "rusage": _rusage(usage),
            "started": started, "ended": ended, "t": ended}
