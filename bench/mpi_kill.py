"""A killed MPI rank, many times: how often the user sees ddir's `error:` line.

    python bench/mpi_kill.py [TRIALS] [-n RANKS] [--rank R] [--disable-auto-cleanup] [--json]
                             [--close-stdin]

Each trial starts `mpiexec -n RANKS python -m ddir --mpi`, installs a
program, ticks once, SIGKILLs rank R (1 by default) and waits for the job to
end. It counts the trials whose output has exactly one `error:` line naming
rank R, and times how long from the kill until mpiexec returned and until no
rank (nor anything ddir started) was left. One line per trial, then a summary.
Input stays open, as at a prompt; ``--close-stdin`` ends it at the moment of
the kill (the job's end and a lost rank race).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MPIEXEC = (shutil.which("mpiexec", path=str(Path(sys.executable).parent))
           or shutil.which("mpiexec"))


def children(pid: int) -> list:
    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def ranks_of(launcher: int, n: int) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ranks = {}
        for proxy in children(launcher):
            for pid in children(proxy):
                try:
                    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                for item in env:
                    if item.startswith(b"PMI_RANK="):
                        ranks[int(item[9:])] = pid
        if len(ranks) == n:
            return ranks
        time.sleep(0.05)
    raise SystemExit(f"{n} ranks did not start")


def descendants(pids) -> set:
    """Every process below ``pids`` (by parent), and any in their sessions."""
    out = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        for child in children(pid):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def by_session(sids: set) -> set:
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().split(") ", 1)[1].split()
        except OSError:
            continue
        # fields: state ppid pgrp session ...
        if int(fields[3]) in sids and fields[0] != "Z":
            found.add(int(entry))
    return found


def trial(n: int, rank: int, options: list, json_mode: bool, close: bool) -> tuple:
    command = [MPIEXEC, *options, "-n", str(n), sys.executable, "-m", "ddir", "--mpi"]
    if json_mode:
        command.append("--json")
    p = subprocess.Popen(command, cwd=ROOT, text=True, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ranks = ranks_of(p.pid, n)
        p.stdin.write("install p programs/producer.ddp\nfeed p 0 (1,2)\ntick\n")
        p.stdin.flush()
        seen = ""
        while "tick" not in seen:
            line = p.stdout.readline()
            if not line:
                raise SystemExit(f"no tick: {seen!r} {p.stderr.read()!r}")
            seen += line
        # Everything that could outlive the job: the ranks, what they
        # started (in their sessions, whatever their parent now is).
        sessions = set()
        for pid in ranks.values():
            with open(f"/proc/{pid}/stat") as f:
                sessions.add(int(f.read().split(") ", 1)[1].split()[3]))
        watch = set(ranks.values()) | descendants(ranks.values())
        start = time.monotonic()
        os.kill(ranks[rank], signal.SIGKILL)
        if close:
            p.stdin.close()
        try:  # stdin stays open, as at a prompt: the job must end without it
            p.wait(timeout=30)
            out, err = p.stdout.read(), p.stderr.read()
        except subprocess.TimeoutExpired:  # a hang: show where everyone is
            tree = subprocess.run(["ps", "-o", "pid,ppid,pgid,sid,stat,cmd", "-g",
                                   ",".join(map(str, sessions))], capture_output=True, text=True)
            p.kill()
            p.wait()
            out, err = p.stdout.read(), p.stderr.read()
            err += "\nHUNG; processes:\n" + tree.stdout
        exited = time.monotonic() - start
        left = watch | by_session(sessions)
        while any(alive(pid) for pid in left) and time.monotonic() - start < 30:
            time.sleep(0.01)
        gone = time.monotonic() - start
        lingering = sorted(pid for pid in left if alive(pid))
    finally:
        p.kill()
        if not p.stdin.closed:
            p.stdin.close()
    text = seen + out
    if json_mode:
        errors = [line for line in text.splitlines() if '"kind": "error"' in line]
        expected = f"worker {rank} died ("
    else:
        errors = [line for line in (text + err).splitlines() if line.startswith("error:")]
        expected = f"error: worker {rank} died ("
    good = len(errors) == 1 and expected in errors[0]
    return good, p.returncode, exited, gone, lingering, errors, err


def main(argv: list) -> int:
    trials, n, rank, options, json_mode, close = 30, 3, 1, [], False, False
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "-n":
            n = int(args.pop(0))
        elif a == "--rank":
            rank = int(args.pop(0))
        elif a == "--disable-auto-cleanup":
            options.append("-disable-auto-cleanup")
        elif a == "--json":
            json_mode = True
        elif a == "--close-stdin":
            close = True
        else:
            trials = int(a)
    good, worst_exit, worst_gone, bad_status, lingered = 0, 0.0, 0.0, 0, 0
    for i in range(trials):
        ok, code, exited, gone, lingering, errors, err = trial(n, rank, options, json_mode, close)
        good += ok
        bad_status += code == 0
        lingered += bool(lingering)
        worst_exit, worst_gone = max(worst_exit, exited), max(worst_gone, gone)
        print(f"{i + 1:3} {'line' if ok else 'NO LINE'} status={code} exit={exited:.2f}s "
              f"all-gone={gone:.2f}s{' LINGERING ' + str(lingering) if lingering else ''}"
              f"{'' if ok else ' errors=' + repr(errors) + ' stderr=' + repr(err[-300:])}",
              flush=True)
    print(f"{good}/{trials} trials showed the one error line; {bad_status} exited 0; "
          f"{lingered} left a process; worst: mpiexec returned {worst_exit:.2f} s, "
          f"all gone {worst_gone:.2f} s after the kill")
    return 0 if good == trials and not bad_status and not lingered else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
