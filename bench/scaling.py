"""The reach workload of ``bench/reach.py`` through the server with -w 1, 2, 4
(or ``--workers 1,2,4,8``), and as MPI jobs of ``--mpi 1,2,4`` ranks (the
workers are the ranks; needs the mpi extra): load time, update latency,
collective exchange steps per tick, and peak memory of every process.

Each worker count gets a fresh server on the same graph and the same 20
rounds of 10 edge changes; every round's result is checked against a BFS.
Ratios are against -w 1 from the same run (machines here are noisy). An MPI
row is measured by rank 0 of ``mpiexec -n N python bench/scaling.py
--mpi-rank0``, which prints its figures as one JSON line for this run's table.

    python bench/scaling.py [--workers 1,2,4] [--mpi 1,2,4] [--nodes 100000] [--edges 200000]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
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


WORKLOAD = ("nodes", "edges", "roots", "rounds", "seed")


def mpi_rank0(args) -> None:
    """Inside ``mpiexec``: rank 0 measures with the ranks as its workers and
    prints one JSON line; the other ranks serve it."""
    from ddir.server.mpi import MpiCluster, Ranks, leave
    ranks = Ranks()
    if ranks.rank != 0:
        ranks.serve()  # never returns
    cluster = MpiCluster(ranks)  # before the workload, as for the forked clusters
    edges, roots, rounds = workload(args)
    print(json.dumps(measure(cluster, edges, roots, rounds)), flush=True)
    ranks.finish()
    leave(0)


def run_mpi(n: int, args) -> dict:
    mpiexec = (shutil.which("mpiexec", path=os.path.dirname(sys.executable))
               or shutil.which("mpiexec"))
    if mpiexec is None:
        raise SystemExit("--mpi needs mpiexec: pip install 'ddir[mpi]'")
    workload_args = [f"--{k}={getattr(args, k)}" for k in WORKLOAD]
    r = subprocess.run([mpiexec, "-n", str(n), sys.executable, __file__, "--mpi-rank0",
                        *workload_args], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"mpiexec -n {n} failed:\n{r.stdout}{r.stderr}")
    return json.loads(r.stdout.splitlines()[-1])


def row(label: str, m: dict, base: dict) -> str:
    rss = " ".join(f"{x:.0f}" for x in m["rss_mb"])
    return (f"{label:>7} {m['load'] * 1000:9.0f} {base['load'] / m['load']:6.2f} "
            f"{m['median'] * 1000:10.2f} {base['median'] / m['median']:6.2f} "
            f"{m['max'] * 1000:8.1f} {m['steps']:10.1f}  {rss}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--mpi", default="", help="MPI job sizes, e.g. 1,2,4 (needs the mpi extra)")
    ap.add_argument("--mpi-rank0", action="store_true", help=argparse.SUPPRESS)
    add_workload_args(ap)
    ap.add_argument("--processes-for-1", action="store_true",
                    help="run -w 1 as one worker process too (to see the IPC cost)")
    args = ap.parse_args()
    if args.mpi_rank0:
        return mpi_rank0(args)
    counts = [int(w) for w in args.workers.split(",") if w]
    jobs = [int(n) for n in args.mpi.split(",") if n]
    # Start every cluster before building the workload: forked workers would
    # otherwise inherit (and report as their own memory) the workload's data.
    clusters = [LocalCluster() if w == 1 and not args.processes_for_1 else ProcessCluster(w)
                for w in counts]
    edges, roots, rounds = workload(args)
    print(f"graph: {args.nodes} nodes, {len(edges)} edges, {args.roots} roots, "
          f"{args.rounds} rounds of 10 changes; cores here: {os.cpu_count()}")
    print(f"{'workers':>7} {'load ms':>9} {'x 1st':>6} {'median ms':>10} {'x 1st':>6} "
          f"{'max ms':>8} {'steps/tick':>10}  peak RSS per worker (MB)")
    base = None
    for w, cluster in zip(counts, clusters):
        m = measure(cluster, edges, roots, rounds)
        base = base or m
        print(row(f"-w {w}", m, base), flush=True)
    del edges, roots, rounds
    for n in jobs:
        m = run_mpi(n, args)
        base = base or m
        print(row(f"-n {n}", m, base), flush=True)
    print("(x 1st: speed-up against the first row; steps: collective exchange steps per worker "
          "per tick; peak RSS: ru_maxrss of each worker, the intake process for in-process -w 1; "
          "-n N: mpiexec -n N, whose rank 0 is the intake, worker 0 and the benchmark's graph)")


if __name__ == "__main__":
    main()
