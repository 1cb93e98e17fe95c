"""A small long-lived process that forks one executor per job.

A new interpreter per job costs 10-65 ms; a fork of a small process costs well
under a millisecond, and fork cost grows with the size of the process. So the
node daemon starts the launcher once, as a fresh minimal interpreter (`-I -S`,
importing only what an executor needs: no asyncio, no crypto, none of the
daemon's memory or sockets), and hands it taskfile paths through a pipe. Each
executor forked from here starts its own session, so it outlives both the
launcher and the daemon. The launcher exits when the daemon goes away (EOF on
the pipe); the executors it started are adopted by init and keep running.
"""

from __future__ import annotations

import _signal
import gc
import os
import sys

from . import executor

_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from jrs.node.launcher import serve; serve(0)")


def code_home() -> str:
    """The directory (or zip) our `jrs` package is imported from."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Launcher:
    """The daemon's handle on its launcher process."""

    def __init__(self) -> None:
        self.proc = None
        self.start()

    def start(self) -> None:
        import subprocess  # the daemon's side only: the launcher stays small to fork fast

        self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _BOOT, code_home()],
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


def serve(fd: int) -> None:
    """The launcher's main loop: one executor per taskfile path read from `fd`."""
    name_process(b"jrs-launcher")
    for sig in (_signal.SIGINT, _signal.SIGHUP, _signal.SIGTERM):
        _signal.signal(sig, _signal.SIG_IGN)
    _signal.signal(_signal.SIGCHLD, _signal.SIG_IGN)  # executors are reaped automatically
    executor.prepare()
    gc.freeze()  # keep collections in the children from touching (copying) our pages
    buf = b""
    while True:
        try:
            data = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not data:
            return
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line:
                _fork_executor(fd, os.fsdecode(line))


def _fork_executor(fd: int, path: str) -> None:
    try:
        pid = os.fork()
    except OSError as exc:
        print(f"jrs launcher: cannot fork an executor for {path}: {exc}", file=sys.stderr)
        return
    if pid:
        return
    code = 0
    try:
        os.close(fd)
        name_process(b"jrs-executor")
        os.setsid()
        _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
        executor.run(path)
    except executor.TaskBusy:
        pass
    except BaseException as exc:  # never let a broken job take anything else down
        print(f"jrs executor {path}: {exc!r}", file=sys.stderr)
        code = 1
    finally:
        os._exit(code)
