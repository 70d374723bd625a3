"""One client cannot take the server down (SPEC E3, issue 21 items 6 and 7).

* Memory: a tick that would pass ``--max-memory`` / ``Server(max_memory=)``
  fails its program as a loop that does not converge does, with the same
  message for every number of workers; the other programs carry on, and no
  process's peak resident set grows past its share of the budget.
* Time: ``Server.cancel()`` from another thread, Ctrl-C and SIGTERM stop a
  tick that would otherwise run for a long time; its program fails whole.
"""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import ddir
from test_mpi import mpiexec
from test_workers import _alive, _children

# Item 6: every row has the empty key, so the self-join makes 20k x 20k =
# 400M pairs in one step (about 32 GB on columns, 160 GB as tuples).
BLOWUP = 'let a = input 0 | key(; $0[0]);\nexport "x" = a | join(a, ($1, $2 ;));\n'
ROWS = 20_000
# Item 7: a loop that never converges (each round adds n + 1).
FOREVER = ('let seed = input 0 | key($0[0] ;);\n'
           'l: { var n = seed + (n | map($0[0] + 1 ;)) | distinct; }\n'
           'export "n" = l::n;\n')
# Another program, which must go on working.
OTHER = 'export "y" = input 0 | key($0[0] ;) | distinct;\n'

BUDGET = "256M"
OVER_BUDGET = ("p: the tick needed more than the memory budget (--max-memory 256M) at epoch 0; "
               "it has stopped, and its traces keep their contents from before epoch 0")
CANCELLED = ("p: the tick was cancelled at epoch 0; it has stopped, and its traces keep their "
             "contents from before epoch 0")
# Without a cancel the loop would run this many rounds (several seconds).
ROUNDS = 300_000


def _status(pid, field: str) -> int:
    """A ``/proc/<pid>/status`` field in bytes (VmHWM: the peak resident set)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def _reset_peak(pid) -> None:
    """Start VmHWM afresh at the current resident set (Linux >= 4.0)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def _processes(server) -> list:
    """The pids whose memory the workers use: the worker processes, or this one."""
    cluster = server.core.cluster
    return [p.pid for p in cluster.processes] if hasattr(cluster, "processes") else [os.getpid()]


# ---------------------------------------------------------------- memory


@pytest.mark.parametrize("workers", [1, 2])
def test_a_tick_past_the_memory_budget_fails_its_program_alone(workers):
    with ddir.Server(workers=workers, max_memory=BUDGET) as s:
        s.install("q", source=OTHER)
        s.install("p", source=BLOWUP)
        s.feed_many("p", 0, keys=[(i,) for i in range(ROWS)])
        s.feed("q", 0, (1,))
        pids = _processes(s)
        before = {pid: _status(pid, "VmRSS") for pid in pids}
        for pid in pids:
            _reset_peak(pid)
        started = time.monotonic()
        result = s.tick()
        assert time.monotonic() - started < 5
        # The join never makes its pairs: no process grows by its share of the budget.
        for pid in pids:
            assert _status(pid, "VmHWM") - before[pid] < (256 << 20) // workers, pid
        assert result.errors == (OVER_BUDGET,)
        assert result.epoch == 1
        state = {p["name"]: p for p in s.list()["programs"]}
        assert state["p"]["failed"] == ("the tick needed more than the memory budget "
                                        "(--max-memory 256M) at epoch 0")
        assert "failed" not in state["q"]
        assert s.peek("x") == []  # its contents from before the tick
        assert s.peek("y") == [((1,), (), 1)]  # q's tick happened, whole
        s.feed("q", 0, (2,))
        assert s.tick().errors == ()
        assert s.peek("y") == [((1,), (), 1), ((2,), (), 1)]


# A loop that grows by 10k rows a round and never converges: no single step
# is large, so only the resident set, sampled at every round, can stop it.
GROWING = ('let seed = input 0 | key($0[0] ;);\n'
           'l: { var n = seed + (n | map($0[0] + 100000 ;)) | distinct; }\n'
           'export "n" = l::n;\n')


@pytest.mark.parametrize("workers", [1, 2])
def test_a_loop_that_grows_past_the_budget_fails(workers):
    with ddir.Server(workers=workers, max_memory="64M") as s:
        s.install("q", source=OTHER)
        s.feed_many("q", 0, keys=[(i,) for i in range(1000)])
        s.tick()  # numpy is loaded everywhere: what follows is the loop's alone
        s.install("p", source=GROWING)
        s.feed_many("p", 0, keys=[(i,) for i in range(10_000)])
        pids = _processes(s)
        before = {pid: _status(pid, "VmRSS") for pid in pids}
        for pid in pids:
            _reset_peak(pid)
        result = s.tick()
        message = OVER_BUDGET.replace("256M", "64M").replace("epoch 0", "epoch 1")
        assert result.errors == (message,)
        # sampled at the top of each round (at most every 10 ms): a round of
        # this loop adds ~15 MiB, numpy's merges of its runs more for a moment
        for pid in pids:
            assert _status(pid, "VmHWM") - before[pid] < (64 << 20) // workers + (48 << 20), pid
        assert s.peek("n") == []
        # what the failed program held is let go: the others run within the budget
        s.feed_many("q", 0, keys=[(i,) for i in range(1000, 2000)])
        assert s.tick().errors == ()
        assert len(s.peek("y")) == 2000


def test_the_budget_is_checked_in_the_api():
    with pytest.raises(ddir.CommandError, match="max_memory needs"):
        ddir.Server(max_memory=1000)
    with pytest.raises(ddir.CommandError, match="at least 1M"):
        ddir.Server(max_memory="12x")


def _script(workers: int, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ddir", "-w", str(workers), *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _read_until(p, end: str) -> str:
    lines = []
    while True:
        line = p.stdout.readline()
        assert line, "".join(lines) + p.stderr.read()
        lines.append(line)
        if line.startswith(end):
            return "".join(lines)


@pytest.mark.parametrize("workers", [1, 2])
def test_ddir_max_memory_fails_the_program_with_one_message(workers, tmp_path):
    """A real `ddir` process: the same lines at -w 1 and -w 2, the other
    program answers afterwards, every process's peak resident set stays
    under its share of the budget plus what it held before the tick."""
    (tmp_path / "p.ddp").write_text(BLOWUP)
    (tmp_path / "q.ddp").write_text(OTHER)
    p = _script(workers, "--max-memory", BUDGET)
    try:
        feeds = "".join(f"feed p 0 {i}\n" for i in range(ROWS))
        p.stdin.write(f"install q {tmp_path}/q.ddp\ninstall p {tmp_path}/p.ddp\n{feeds}"
                      "feed q 0 1\nlist\n")
        p.stdin.flush()
        _read_until(p, "  q (")  # the end of the list
        pids = [p.pid] + (_children(p.pid) if workers > 1 else [])
        assert len(pids) == (1 if workers == 1 else 1 + workers)
        before = {pid: _status(pid, "VmRSS") for pid in pids}
        for pid in pids:
            _reset_peak(pid)
        p.stdin.write("tick\nlist\n")
        p.stdin.flush()
        out = _read_until(p, "  q (")
        for pid in pids:
            assert _status(pid, "VmHWM") - before[pid] < (256 << 20) // workers, pid
        p.stdin.write("feed q 0 2\ntick\npeek y\nexit\n")
        p.stdin.flush()
        rest, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert out.startswith(f"error: <stdin>:{ROWS + 5}: {OVER_BUDGET}\ntick -> epoch 1\n"), out
    assert ("  p [failed: the tick needed more than the memory budget (--max-memory 256M) at "
            "epoch 0] (inputs: [0], imports: [], exports: [\"x\"])\n") in out
    assert rest == 'tick -> epoch 2\npeek "y" (2 rows):\n  (1) ; ()  x1\n  (2) ; ()  x1\n', rest


def test_the_budget_over_mpi(tmp_path):
    """MPI ranks get their share of the budget too, and fail the program with
    the message one worker gives (`--max-memory` is given to every rank)."""
    (tmp_path / "p.ddp").write_text(BLOWUP)
    (tmp_path / "q.ddp").write_text(OTHER)
    feeds = "".join(f"feed p 0 {i}\n" for i in range(ROWS))
    (tmp_path / "s.txt").write_text(f"install q q.ddp\ninstall p p.ddp\n{feeds}feed q 0 1\n"
                                    "tick\nlist\nfeed q 0 2\ntick\npeek y\n")
    one = subprocess.run([sys.executable, "-m", "ddir", "--max-memory", BUDGET, "s.txt"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert f"error: s.txt:{ROWS + 4}: {OVER_BUDGET}\n" in one.stdout
    r = mpiexec(2, "--max-memory", BUDGET, "s.txt", cwd=tmp_path, timeout=60)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == one.stdout


# ---------------------------------------------------------------- cancel


@pytest.mark.parametrize("workers", [1, 2])
def test_cancel_from_another_thread_stops_a_tick(workers):
    with ddir.Server(workers=workers, max_rounds=ROUNDS) as s:
        assert s.cancel() is False  # nothing runs
        s.install("q", source=OTHER)
        s.install("p", source=FOREVER)
        s.feed("p", 0, (0,))
        s.feed("q", 0, (1,))
        done = {}

        def tick():
            done["result"] = s.tick()
            done["at"] = time.monotonic()

        thread = threading.Thread(target=tick)
        thread.start()
        time.sleep(0.3)
        asked = time.monotonic()
        assert s.cancel() is True
        thread.join(10)
        assert not thread.is_alive()
        assert done["at"] - asked < 2.0
        assert done["result"].errors == (CANCELLED,)
        assert s.cancel() is False
        state = {p["name"]: p for p in s.list()["programs"]}
        assert state["p"]["failed"] == "the tick was cancelled at epoch 0"
        assert s.peek("n") == []  # never half a tick
        assert s.peek("y") == [((1,), (), 1)]  # q, installed first, had its tick
        s.feed("q", 0, (2,))
        result = s.tick()  # the next tick is not cancelled
        assert result.errors == () and result.epoch == 2
        assert s.peek("y") == [((1,), (), 1), ((2,), (), 1)]


def test_ctrl_c_during_an_api_tick_cancels_it_then_raises():
    with ddir.Server(max_rounds=ROUNDS) as s:
        s.install("p", source=FOREVER)
        s.feed("p", 0, (0,))
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            s.tick()
        assert time.monotonic() - started < 2.3
        timer.join()
        assert s.epoch == 1
        assert s.list()["programs"][0]["failed"] == "the tick was cancelled at epoch 0"


def test_ctrl_c_at_the_prompt_cancels_the_tick(tmp_path, capsys):
    """What the prompt runs for each line (repl.run_prompt -> Session.run_line):
    Ctrl-C during the tick cancels it, says so once, and the prompt goes on."""
    import io
    from ddir.server.session import Session
    (tmp_path / "p.ddp").write_text(FOREVER)
    out = io.StringIO()
    with ddir.Server(max_rounds=ROUNDS) as s:
        session = Session(out=out, client=s, interactive=True)
        assert session.run_line(f"install p {tmp_path}/p.ddp")
        assert session.run_line("feed p 0 0")
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        started = time.monotonic()
        assert session.run_line("tick")  # the prompt goes on
        assert time.monotonic() - started < 2.3
        timer.join()
        assert session.run_line("tick")  # not cancelled: nothing left to run
    assert out.getvalue().splitlines()[1:] == [f"error: {CANCELLED}", "tick -> epoch 1",
                                               "tick -> epoch 2"]
    assert capsys.readouterr().err.count("ddir: cancelling the running command") == 1


def test_sigterm_during_a_long_tick_exits_at_once(tmp_path):
    (tmp_path / "p.ddp").write_text(FOREVER)
    p = _script(2)
    try:
        p.stdin.write(f"install p {tmp_path}/p.ddp\nfeed p 0 0\ntick\n")
        p.stdin.flush()
        assert p.stdout.readline() == 'installed "p"\n'
        workers = _children(p.pid)
        assert len(workers) == 2
        time.sleep(0.5)  # inside the tick
        asked = time.monotonic()
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)
        took = time.monotonic() - asked
    finally:
        p.kill()
        p.communicate()
    assert p.returncode == 128 + signal.SIGTERM
    assert took < 1.5, took
    assert not any(_alive(w) for w in workers)
