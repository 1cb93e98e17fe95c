"""Test-only switches that put defects of issue 12 back, to prove the simulation's reach.

Each switch is off unless a test (or `python -m tests.sim --switch NAME`)
turns it on for one run; `tests/test_sim.py` shows that with the switch on
the CI seed budget finds a failing seed. A switch lives in the core it
breaks (a module-level flag, FoundationDB's BUGGIFY idea) where the core has
one; until then it is applied here, around the core's method, and says so.
"""

from __future__ import annotations

import contextlib

SWITCHES: dict = {}


def switch(name: str, doc: str):
    def register(fn):
        SWITCHES[name] = (doc, fn)
        return fn
    return register


@contextlib.contextmanager
def enabled(names: set):
    unknown = set(names) - set(SWITCHES)
    if unknown:
        raise KeyError(f"unknown switch(es): {', '.join(sorted(unknown))}; "
                       f"known: {', '.join(sorted(SWITCHES))}")
    with contextlib.ExitStack() as stack:
        for name in sorted(names):
            stack.enter_context(SWITCHES[name][1]())
        yield


@contextlib.contextmanager
def _patched(obj, attr: str, make):
    saved = getattr(obj, attr)
    setattr(obj, attr, make(saved))
    try:
        yield
    finally:
        setattr(obj, attr, saved)


@switch("release-kills", "Pool.release sends a claim-drop that kills the running job "
                         "(issue 12: resume kills the jobs it should re-attach)")
def _release_kills():
    from jrs.cluster.pool import Pool

    def make(orig):
        def release(self, sid, cid, now, *a, **kw):
            out = orig(self, sid, cid, now, *a, **kw)
            return [(k, p, dict(m, kill=True) if m.get("type") == "claim-drop" else m)
                    for k, p, m in out]
        return release
    return _patched(Pool, "release", make)
