"""The reach workload of ``bench/reach.py`` through the server with -w 1, 2, 4
(or ``--workers 1,2,4,8``): load time, update latency, collective exchange
steps per tick, and peak memory of every process.

Each worker count gets a fresh server on the same graph and the same 20
rounds of 10 edge changes; every round's result is checked against a BFS.
Ratios are against -w 1 from the same run (machines here are noisy).

    python bench/scaling.py [--workers 1,2,4] [--nodes 100000] [--edges 200000]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from reach import REACH, add_workload_args, recompute  # noqa: E402  (bench/reach.py's workload)
from reach import workload as reach_workload  # noqa: E402

from ddir.ir.lower import lower  # noqa: E402
from ddir.lang.parser import parse_program  # noqa: E402
from ddir.server import commands as C  # noqa: E402
from ddir.server.cluster import LocalCluster, ProcessCluster  # noqa: E402
from ddir.server.registry import Server  # noqa: E402


def workload(args):
    """bench/reach.py's graph and changes, each round with its BFS result."""
    edges, roots, changes = reach_workload(args)
    rounds, live = [], set(edges)
    for removed, added in changes:
        live.difference_update(removed)
        live.update(added)
        rounds.append((removed, added, recompute(live, roots)))
    return edges, roots, rounds


def reached(server) -> set:
    (record,) = server.execute(C.Peek("reach", None, False, None, 0))
    return {k[0] for k, _, _ in record["rows"]}


def measure(cluster, edges, roots, rounds) -> dict:
    workers = cluster.shards
    server = Server(cluster=cluster)
    try:
        server.execute(C.Install("reach", "reach.ddp", lower(parse_program(REACH, "reach.ddp"))))
        t0 = time.perf_counter()
        server.feed_rows("reach", 0, [(e, (), 1) for e in edges])
        server.feed_rows("reach", 1, [((r,), (), 1) for r in roots])
        server.execute(C.Tick())
        load = time.perf_counter() - t0
        steps0 = sum(r["steps"] for r in cluster.broadcast(("stats",)))
        latencies = []
        for removed, added, expected in rounds:
            t0 = time.perf_counter()
            server.feed_rows("reach", 0, [(e, (), -1) for e in removed] + [(e, (), 1) for e in added])
            server.execute(C.Tick())
            latencies.append(time.perf_counter() - t0)
            assert reached(server) == expected, "result differs from BFS"
            gc.collect()  # the check's garbage is not the next tick's cost
        stats = cluster.broadcast(("stats",))
        steps = (sum(r["steps"] for r in stats) - steps0) / max(1, workers) / len(rounds)
        intake_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss = [intake_kb] if isinstance(cluster, LocalCluster) else [r["peak_rss_kb"] for r in stats]
        return {"load": load, "median": statistics.median(latencies), "max": max(latencies),
                "steps": steps, "rss_mb": [kb / 1024 for kb in rss], "intake_mb": intake_kb / 1024}
    finally:
        cluster.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", default="1,2,4")
    add_workload_args(ap)
    ap.add_argument("--processes-for-1", action="store_true",
                    help="run -w 1 as one worker process too (to see the IPC cost)")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    # Start every cluster before building the workload: forked workers would
    # otherwise inherit (and report as their own memory) the workload's data.
    clusters = [LocalCluster() if w == 1 and not args.processes_for_1 else ProcessCluster(w)
                for w in counts]
    edges, roots, rounds = workload(args)
    print(f"graph: {args.nodes} nodes, {len(edges)} edges, {args.roots} roots, "
          f"{args.rounds} rounds of 10 changes; cores here: {os.cpu_count()}")
    print(f"{'-w':>3} {'load ms':>9} {'x -w1':>6} {'median ms':>10} {'x -w1':>6} {'max ms':>8} "
          f"{'steps/tick':>10}  peak RSS per worker (MB)")
    base = None
    for w, cluster in zip(counts, clusters):
        m = measure(cluster, edges, roots, rounds)
        base = base or m
        rss = " ".join(f"{x:.0f}" for x in m["rss_mb"])
        print(f"{w:>3} {m['load'] * 1000:9.0f} {base['load'] / m['load']:6.2f} "
              f"{m['median'] * 1000:10.2f} {base['median'] / m['median']:6.2f} "
              f"{m['max'] * 1000:8.1f} {m['steps']:10.1f}  {rss}", flush=True)
    print("(x -w1: speed-up against the first row; steps: collective exchange steps per worker "
          "per tick; peak RSS: ru_maxrss of each worker, the intake process for in-process -w 1)")


if __name__ == "__main__":
    main()
