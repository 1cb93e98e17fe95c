"""The whole cluster at scale, on the simulation: the master's cost as the pool grows.

    nice -n 19 python3 bench/sim_scale.py [--sizes 10,100,1000] [--churn 20]
                                          [--warmup 45] [--measure 30] [--full-jobs N]

Drives the real `Pool`, real `NodeCore`s and real `SubmitCore`s through the simulation's
shells (tests/sim), with no faults, in "scale" mode: no invariant check at every step
(the Pool's O(claims) self-check only at the end), short simulated jobs (30-90 s, exit 0,
no output), and the journals followed by counters instead of kept whole.

Workload, per pool size N (N nodes x 32 slots): 100 submitters (one user each), each with
one cluster of more jobs than it can run, so the pool fills and stays full. Claim churn:
`--churn` times per simulated second (the same at every size; at most half the job ends
of a small pool) one submitter, picked at random, is told to give one claim back (the
`give-back` the master sends a submitter above its share): it releases a claim at its next
job boundary, the node lets it go (claim-released), the Pool offers the slot again, the
node accepts (claim-ok) and the Pool grants it: all of that is the real code path, and
the churn actually measured (claim-released per second) is reported. After `--warmup`
simulated seconds (the pool fills, the first jobs end) the next `--measure` seconds are
measured.

Reported per size, in CPU of this process spent inside the master's `Pool` (the part
that decides; the master shell only routes; each metered call also pays ~5 us for two
`process_time` reads): per negotiation round (`Pool.tick`, once a second), per
`negotiate` call wherever it runs, per heartbeat (`node_report`), per offer (every other
Pool call: demand, claim answers, releases, hellos; over the claim offers they made),
the Pool's CPU per simulated second, and claim-grant latency in simulated seconds (the
Pool's offer -> the node's claim-ok -> the grant reaching the submitter). The baseline is
the 100-node run of the same invocation: per-heartbeat and per-offer cost may grow at
most 2x from 100 to 1,000 nodes; the exit status says whether they did (and whether the
checks at the end held: no node ran more cpus than its slots, the Pool's books agree).

`--full-jobs N` then runs N jobs (the issue's figure is 1,000,000) on the largest size to
their end, stopping after `--full-minutes` of wall time if they have not ended, and
reports jobs per CPU second of the whole simulation and what it checked: every job of
every finished submit has exactly one final record, no node ran more cpus than its
slots, the Pool's books agree, and once quiet no claim is left and no job runs. Figures
are in README "The cluster simulation".
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jrs.cluster import pool as pool_mod
from tests.sim import check
from tests.sim import world as W
from tests.sim.master import MasterProc
from tests.sim.shapes import Shape
from tests.sim.submitter import SubmitterProc

SLOTS = 32
SUBMITTERS = 100
DURATION = (30.0, 90.0)
MEAN = sum(DURATION) / 2
NODES_AT = 3.0  # simulated time the node daemons start (the submitters start in [0, 2])
HEARTBEAT_CALLS = ("node_report",)
ROUND_CALLS = ("tick",)
OFFER_CALLS = ("node_hello", "node_gone", "claim_answer", "claim_released", "submitter_hello",
               "submitter_gone", "set_demand", "release", "set_progress")


class Meter:
    """CPU inside each Pool method, and the offers each made (installed on the class)."""

    def __init__(self) -> None:
        self.cpu: dict = collections.defaultdict(float)
        self.calls: dict = collections.defaultdict(int)
        self.offers: dict = collections.defaultdict(int)
        self.saved: list = []
        self.depth = 0

    def install(self) -> None:
        for name in (*HEARTBEAT_CALLS, *ROUND_CALLS, *OFFER_CALLS, "negotiate"):
            orig = getattr(pool_mod.Pool, name)
            self.saved.append((name, orig))
            setattr(pool_mod.Pool, name, self._wrap(name, orig))

    def uninstall(self) -> None:
        for name, orig in self.saved:
            setattr(pool_mod.Pool, name, orig)
        self.saved = []

    def _wrap(self, name: str, orig):
        meter = self
        clock = time.process_time

        def wrapped(pool, *args, **kw):
            if meter.depth:  # negotiate inside a call: counted by the call
                if name == "negotiate":
                    t = clock()
                    out = orig(pool, *args, **kw)
                    meter.cpu["negotiate"] += clock() - t
                    meter.calls["negotiate"] += 1
                    return out
                return orig(pool, *args, **kw)
            meter.depth += 1
            t = clock()
            try:
                out = orig(pool, *args, **kw)
            finally:
                meter.depth -= 1
            used = clock() - t
            meter.cpu[name] += used
            meter.calls[name] += 1
            meter.offers[name] += sum(1 for a in out if a[2].get("type") == "claim-offer")
            return out
        return wrapped

    def reset(self) -> None:
        self.cpu.clear()
        self.calls.clear()
        self.offers.clear()


class ScaleWorld(W.World):
    """A World of 100 submitters (one cluster each) and a steady claim churn."""

    verify_skips = False  # O(the pool) per skipped negotiation: for small pools

    def __init__(self, seed: int, nodes: int, churn: float, jobs: int) -> None:
        self.n_nodes = nodes
        self.jobs = jobs
        # at most half the job ends give a claim back (a small pool has few job ends)
        self.churn = min(churn, 0.5 * SLOTS * nodes / MEAN)
        self.ends: dict = {}  # sid -> Counter(proc -> end records)
        self.finished_specs: list = []
        self.offered: dict = {}
        self.latency: list = []
        self.released = 0
        self.starts = 0
        shape = Shape("scale", nodes=(SLOTS,) * nodes, submitters=(), duration=DURATION,
                      fail_chance=0.0, signal_chance=0.0, max_retries=(None,), output=(0, 0),
                      faults=(), submitter_lease=60.0)
        super().__init__(seed, shape)
        self.running_cpus: dict = {}
        self.results = _Discard()  # for check._policy only, which does not run at scale
        self.pool_checks = False  # the full run: Pool.check() and the books every tick
        self.checks_done = 0

    def _make_specs(self) -> None:
        base, extra = divmod(self.jobs, SUBMITTERS)
        for i in range(SUBMITTERS):
            total = base + (i < extra)
            if not total:
                continue
            user = name = f"u{i:03d}"
            host = f"s{i}"
            disk = self._disk(host)
            text = ("executable = /bin/simjob\ntransfer_executable = false\n"
                    f"arguments = $(Process)\nrequest_cpus = 1\nqueue {total}\n")
            spec = W.SubmitSpec(name, user, host, self.new_id(), total, text, None, 1, 0,
                                self.rng.uniform(0.0, 2.0))
            self.specs.append(spec)
            self.ends[spec.sid] = collections.Counter()
            self.journals[spec.sid] = []
            disk.watchers.append(self._counting_watcher(f"/home/{name}/.job.condor.jrs",
                                                        spec.sid))

    def _counting_watcher(self, path: str, sid: str):
        ends = self.ends[sid]
        heads = self.journals[sid]

        def watch(p: str, rec: dict) -> None:
            if p != path:
                return
            e = rec.get("e")
            if e == "end":
                ends[rec["proc"]] += 1
            elif e == "cluster":
                heads.append((self.sim.now, rec))
        return watch

    def submit_done(self, proc: SubmitterProc) -> None:
        self.done[proc.spec.name] = self.sim.now
        self.finished_specs.append(proc.spec)

    def _churn(self) -> None:
        """One claim given back at its next job boundary: the give-back the master sends a
        submitter above its share; its release, the node's claim-released, the new offer,
        claim-ok and grant are the real path."""
        subs = [p for _, p in sorted(self.subs.items())
                if p.alive and p.core is not None and p.core.claims and p.welcomed]
        if subs:
            p = self.rng.choice(subs)
            p.do(p.core.from_master({"type": "give-back", "count": p.core.give_back + 1},
                                    self.sim.now))
        self.sim.after(self.rng.expovariate(self.churn), self._churn)

    # ------------------------------------------------------------ light bookkeeping

    def start(self) -> None:
        self.master = MasterProc(self, W._Host("master", self.disks["master"]))
        for spec in self.specs:
            self.sim.after(spec.start, self.start_submitter, spec)
        # the nodes come up once every submitter has asked: each node's slots are shared
        # out fairly as it says hello (a pool filled by the first submitter alone would be
        # rebalanced by give-backs for a whole job length)
        for host in self.hosts.values():
            self.sim.after(NODES_AT + self.rng.uniform(0.0, 1.0), self.new_node, host)
        self.sim.after(NODES_AT + DURATION[0], self._churn)  # once the first jobs can end

    def behavior_of(self, spec: dict) -> W.Behavior:
        return W.Behavior(self.rng.uniform(*DURATION), 0, None, 0)

    def exec_started(self, ex) -> None:
        name = ex.host.name
        used = self.running_cpus.get(name, 0) + 1
        self.running_cpus[name] = used
        ex.record = True
        self.starts += 1
        if used > ex.host.slots:
            self.fail(f"node {name} overcommitted: {used} cpus of jobs running on "
                      f"{ex.host.slots} slots")

    def exec_ended(self, ex, how: str) -> None:
        if getattr(ex, "record", None):
            ex.record = None
            self.running_cpus[ex.host.name] -= 1

    def note(self, text: str) -> None:
        pass  # no trace or digest at scale

    def log(self, proc, text: str) -> None:
        pass

    def check_pool(self, pool) -> None:
        """O(claims) (30 ms at 32,000 claims): every tick of the full run, not while the
        master's CPU is measured (it would refresh the Pool's caches for it)."""
        if self.pool_checks:
            check.pool_consistent(self, pool)
            self.checks_done += 1

    def finished(self) -> bool:
        return len(self.done) == len(self.specs)


class _Discard(dict):
    """`World.results` at scale: nothing reads it, and a million runs would fill it."""

    def setdefault(self, key, default=None):
        return default


def _hooks(w: ScaleWorld) -> list:
    """Offer -> grant latency: the master's claim-offer out, the submitter's claim in."""
    send0 = MasterProc.send
    from_master0 = SubmitterProc._from_master

    def send(self, actions):
        now = self.sim.now
        for _kind, _ident, msg in actions:
            t = msg.get("type")
            if t == "claim-offer":
                w.offered[msg["claim"]] = now
        return send0(self, actions)

    def from_master(self, end, msg):
        if msg.get("type") == "claim":
            t = w.offered.pop(msg["claim"], None)
            if t is not None:
                w.latency.append(self.sim.now - t)
        return from_master0(self, end, msg)

    claim_released0 = pool_mod.Pool.claim_released

    def claim_released(self, name, cid, now):
        w.released += 1
        return claim_released0(self, name, cid, now)

    MasterProc.send = send
    SubmitterProc._from_master = from_master
    pool_mod.Pool.claim_released = claim_released
    return [(MasterProc, "send", send0), (SubmitterProc, "_from_master", from_master0),
            (pool_mod.Pool, "claim_released", claim_released0)]


def _unhook(saved: list) -> None:
    for cls, name, orig in saved:
        setattr(cls, name, orig)


def _pct(values: list, q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def measure(nodes: int, churn: float, warmup: float, span: float, seed: int) -> dict:
    w = ScaleWorld(seed, nodes, churn, jobs=10 ** 9)
    saved = _hooks(w)
    meter = Meter()
    try:
        cpu0 = time.process_time()
        w.start()
        w.sim.run_until(warmup)
        meter.install()
        w.latency, w.released, starts0 = [], 0, w.starts
        steps0 = w.sim.steps
        t0 = time.process_time()
        w.sim.run_until(warmup + span)
        sim_cpu = time.process_time() - t0
        meter.uninstall()
        pool = w.master.pool
        check.pool_consistent(w, pool)  # the books per node, and Pool.check()
        failures = list(w.failures)
        held = len(pool.claims)
    finally:
        meter.uninstall()
        _unhook(saved)
    c, n, o = meter.cpu, meter.calls, meter.offers
    offer_cpu = sum(c[k] for k in OFFER_CALLS)
    offers = sum(o[k] for k in OFFER_CALLS)
    return {"nodes": nodes, "churn_asked": w.churn, "claims": held,
            "slots": nodes * SLOTS,
            "round_us": 1e6 * c["tick"] / max(1, n["tick"]),
            "negotiate_us": 1e6 * c["negotiate"] / max(1, n["negotiate"]),
            "beat_us": 1e6 * c["node_report"] / max(1, n["node_report"]),
            "offer_us": 1e6 * offer_cpu / max(1, offers), "offers": offers,
            "offers_in_tick": o["tick"], "beats": n["node_report"],
            "churn": w.released / span, "jobs": w.starts - starts0,
            "lat_ms": 1e3 * sum(w.latency) / max(1, len(w.latency)),
            "lat_p99_ms": 1e3 * _pct(w.latency, 0.99), "grants": len(w.latency),
            "pool_cpu_per_s": (sum(c.values()) - c["negotiate"]) / span,
            "sim_cpu": sim_cpu, "total_cpu": time.process_time() - cpu0,
            "steps": w.sim.steps - steps0, "failures": failures}


def full_run(nodes: int, churn: float, jobs: int, minutes: float, seed: int,
             progress=None) -> dict:
    w = ScaleWorld(seed, nodes, churn, jobs=jobs)
    w.pool_checks = True
    saved = _hooks(w)
    meter = Meter()
    meter.install()
    t0, cpu0 = time.monotonic(), time.process_time()
    ended = False
    shown = t0
    try:
        w.start()
        while not w.finished() and time.monotonic() - t0 < minutes * 60:
            steps = w.sim.steps
            # a million jobs take far more than run_until's default bound of steps (which
            # guards one seed of the tests): without this the loop spun, going nowhere
            w.sim.run_until(w.sim.now + 5.0, stop=w.finished, max_steps=sys.maxsize)
            if not w.sim._heap:
                break
            if w.sim.steps == steps and not w.finished():
                w.fail(f"the simulation made no progress at {w.sim.now:.0f} simulated s")
                break
            if progress is not None and time.monotonic() - shown >= 60:
                shown = time.monotonic()
                ended_jobs = sum(sum(c.values()) for c in w.ends.values())
                cpu = time.process_time() - cpu0
                progress(f"{shown - t0:.0f} s wall, {cpu:.0f} s CPU, {w.sim.now:.0f} simulated "
                         f"s: {w.starts} jobs started, {ended_jobs} ended "
                         f"({1e3 * cpu / max(1, ended_jobs):.2f} ms CPU per job ended so far), "
                         f"{w.checks_done} Pool checks, {len(w.failures)} failures")
        ended = w.finished()
        if ended:
            done = w.sim.now
            w.sim.run_until(done + W.QUIET, max_steps=sys.maxsize)
        cpu = time.process_time() - cpu0
        for spec in w.finished_specs:
            ends = w.ends[spec.sid]
            bad = [p for p in range(spec.total) if ends.get(p) != 1]
            if bad:
                w.fail(f"{spec.name}: jobs without exactly one final record: {bad[:10]}")
        check.pool_consistent(w, w.master.pool)
        if ended:
            check._quiet(w)  # no claim left in the Pool or on a node, no job running
        failures = list(w.failures)
    finally:
        meter.uninstall()
        _unhook(saved)
    finished_jobs = sum(s.total for s in w.finished_specs)
    return {"nodes": nodes, "jobs_asked": jobs, "ended": ended, "jobs_started": w.starts,
            "jobs_finished": finished_jobs, "clusters": len(w.finished_specs),
            "sim_seconds": w.sim.now, "cpu": cpu, "wall": time.monotonic() - t0,
            "pool_cpu": sum(v for k, v in meter.cpu.items() if k != "negotiate"),
            "pool_checks": w.checks_done, "meter": meter, "latency": w.latency,
            "failures": failures}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--churn", type=float, default=20.0,
                    help="claims released per simulated second, at every size")
    ap.add_argument("--warmup", type=float, default=45.0, help="simulated seconds")
    ap.add_argument("--measure", type=float, default=30.0, help="simulated seconds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--full-jobs", type=int, default=0,
                    help="then run this many jobs to their end on the largest size")
    ap.add_argument("--full-minutes", type=float, default=30.0)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{SUBMITTERS} submitters, {SLOTS} slots per node, jobs of {DURATION[0]:.0f}-"
          f"{DURATION[1]:.0f} s, claim churn {args.churn:g}/s asked; {args.warmup:.0f} s "
          f"warm-up, {args.measure:.0f} s measured (simulated)")
    print(f"{'nodes':>6} {'claims':>7} {'churn/s':>8} {'jobs':>7} {'round us':>9} "
          f"{'negot. us':>10} {'beat us':>8} {'offer us':>9} {'offers':>7} "
          f"{'grant ms':>9} {'p99 ms':>7} {'sim CPU s':>10}")
    results = {}
    ok = True
    for n in sizes:
        r = results[n] = measure(n, args.churn, args.warmup, args.measure, args.seed)
        print(f"{n:>6} {r['claims']:>7} {r['churn']:>8.1f} {r['jobs']:>7} "
              f"{r['round_us']:>9.1f} {r['negotiate_us']:>10.1f} {r['beat_us']:>8.2f} "
              f"{r['offer_us']:>9.2f} {r['offers']:>7} {r['lat_ms']:>9.2f} "
              f"{r['lat_p99_ms']:>7.2f} {r['sim_cpu']:>10.1f}", flush=True)
        for f in r["failures"][:5]:
            print(f"   FAILED: {f[:300]}")
        ok = ok and not r["failures"]
    base = 100 if 100 in results else None
    top = max(results)
    if base is not None and top > base:
        for key, what in (("beat_us", "per heartbeat"), ("offer_us", "per offer"),
                          ("round_us", "per negotiation round (not bounded by the rule)")):
            ratio = results[top][key] / results[base][key]
            bounded = key != "round_us"
            held = ratio <= 2.0 or not bounded
            ok = ok and held
            verdict = ("ok" if held else "FAIL") + ": at most 2x" if bounded else "reported"
            print(f"{what}: {top} nodes / {base} nodes = {ratio:.2f}x ({verdict})")
    if args.full_jobs:
        r = full_run(top, args.churn, args.full_jobs, args.full_minutes, args.seed,
                     progress=lambda line: print("  " + line, flush=True))
        per = r["jobs_finished"] / max(r["cpu"], 1e-9)
        c, n, o = r["meter"].cpu, r["meter"].calls, r["meter"].offers
        offers = sum(o[k] for k in OFFER_CALLS) + o["tick"]
        lat = r["latency"]
        print(f"full run, master (Pool) CPU: per negotiation round (tick) "
              f"{1e6 * c['tick'] / max(1, n['tick']):.0f} us over {n['tick']} rounds, per "
              f"negotiate {1e6 * c['negotiate'] / max(1, n['negotiate']):.0f} us over "
              f"{n['negotiate']}, per heartbeat "
              f"{1e6 * c['node_report'] / max(1, n['node_report']):.0f} us over "
              f"{n['node_report']}, per offer "
              f"{1e6 * sum(c[k] for k in OFFER_CALLS) / max(1, offers):.0f} us over {offers} "
              f"offers ({n['set_demand']} demand messages); grant latency "
              f"{1e3 * sum(lat) / max(1, len(lat)):.2f} ms (p99 {1e3 * _pct(lat, 0.99):.2f}) "
              f"over {len(lat)} grants (simulated); {r['pool_checks']} Pool checks "
              f"(Pool.check() and the books per node, every tick)", flush=True)
        print(f"full run, {top} nodes x {SLOTS} slots, {SUBMITTERS} submitters, "
              f"{r['jobs_asked']} jobs asked: {'ended' if r['ended'] else 'stopped'} after "
              f"{r['sim_seconds']:.0f} simulated s, {r['wall']:.0f} s wall, {r['cpu']:.0f} s "
              f"CPU; {r['jobs_started']} jobs started, {r['jobs_finished']} in "
              f"{r['clusters']} finished clusters checked; {per:.0f} jobs per CPU s of the "
              f"whole simulation (Pool: {r['pool_cpu']:.1f} s); at that rate "
              f"{r['jobs_asked']} jobs take {r['jobs_asked'] / max(per, 1e-9) / 60:.0f} min "
              f"of CPU")
        for f in r["failures"][:5]:
            print(f"   FAILED: {f[:300]}")
        ok = ok and not r["failures"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
