"""A small long-lived process that forks one executor per job.

A new interpreter per job costs 10-65 ms; a fork of this small process costs
about a millisecond. The node daemon forks the launcher at start-up, before it
loads crypto or opens sockets, and hands it taskfile paths through a pipe.
Each executor forked from here starts its own session, so it outlives both the
launcher and the daemon. The launcher exits when the daemon goes away (EOF on
the pipe); the executors it started are adopted by init and keep running.
"""

from __future__ import annotations

import os
import signal
import sys

from . import executor


class Launcher:
    """The daemon's handle on its launcher process."""

    def __init__(self) -> None:
        self.pid = 0
        self.fd = -1
        self.start()

    def start(self) -> None:
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(write_end)
            try:
                _serve(read_end)
            finally:
                os._exit(0)
        os.close(read_end)
        self.pid, self.fd = pid, write_end

    def launch(self, taskfile: str) -> None:
        """Ask for an executor for `taskfile` (restarting the launcher if it died)."""
        line = taskfile.encode() + b"\n"
        try:
            os.write(self.fd, line)
        except BrokenPipeError:
            os.close(self.fd)
            self.start()
            os.write(self.fd, line)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _serve(fd: int) -> None:
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # executors are reaped automatically
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
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        executor.run(path)
    except executor.TaskBusy:
        pass
    except BaseException as exc:  # never let a broken job take anything else down
        print(f"jrs executor {path}: {exc!r}", file=sys.stderr)
        code = 1
    finally:
        os._exit(code)
