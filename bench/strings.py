"""Strings and Floats from Parquet (issue 22, SPEC C1/D1).

Two measurements, each worker count in a fresh process:

1. load: a million rows with a String key, an Int and a Float val from Parquet
   (`load p 0 file key=name val=n,x`) into a program that exports them, then
   one tick; against pyarrow reading the same file (target: load+tick within
   10x the read). The same file's Int column as the key (`key=id`) is shown
   beside it (the Float val keeps that one on the row path too).

2. join: a million String-keyed rows joined with a million rows of the same
   keys (`input 0 | join(input 1, ($0 ; $1[0], $2[0]))`, every key once on
   each side: a million output rows), against the same join on Int keys
   (same run, same shape; target: within 2x). Both inputs are loaded from
   Parquet; the tick that runs the join is timed apart from the loads.

    python bench/strings.py [--rows 1000000] [--workers 1,2] [--part load,join]

Keys are `user-<n>` for a random permutation of n (all distinct); Int keys
are the same n. Reported: median of --runs (default 1) per figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

EXPORT = 'export "rows" = input 0;\n'
JOIN = 'export "j" = input 0 | join(input 1, ($0 ; $1[0], $2[0]));\n'


def best(fn, times=3):
    out = []
    for _ in range(times):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


def make_files(tmp: str, rows: int) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = np.random.default_rng(22)
    ids = rng.permutation(rows).astype(np.int64)
    names = pa.array([f"user-{i}" for i in ids.tolist()], pa.string())
    left = {"name": names, "id": ids, "n": rng.integers(0, 1000, rows),
            "x": rng.random(rows) * 100}
    order = rng.permutation(rows)  # the right side: the same keys in another order
    right = {"name": names.take(pa.array(order)), "id": ids[order],
             "m": rng.integers(0, 1000, rows)}
    files = {"left": os.path.join(tmp, "left.parquet"), "right": os.path.join(tmp, "right.parquet")}
    pq.write_table(pa.table(left), files["left"])
    pq.write_table(pa.table(right), files["right"])
    return files


def part_load(workers: int, files: dict, rows: int) -> dict:
    import pyarrow.parquet as pq
    import ddir
    path = files["left"]
    result = {"read": best(lambda: pq.read_table(path))}
    for label, key in (("str", "name"), ("int", "id")):
        with ddir.Server(workers=workers) as s:
            s.install("p", source=EXPORT)
            t = time.perf_counter()
            assert s.load("p", 0, path, key=key, val="n,x") == rows
            result[f"{label}_load"] = time.perf_counter() - t
            t = time.perf_counter()
            s.tick()
            result[f"{label}_tick"] = time.perf_counter() - t
            first = s.peek("rows", limit=1)
            assert first.total == rows, first.total
    return result


def part_join(workers: int, files: dict, rows: int) -> dict:
    import ddir
    result = {}
    for label, key in (("str", "name"), ("int", "id")):
        with ddir.Server(workers=workers) as s:
            s.install("p", source=JOIN)
            t = time.perf_counter()
            s.load("p", 0, files["left"], key=key, val="n")
            s.load("p", 1, files["right"], key=key, val="m")
            result[f"{label}_load"] = time.perf_counter() - t
            t = time.perf_counter()
            s.tick()
            result[f"{label}_tick"] = time.perf_counter() - t
            assert s.peek("j", limit=1).total == rows
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--part", default="load,join")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--files", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        part, w = args.one.split(":")
        fn = part_load if part == "load" else part_join
        print(json.dumps(fn(int(w), json.loads(args.files), args.rows)))
        return

    parts = args.part.split(",")
    workers = [int(x) for x in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        files = make_files(tmp, args.rows)
        size = os.path.getsize(files["left"]) / 2 ** 20
        print(f"{args.rows} rows; left.parquet (name: String, id: Int, n: Int, x: Float) "
              f"{size:.1f} MB, written in {time.perf_counter() - t:.1f} s", flush=True)

        def run(part, w):
            out = subprocess.run([sys.executable, __file__, "--one", f"{part}:{w}", "--files",
                                  json.dumps(files), "--rows", str(args.rows)],
                                 capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr)
            return json.loads(out.stdout.splitlines()[-1])

        if "load" in parts:
            print("\n| -w | pyarrow read | load (String key) | tick | load+tick | ÷ read "
                  "| load (Int key) | tick | load+tick | ÷ read |")
            print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for w in workers:
                r = run("load", w)
                s_total = r["str_load"] + r["str_tick"]
                i_total = r["int_load"] + r["int_tick"]
                print(f"| {w} | {r['read'] * 1000:.0f} ms | {r['str_load'] * 1000:.0f} ms | "
                      f"{r['str_tick'] * 1000:.0f} ms | {s_total * 1000:.0f} ms | "
                      f"**{s_total / r['read']:.1f}x** | {r['int_load'] * 1000:.0f} ms | "
                      f"{r['int_tick'] * 1000:.0f} ms | {i_total * 1000:.0f} ms | "
                      f"{i_total / r['read']:.1f}x |", flush=True)
        if "join" in parts:
            print("\n| -w | String keys: load both | join tick | Int keys: load both | join tick "
                  "| tick String ÷ Int | load+tick String ÷ Int |")
            print("|---:|---:|---:|---:|---:|---:|---:|")
            for w in workers:
                r = run("join", w)
                s_total = r["str_load"] + r["str_tick"]
                i_total = r["int_load"] + r["int_tick"]
                print(f"| {w} | {r['str_load'] * 1000:.0f} ms | {r['str_tick'] * 1000:.0f} ms | "
                      f"{r['int_load'] * 1000:.0f} ms | {r['int_tick'] * 1000:.0f} ms | "
                      f"**{r['str_tick'] / r['int_tick']:.1f}x** | "
                      f"{s_total / i_total:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
