"""The HTCondor job event log (`log = file`), in HTCondor's own text format.

Each event is a header line `NNN (CCC.PPP.SSS) YYYY-MM-DD HH:MM:SS text`, body
lines, and a `...` line; HTCondor's readers (`htcondor.JobEventLog`,
`condor_wait`) parse it. One writer per log path, opened in append mode, so
many clusters (or a resumed run) can share a log as they do in HTCondor.
"""

from __future__ import annotations

import os
import time
from typing import Optional


def _stamp(t: Optional[float] = None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _usage(seconds: float) -> str:
    s = int(seconds)
    return f"Usr {s // 86400} {s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class EventLog:
    """Appends events to one log file; every event is written with one write()."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _write(self, code: int, cluster: int, proc: int, text: str, body: list,
               t: Optional[float] = None) -> None:
        lines = [f"{code:03d} ({cluster:03d}.{proc:03d}.000) {_stamp(t)} {text}"]
        lines += body
        lines.append("...")
        os.write(self.fd, ("\n".join(lines) + "\n").encode())

    def submitted(self, cluster: int, proc: int, host: str) -> None:
        self._write(0, cluster, proc, f"Job submitted from host: <{host}>", [])

    def executing(self, cluster: int, proc: int, node: str, t: Optional[float] = None) -> None:
        self._write(1, cluster, proc, f"Job executing on host: <{node}>", [], t)

    def terminated(self, cluster: int, proc: int, result: dict) -> None:
        ru = result.get("rusage") or {}
        utime, stime = float(ru.get("utime") or 0), float(ru.get("stime") or 0)
        usage = (f"\t\t{_usage(utime)}, {_usage(stime).replace('Usr', 'Sys')}")
        if result.get("signal"):
            head = [f"\t(0) Abnormal termination (signal {result['signal']})",
                    "\t(0) No core file"]
        else:
            head = [f"\t(1) Normal termination (return value {result.get('exit_code')})"]
        sent, received = int(result.get("bytes_sent", 0)), int(result.get("bytes_received", 0))
        body = [*head,
                f"{usage}  -  Run Remote Usage",
                "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Local Usage",
                f"{usage}  -  Total Remote Usage",
                "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Total Local Usage",
                f"\t{sent}  -  Run Bytes Sent By Job",
                f"\t{received}  -  Run Bytes Received By Job",
                f"\t{sent}  -  Total Bytes Sent By Job",
                f"\t{received}  -  Total Bytes Received By Job"]
        self._write(5, cluster, proc, "Job terminated.", body, result.get("ended"))

    def aborted(self, cluster: int, proc: int, reason: str) -> None:
        self._write(9, cluster, proc, "Job was aborted.", [f"\t{reason}"])

    def held(self, cluster: int, proc: int, reason: str, code: int = 0) -> None:
        self._write(12, cluster, proc, "Job was held.",
                    [f"\t{reason}", f"\tCode {code} Subcode 0"])

    def close(self) -> None:
        os.close(self.fd)


class EventLogs:
    """The open logs of a cluster, one per distinct path."""

    def __init__(self) -> None:
        self.logs: dict = {}

    def get(self, path: Optional[str]) -> Optional[EventLog]:
        if not path:
            return None
        log = self.logs.get(path)
        if log is None:
            log = self.logs[path] = EventLog(path)
        return log

    def close(self) -> None:
        for log in self.logs.values():
            log.close()
        self.logs.clear()
