"""The invariants, checked during a run and at its end.

During: no node runs more cpus of jobs than it has slots (checked at every
job start, on the executions themselves); the Pool never books more than a
node's slots (every master tick, plus `Pool.check()` when it has one).

At the end, from the journals as written (every append, across resumes) and
the executions as they happened:
- every job has exactly one final (`end`) record, and nothing follows it;
- every execution is of a run the journal recorded first, at most one
  execution per (job, attempt), attempts only grow;
- runs of a job beyond 1 + max_retries are each preceded by a rerun recorded
  as "node lost" (`requeue` with `lost`), and a job's executions that did not
  run to their own end (killed, lost with their host) are removals or such
  reruns: nothing is killed that nobody asked to kill;
- a final DONE/FAILED result is the exit of an execution of that very attempt
  that ran to its end; FAILED after retries means the retries were used;
- liveness: every submit ended within LIVENESS simulated seconds of the last
  fault; then, once quiet, no claim is left in the Pool or in any node's book
  and no job runs;
- fairness (shapes with `fairness`): over every 60 s window in which both
  users are backlogged, each user's slot-seconds are within 10% of its
  weighted share of the slot-seconds used.
"""

from __future__ import annotations

WINDOW = 60.0
STEP = 5.0
TOLERANCE = 0.10


def _uncounted(rec: dict) -> bool:
    """A requeue whose run does not count against max_retries: its node was lost, or
    the node refused the run (it never started)."""
    return bool(rec.get("lost") or rec.get("refused"))


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
    recs = [r for _, r in world.journals[spec.sid]]
    heads = [r for r in recs if r.get("e") == "cluster"]
    if not heads:
        world.fail(f"{spec.name}: the journal never had its head record")
        return 0
    cluster = int(heads[0]["id"])
    if any(int(h["id"]) != cluster for h in heads):
        world.fail(f"{spec.name}: the journal changed cluster ids: {[h['id'] for h in heads]}")
    per: dict = {}
    for r in recs:
        if isinstance(r.get("proc"), int) and r.get("e") in ("run", "requeue", "end"):
            per.setdefault(r["proc"], []).append(r)
    spec.cluster = cluster
    spec.per_proc = per
    for p in sorted(per):
        if not 0 <= p < spec.total:
            world.fail(f"{spec.name}: journal records for job {p}, not a job of the cluster")
    for p in range(spec.total):
        seq = per.get(p, [])
        ends = [r for r in seq if r["e"] == "end"]
        if len(ends) != 1:
            world.fail(f"{spec.name}: job {cluster}.{p} has {len(ends)} final records "
                       f"(want exactly one): {ends}")
            continue
        if seq[-1]["e"] != "end":
            world.fail(f"{spec.name}: job {cluster}.{p}: records after its final one: {seq}")
        last_attempt = -1
        pending_run = False
        runs = lost = 0
        for r in seq:
            if r["e"] == "run":
                runs += 1
                if r["attempt"] <= last_attempt:
                    world.fail(f"{spec.name}: job {cluster}.{p} ran attempt {r['attempt']} "
                               f"after attempt {last_attempt} (attempts must grow)")
                last_attempt = r["attempt"]
                if pending_run:
                    world.fail(f"{spec.name}: job {cluster}.{p} was run again without its "
                               f"earlier run being requeued or ended: {seq}")
                pending_run = True
            elif r["e"] == "requeue":
                pending_run = False
                lost += 1 if _uncounted(r) else 0
        allowed = 1 + (spec.max_retries or 0) + lost
        if runs > allowed:
            world.fail(f"{spec.name}: job {cluster}.{p} ran {runs} times; max_retries="
                       f"{spec.max_retries} and {lost} reruns after a lost node allow "
                       f"{allowed}: {seq}")
    return cluster


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
        seq = spec.per_proc.get(int(proc), [])
        journaled = {r["attempt"] for r in seq if r["e"] == "run"}
        seen: set = set()
        for e in execs:
            if e.attempt in seen:
                world.fail(f"{spec.name}: {job} attempt {e.attempt} executed twice")
            seen.add(e.attempt)
            if e.attempt not in journaled:
                world.fail(f"{spec.name}: {job} attempt {e.attempt} executed on {e.node} "
                           f"without a run record in the journal")
        end = next((r for r in seq if r["e"] == "end"), None)
        if end is None:
            continue
        for e in execs:
            if e.how in ("killed", "lost") and end["state"] != "removed":
                later_lost = [r for r in seq if r["e"] == "requeue" and _uncounted(r)]
                if e.how == "killed" and not later_lost:
                    world.fail(f"{spec.name}: {job}.{e.attempt} on {e.node} was killed at "
                               f"t={e.end:.2f} though nobody removed it and its node was "
                               f"never lost; the job ended {end['state']}")
    for spec in world.specs:
        for p, seq in sorted(getattr(spec, "per_proc", {}).items()):
            end = next((r for r in seq if r["e"] == "end"), None)
            if end is None or end["state"] not in ("done", "failed"):
                if end is not None and end["state"] == "removed" \
                        and spec.name not in world.interrupted:
                    world.fail(f"{spec.name}: job {p} removed though nobody removed it")
                if end is not None and end["state"] == "held":
                    world.fail(f"{spec.name}: job {p} held: {end.get('reason')}")
                continue
            job = f"{spec.cluster}.{p}"
            match = [e for e in by_job.get((spec.sid, job), [])
                     if e.attempt == end["attempt"] and e.how == "completed"
                     and e.code == end["code"] and e.signal == end["signal"]]
            if not match:
                world.fail(f"{spec.name}: job {job} ended {end['state']} (code {end['code']}, "
                           f"signal {end['signal']}, attempt {end['attempt']}) but no "
                           f"execution of that attempt ran to such an end: "
                           f"{_runs(by_job.get((spec.sid, job), []))}")
            ok = end["code"] == 0 and end["signal"] is None
            if (end["state"] == "done") != ok:
                world.fail(f"{spec.name}: job {job} ended {end['state']} with code "
                           f"{end['code']}, signal {end['signal']}")
            if end["state"] == "failed":
                runs = sum(1 for r in seq if r["e"] == "run")
                lost = sum(1 for r in seq if r["e"] == "requeue" and _uncounted(r))
                if runs - lost < 1 + (spec.max_retries or 0):
                    world.fail(f"{spec.name}: job {job} failed after {runs - lost} counted "
                               f"runs; max_retries={spec.max_retries} allows more: {seq}")


def _quiet(world) -> None:
    m = world.master
    if m is not None and m.alive and m.pool.claims:
        left = [(c.id[:8], c.node, c.submitter[:6], "active" if c.active else "offered")
                for c in m.pool.claims.values()]
        world.fail(f"quiet: the Pool still holds claims nobody uses: {left}")
    for name, host in sorted(world.hosts.items()):
        d = host.daemon
        if d is not None and d.alive:
            held = d.core.hello()["claims"]
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
