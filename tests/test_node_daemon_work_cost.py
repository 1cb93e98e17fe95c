"""The real node daemon charges the CPU it spent making a run's files to the session
(f9edc11: budget.work_cost, measured by the shell, paid before the session's next
message). test_node_budget holds the pure rule, and its floods are of runs the node
refuses (no files made): the daemon's measuring and charging had no test. In process:
its `_on_run` for a run of 100 empty files, the sandbox a stand-in, the CPU clock one
that says each file took 1 ms, and what `_charge` is asked."""

from __future__ import annotations

import asyncio
import io

import pytest

from jrs.node import budget as B
from jrs.node import daemon as daemon_mod

from .test_node_core import run_msg
from .test_node_daemon_claim_gone import attached_daemon


class _Box:
    def __init__(self) -> None:
        self.opened: list = []

    def open_input(self, head: dict):
        self.opened.append(head["name"])
        return io.BytesIO()

    def close(self) -> None:
        pass


def test_the_cpu_spent_making_a_runs_files_is_charged_to_its_session(pyz, tmp_path,
                                                                      monkeypatch):
    d = attached_daemon(pyz, tmp_path)
    box = _Box()
    d._make_box = lambda t: setattr(t, "shell", (box, None))
    clock = [0.0]

    def cpu() -> float:  # each call 1 ms on: a file's open measures 1 ms
        clock[0] += 0.001
        return clock[0]

    monkeypatch.setattr(daemon_mod.time, "process_time", cpu)
    charged: list = []

    async def charge(sid, ch, cost) -> None:
        charged.append((sid, cost))

    d._charge = charge
    msg = dict(run_msg(1), files=[{"name": f"in{i:03d}", "size": 0, "mode": 0o644}
                                  for i in range(100)])
    asyncio.run(d._on_run(1, None, msg))
    assert len(box.opened) == 100, box.opened
    assert charged == [(1, pytest.approx(B.work_cost(0.1)))], charged  # 2,000 messages
