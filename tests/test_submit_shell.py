"""The submit shell (client/runner.py): identity, supervision, the action table."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pwd

from jrs.client import core as C
from jrs.client import runner


def test_user_name_comes_from_the_uid_not_the_environment(monkeypatch):
    """Issue 13 (contract 6): `LOGNAME=other jrs submit` must not run jobs as `other`."""
    monkeypatch.setenv("LOGNAME", "other")
    monkeypatch.setenv("USER", "other")
    assert runner.user_name() == pwd.getpwuid(os.getuid()).pw_name != "other"


def _submission() -> runner.Submission:
    return runner.Submission("f.condor", None, b"", None, None, None, {}, "", None)


def test_every_action_of_the_core_has_an_executor():
    async def go():
        return _submission()

    sub = asyncio.run(go())
    actions = {obj for obj in vars(C).values()
               if isinstance(obj, type) and dataclasses.is_dataclass(obj)
               and obj.__module__ == C.__name__
               and obj not in (C.CoreConfig, C.ClaimState, C.NodeState)}
    # ReceiveOutputs is executed inline by the link that read the `finished`
    assert set(sub.EXEC) | {C.ReceiveOutputs} == actions


def test_a_failing_background_loop_ends_the_run_instead_of_dying_silently():
    async def go():
        sub = _submission()

        async def broken():
            await asyncio.sleep(0)
            raise ValueError("lazy expansion blew up")

        sub.spawn("the ticker", broken())
        await asyncio.wait_for(sub.done.wait(), 5)
        return sub.failure

    failure = asyncio.run(go())
    assert failure is not None and "the ticker" in failure and "ValueError" in failure
