"""Count the runs nodes refuse "unknown claim" over a seed scan of the simulation, and say
how each refused claim had gone from its node.

    nice -n 19 python3 bench/sim_refusals.py [--start 1] [--count 300]
                [--shapes small,large,revoke,backlog] [--switch NAME] [--out F]

Such a refusal is one wasted input transfer and an uncounted rerun: the submitter sent
a `run` on a claim its node had dropped (issue 12). How the claim went tells which path
sent it: `with-job` (the claim was being released while a job ran on it and went when
that job ended), `free` (dropped while no job ran on it: the master's claim-drop, a
release), `restart` (the node never held it since it last started). `last_finished`
is the last `finished` the node built of a job on that claim: (simulated time, the
node back from a stop and not confirmed yet, whether it said `claim_gone`, the task);
none: the refused run was the first on its claim. `--switch finished-says-no-claim-gone`
counts as a node of before that field did. One process, seeds in order, so the counts
of two commits over the same scan compare (README's known limits quote them). Counted
in NodeCore._admit, the one place that refuses so.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jrs.node import core as nc  # noqa: E402
from tests.sim import world  # noqa: E402

# (node name, claim id) -> how and when it went, for the run being replayed
_GONE: dict = {}
_REFUSED: list = []
# (node name, claim id) -> the last `finished` built of a job on it: (when, the node
# unconfirmed then, claim_gone said, task key)
_SENT: dict = {}
_WORLD: list = []  # the world being run


def _now() -> float:
    """The simulated time (the node core's own `now` is that of its latest event)."""
    return round(_WORLD[0].sim.now, 3) if _WORLD else 0.0


def _instrument() -> None:
    """Wrap the node core's claim drops and admission to record what the scan counts."""
    admit, free_claim, drop = nc.NodeCore._admit, nc.NodeCore._free_claim, nc.NodeCore.drop_claim
    finished = getattr(nc.NodeCore, "finished_msg", None)

    def _admit(self: nc.NodeCore, t: nc.RunTicket) -> Optional[str]:
        reason = admit(self, t)
        if reason is not None and reason.startswith("unknown claim"):
            how = _GONE.get((self.cap.name, t.claim), ("restart", None, None))
            _REFUSED.append({"node": self.cap.name, "claim": t.claim, "job": t.job,
                             "attempt": t.attempt, "t": _now(), "how": how[0],
                             "gone_at": how[1], "with": how[2],
                             "last_finished": _SENT.get((self.cap.name, t.claim))})
        return reason

    def _free_claim(self: nc.NodeCore, task: nc.Task, now: float) -> list:
        had = task.claim in self.claims
        out = free_claim(self, task, now)
        if had and task.claim not in self.claims:
            _GONE[(self.cap.name, task.claim)] = ("with-job", _now(), task.key)
        return out

    def drop_claim(self: nc.NodeCore, cid: str, kill: bool, now: float) -> list:
        had = cid in self.claims
        out = drop(self, cid, kill, now)
        if had and cid not in self.claims:
            _GONE.setdefault((self.cap.name, cid), ("free", _now(), None))
        return out

    def finished_msg(self: nc.NodeCore, task: nc.Task, result: dict, files: list) -> dict:
        msg = finished(self, task, result, files)
        _SENT[(self.cap.name, task.claim)] = (_now(), self.unconfirmed is not None,
                                              bool(msg.get("claim_gone")), task.key)
        return msg

    init = world.World.__init__

    def world_init(self: world.World, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        _WORLD[:] = [self]

    world.World.__init__ = world_init  # type: ignore[method-assign]
    if finished is not None:  # (a commit of before the field builds `finished` in the shells)
        nc.NodeCore.finished_msg = finished_msg  # type: ignore[method-assign]
    nc.NodeCore._admit = _admit  # type: ignore[method-assign]
    nc.NodeCore._free_claim = _free_claim  # type: ignore[method-assign]
    nc.NodeCore.drop_claim = drop_claim  # type: ignore[method-assign]


def count(seed: int, shape: str, switches: set) -> tuple:
    """(refusals of one run, whether it passed its checks)."""
    _GONE.clear()
    _SENT.clear()
    del _REFUSED[:]
    res = world.run(seed, shape, switches=switches)
    return list(_REFUSED), res.ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--start", type=int, default=1)
    ap.add_argument("--count", type=int, default=300, help="seeds per shape")
    ap.add_argument("--shapes", default="small,large,revoke,backlog")
    ap.add_argument("--switch", action="append", default=[])
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    _instrument()
    t0 = time.process_time()
    summary: dict = {}
    for shape in args.shapes.split(","):
        per: dict = {"refusals": 0, "seeds": {}, "how": {}, "failing": []}
        for seed in range(args.start, args.start + args.count):
            refused, ok = count(seed, shape, set(args.switch))
            if not ok:
                per["failing"].append(seed)
            if refused:
                per["refusals"] += len(refused)
                per["seeds"][seed] = refused
                for r in refused:
                    per["how"][r["how"]] = per["how"].get(r["how"], 0) + 1
        summary[shape] = per
        print(f"{shape} {args.start}-{args.start + args.count - 1}: {per['refusals']} "
              f"refusals in {len(per['seeds'])} seeds {per['how']} "
              f"(seeds {sorted(per['seeds'])}; failing {per['failing']})", flush=True)
    print(f"{time.process_time() - t0:.0f} s CPU")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
