"""Helpers for whole-process benchmarks through the ``ddir`` CLI: which
command to run (this checkout, another checkout, or any command line), one
timed run of a session script with the peak memory of the process tree, and
a small table printer.

Used by ``bench/tc.py`` and ``bench/reach_load.py``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@dataclass
class DdirCmd:
    """One way of starting the server: ``argv`` plus extra environment."""

    label: str
    argv: list
    env: dict = field(default_factory=dict)


def add_ddir_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("-w", "--workers", default="1",
                    help="worker count passed as -w N; a comma list (1,3) runs each")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per row (median reported)")
    ap.add_argument("--ddir-cmd", action="append", default=[], metavar="CMD",
                    help="command line that starts ddir (shell-split), e.g. "
                         "'/other/.venv/bin/ddir'; repeatable, one row each")
    ap.add_argument("--checkout", action="append", default=[], metavar="DIR",
                    help="run `python -m ddir` with PYTHONPATH=DIR (another checkout's "
                         "source, this venv's dependencies); repeatable, one row each")


def ddir_cmds(args) -> list:
    """The commands to compare; this checkout's ``python -m ddir`` if none given."""
    cmds = []
    for text in args.ddir_cmd:
        argv = shlex.split(text)
        if argv and os.sep in argv[0] and os.path.exists(argv[0]):
            argv[0] = os.path.abspath(argv[0])  # scripts run in a temp directory
        cmds.append(DdirCmd(text, argv))
    for path in args.checkout:
        path = os.path.abspath(path)
        cmds.append(DdirCmd(f"checkout {path}", [sys.executable, "-m", "ddir"],
                            {"PYTHONPATH": path}))
    if not cmds:
        # PYTHONPATH=ROOT pins this checkout even if the venv points elsewhere.
        cmds.append(DdirCmd("this checkout", [sys.executable, "-m", "ddir"], {"PYTHONPATH": ROOT}))
    return cmds


def worker_counts(args) -> list:
    return [int(w) for w in str(args.workers).split(",") if w.strip()]


@dataclass
class RunResult:
    wall: float           # seconds from start to exit
    rc: int
    stdout: str
    stderr: str
    maxrss_mb: float      # largest single process of ddir's tree (ru_maxrss via a small parent)
    tree_hwm_mb: float    # sum over the tree's processes of their peak RSS (sampled)
    cpu: float            # user + system seconds of ddir and its reaped children


def _children_map() -> dict:
    """ppid -> [pid] for every process in /proc."""
    kids: dict = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def _hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class _TreeSampler(threading.Thread):
    """Polls the process tree under ``pid`` and keeps each process's VmHWM."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.hwm: dict = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            kids = _children_map()
            todo, seen = [self.pid], set()
            while todo:
                p = todo.pop()
                if p in seen:
                    continue
                seen.add(p)
                kb = _hwm_kb(p)
                if kb:
                    self.hwm[p] = max(self.hwm.get(p, 0), kb)
                todo.extend(kids.get(p, ()))
            self.stop.wait(self.interval)


# Peak RSS must come from a parent that is small: a child forked from this
# benchmark process keeps the benchmark's RSS high-water mark across exec, so
# wait4 on it would report the benchmark's memory (the baseline's closure set,
# say). GNU time, or failing that a tiny Python wrapper, forks ddir and
# reports ddir's ru_maxrss (the largest process of its tree once reaped) and
# its CPU time (user + system, workers included), steadier than wall time on
# a busy machine.
_WRAPPER = (
    "import os,sys\n"
    "pid=os.fork()\n"
    "if pid==0:\n"
    "  os.execvp(sys.argv[2],sys.argv[2:])\n"
    "_,st,ru=os.wait4(pid,0)\n"
    "open(sys.argv[1],'w').write('%d %f %f'%(ru.ru_maxrss,ru.ru_utime,ru.ru_stime))\n"
    "sys.exit(os.waitstatus_to_exitcode(st))\n"
)


def _gnu_time() -> str | None:
    path = "/usr/bin/time"
    if not os.access(path, os.X_OK):
        return None
    try:
        probe = subprocess.run([path, "-f", "%M", "true"], capture_output=True, text=True)
    except OSError:
        return None
    return path if probe.returncode == 0 and probe.stderr.strip().isdigit() else None


_TIME = _gnu_time()


def _measured(argv: list, rss_path: str) -> list:
    if _TIME:
        return [_TIME, "-f", "%M %U %S", "-o", rss_path] + argv
    return [sys.executable, "-S", "-c", _WRAPPER, rss_path] + argv


def run_script(cmd: DdirCmd, flags: list, script_path: str, cwd: str,
               sample_tree: bool = False) -> RunResult:
    """Run ``cmd flags script_path`` in ``cwd``; time it from spawn to exit."""
    env = dict(os.environ)
    # An installed package runs from compiled bytecode (pip compiles it at
    # install time); with this variable set, as in some sandboxes, every run
    # would compile every module again and measure that instead.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(cmd.env)
    out_path = os.path.join(cwd, "stdout.txt")
    err_path = os.path.join(cwd, "stderr.txt")
    rss_path = os.path.join(cwd, "maxrss.txt")
    argv = _measured(cmd.argv + flags + [script_path], rss_path)
    with open(out_path, "w") as out, open(err_path, "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        sampler = None
        if sample_tree:
            sampler = _TreeSampler(proc.pid)
            sampler.start()
        rc = proc.wait()
        wall = time.perf_counter() - t0
        if sampler:
            sampler.stop.set()
            sampler.join()
    with open(out_path) as f:
        stdout = f.read()
    with open(err_path) as f:
        stderr = f.read()
    with open(rss_path) as f:
        # GNU time may put a status line first; the numbers are the last line
        kb, user, system = [ln for ln in f.read().splitlines() if ln.strip()][-1].split()
    maxrss, cpu = int(kb) / 1024, float(user) + float(system)
    hwm = {p: kb for p, kb in sampler.hwm.items() if p != proc.pid} if sampler else {}
    tree = sum(hwm.values()) / 1024 if hwm else maxrss
    return RunResult(wall, rc, stdout, stderr, maxrss, tree, cpu)


def check_ok(res: RunResult, what: str) -> None:
    bad = [line for line in res.stdout.splitlines() if '"kind": "error"' in line
           or line.startswith("error:")]
    if res.rc != 0 or bad or res.stderr.strip():
        raise SystemExit(f"{what}: ddir failed (rc {res.rc})\n"
                         f"stdout errors: {bad[:5]}\nstderr: {res.stderr[-2000:]}")


def median(xs) -> float:
    return statistics.median(xs)


def print_table(headers: list, rows: list) -> None:
    """A Markdown table, columns right-aligned except the first."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i])
                             for i, h in enumerate(headers)) + " |"
    print(line)
    print("|" + "|".join(("-" * (w + 1) + ("-" if i == 0 else ":"))
                         for i, w in enumerate(widths)) + "|")
    for r in cells:
        print("| " + " | ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                                for i, c in enumerate(r)) + " |")
