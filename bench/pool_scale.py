"""The master's Pool as the pool grows, at the same claim churn (no sockets: the pure core).

    python3 bench/pool_scale.py [--rounds 30] [--churn 200] [--sizes 10,100,1000]

For each size N: N nodes x 32 slots, 100 submitters (one user each, all backlogged), the
pool filled first. Then each round (one simulated second): `churn` claims end on random
nodes (claim-released, which renegotiates and offers the freed slots), the offers of the
previous round are answered (claim-ok, as if they crossed the network in one round),
every node sends its heartbeat (node-report listing its claims), and the master ticks.

Demand: as many demand messages per round as jobs start on a pool of N x 32 slots of
60 s jobs (N x 32 / 60; 5 at 10 nodes, 533 at 1,000), each from a random submitter whose
idle count dropped by one (what a backlogged submitter sends as a job starts; it must
not renegotiate, sim finding C5).

Reported per size: CPU per negotiation round (tick), per heartbeat, per offer (the
claim-released that made it plus its claim-ok), per demand message, per offer with the
demand messages counted in (what bench/sim_scale.py calls per offer), and claim-grant
latency in rounds (slot freed -> new claim active). The check: per-heartbeat, per-offer
and per-demand cost grow at most 2x from 100 to 1,000 nodes (they must follow the work
that changed, not the pool size); the exit status says whether it held.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jrs.cluster.pool import Pool
from jrs.config import Endpoint, NodeEntry

SLOTS = 32
SUBMITTERS = 100


def build(n: int, rnd: random.Random) -> tuple:
    entries = [NodeEntry(Endpoint(f"10.{i // 250}.{i % 250}.1", 7082)) for i in range(n)]
    pool = Pool(entries, 0.0, node_timeout=1e9, offer_timeout=1e9)
    for e in entries:
        pool.node_hello(e.name, {"slots": SLOTS, "memory": 10 ** 6, "gpus": 0,
                                 "attrs": {"Arch": "X86_64", "OpSys": "LINUX"}, "claims": []},
                        0.0)
    offers = []
    for s in range(SUBMITTERS):
        sid = f"s{s:03d}"
        pool.submitter_hello({"submitter": sid, "user": f"u{s:03d}", "host": "h", "pid": 1,
                              "claims": [], "clusters": []}, 0.0)
        offers += pool.set_demand(sid, [{"key": "1/0/0/", "count": 10 ** 6, "cpus": 1,
                                         "memory": 0, "gpus": 0,
                                         "requirements": 'Arch == "X86_64"', "ad": {}}], 0.0)
    for _, node, m in offers:
        if m["type"] == "claim-offer":
            pool.claim_answer(node, {"type": "claim-ok", "claim": m["claim"]}, 0.0)
    return pool, [e.name for e in entries]


def run(n: int, rounds: int, churn: int, seed: int) -> dict:
    rnd = random.Random(seed)
    pool, names = build(n, rnd)
    cpu = time.process_time
    t_round = t_beat = t_offer = t_demand = 0.0
    beats = offers = demands = 0
    idle = {f"s{s:03d}": 10 ** 6 for s in range(SUBMITTERS)}
    starts = max(1, n * SLOTS // 60)  # job starts per second of 60 s jobs
    latencies = []
    pending: list = []  # (node, claim, round the slot was freed)
    for r in range(1, rounds + 1):
        now = float(r)
        # the previous round's offers are answered
        t = cpu()
        for node, cid, _ in pending:
            pool.claim_answer(node, {"type": "claim-ok", "claim": cid}, now)
        t_offer += cpu() - t
        latencies += [r - freed for _, _, freed in pending]
        pending = []
        # churn: claims end on random nodes
        victims = []
        while len(victims) < churn:
            node = pool.nodes[rnd.choice(names)]
            active = [c for c in node.claims.values() if c.active]
            if active:
                victims.append((node.name, rnd.choice(active).id))
        t = cpu()
        made = []
        for node, cid in victims:
            made += pool.claim_released(node, cid, now)
        t_offer += cpu() - t
        for _, node, m in made:
            if m["type"] == "claim-offer":
                pending.append((node, m["claim"], r))
        offers += sum(1 for _, _, m in made if m["type"] == "claim-offer")
        # demand: a job starts, its submitter has one idle job less
        changed = []
        for _ in range(starts):
            sid = f"s{rnd.randrange(SUBMITTERS):03d}"
            idle[sid] -= 1
            changed.append((sid, [{"key": "1/0/0/", "count": idle[sid], "cpus": 1,
                                   "memory": 0, "gpus": 0,
                                   "requirements": 'Arch == "X86_64"', "ad": {}}]))
        t = cpu()
        asked = []
        for sid, reqs in changed:
            asked += pool.set_demand(sid, reqs, now)
        t_demand += cpu() - t
        demands += len(changed)
        for _, node, m in asked:
            if m["type"] == "claim-offer":
                pending.append((node, m["claim"], r))
                offers += 1
        # heartbeats
        reports = [(name, {"load": rnd.random() * SLOTS, "running": SLOTS,
                           "claims": list(pool.nodes[name].claims)}) for name in names]
        t = cpu()
        for name, msg in reports:
            pool.node_report(name, msg, now)
        t_beat += cpu() - t
        beats += len(reports)
        t = cpu()
        pool.tick(now)
        t_round += cpu() - t
    pool.check()
    return {"nodes": n, "round_us": t_round / rounds * 1e6, "beat_us": t_beat / beats * 1e6,
            "offer_us": t_offer / max(1, offers) * 1e6, "offers": offers,
            "demand_us": t_demand / max(1, demands) * 1e6, "demands": demands,
            "offer_all_us": (t_offer + t_demand) / max(1, offers) * 1e6,
            "skipped": pool.skipped_negotiations,
            "latency": sum(latencies) / max(1, len(latencies)),
            "latency_max": max(latencies or [0])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--churn", type=int, default=200, help="claims ending per round")
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{SUBMITTERS} submitters, {SLOTS} slots per node, {args.churn} claims ending per "
          f"round, {args.rounds} rounds")
    print(f"{'nodes':>6} {'round(us)':>10} {'heartbeat(us)':>14} {'offer(us)':>10} "
          f"{'offers':>7} {'demand(us)':>11} {'demands':>8} {'skipped':>8} "
          f"{'offer+demand(us)':>17} {'grant latency(rounds)':>22}")
    results = {}
    for n in sizes:
        res = results[n] = run(n, args.rounds, min(args.churn, n * SLOTS // 2), args.seed)
        print(f"{n:>6} {res['round_us']:>10.1f} {res['beat_us']:>14.2f} "
              f"{res['offer_us']:>10.2f} {res['offers']:>7} {res['demand_us']:>11.2f} "
              f"{res['demands']:>8} {res['skipped']:>8} {res['offer_all_us']:>17.2f} "
              f"{res['latency']:>14.2f} (max {res['latency_max']})")
    ok = True
    if 100 in results and 1000 in results:
        for key, what in (("beat_us", "per heartbeat"), ("offer_us", "per offer"),
                          ("demand_us", "per demand message"),
                          ("offer_all_us", "per offer, demand messages counted in")):
            ratio = results[1000][key] / results[100][key]
            held = ratio <= 2.0
            ok = ok and held
            print(f"{what}: 1000 nodes / 100 nodes = {ratio:.2f}x "
                  f"({'ok' if held else 'FAIL'}: at most 2x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
