"""The invariants, checked during a run and at its end.

During: no node runs more cpus of jobs than it has slots (checked at every
job start, on the executions themselves); the Pool never books more than a
node's slots (every master tick, plus `Pool.check()` when it has one).

At the end, from the journals as written (every append, across resumes) and
the executions as they happened:
- every job has exactly one final (`end`) record, and nothing follows it;
- every execution is of a run the journal recorded first (a run record of that
  attempt naming that node, written before the execution started), at most one
  execution per (job, attempt), attempts only grow;
- no run again after a success, and retries within max_retries: after a run of
  a job ended on its own, the job is run again only if that run failed, at most
  max_retries times, or, uncounted, if the submitter decided so before its result
  reached it and could not have known it (`_unknowable`: its link to the node down
  for give_up; the run's claim revoked by the master and no answer of the node
  within give_up of the submitter learning it; the node answering `attached`
  without a run the submitter never acknowledged). The master's word alone
  excuses nothing (sim S1). A rerun after a run that never started or did not end
  on its own (killed, lost with its host) does not count; a FAILED job used all
  max_retries;
- nothing is killed that nobody asked to kill: an execution killed is of a job
  the user removed, or its node was lost after the run was sent, or its claim was
  revoked by the master (its node-lost) before the kill, which a submitter cut off
  from the master may not know when it sends the run;
- nothing runs twice: no attempt starts after a later attempt of its job was sent,
  unless the submitter abandoned it (its node lost while the run was on the wire) and
  its kill reached the node right behind the run and ended it;
- no live node is declared lost: when the master declares a node lost, no hello or
  report of that node was due at it for the node time-out of its own running time
  (its stalls taken off; what a partition held counts against the node);
- a final DONE/FAILED result is the exit of an execution of that very attempt
  that ran to its end; FAILED means max_retries were all used;
- liveness: every submit ended within LIVENESS simulated seconds of the last
  fault; then, once quiet, no claim is left in the Pool or in any node's book
  and no job runs;
- fairness (shapes with `fairness`): over every 60 s window in which both
  users are backlogged, each user's slot-seconds are within 10% of its
  weighted share of the slot-seconds used.
"""

from __future__ import annotations

from typing import Optional

TICK = 1.0  # the master's tick (tests/sim/master.py)
KILL_LAG = 1.0  # a kill that follows a run on its channel reaches the node within this
WINDOW = 60.0
STEP = 5.0
TOLERANCE = 0.10


def pool_consistent(world, pool) -> None:
    per: dict = {}
    for c in pool.claims.values():
        per[c.node] = per.get(c.node, 0) + c.cpus
    for name, used in per.items():
        node = pool.nodes.get(name)
        if node is not None and node.slots and used > node.slots:
            world.fail(f"the Pool books {used} cpus on {name}, which has {node.slots} slots")
    check = getattr(pool, "check", None)
    if check is not None:
        try:
            check()
        except AssertionError as exc:
            world.fail(f"Pool.check(): {exc}")


def declared_lost(world, master, node: str, readies: list) -> None:
    """A node the master declares lost had no hello or report for the node time-out of
    the master's own running time. `readies`: when the node's latest ones were ready
    for that master (delivered, or waiting for it to read them). One ready while the
    master was stopped counts from the end of that stop, and not at all if that stop
    ends only now (the tick at its end comes before the reports it queued: C2's case).
    The stops are taken off the silence, less two tick periods each (the Pool sees a
    stop only as a gap between ticks). What a partition held counts against the node.
    The check errs toward silence: it misses a declaration a little early, never calls
    a right one wrong."""
    now = world.sim.now
    stalls: list = []
    for a, b in sorted((a, b) for p, a, b in world.master_stalls if p is master):
        if a >= now:
            continue
        if stalls and a <= stalls[-1][1]:
            stalls[-1] = (stalls[-1][0], max(stalls[-1][1], b))
        else:
            stalls.append((a, b))
    heard = None
    for r in readies:
        if r > now:
            continue
        stop = next(((a, b) for a, b in stalls if a < r < b), None)
        if stop is not None:
            if stop[1] >= now - 1e-9:
                continue
            r = stop[1]
        heard = r if heard is None else max(heard, r)
    if heard is None:
        return  # nothing heard of it by this master yet (the Pool declares only nodes it heard)
    since = max(heard, master.started)
    off = sum(max(0.0, min(b, now) - max(a, since) - 2 * TICK) for a, b in stalls)
    silent = now - since - off
    if silent <= world.shape.node_timeout - 0.05:
        world.fail(f"the master declared node {node} lost though it had a report of it "
                   f"at t={heard:.2f}, {now - heard:.1f}s before, {silent:.1f}s of its own "
                   f"running time (node timeout {world.shape.node_timeout}s)")


def liveness(world, deadline: float) -> None:
    for spec in world.specs:
        if spec.name not in world.done:
            proc = world.subs.get(spec.name)
            counts = getattr(getattr(proc, "core", None), "queue", None)
            counts = counts.counts if counts is not None else "not started"
            world.fail(f"liveness: submit {spec.name} ({spec.total} jobs) has not ended "
                       f"{deadline - max(world.last_fault, 0):.0f}s after the last fault "
                       f"(t={world.last_fault:.1f}); its queue: {counts}")


def final(world) -> None:
    cluster_of = {}
    for spec in world.specs:
        cluster_of[spec.sid] = _journal(world, spec)
    _executions(world, cluster_of)
    _quiet(world)
    if world.shape.fairness:
        fairness(world)


def _journal(world, spec) -> int:
    """Exactly one final record per job, nothing after it, attempts that only grow."""
    timed = world.journals[spec.sid]
    heads = [r for _, r in timed if r.get("e") == "cluster"]
    if not heads:
        world.fail(f"{spec.name}: the journal never had its head record")
        return 0
    cluster = int(heads[0]["id"])
    if any(int(h["id"]) != cluster for h in heads):
        world.fail(f"{spec.name}: the journal changed cluster ids: {[h['id'] for h in heads]}")
    per: dict = {}
    for t, r in timed:
        if isinstance(r.get("proc"), int) and r.get("e") in ("run", "requeue", "end"):
            per.setdefault(r["proc"], []).append((t, r))
    spec.cluster = cluster
    spec.per_proc = per
    for p in sorted(per):
        if not 0 <= p < spec.total:
            world.fail(f"{spec.name}: journal records for job {p}, not a job of the cluster")
    for p in range(spec.total):
        seq = [r for _, r in per.get(p, [])]
        ends = [r for r in seq if r["e"] == "end"]
        if len(ends) != 1:
            world.fail(f"{spec.name}: job {cluster}.{p} has {len(ends)} final records "
                       f"(want exactly one): {ends}")
            continue
        if seq[-1]["e"] != "end":
            world.fail(f"{spec.name}: job {cluster}.{p}: records after its final one: {seq}")
        last = -1
        for r in seq:
            if r["e"] == "run":
                if r["attempt"] <= last:
                    world.fail(f"{spec.name}: job {cluster}.{p} ran attempt {r['attempt']} "
                               f"after attempt {last} (attempts must grow)")
                last = r["attempt"]
    return cluster


def _lost(world, sid: str, node: str, t0: float, t1: float) -> bool:
    """Did the submitter lose `node` (or the node lose its jobs) between t0 and t1?"""
    return any(s == sid and n == node and t0 <= t <= t1 for t, s, n in world.losses)


def _unknowable(world, sid: str, job: str, r0: dict, t0: float, t: float) -> Optional[str]:
    """Why the submitter could not have known, when it decided at `t` to run `job` again,
    what came of the run `r0` (sent at `t0`), or None if it could have: it waited for
    the node's answer as long as the policy asks. The submitter gives a run up only
    when (jrs/client/core.py):
    - its link to the node was down for give_up (`tick`'s give-up, JRS_NODE_GIVE_UP;
      `node_lost` with release): a node that never came back;
    - the master revoked the run's claim (its node-lost for the node, or the welcome's
      `killed` naming the claim) and the node did not answer the kill within give_up
      of the submitter learning it (`_abandon`, `_revoking_overdue`), less one tick
      (`master_up` has no clock: the core dates it by its latest event);
    - the node answered `attached` without the run (its taskfile and result gone with
      the node's disk), and the submitter had not acknowledged that result (then it had
      it, and forgetting it is the submitter's own fault).
    Not forgiven (sim S1): a rerun at the master's word alone while the node, reachable,
    could still answer, nor a node reporting a run `lost` that ran to its end."""
    node, claim, attempt = r0["node"], r0.get("claim"), r0["attempt"]
    for tu, s, n in world.unreachable:
        if s == sid and n == node and t0 <= tu <= t:
            return f"link down for give_up at t={tu:.2f}"
    for tr, s, n, claims in world.revocations:
        if s == sid and t0 <= tr and tr + world.shape.give_up - TICK <= t \
                and (n == node if claims is None else claim in claims):
            return f"revoked at t={tr:.2f}, no answer within give_up"
    tk = world.unknown.get((sid, job, attempt))
    if tk is not None and t0 <= tk <= t and (sid, job, attempt) not in world.acked:
        return f"unknown to its node at t={tk:.2f}"
    return None


def _executions(world, cluster_of: dict) -> None:
    by_job: dict = {}
    for e in world.execs:
        by_job.setdefault((e.sid, e.job), []).append(e)
    specs = {s.sid: s for s in world.specs}
    for (sid, job), execs in sorted(by_job.items()):
        spec = specs.get(sid)
        if spec is None:
            world.fail(f"an execution for unknown submitter {sid}")
            continue
        cluster, _, proc = job.partition(".")
        if cluster != str(cluster_of[sid]) or not proc.isdigit():
            world.fail(f"{spec.name}: executed {job}, not a job of cluster {cluster_of[sid]}")
            continue
        journaled: dict = {}  # attempt -> {node: when its first run record was written}
        for t, r in spec.per_proc.get(int(proc), []):
            if r["e"] == "run":
                journaled.setdefault(r["attempt"], {}).setdefault(r.get("node"), t)
        seen: set = set()
        for e in execs:
            if e.attempt in seen:
                world.fail(f"{spec.name}: {job} attempt {e.attempt} executed twice")
            seen.add(e.attempt)
            _recorded_first(world, spec, job, e, journaled.get(e.attempt, {}))
    for spec in world.specs:
        for p, timed in sorted(getattr(spec, "per_proc", {}).items()):
            _policy(world, spec, p, timed, by_job.get((spec.sid, f"{spec.cluster}.{p}"), []))


def _recorded_first(world, spec, job: str, e, nodes: dict) -> None:
    """An execution is of a run the journal recorded first: a run record of its attempt
    naming its node, written before it started (the journal is write-ahead: a submitter
    that crashes between sending a run and recording it would resume not knowing a job
    that runs). `nodes`: node -> when the first run record of e's attempt naming it was
    written. Strictly before: a run goes out after its record, crosses the network
    (>= 0.2 ms) and its executor starts after the node's launch delay (>= 1 ms,
    tests/sim/node.py), so a record at the very instant of the start came after it."""
    if not nodes:
        world.fail(f"{spec.name}: {job} attempt {e.attempt} executed on {e.node} "
                   f"without a run record in the journal")
        return
    t = nodes.get(e.node)
    if t is None:
        world.fail(f"{spec.name}: {job} attempt {e.attempt} executed on {e.node}, but the "
                   f"journal's run record of it names {sorted(map(str, nodes))}")
    elif t >= e.start:
        world.fail(f"{spec.name}: {job} attempt {e.attempt} started on {e.node} at "
                   f"t={e.start:.3f}, before the journal recorded its run (t={t:.3f})")


def _policy(world, spec, p: int, timed: list, execs: list) -> None:
    """Reruns, kills and the final result of one job against what really ran."""
    job = f"{spec.cluster}.{p}"
    seq = [r for _, r in timed]
    end = next((r for r in seq if r["e"] == "end"), None)
    if end is None:
        return
    removed = end["state"] == "removed"
    if removed and spec.name not in world.interrupted:
        world.fail(f"{spec.name}: job {job} removed though nobody removed it")
    if end["state"] == "held":
        world.fail(f"{spec.name}: job {job} held: {end.get('reason')}")
    of = {e.attempt: e for e in execs}
    runs = [(t, r) for t, r in timed if r["e"] == "run"]
    # where in the journal the submitter decided what came of each run: its next record
    # (requeue or end), as a position among all the submitter's records
    where = {id(r): i for i, (_, r) in enumerate(world.journals[spec.sid])}
    decided = {}
    for (_, r), (_, nxt) in zip(timed, timed[1:]):
        if r["e"] == "run":
            decided[id(r)] = where[id(nxt)]
    # when the submitter decided what came of each run (its next record's time)
    decided_at = {id(r): t for (_, r), (t, _) in zip(timed, timed[1:]) if r["e"] == "run"}
    retries = 0
    for (t0, r0), (t1, _r1) in zip(runs, runs[1:]):
        e = of.get(r0["attempt"])
        if e is None or e.how != "completed":
            continue  # it never ran, or did not run to its end
        got = world.results.get((spec.sid, job, e.attempt))  # records written before it
        why = None
        if got is None or got > decided.get(id(r0), -1):  # decided before its result came
            why = _unknowable(world, spec.sid, job, r0, t0, decided_at[id(r0)])
        ok = e.code == 0 and e.signal is None  # a success (the shapes' default policy)
        if why is not None:  # its result was lost to the submitter: rerun, uncounted
            world.forgiven.append((spec.name, job, e.attempt, ok, why))
            continue
        if ok:
            world.fail(f"{spec.name}: job {job} attempt {e.attempt} succeeded on {e.node} "
                       f"and the job was run again at t={t1:.2f}: {seq}")
        retries += 1
    allowed = spec.max_retries or 0
    if retries > allowed:
        world.fail(f"{spec.name}: job {job} was retried {retries} times after runs that "
                   f"ended on their own; max_retries={spec.max_retries}: {seq} "
                   f"{_runs(execs)}")
    sent = {r["attempt"]: t for t, r in runs}
    claim_of = {r["attempt"]: r.get("claim") for _, r in runs}
    for e in execs:
        later = [a for a, t in sent.items() if a > e.attempt and t < e.start]
        told = world.kills.get((e.node, job, e.attempt))
        if later and e.how == "killed" and told is not None and told <= e.start + KILL_LAG:
            later = []  # abandoned as its node was lost (the run still on the wire): the
            # submitter's kill came right behind the run and ended it
        if later:
            world.fail(f"{spec.name}: {job}.{e.attempt} started on {e.node} at t={e.start:.2f}, "
                       f"after attempt {min(later)} of the job had been sent at "
                       f"t={sent[min(later)]:.2f}: the job ran twice")
        revoked = world.revoked.get(claim_of.get(e.attempt), float("inf"))
        if e.how == "killed" and not removed and revoked > (e.end or world.sim.now) \
                and not _lost(world, spec.sid, e.node, sent.get(e.attempt, e.start),
                              e.end or world.sim.now):
            world.fail(f"{spec.name}: {job}.{e.attempt} on {e.node} was killed at "
                       f"t={e.end:.2f} though nobody removed it and its node was never "
                       f"lost; the job ended {end['state']}")
    if end["state"] not in ("done", "failed"):
        return
    match = [e for e in execs if e.attempt == end["attempt"] and e.how == "completed"
             and e.code == end["code"] and e.signal == end["signal"]]
    if not match:
        world.fail(f"{spec.name}: job {job} ended {end['state']} (code {end['code']}, "
                   f"signal {end['signal']}, attempt {end['attempt']}) but no execution of "
                   f"that attempt ran to such an end: {_runs(execs)}")
    ok = end["code"] == 0 and end["signal"] is None
    if (end["state"] == "done") != ok:
        world.fail(f"{spec.name}: job {job} ended {end['state']} with code {end['code']}, "
                   f"signal {end['signal']}")
    if end["state"] == "failed" and retries < allowed:
        world.fail(f"{spec.name}: job {job} failed after {retries} retries; "
                   f"max_retries={spec.max_retries}: {seq} {_runs(execs)}")


def _quiet(world) -> None:
    m = world.master
    if m is not None and m.alive and m.pool.claims:
        left = [(c.id[:8], c.node, c.submitter[:6], "active" if c.active else "offered")
                for c in m.pool.claims.values()]
        world.fail(f"quiet: the Pool still holds claims nobody uses: {left}")
    for name, host in sorted(world.hosts.items()):
        d = host.daemon
        if d is not None and d.alive:
            held = d.claims_held()
            if held:
                world.fail(f"quiet: node {name} still holds claims: "
                           f"{[(c['claim'][:8], c['submitter'][:6]) for c in held]}")
    for name, running in sorted(world.running.items()):
        if running:
            world.fail(f"quiet: node {name} still runs {[r.job for r in running]}")


def fairness(world) -> None:
    users: dict = {}
    for spec in world.specs:
        u = users.setdefault(spec.user, {"weight": 2.0 ** (spec.priority / 10.0), "sids": set(),
                                         "from": spec.start, "to": None})
        u["sids"].add(spec.sid)
    if len(users) != 2:
        return
    for u in users.values():
        starts = [e.start for e in world.execs if e.sid in u["sids"]]
        u["to"] = max(starts) if starts else 0.0
    lo = max(u["from"] for u in users.values())
    hi = min(u["to"] for u in users.values())
    wsum = sum(u["weight"] for u in users.values())
    t = lo
    checked = 0
    while t + WINDOW <= hi:
        used = {}
        for name, u in users.items():
            used[name] = sum(e.cpus * max(0.0, min(e.end or world.sim.now, t + WINDOW)
                                          - max(e.start, t))
                             for e in world.execs if e.sid in u["sids"])
        total = sum(used.values())
        for name, u in users.items():
            share = total * u["weight"] / wsum
            if share and abs(used[name] - share) > TOLERANCE * share:
                world.fail(f"fairness: in [{t:.0f}, {t + WINDOW:.0f}] {name} used "
                           f"{used[name]:.1f} slot-seconds, its weighted share is {share:.1f} "
                           f"(of {total:.1f}; weights "
                           f"{ {n: v['weight'] for n, v in users.items()} })")
                return
        checked += 1
        t += STEP
    if not checked:
        world.fail(f"fairness: no 60 s window with both users backlogged ({lo:.1f}..{hi:.1f})")


def _runs(execs: list) -> list:
    return [(e.attempt, e.how, e.code, e.signal) for e in execs]
