"""Transitive closure, whole process through the ``ddir`` CLI, against a
plain-Python semi-naive TC in the same run (the baseline and the check).

Two seeded graphs:
- big: strongly connected, 512 nodes, ~9,200 distinct edges fed as 11,000
  `feed` lines (duplicates included): the closure is all 512*512 pairs;
- small: 1,009 distinct random edges over 1,000 nodes, duplicates in the same
  proportion.

Each ddir run is one process executing a generated session script
(`install`, the `feed` lines, one `tick`, then a `peek`). The small graph's
peek is the whole trace, compared pair for pair with the baseline; the big
graph's is `peek tc limit=1`, whose `total` is compared with the baseline's
pair count (`--exact` peeks and compares everything there too). The
`empty` row is the same script with no feed lines: process start, install,
an empty tick, exit.

Reported per row: the median wall time of --runs processes (spawn to exit),
ddir's CPU time (user + system, workers included; steadier than wall time on
a busy machine), the baseline's median (compute only, from the edge list),
the ratio of wall times, and the peak RSS (the largest process; with -w N > 1 also the sum over the tree).

    python bench/tc.py [--runs 3] [-w 1[,3]] [--graphs big,small] [--exact]
                       [--ddir-cmd '/other/.venv/bin/ddir'] [--checkout /other/checkout]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wholeproc import (add_ddir_args, check_ok, ddir_cmds, median, print_table,  # noqa: E402
                       run_script, worker_counts)

TC = """\
let e = input 0 | key($0[0] ; $0[1]);
tc: { var p = e + (p | key($1 ; $0) | join(e, ($1 ; $2))) | key($0, $1 ;) | distinct | key($0[0] ; $0[1]); }
export "tc" = tc::p;
"""

GRAPHS = {
    # name: (nodes, distinct edges, feed lines, with a Hamiltonian cycle)
    "big": (512, 9_200, 11_000, True),
    "small": (1_000, 1_009, 1_206, False),
}


def graph(nodes: int, edges: int, lines: int, cycle: bool, seed: int):
    """(distinct edges, feed lines): a seeded random graph; with ``cycle`` a
    random Hamiltonian cycle first, so it is strongly connected. The lines
    are the edges plus duplicates of random ones, shuffled."""
    rng = random.Random(seed)
    distinct: set = set()
    if cycle:
        order = list(range(nodes))
        rng.shuffle(order)
        distinct.update(zip(order, order[1:] + order[:1]))
    while len(distinct) < edges:
        distinct.add((rng.randrange(nodes), rng.randrange(nodes)))
    feed = sorted(distinct)
    feed += [feed[rng.randrange(len(distinct))] for _ in range(max(0, lines - len(feed)))]
    rng.shuffle(feed)
    return distinct, feed


def semi_naive_tc(edges) -> set:
    """Plain-Python semi-naive closure: extend only last round's new pairs."""
    succ: dict = {}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
    closure = set(edges)
    delta = closure
    while delta:
        new = set()
        for a, b in delta:
            for c in succ.get(b, ()):
                if (a, c) not in closure:
                    new.add((a, c))
        closure |= new
        delta = new
    return closure


def write_script(dirname: str, feed: list, exact: bool) -> str:
    with open(os.path.join(dirname, "tc.ddp"), "w") as f:
        f.write(TC)
    path = os.path.join(dirname, "session.txt")
    with open(path, "w") as f:
        f.write("install t tc.ddp\n")
        f.writelines(f"feed t 0 {a},{b}\n" for a, b in feed)
        f.write("tick\n")
        f.write("peek tc\n" if exact else "peek tc limit=1\n")
        f.write("exit\n")
    return path


def check(stdout: str, expected: set, exact: bool) -> int:
    """The pair count ddir reports; exits if it differs from ``expected``."""
    peeks = [r for r in map(json.loads, stdout.splitlines()) if r.get("kind") == "peek"]
    if len(peeks) != 1:
        raise SystemExit(f"expected one peek record, got {len(peeks)}")
    peek = peeks[0]
    total = peek["total"]
    if total != len(expected):
        raise SystemExit(f"ddir has {total} pairs, the baseline {len(expected)}")
    if exact:
        got = {(k[0], v[0]) for k, v, d in peek["rows"] if d == 1}
        if len(got) != len(peek["rows"]) or got != expected:
            raise SystemExit("ddir's pairs differ from the baseline's")
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_ddir_args(ap)
    ap.add_argument("--graphs", default="big,small", help="comma list of: big, small")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--exact", action="store_true",
                    help="compare every pair on the big graph too (peeks all 262,144 rows)")
    ap.add_argument("--no-startup", action="store_true",
                    help="skip the `empty` row (install the program, tick, exit)")
    args = ap.parse_args()
    names = [g for g in args.graphs.split(",") if g]

    rows = []
    with tempfile.TemporaryDirectory(prefix="ddir-tc-") as tmp:
        if not args.no_startup:
            # The floor: a process that installs the program and exits.
            sdir = os.path.join(tmp, "startup")
            os.mkdir(sdir)
            script = write_script(sdir, [], exact=False)
            for cmd in ddir_cmds(args):
                for w in worker_counts(args):
                    walls, rss, cpus = [], [], []
                    for _ in range(args.runs):
                        res = run_script(cmd, ["--json", "-w", str(w)], script, sdir)
                        check_ok(res, f"startup {cmd.label} -w {w}")
                        walls.append(res.wall)
                        rss.append(res.maxrss_mb)
                        cpus.append(res.cpu)
                    wall = median(walls)
                    rows.append(["empty", cmd.label, w, 0, 0, f"{wall:.2f}",
                                 f"{min(walls):.2f}-{max(walls):.2f}", f"{median(cpus):.2f}",
                                 "", "", f"{max(rss):.0f}"])
        for name in names:
            nodes, edges, lines, cycle = GRAPHS[name]
            distinct, feed = graph(nodes, edges, lines, cycle, args.seed)
            base_times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                expected = semi_naive_tc(distinct)
                base_times.append(time.perf_counter() - t0)
            base = median(base_times)
            exact = args.exact or name == "small"
            gdir = os.path.join(tmp, name)
            os.mkdir(gdir)
            script = write_script(gdir, feed, exact)
            print(f"{name}: {nodes} nodes, {len(distinct)} distinct edges, {len(feed)} feed lines, "
                  f"{len(expected)} pairs; check: {'every pair' if exact else 'pair count'}; "
                  f"baseline {base * 1000:.0f} ms", file=sys.stderr)
            for cmd in ddir_cmds(args):
                for w in worker_counts(args):
                    walls, rss, tree, cpus = [], [], [], []
                    for i in range(args.runs):
                        res = run_script(cmd, ["--json", "-w", str(w)], script, gdir,
                                         sample_tree=w > 1)
                        check_ok(res, f"{name} {cmd.label} -w {w}")
                        check(res.stdout, expected, exact)
                        walls.append(res.wall)
                        rss.append(res.maxrss_mb)
                        tree.append(res.tree_hwm_mb)
                        cpus.append(res.cpu)
                        print(f"  {cmd.label} -w {w} run {i + 1}: {res.wall:.2f} s, cpu {res.cpu:.2f} s, "
                              f"peak RSS {res.maxrss_mb:.0f} MB", file=sys.stderr)
                    wall = median(walls)
                    mem = f"{max(rss):.0f}" + (f" ({max(tree):.0f} all)" if w > 1 else "")
                    rows.append([name, cmd.label, w, f"{len(distinct):,}", f"{len(expected):,}",
                                 f"{wall:.2f}", f"{min(walls):.2f}-{max(walls):.2f}",
                                 f"{median(cpus):.2f}", f"{base:.3f}", f"{wall / base:.1f}x", mem])
    print(f"transitive closure, whole process through ddir; median of {args.runs} runs")
    print_table(["graph", "ddir", "-w", "edges", "pairs", "ddir s", "range s",
                 "ddir cpu s", "baseline s", "ddir/baseline", "peak RSS MB"], rows)


if __name__ == "__main__":
    main()
