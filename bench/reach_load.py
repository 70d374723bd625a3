"""The reach workload of ``bench/reach.py`` (its ``workload()``: 100k nodes,
200k edges, 10 roots, 20 rounds of 5 deletions + up to 5 insertions), whole
process through the ``ddir`` CLI, fed as `feed` lines.

Two session scripts, each timed as a whole process (spawn to exit):
- load:        install, 200k edge `feed` lines, the root lines, `tick`, `exit`;
- load+rounds: the same, then per round its `feed` lines (deletions with
  `diff=-1`) and a `tick`, then `exit`.
Per-round latency cannot be seen from outside; the table gives
(load+rounds - load) / rounds of the median wall times as a derived average
instead. "cpu s" is user + system time of ddir and its workers, steadier than
wall time on a busy machine.

Unless --no-verify, one more (untimed) run peeks `reach` after the load and
after the last round and compares both with a BFS.

    python bench/reach_load.py [--runs 3] [-w 1[,3]] [--ddir-cmd CMD] [--checkout DIR]
                               [--nodes 100000] [--edges 200000] [--roots 10] [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reach import REACH, add_workload_args, recompute, workload  # noqa: E402
from wholeproc import (add_ddir_args, check_ok, ddir_cmds, median, print_table,  # noqa: E402
                       run_script, worker_counts)


def write_script(path: str, edges, roots, changes, peek: bool = False) -> None:
    """A session: load, tick, then one feed batch + tick per entry of ``changes``;
    with ``peek`` a `peek reach` after the load tick and after the last round."""
    with open(path, "w") as f:
        f.write("install r reach.ddp\n")
        f.writelines(f"feed r 0 {a},{b}\n" for a, b in edges)
        f.writelines(f"feed r 1 {r}\n" for r in roots)
        f.write("tick\n")
        if peek:
            f.write("peek reach\n")
        for removed, added in changes:
            f.writelines(f"feed r 0 {a},{b} diff=-1\n" for a, b in removed)
            f.writelines(f"feed r 0 {a},{b}\n" for a, b in added)
            f.write("tick\n")
        if peek and changes:
            f.write("peek reach\n")
        f.write("exit\n")


def verify(cmd, w: int, dirname: str, edges, roots, changes) -> int:
    """Run load + rounds with peeks, compare with BFS; the reached count after load."""
    path = os.path.join(dirname, "verify.txt")
    write_script(path, edges, roots, changes, peek=True)
    res = run_script(cmd, ["--json", "-w", str(w)], path, dirname)
    check_ok(res, f"verify {cmd.label} -w {w}")
    peeks = [r for r in map(json.loads, res.stdout.splitlines()) if r.get("kind") == "peek"]
    live = set(edges)
    expected = [recompute(live, roots)]
    for removed, added in changes:
        live.difference_update(removed)
        live.update(added)
    if changes:
        expected.append(recompute(live, roots))
    if len(peeks) != len(expected):
        raise SystemExit(f"verify: expected {len(expected)} peeks, got {len(peeks)}")
    for when, peek, want in zip(("after load", "after the rounds"), peeks, expected):
        got = {k[0] for k, v, d in peek["rows"]}
        if got != want or any(d != 1 for k, v, d in peek["rows"]):
            raise SystemExit(f"verify: reach {when} differs from BFS "
                             f"({len(got)} vs {len(want)} nodes)")
    return len(expected[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_args(ap)
    add_ddir_args(ap)
    ap.add_argument("--no-verify", action="store_true", help="skip the BFS-checked run")
    args = ap.parse_args()
    edges, roots, changes = workload(args)
    n_changes = sum(len(r) + len(a) for r, a in changes)

    rows = []
    with tempfile.TemporaryDirectory(prefix="ddir-reach-") as tmp:
        with open(os.path.join(tmp, "reach.ddp"), "w") as f:
            f.write(REACH)
        load_path = os.path.join(tmp, "load.txt")
        rounds_path = os.path.join(tmp, "rounds.txt")
        write_script(load_path, edges, roots, [])
        write_script(rounds_path, edges, roots, changes)
        print(f"graph: {args.nodes} nodes, {len(edges)} edges, {len(roots)} roots; "
              f"{len(changes)} rounds, {n_changes} changes", file=sys.stderr)
        for cmd in ddir_cmds(args):
            for w in worker_counts(args):
                reached = "-"
                if not args.no_verify:
                    reached = verify(cmd, w, tmp, edges, roots, changes)
                    print(f"  {cmd.label} -w {w}: verified against BFS, reached {reached}",
                          file=sys.stderr)
                result = {}
                for what, path in (("load", load_path), ("rounds", rounds_path)):
                    walls, rss, tree, cpus = [], [], [], []
                    for i in range(args.runs):
                        res = run_script(cmd, ["--json", "-w", str(w)], path, tmp,
                                         sample_tree=w > 1)
                        check_ok(res, f"{what} {cmd.label} -w {w}")
                        walls.append(res.wall)
                        rss.append(res.maxrss_mb)
                        tree.append(res.tree_hwm_mb)
                        cpus.append(res.cpu)
                        print(f"  {cmd.label} -w {w} {what} run {i + 1}: {res.wall:.2f} s, "
                              f"cpu {res.cpu:.2f} s, "
                              f"peak RSS {res.maxrss_mb:.0f} MB", file=sys.stderr)
                    result[what] = (median(walls), min(walls), max(walls), max(rss), max(tree),
                                    median(cpus))
                load, rounds = result["load"], result["rounds"]
                per_round = (rounds[0] - load[0]) / max(1, len(changes))
                mem = f"{rounds[3]:.0f}" + (f" ({rounds[4]:.0f} all)" if w > 1 else "")
                rows.append([cmd.label, w, reached,
                             f"{load[0]:.2f}", f"{load[1]:.2f}-{load[2]:.2f}", f"{load[5]:.2f}",
                             f"{rounds[0]:.2f}", f"{rounds[1]:.2f}-{rounds[2]:.2f}",
                             f"{rounds[5]:.2f}",
                             f"{per_round * 1000:.0f}", mem])
    print(f"reach through ddir, fed as `feed` lines: {args.nodes} nodes, {len(edges)} edges, "
          f"{len(roots)} roots, {len(changes)} rounds; median of {args.runs} runs")
    print_table(["ddir", "-w", "reached", "load s", "range s", "cpu s",
                 f"load+{len(changes)} rounds s", "range s", "cpu s", "ms/round (derived)", "peak RSS MB"], rows)


if __name__ == "__main__":
    main()
