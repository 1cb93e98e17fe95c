"""Test-only switches that put defects of issue 12 back, to prove the simulation's reach.

Each switch is off unless a test (or `python -m tests.sim --switch NAME`)
turns it on for one run; `tests/test_sim.py` shows that with the switch on
the CI seed budget finds a failing seed. A switch lives in the core it
breaks (a module-level flag, FoundationDB's BUGGIFY idea) where the core has
one; until then it is applied here, around the core's method, and says so.
"""

from __future__ import annotations

import contextlib
import functools

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


@switch("release-kills", "issue 12: resume kills the jobs it should re-attach. The resumed "
                         "submitter does not know the claims of the jobs it re-attaches (the "
                         "master's re-offer looks like a new free claim it releases), and a "
                         "release kills the job on it")
def _release_kills():
    from jrs.client.core import SubmitCore
    from jrs.cluster.pool import Pool

    def release(orig):
        @functools.wraps(orig)
        def wrapped(self, sid, cid, now, kill=False):
            return orig(self, sid, cid, now, kill=True)
        return wrapped

    def start(orig):
        @functools.wraps(orig)
        def wrapped(self, now, running_jobs=()):
            out = orig(self, now, running_jobs)
            for cid in [c.id for c in self.claims.values() if c.retire]:
                del self.claims[cid]
            return out
        return wrapped

    stack = contextlib.ExitStack()
    stack.enter_context(_patched(Pool, "release", release))
    stack.enter_context(_patched(SubmitCore, "start", start))
    return stack


@switch("offer-lost", "issue 12: a lost claim offer blocks a slot forever. An offer the node "
                      "never answered stays in the Pool: no offer time-out, and neither "
                      "node_hello, node_report nor node_gone withdraws it")
def _offer_lost():
    from jrs.cluster.pool import Pool

    def init(orig):
        @functools.wraps(orig)
        def wrapped(self, *a, **kw):
            orig(self, *a, **kw)
            self.offer_timeout = float("inf")
        return wrapped

    def remove(orig):
        @functools.wraps(orig)
        def wrapped(self, cid, remember=None):
            c = self.claims.get(cid)
            if c is not None and not c.active and remember is False:
                return c  # a withdrawal: kept, as before the fix
            return orig(self, cid, remember)
        return wrapped

    stack = contextlib.ExitStack()
    stack.enter_context(_patched(Pool, "__init__", init))
    stack.enter_context(_patched(Pool, "_remove", remove))
    return stack


def _queue_forgets(arg: str):
    """Patch Queue.__init__ so a resumed queue is built without `arg` (skip or restore)."""
    from jrs.client.jobs import Queue

    def init(orig):
        @functools.wraps(orig)
        def wrapped(self, jobs, total, skip=None, window=None, restore=None, **kw):
            kept = {"skip": skip, "restore": restore}
            kept[arg] = None
            orig(self, jobs, total, window=window, **kept, **kw)
        return wrapped

    return _patched(Queue, "__init__", init)


@switch("retries-forgotten", "issue 12: retry state is lost across resume: a resumed queue "
                             "starts attempts and completions at 0 again (max_retries restarts, "
                             "attempt numbers collide with unacknowledged old taskfiles)")
def _retries_forgotten():
    return _queue_forgets("restore")


@switch("task-before-io", "issue 12: the node changes state before I/O that can fail: the task "
                          "and the claim's job are registered before the taskfile is written; "
                          "when that fails the submitter only gets an error and the claim stays "
                          "busy")
def _task_before_io():
    from jrs.node import core as nc

    def created(orig):
        @functools.wraps(orig)
        def wrapped(self, t, err, now):
            if err is None:
                return orig(self, t, err, now)
            claim = self.claims.get(t.claim)
            self.tasks[t.key] = nc.Task(t.key, t.submitter, t.session, t.job, t.attempt,
                                        t.claim, t.path, t.box, created=now)
            if claim is not None:
                claim.job = t.key
            return [nc.ToSession(t.sid, {"type": "error", "code": "bad-message",
                                         "message": err, "re": "run"})]
        return wrapped

    return _patched(nc.NodeCore, "created", created)


# ---------------------------------------------------------------- the checker's own reach
# Each switch below breaks one core so that exactly one invariant of tests/sim/check.py
# must fire; tests/test_sim_reach.py asserts that check's own message appears.


@switch("drop-frees-busy-claim", "overcommit: a claim-drop without kill frees the claim at "
                                 "the node at once, though its job still runs; the slot is "
                                 "offered and taken again while the old job runs on it")
def _drop_frees_busy_claim():
    from jrs.node import core as nc

    def drop(orig):
        @functools.wraps(orig)
        def wrapped(self, cid, kill, now):
            claim = self.claims.get(cid)
            if claim is not None and not kill and claim.job:
                claim.job = None  # forgets the job that still runs on it
            return orig(self, cid, kill, now)
        return wrapped

    return _patched(nc.NodeCore, "drop_claim", drop)


@switch("pool-overbooks", "pool consistency: the Pool's room test ignores what a node's "
                          "claims already use, so it offers a full node more cpus")
def _pool_overbooks():
    from jrs.cluster.pool import Pool

    def room(orig):
        @functools.wraps(orig)
        def wrapped(self, node, r):
            return self._fits_ever(node, r)
        return wrapped

    def eligible(orig):
        @functools.wraps(orig)
        def wrapped(self, node):
            return node.state == "up" and node.connected
        return wrapped

    stack = contextlib.ExitStack()
    stack.enter_context(_patched(Pool, "_room", room))
    stack.enter_context(_patched(Pool, "_eligible", eligible))
    return stack


@switch("pool-index-stale", "pool consistency: taking a claim off the books forgets to give "
                            "its cpus back to the node's used count (an index that drifts "
                            "from the claims)")
def _pool_index_stale():
    from jrs.cluster.pool import Pool

    def remove(orig):
        @functools.wraps(orig)
        def wrapped(self, cid, remember=None):
            c = self.claims.get(cid)
            out = orig(self, cid, remember)
            if c is not None and c.node in self.nodes:
                self.nodes[c.node].used_cpus += c.cpus
            return out
        return wrapped

    return _patched(Pool, "_remove", remove)


@switch("drop-ignored-idle", "no claim held by nobody: the node ignores a claim-drop for a "
                             "claim with no job on it, so released claims stay for good")
def _drop_ignored_idle():
    from jrs.node import core as nc

    def drop(orig):
        @functools.wraps(orig)
        def wrapped(self, cid, kill, now):
            claim = self.claims.get(cid)
            if claim is not None and not claim.job:
                return []
            return orig(self, cid, kill, now)
        return wrapped

    return _patched(nc.NodeCore, "drop_claim", drop)


@switch("shares-unweighted", "fairness: the Pool ignores the users' weights (priority) and "
                             "splits the slots equally")
def _shares_unweighted():
    from jrs.cluster.pool import Pool

    def wants(orig):
        @functools.wraps(orig)
        def wrapped(self):
            want, weight, per_user = orig(self)
            return want, dict.fromkeys(weight, 1.0), per_user
        return wrapped

    return _patched(Pool, "_wants", wants)


@switch("finals-forgotten", "exactly one final result: a resumed submitter forgets which jobs "
                            "already ended (the journal's final records are not applied) and "
                            "runs and ends them again")
def _finals_forgotten():
    return _queue_forgets("skip")


@switch("retry-once-more", "max executions: the retry policy allows one retry more than "
                           "max_retries")
def _retry_once_more():
    from jrs.client import jobs as J

    def outcome(orig):
        @functools.wraps(orig)
        def wrapped(self, rec, result):
            state = orig(self, rec, result)
            job = rec.job
            if state == J.FAILED and not job.on_exit_remove and job.max_retries is not None \
                    and rec.completions == job.max_retries + 1:
                return J.IDLE
            return state
        return wrapped

    return _patched(J.Queue, "outcome", outcome)


@switch("demand-skips-all", "C5: a demand change skips its negotiation even when it could make "
                            "an offer, a give-back or a verdict (Pool._demand_is_neutral "
                            "always says yes); Pool.check() sees it on copies of the books "
                            "(with the switch every skip is checked, not one in VERIFY_EVERY)")
def _demand_skips_all():
    from jrs.cluster import pool

    stack = contextlib.ExitStack()
    stack.enter_context(_patched(pool.Pool, "_demand_is_neutral",
                                 lambda orig: lambda self, *a: True))
    stack.enter_context(_patched(pool, "VERIFY_EVERY", lambda orig: 1))
    return stack


# ---------------------------------------------------------------- fixes of sim findings
# Each switch below reverts one fix of a finding (ids as in README "The cluster
# simulation"); tests/test_sim_regressions.py pins a seed that fails with only that
# switch on and passes without, so the pinned seed keeps reaching its bug.


@switch("refusals-blame-job", "D1 reverted: a node's refusal for its own trouble (cause "
                              "\"node\": a failing disk) counts against the job like any "
                              "other, so 5 of them hold it, and the node is not rested")
def _refusals_blame_job():
    from jrs.client.core import SubmitCore

    def rejected(orig):
        @functools.wraps(orig)
        def wrapped(self, node, msg, now):
            if msg.get("cause") == "node":
                msg = {k: v for k, v in msg.items() if k != "cause"}
            return orig(self, node, msg, now)
        return wrapped

    return _patched(SubmitCore, "_rejected", rejected)


@switch("stall-blames-peers", "C2 reverted: a master back from a stall counts the time it "
                              "was stopped against its peers, so its first tick declares "
                              "live nodes lost (their reports still queued) and revokes "
                              "their claims with kill")
def _stall_blames_peers():
    from jrs.cluster.pool import Pool

    def pardon(orig):
        @functools.wraps(orig)
        def wrapped(self, away, now):
            return None
        return wrapped

    return _patched(Pool, "_pardon", pardon)


@switch("revoked-run-is-exit", "D5 reverted: a run killed because the master revoked its "
                               "claim (`removed: true` in a result for a job we are not "
                               "removing) is judged as the job's own exit (signal 15)")
def _revoked_run_is_exit():
    from jrs.client.core import SubmitCore

    def result(orig):
        @functools.wraps(orig)
        def wrapped(self, rec, res):
            if res.get("removed"):
                res = dict(res, removed=False)
            return orig(self, rec, res)
        return wrapped

    return _patched(SubmitCore, "_result", result)


@switch("welcome-names-no-drops", "sim D6's root: a reconnecting submitter is not told which "
                                  "of the claims its hello listed the master dropped while it "
                                  "was away (an older master's welcome); it keeps them and "
                                  "sends runs the nodes refuse 'unknown claim'")
def _welcome_names_no_drops():
    from jrs.cluster.pool import Pool

    def welcome(orig):
        @functools.wraps(orig)
        def wrapped(self, hello):
            return {"type": "welcome"}
        return wrapped

    return _patched(Pool, "welcome", welcome)


@switch("abandon-reruns-at-once", "S1 reverted: a run whose claim the master revoked (its "
                                  "welcome's `killed`, its node-lost) is run again elsewhere "
                                  "at once even when we reach its node, beside our kill; a "
                                  "slow node finishes the first run too, and the job runs "
                                  "twice")
def _abandon_reruns_at_once():
    from jrs.client.core import SubmitCore

    def abandon(orig):
        @functools.wraps(orig)
        def wrapped(self, rec, node, why):
            ns = self.nodes.get(node)
            if ns is not None and ns.up:
                self._emit(_kill(self, node, rec))
            if ns is not None:
                ns.sent.discard((rec.proc, rec.attempt))
                ns.pending.discard((rec.proc, rec.attempt))
            self._lost_run(rec, node, why)
            return False
        return wrapped

    def _kill(core, node, rec):
        from jrs.client.core import ToNode
        return ToNode(node, {"type": "kill", "job": core.job_id(rec.proc),
                             "attempt": rec.attempt})

    return _patched(SubmitCore, "_abandon", abandon)


@switch("any-start-ends-rest", "sim B reverted: any job started on a node at rest ends its "
                               "rest, not only the run that probed it; runs already out "
                               "when it refused one keep ending it, and the refused job is "
                               "sent there again and again and held")
def _any_start_ends_rest():
    from jrs.client.core import SubmitCore

    def healthy(orig):
        @functools.wraps(orig)
        def wrapped(self, node, rec):
            ns = self.nodes.get(node)
            if ns is not None and ns.rest_streak:
                ns.probe = (rec.proc, rec.attempt)
            return orig(self, node, rec)
        return wrapped

    return _patched(SubmitCore, "_healthy", healthy)


@switch("finished-says-no-claim-gone", "issue 12's leftover: a node of before `claim_gone` "
                                       "(its `finished` never says the claim went): the "
                                       "submitter sends the next job on a claim the node "
                                       "let go with the last one, or that the master "
                                       "revoked while the node was stopped, and the node "
                                       "refuses it 'unknown claim'. Nor does it note "
                                       "a stop before a result goes (only at its tick "
                                       "and at a run)")
def _finished_says_no_claim_gone():
    from jrs.node.core import NodeCore

    stack = contextlib.ExitStack()
    stack.enter_context(_patched(NodeCore, "claim_gone", lambda orig: lambda self, task: False))
    stack.enter_context(_patched(NodeCore, "_noted", lambda orig: lambda self, now: []))
    return stack
