"""Checkpoint and restore (SPEC C5): time and size on disk, against
re-feeding the same inputs.

Two workloads, each in this process through ``ddir.Server``:

* **reach**: 100k nodes, 200k edges fed as rows (``feed_many``) into
  programs/producer.ddp, 10 roots into programs/reach_import.ddp, one tick,
  then 20 rounds of 5 deletions + 5 insertions (so the journal holds
  history, folded or not);
* **load**: 1,000,000 int64 rows loaded from Parquet into a program that
  exports them, one tick.

Reported: ``checkpoint`` time, the directory's size, ``restore`` time
(``Server.restore``, 1 worker), and ``refeed``: building the same state from
scratch by feeding the same updates (the baseline a restore must beat);
each restore is checked against the original's peek.

    python bench/checkpoint.py [--nodes 100000] [--edges 200000] [--rows 1000000]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def size_of(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def reach_state(s, edges, roots, rounds):
    s.install("prod", os.path.join(ROOT, "programs/producer.ddp"))
    s.install("reach", os.path.join(ROOT, "programs/reach_import.ddp"))
    s.feed_many("prod", 0, [((a, b), (), 1) for a, b in edges])
    s.feed_many("reach", 0, [((r,), (), 1) for r in roots])
    s.tick()
    for removed, added in rounds:
        s.feed_many("prod", 0, [((a, b), (), -1) for a, b in removed]
                    + [((a, b), (), 1) for a, b in added])
        s.tick()


def bench_reach(nodes: int, count: int, tmp: str) -> dict:
    import ddir
    rng = random.Random(7)
    edges = list({(rng.randrange(nodes), rng.randrange(nodes)) for _ in range(count)})
    roots = rng.sample(range(nodes), 10)
    present = list(edges)
    rounds = []
    for _ in range(20):
        removed = [present.pop(rng.randrange(len(present))) for _ in range(5)]
        added = [(rng.randrange(nodes), rng.randrange(nodes)) for _ in range(5)]
        added = [e for e in added if e not in set(present)]
        present += added
        rounds.append((removed, added))
    snap = os.path.join(tmp, "reach")
    with ddir.Server(1) as s:
        refeed, _ = timed(lambda: reach_state(s, edges, roots, rounds))
        expected = s.peek("reachable")
        ckpt, _ = timed(lambda: s.checkpoint(snap))
    restore, server = timed(lambda: ddir.Server.restore(snap))
    with server as s:
        assert s.peek("reachable") == expected
    lines = [f"install prod {ROOT}/programs/producer.ddp",
             f"install reach {ROOT}/programs/reach_import.ddp"]
    lines += [f"feed prod 0 {a},{b}" for a, b in edges] + [f"feed reach 0 {r}" for r in roots]
    lines.append("tick")
    for removed, added in rounds:
        lines += [f"feed prod 0 {a},{b} diff=-1" for a, b in removed]
        lines += [f"feed prod 0 {a},{b}" for a, b in added] + ["tick"]
    with ddir.Server(1) as s:
        from ddir.server.session import Session
        import io
        commands, _ = timed(lambda: Session(out=io.StringIO(), client=s).run_script("x", lines))
        assert s.peek("reachable") == expected
    return {"workload": f"reach {len(edges)} edges + 20 rounds", "checkpoint": ckpt,
            "size": size_of(snap), "restore": restore, "refeed": refeed, "commands": commands}


def bench_load(rows: int, tmp: str) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ddir
    path = os.path.join(tmp, "rows.parquet")
    rng = np.random.default_rng(3)
    pq.write_table(pa.table({"a": rng.integers(0, 1 << 40, rows), "b": rng.integers(0, 100, rows)}),
                   path)
    snap = os.path.join(tmp, "load")
    with ddir.Server(1) as s:
        def build():
            s.install("p", source='export "rows" = input 0;\n')
            s.load("p", 0, path)
            s.tick()
        refeed, _ = timed(build)
        expected = len(s.peek("rows"))
        ckpt, _ = timed(lambda: s.checkpoint(snap))
    restore, server = timed(lambda: ddir.Server.restore(snap))
    with server as s:
        assert len(s.peek("rows")) == expected
    return {"workload": f"load {rows} rows", "checkpoint": ckpt, "size": size_of(snap),
            "restore": restore, "refeed": refeed}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--edges", type=int, default=200_000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ddir-bench-ckpt-")
    try:
        results = [bench_reach(args.nodes, args.edges, tmp), bench_load(args.rows, tmp)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("| workload | build via API s | as feed commands s | checkpoint s | size MB | "
          "restore s | restore / API | restore / commands |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        cmds = r.get("commands")
        vs_cmds = f"{r['restore'] / cmds:.2f}" if cmds else "-"
        print(f"| {r['workload']} | {r['refeed']:.2f} | {f'{cmds:.2f}' if cmds else '-'} | "
              f"{r['checkpoint']:.2f} | {r['size'] / 1e6:.1f} | {r['restore']:.2f} | "
              f"{r['restore'] / r['refeed']:.2f} | {vs_cmds} |")

if __name__ == "__main__":
    main()
