"""The executor: owns one job for its whole life and records it in the taskfile.

It holds an exclusive lock on the taskfile while it lives (that is how the
node daemon knows it is alive, immune to pid reuse), starts the user process
as its own process group, waits for it, kills whatever the job left behind,
and appends the outcome. It runs in its own session and ignores hangups, so
the node daemon may die and come back at any moment.

SIGTERM means "remove this job": the process group gets TERM, then KILL after
the spec's grace period.

It uses the C modules `_signal` and `_socket` rather than `signal` and
`socket`: those wrappers import `enum` (and `socket` also `selectors`), which
makes the launcher that forks us 1 MB bigger, and their enum conversions touch
(so copy) dozens of pages in every freshly forked executor.
"""

from __future__ import annotations

import _signal
import _socket
import os
import time

from .. import records
from . import taskfile


class TaskBusy(Exception):
    """Another executor owns this taskfile, or the job already finished."""


def _open_locked(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_APPEND)
    try:
        taskfile.lock(fd)  # a lock the daemon's liveness probe tests without taking
    except taskfile.Locked:
        os.close(fd)
        raise TaskBusy(f"{path}: another executor owns this job") from None
    except OSError:
        os.close(fd)
        raise
    return fd


def _open_std(path: str | None, write: bool) -> int:
    if not path:
        return os.open(os.devnull, os.O_RDWR)
    if write:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    return os.open(path, os.O_RDONLY)


def _rusage(ru) -> dict:
    return {"utime": round(ru.ru_utime, 6), "stime": round(ru.ru_stime, 6),
            "maxrss_kb": ru.ru_maxrss}


_notify_sock: _socket.socket | None = None


def prepare() -> None:
    """Do once in the launcher what every forked executor would otherwise do itself."""
    global _notify_sock
    taskfile.boot_id()
    _notify_sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)


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


class _Killer:
    """SIGTERM handling: TERM the job's process group, KILL it after the grace period."""

    def __init__(self, fd: int, grace: float) -> None:
        self.fd = fd
        self.grace = grace
        self.pgid: int | None = None
        self.requested = False

    def on_term(self, signum, frame) -> None:
        if not self.requested:
            self.requested = True
            records.append(self.fd, {"e": "killed", "signal": _signal.SIGTERM, "t": time.time()})
        self._signal(_signal.SIGTERM)
        _signal.signal(_signal.SIGALRM, self.on_alarm)
        _signal.setitimer(_signal.ITIMER_REAL, max(self.grace, 0.01))

    def on_alarm(self, signum, frame) -> None:
        self._signal(_signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.pgid:
            try:
                os.killpg(self.pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def _ignore(signum, frame) -> None:
    """A handler that does nothing. Unlike SIG_IGN it is reset by exec, so the job
    starts with default dispositions (a shell treats signals ignored at entry as
    unignorable)."""


_RESET = (_signal.SIGHUP, _signal.SIGINT, _signal.SIGPIPE, _signal.SIGUSR1, _signal.SIGTERM,
          _signal.SIGALRM, _signal.SIGCHLD, _signal.SIGXFSZ)


def run(path: str) -> dict | None:
    """Run the job of taskfile `path` to its end; return the exit record (None if done)."""
    for sig in (_signal.SIGHUP, _signal.SIGINT, _signal.SIGPIPE, _signal.SIGUSR1):
        _signal.signal(sig, _ignore)
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    fd = _open_locked(path)
    try:
        state = taskfile.parse(path, *records.decode(os.pread(fd, os.fstat(fd).st_size, 0)))
        if state.finished:
            raise TaskBusy(f"{path}: the job already ended")
        spec = state.spec
        me = os.getpid()
        records.append(fd, {"e": "executor", "pid": me, "start": taskfile.process_start(me),
                            "boot": taskfile.boot_id(), "t": time.time()})
        if state.killed is not None:  # removed before it could start
            now = time.time()
            result = {"e": "exit", "code": None, "signal": int(state.killed), "rusage": None,
                      "started": now, "ended": now, "t": now}
            records.append(fd, result)
            _notify(spec, state.key)
            return result
        killer = _Killer(fd, float(spec.get("kill_grace", 5)))
        _signal.signal(_signal.SIGTERM, killer.on_term)
        result = _run_user_process(fd, spec, killer)
        # not fsynced: a crash of the daemon or of this process loses nothing the page
        # cache holds, and after a power loss a job without its exit record is reported
        # lost and reruns, like every job the reboot interrupted
        records.append(fd, result)
        _notify(spec, state.key)
        return result
    finally:
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
          b"x": "cannot run"}


def _failed(step: bytes, code: int, argv0: str, cwd: str | None) -> StartFailed:
    what = _STEPS.get(step, "cannot start the job")
    if step == b"x":
        what += f" {argv0}"
    elif step == b"c":
        what += f" {cwd}"
    return StartFailed(code, f"{what}: {os.strerror(code) if code else 'failed'}")


def _spawn(spec: dict, std: list) -> int:
    """Start the user process in its own session; return its pid.

    As ourselves, `posix_spawn` (vfork and exec: cheap, and it reports exec
    failures as OSError); this process is the job's alone, so it may chdir.
    As another account (a root node), fork, switch identity, and exec.
    """
    argv = [str(a) for a in spec["argv"]]
    env = {str(k): str(v) for k, v in spec["env"].items()}
    cwd = spec.get("cwd") or None
    if spec.get("uid") is None:
        if cwd:
            try:
                os.chdir(cwd)
            except OSError as exc:
                raise _failed(b"c", exc.errno or 0, argv[0], cwd) from None
        actions = [(os.POSIX_SPAWN_DUP2, f, i) for i, f in enumerate(std)]
        try:
            return os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True,
                                  setsigdef=_RESET, setsigmask=())
        except OSError as exc:
            raise _failed(b"x", exc.errno or 0, argv[0], cwd) from None
    return _fork_exec_as(spec, argv, env, std)


def _fork_exec_as(spec: dict, argv: list, env: dict, std: list) -> int:
    """fork, switch to the job's account, exec; a failure comes back as StartFailed.

    The child reports the failed step and errno through a close-on-exec pipe:
    EOF means exec worked.
    """
    uid, gid = int(spec["uid"]), int(spec["gid"])
    groups = [int(g) for g in spec.get("groups") or [gid]]
    cwd = spec.get("cwd")
    rd, wr = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child: only async-signal-safe work until exec
        step = b"s"
        try:
            os.close(rd)
            os.setsid()
            step = b"d"
            for i, f in enumerate(std):
                os.dup2(f, i)
            step = b"g"
            os.setgroups(groups)
            step = b"G"
            os.setgid(gid)
            step = b"u"
            os.setuid(uid)
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
    with os.fdopen(rd, "rb") as r:
        report = r.read()
    if report:
        os.waitpid(pid, 0)
        raise _failed(report[:1], int(report[1:] or 0), argv[0], cwd)
    return pid


def _run_user_process(fd: int, spec: dict, killer: _Killer) -> dict:
    started = time.time()
    std = []
    try:
        for name, write in (("stdin", False), ("stdout", True), ("stderr", True)):
            try:
                std.append(_open_std(spec.get(name), write))
            except OSError as exc:
                raise StartFailed(exc.errno or 0, f"cannot open its {name} {spec.get(name)}: "
                                                  f"{exc.strerror or exc}") from None
        pid = _spawn(spec, std)
    except StartFailed as exc:
        return {"e": "exec-failed", "errno": exc.errno, "t": time.time(), "reason": exc.reason}
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        return {"e": "exec-failed", "errno": 0, "t": time.time(),
                "reason": f"bad job spec: {exc}"}
    finally:
        for f in std:
            os.close(f)
    killer.pgid = pid
    records.append(fd, {"e": "running", "pid": pid, "start": taskfile.process_start(pid),
                        "t": started})
    if killer.requested:  # a TERM that came before the pid was known
        killer.on_term(_signal.SIGTERM, None)
    _, status, usage = os.wait4(pid, 0)
    ended = time.time()
    _signal.setitimer(_signal.ITIMER_REAL, 0)
    try:  # whatever the job left running in its group goes with it
        os.killpg(pid, _signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if os.WIFSIGNALED(status):
        code, sig = None, os.WTERMSIG(status)
    else:
        code, sig = os.waitstatus_to_exitcode(status), None
    return {"e": "exit", "code": code, "signal": sig, "rusage": _rusage(usage),
            "started": started, "ended": ended, "t": ended}
