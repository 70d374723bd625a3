"""Bulk load (SPEC C1): a million two-column int64 rows from Parquet into a
program that exports them, then one tick; against pyarrow reading the same
file, and against the same rows fed as `feed` lines. Then `save` of the
trace against pyarrow writing it.

Each worker count runs in a fresh process (so peak memory is its own):

    python bench/load.py [--rows 1000000] [--workers 1,2,4] [--feed-sample 20000]

Reported per worker count:
  read      pyarrow.parquet.read_table of the file (best of 3, in that process)
  load      `load` (read, validate, split by owner, stage)
  tick      the tick that follows (the engine arranging the rows)
  load+tick / read  the target is <= 5x
  feed lines  `feed p 0 a,b` lines through the command line's path for a sample,
            plus its tick, extrapolated linearly to all rows; feed / (load+tick)
            (the target is >= 20x)
  save, write  `save` of the trace to Parquet, and pyarrow.parquet.write_table of
            the same table (best of 3)
  peak RSS  the intake process, and the largest worker
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PROGRAM = 'export "rows" = input 0;\n'


def best(fn, times=3):
    out = []
    for _ in range(times):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


def one(workers: int, path: str, rows: int, sample: int) -> dict:
    import pyarrow.parquet as pq
    import ddir
    from ddir.server.session import Session

    read = best(lambda: pq.read_table(path))
    result = {"workers": workers, "rows": rows, "read": read}
    with ddir.Server(workers=workers) as s:
        s.install("p", source=PROGRAM)
        t = time.perf_counter()
        assert s.load("p", 0, path) == rows
        result["load"] = time.perf_counter() - t
        t = time.perf_counter()
        s.tick()
        result["tick"] = time.perf_counter() - t
        out = os.path.join(os.path.dirname(path), f"saved-{workers}.parquet")
        t = time.perf_counter()
        assert s.save("rows", out) == rows
        result["save"] = time.perf_counter() - t
        table = pq.read_table(out)
        result["write"] = best(lambda: pq.write_table(table, out + ".pa.parquet"))
        stats = s.core.cluster.broadcast(("stats",)) if workers > 1 else []
        result["worker_rss_mb"] = max((r["peak_rss_kb"] for r in stats), default=0) / 1024
    result["intake_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # the same rows as `feed` lines, through the command line's code path, on a sample
    a = table.column("key_0").to_numpy()[:sample]
    b = table.column("key_1").to_numpy()[:sample]
    lines = [f"feed p 0 {x},{y}" for x, y in zip(a.tolist(), b.tolist())]
    with ddir.Server(workers=workers) as s:
        session = Session(out=io.StringIO(), client=s)
        session.run_line("install p " + _program_file(path))
        t = time.perf_counter()
        for line in lines:
            session.run_line(line)
        feed = time.perf_counter() - t
        t = time.perf_counter()
        session.run_line("tick")
        feed_tick = time.perf_counter() - t
    result["feed_sample"] = sample
    result["feed_lines"] = (feed + feed_tick) * rows / sample
    return result


def _program_file(path: str) -> str:
    program = os.path.join(os.path.dirname(path), "rows.ddp")
    with open(program, "w") as f:
        f.write(PROGRAM)
    return program


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--feed-sample", type=int, default=20_000)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.file, args.rows, min(args.feed_sample, args.rows))))
        return

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rows.parquet")
        rng = np.random.default_rng(1)
        pq.write_table(pa.table({"a": rng.integers(0, 2 ** 40, args.rows),
                                 "b": rng.integers(-2 ** 20, 2 ** 20, args.rows)}), path)
        print(f"{args.rows} rows, 2 int64 columns, {os.path.getsize(path) / 2 ** 20:.1f} MB Parquet; "
              f"feed lines measured on {min(args.feed_sample, args.rows)} rows and extrapolated")
        print("| -w | pyarrow read | load | tick | load+tick | ÷ read | feed lines (extrap.) "
              "| feed ÷ load+tick | save | pyarrow write | save ÷ write | peak RSS intake / worker |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for w in [int(x) for x in args.workers.split(",")]:
            out = subprocess.run([sys.executable, __file__, "--one", str(w), "--file", path,
                                  "--rows", str(args.rows), "--feed-sample", str(args.feed_sample)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.splitlines()[-1])
            total = r["load"] + r["tick"]
            worker = f"{r['worker_rss_mb']:.0f} MB" if w > 1 else "-"
            print(f"| {w} | {r['read'] * 1000:.0f} ms | {r['load'] * 1000:.0f} ms | "
                  f"{r['tick'] * 1000:.0f} ms | {total * 1000:.0f} ms | {total / r['read']:.0f}x | "
                  f"{r['feed_lines']:.1f} s | {r['feed_lines'] / total:.1f}x | "
                  f"{r['save'] * 1000:.0f} ms | {r['write'] * 1000:.0f} ms | "
                  f"{r['save'] / r['write']:.0f}x | {r['intake_rss_mb']:.0f} MB / {worker} |",
                  flush=True)


if __name__ == "__main__":
    main()
