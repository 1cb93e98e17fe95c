"""What a non-root node does about a stopped executor.

On a non-root node every job runs as the node's own account, so a job may send
its executor (or any process of the node) a signal. SIGKILL of the executor
makes the job lost (the daemon sees its lock go) and it reruns, a bounded number
of times. SIGSTOP would leave the executor holding its lock while it can neither
record the job's end nor act on a kill: the job would look running for ever and
`jrs rm` would not end it. So the daemon looks at each running job's executor
once a second, and one found stopped (`T` in /proc/PID/stat) at STOPPED_FOR
checks in a row is killed: the job is then lost like any job whose executor
died (the launcher kills what the job left, the daemon reaps its unit), and
reruns. A root node needs none of this: its executors are root's, out of a
job's reach. Pure: the daemon feeds it what it read and kills what it returns.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

STOPPED_FOR = 2  # consecutive checks (CHECK_EVERY apart): a STOP/CONT blip is forgiven


class StopWatch:
    """Counts, per job, the checks in a row that found its executor stopped."""

    def __init__(self, limit: int = STOPPED_FOR) -> None:
        self.limit = limit
        self.count: Dict[str, int] = {}
        self.executors: Dict[str, Tuple[int, Optional[int]]] = {}  # key -> (pid, start)

    def executor(self, key: str) -> Optional[Tuple[int, Optional[int]]]:
        return self.executors.get(key)

    def learn(self, key: str, pid: int, start: Optional[int]) -> None:
        self.executors[key] = (pid, start)

    def seen(self, key: str, stopped: bool) -> bool:
        """One check's finding; True: kill this job's executor now (once)."""
        if not stopped:
            self.count.pop(key, None)
            return False
        n = self.count.get(key, 0) + 1
        self.count[key] = n
        return n == self.limit

    def keep(self, keys: Iterable[str]) -> List[str]:
        """Forget jobs that are no longer checked; the keys forgotten."""
        keys = set(keys)
        gone = [k for k in self.executors if k not in keys]
        for k in gone:
            self.executors.pop(k, None)
            self.count.pop(k, None)
        return gone
