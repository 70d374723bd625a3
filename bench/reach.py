"""Reach over a seeded random graph: load time, then 20 rounds of 10 edge
changes (5 deletions, 5 insertions), against a plain-BFS recompute of the
same rounds measured in the same run.

Every round's result is checked against BFS. By default the rounds run back
to back, as a server's ticks do, and each round's output changes are kept and
checked afterwards (the result after round r is the loaded result plus the
changes of rounds 1..r). ``--check interleaved`` instead reads the whole
result and runs the BFS between rounds; that work (a 270 ms BFS, an 80k-row
read) leaves the caches cold for the next round, which then takes about twice
as long.

    python bench/reach.py [--nodes 100000] [--edges 200000] [--roots 10]
                          [--rounds 20] [--check after|interleaved]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import deque

from ddir.engine.dataflow import Dataflow
from ddir.engine.memory import settle
from ddir.ir.lower import lower
from ddir.lang.parser import parse_program

REACH = """
let edges = input 0 | key($0[0] ; $0[1]);
let roots = input 1 | key($0[0] ;);
reach: { var reach = roots + (reach | join(edges, ($2 ;))) | distinct; }
export "reach" = reach::reach;
"""


def add_workload_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--edges", type=int, default=200_000)
    ap.add_argument("--roots", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)


def workload(args):
    """(edges, roots, changes): a seeded random graph, its roots, and per
    round the (removed, added) edges, 5 deletions and up to 5 insertions."""
    rng = random.Random(args.seed)
    edges = set()
    while len(edges) < args.edges:
        edges.add((rng.randrange(args.nodes), rng.randrange(args.nodes)))
    edges = sorted(edges)
    roots = rng.sample(range(args.nodes), args.roots)
    live, changes = set(edges), []
    for _ in range(args.rounds):
        removed = rng.sample(sorted(live), 5)
        added = [(rng.randrange(args.nodes), rng.randrange(args.nodes)) for _ in range(5)]
        added = [e for e in added if e not in live]
        live.difference_update(removed)
        live.update(added)
        changes.append((removed, added))
    return edges, roots, changes


def recompute(live, roots) -> set:
    """The baseline: build the adjacency of ``live`` edges and run a BFS."""
    adjacency: dict = {}
    for a, b in live:
        adjacency.setdefault(a, []).append(b)
    return bfs(adjacency, roots)


def bfs(adjacency: dict, roots) -> set:
    seen = set(roots)
    queue = deque(roots)
    while queue:
        n = queue.popleft()
        for m in adjacency.get(n, ()):
            if m not in seen:
                seen.add(m)
                queue.append(m)
    return seen


def bytes_per_update(edges, roots) -> float:
    """Python memory held after the load (tracemalloc, the inputs' own lists
    freed) over the updates the traces store."""
    import tracemalloc
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    df = Dataflow(lower(parse_program(REACH, "reach.ddp")))
    df.stage(0, (0,), [(e, (), 1) for e in edges])
    df.stage(1, (0,), [((r,), (), 1) for r in roots])
    df.run(0)
    df.compact(0)
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    stored = sum(trace.size() for trace in df.traces())
    return held / stored


def check_round(live: set, removed, added, roots, bfs_times: list, got: set) -> None:
    """Apply the round's edge changes to ``live`` and compare ``got`` (the
    engine's keys) with a BFS over it, timing the BFS."""
    live.difference_update(removed)
    live.update(added)
    t0 = time.perf_counter()
    expected = recompute(live, roots)
    bfs_times.append(time.perf_counter() - t0)
    assert {k[0] for k in got} == expected, "incremental result differs from BFS"


def main() -> None:
    ap = argparse.ArgumentParser()
    add_workload_args(ap)
    ap.add_argument("--memory", action="store_true",
                    help="also load once under tracemalloc: bytes per stored update")
    ap.add_argument("--check", choices=("after", "interleaved"), default="after",
                    help="check each round against BFS after all rounds (default) or between them")
    args = ap.parse_args()
    edges, roots, changes = workload(args)

    if args.memory:
        print(f"memory: {bytes_per_update(edges, roots):.1f} bytes per stored update (tracemalloc)")
    df = Dataflow(lower(parse_program(REACH, "reach.ddp")))
    t0 = time.perf_counter()
    df.stage(0, (0,), [(e, (), 1) for e in edges])
    df.stage(1, (0,), [((r,), (), 1) for r in roots])
    df.run(0)
    settle()  # as the server's worker does after every tick
    load = time.perf_counter() - t0
    reached = len(df.exports["reach"].trace.contents())
    print(f"checking each round against BFS {args.check} the rounds")

    live = set(edges)
    latencies, bfs_times = [], []
    result = {k for k, _ in df.exports["reach"].trace.contents()}
    export = df.exports["reach"]
    deltas = []  # per round: the export's changes at that epoch (--check after)
    for epoch, (removed, added) in enumerate(changes, start=1):
        export.watch = []  # what a subscription sees (ddir.server.worker)
        t0 = time.perf_counter()
        df.stage(0, (epoch,), [(e, (), -1) for e in removed] + [(e, (), 1) for e in added])
        df.run(epoch)
        df.compact(epoch - 1)  # as the worker: the tick's own updates stay apart
        settle()
        latencies.append(time.perf_counter() - t0)
        deltas.append([row for t, batch in export.watch if t == (epoch,) for row in batch])
        if args.check == "interleaved":
            check_round(live, removed, added, roots, bfs_times,
                        {k for k, _ in export.trace.contents()})
    if args.check == "after":
        live = set(edges)
        for (removed, added), delta in zip(changes, deltas):
            for k, _, d in delta:
                assert d in (1, -1), "distinct's output changes by one"
                (result.add if d > 0 else result.remove)(k)
            check_round(live, removed, added, roots, bfs_times, result)
    med, worst = statistics.median(latencies), max(latencies)
    bfs_med = statistics.median(bfs_times)
    print(f"graph: {args.nodes} nodes, {len(edges)} edges, {args.roots} roots; reached {reached}")
    print(f"load:                {load * 1000:9.1f} ms")
    print(f"10-change round:     median {med * 1000:7.2f} ms   max {worst * 1000:7.2f} ms")
    print(f"BFS recompute:       median {bfs_med * 1000:7.2f} ms")
    print(f"ratios: BFS/round = {bfs_med / med:6.1f}x (target >= 20)   "
          f"load/round = {load / med:6.1f}x (target >= 50)")


if __name__ == "__main__":
    main()
