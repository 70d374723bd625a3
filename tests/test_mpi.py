"""Workers as MPI ranks (SPEC C7): ``mpiexec -n N ddir --mpi`` prints what
``-w 1`` prints, the engine matches the oracle through a 3-rank job, and a
lost rank, a script error and the end of input end every rank. A rank killed
by a signal is one `error:` line naming it, every time, though mpiexec kills
rank 0 at once (rank 0's reporter prints it).

These need the ``mpi`` extra (mpi4py and the ``mpich`` wheel, which brings
``mpiexec``); CI installs it. Without it they fail, saying so: they do not
skip, or a CI that lost the extra would pass without testing MPI.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, UPSTREAM
from test_sessions import ddir
from test_workers import OWN_SESSIONS, UPSTREAM_SESSIONS, _alive, _children

MPIEXEC = (shutil.which("mpiexec", path=str(Path(sys.executable).parent))
           or shutil.which("mpiexec"))
DRIVER = ROOT / "tests/mpi_driver.py"
# The launcher's own clean-up off: what ddir itself does when a rank is lost
# (with it on, MPICH's mpiexec kills every rank first, and says so itself).
NO_CLEANUP = ("-disable-auto-cleanup",)


def launcher() -> str:
    if MPIEXEC is None:
        pytest.fail("mpiexec not found: these tests need the mpi extra "
                    "(pip install -e '.[test,mpi]')")
    return MPIEXEC


def mpi_command(n: int, *args, options=(), program=("-m", "ddir", "--mpi")) -> list:
    return [launcher(), *options, "-n", str(n), sys.executable, *program, *args]


def mpiexec(n: int, *args, cwd=ROOT, stdin=None, options=(), timeout=120):
    # stdin: mpiexec forwards it to rank 0, and CI may run with none at all
    return subprocess.run(mpi_command(n, *args, options=options), cwd=cwd, input=stdin,
                          stdin=subprocess.DEVNULL if stdin is None else None,
                          capture_output=True, text=True, timeout=timeout)


def driver(n: int, *args, timeout=300) -> str:
    r = subprocess.run(mpi_command(n, *args, program=(str(DRIVER),)), cwd=ROOT,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.startswith("ok "), r.stdout
    return r.stdout


# ---------------------------------------------------------------- identical output

@pytest.mark.parametrize("n", [1, 2, 3])
def test_every_session_through_n_ranks_prints_what_one_worker_prints(n):
    """Ours against their goldens (= -w 1, test_sessions), upstream against
    one worker, text and JSON: one job runs them all (tests/mpi_driver.py)."""
    assert driver(n, "scripts", "0").startswith("ok 30 scripts")


CLI_SESSIONS = [(ROOT, f"sessions/{name}.txt") for name in OWN_SESSIONS] + \
    [(UPSTREAM, f"examples/server/sessions/{name}.txt") for name in UPSTREAM_SESSIONS]
QUICK = {"sessions/subscribe.txt", "examples/server/sessions/values.txt"}


def check_cli_session(folder, script) -> None:
    """`mpiexec -n N ddir --mpi SCRIPT` prints what `ddir SCRIPT` does."""
    one, one_json = ddir(script, cwd=folder), ddir("--json", script, cwd=folder)
    assert one.returncode == 0
    for n in (1, 2, 3):
        r = mpiexec(n, script, cwd=folder)
        assert (r.returncode, r.stderr) == (0, ""), n
        assert r.stdout == one.stdout, f"-n {n}"
    assert mpiexec(3, "--json", script, cwd=folder).stdout == one_json.stdout


@pytest.mark.parametrize("folder,script", [c for c in CLI_SESSIONS if c[1] in QUICK])
def test_session_through_the_cli_prints_what_one_worker_prints(folder, script):
    check_cli_session(folder, script)


@pytest.mark.slow
@pytest.mark.parametrize("folder,script", [c for c in CLI_SESSIONS if c[1] not in QUICK])
def test_every_session_through_the_cli_prints_what_one_worker_prints(folder, script):
    check_cli_session(folder, script)


def test_the_exchange_carries_payloads_of_every_size():
    """Around the slot size: whole in the first round, or split over two."""
    for n in (1, 3):
        driver(n, "exchange", "30")


def test_random_sessions_print_the_same_through_3_ranks_as_one_worker():
    driver(3, "sessions", "25")


# ---------------------------------------------------------------- the oracle

def test_programs_match_the_oracle_through_3_ranks():
    from oracle_cases import PROGRAMS, UPSTREAM_ARITIES
    assert driver(3, "oracle", "8").startswith(
        f"ok {len(PROGRAMS) + len(UPSTREAM_ARITIES)} programs")  # every case, through MPI


@pytest.mark.slow
def test_programs_match_the_oracle_through_3_ranks_long():
    driver(3, "oracle", "100", timeout=3000)
    driver(3, "sessions", "400", timeout=3000)


@pytest.mark.slow
@pytest.mark.parametrize("name", OWN_SESSIONS)
def test_own_session_through_4_and_5_ranks(name):
    golden = (ROOT / "tests/golden" / f"{name}.out").read_text()
    for n in (4, 5):
        assert mpiexec(n, f"sessions/{name}.txt").stdout == golden, n


# ---------------------------------------------------------------- failure

def _ranks(launcher_pid: int, n: int) -> dict:
    """rank -> pid of a running job's ranks (mpiexec -> proxy -> ranks)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ranks = {}
        for proxy in _children(launcher_pid):
            for pid in _children(proxy):
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
    raise AssertionError(f"{n} ranks did not start")


def _start(n: int, args: list, cwd=ROOT, options=()):
    p = subprocess.Popen(mpi_command(n, *args, options=options), cwd=cwd, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return p, _ranks(p.pid, n)


def _read_until(p, text: str) -> str:
    seen = ""
    while text not in seen:
        line = p.stdout.readline()
        assert line, seen
        seen += line
    return seen


def _reporter(ranks: dict) -> int:
    """The pid of rank 0's reporter (ddir/server/reporter.py), once started."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for pid in _children(ranks[0]):
            try:
                if b"reporter.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
            except OSError:
                pass
        time.sleep(0.02)
    raise AssertionError("rank 0 started no reporter")


def _job(ranks: dict) -> list:
    """Every process of a running job that must end with it: the ranks and
    rank 0's reporter (in a session of its own, out of mpiexec's reach)."""
    return [*ranks.values(), _reporter(ranks)]


def _ends_everything(p, pids, within: float = 5.0) -> tuple:
    start = time.monotonic()
    p.wait(timeout=within)
    assert time.monotonic() - start < within
    out, err = p.stdout.read(), p.stderr.read()
    time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids)
    return out, err


def _errors(out: str) -> list:
    return [line for line in out.splitlines() if line.startswith("error:")]


def lost(rank: int) -> str:
    return f"error: worker {rank} died (MPI rank {rank} is gone); the server stops"


CUT = """\
import os, socket, threading
cut = []


def cut_lifeline(x):
    \"\"\"On rank 2, the first call cuts its lifeline, in the middle of the
    tick: rank 2 lives on, as if only the network between it and rank 0
    failed. The launcher sees no rank end, so what follows is ddir's doing.\"\"\"
    if os.environ.get("PMI_RANK") == "2" and not cut:
        for thread in threading.enumerate():
            if thread.name == "ddir-lifeline":  # its target is the Line's watch
                line = thread._target.__self__
                line.closing = True
                line.sock.shutdown(socket.SHUT_RDWR)
                cut.append(line)
    return x
"""


def test_a_lost_rank_is_one_error_and_every_rank_exits(tmp_path):
    """Rank 0 waits on the others in a collective when rank 2 is lost: it
    prints one error line, and every rank ends within seconds."""
    (tmp_path / "cut.py").write_text(CUT)
    (tmp_path / "p.ddp").write_text(
        'let edges = import "random:nodes=3000,edges=9000" | key($0[0] ; $0[1]);\n'
        'let roots = import "iota:20" | key(@cut_lifeline($0[0]) ;);\n'
        'r: { var reach = roots + (reach | join(edges, ($2 ;))) | distinct; }\n'
        'export "reach" = r::reach;\n')
    (tmp_path / "s.txt").write_text("install r p.ddp\ntick\nlist\n")
    p, ranks = _start(3, ["--functions", "cut.py", "s.txt"], cwd=tmp_path)
    try:
        out, err = _ends_everything(p, ranks.values())
    finally:
        p.kill()
    assert p.returncode != 0, err  # 3 from rank 0, or the launcher's 9 for the ranks it ends
    assert _errors(out) == [lost(2)], (out, err)
    assert "tick -> epoch 1" not in out and "Traceback" not in err  # lost in the middle


def kill_a_rank(rank: int, options=(), args=(), close_input=False) -> tuple:
    """One trial: a 3-rank job ticks once, then rank ``rank`` is SIGKILLed
    (and, with ``close_input``, input ends at the same moment). Every rank
    and the reporter must end within seconds. (stdout, stderr, status)."""
    p, ranks = _start(3, list(args), options=options)
    try:
        p.stdin.write("install p programs/producer.ddp\nfeed p 0 (1,2)\ntick\n")
        p.stdin.flush()
        before = _read_until(p, "tick")
        job = _job(ranks)
        os.kill(ranks[rank], signal.SIGKILL)
        if close_input:
            p.stdin.close()
        # Otherwise stdin stays open: nobody waits for it. Without
        # auto-clean-up, a lost rank keeps Finalize waiting for 10 s.
        out, err = _ends_everything(p, job, within=15.0 if close_input and options else 5.0)
    finally:
        p.kill()
    return before + out, err, p.returncode


@pytest.mark.parametrize("options", [(), NO_CLEANUP])
def test_a_killed_rank_is_one_error_line_and_every_rank_exits(options):
    """SIGKILL: MPICH's mpiexec kills every other rank at once, rank 0 too,
    even when told not to clean up, and so raced ddir's line (lost in about
    1 trial in 5). Rank 0's reporter, out of its reach, prints it: one
    line, naming the rank, every time; nothing is left running."""
    for rank in (1, 2, 1):
        out, err, code = kill_a_rank(rank, options)
        assert code != 0
        assert _errors(out) == [lost(rank)], (rank, out, err)
        assert "Traceback" not in err


def test_a_killed_rank_in_json_is_one_error_record():
    out, err, code = kill_a_rank(2, args=["--json"])
    assert code != 0
    errors = [json.loads(line) for line in out.splitlines() if '"kind": "error"' in line]
    assert errors == [{"kind": "error", "message": lost(2)[len("error: "):]}], out


def test_a_rank_killed_as_input_ends_is_still_reported():
    """The end of input and the loss race: rank 0 is finalizing when the
    launcher kills it. The job did not end in order, so the line is said."""
    for rank in (1, 2):
        out, err, code = kill_a_rank(rank, close_input=True)
        assert code != 0
        assert _errors(out) == [lost(rank)], (rank, out, err)


@pytest.mark.parametrize("options", [(), NO_CLEANUP])
def test_killed_rank_0_takes_the_workers_with_it(options):
    """Nobody else could say it: the reporter names rank 0."""
    out, err, code = kill_a_rank(0, options)
    assert code != 0
    assert _errors(out) == [lost(0)], (out, err)


@pytest.mark.slow
def test_a_killed_rank_is_reported_every_time():
    """30 trials, rotating the killed rank (1, 2, 0) and the clean-up option:
    every one shows the line."""
    failed = []
    for trial in range(30):
        rank = (1, 2, 0)[trial % 3]
        options = NO_CLEANUP if trial % 2 else ()
        out, err, code = kill_a_rank(rank, options)
        if code == 0 or _errors(out) != [lost(rank)]:
            failed.append((trial, rank, options, code, out, err))
    assert not failed


@pytest.mark.slow
def test_a_rank_killed_as_input_ends_without_clean_up_ends_within_finalize_timeout():
    """The lost rank keeps Finalize waiting on the others: each gives up
    after 10 s (the GIL is released while it waits, so the guard can run)."""
    out, err, code = kill_a_rank(1, NO_CLEANUP, close_input=True)
    assert code != 0
    assert _errors(out) == [lost(1)], (out, err)


def test_a_rank_that_fails_to_start_is_reported_by_rank_0(tmp_path):
    """--functions is imported on every rank; one that cannot (the module
    missing on its host) is reported once, with its reason."""
    (tmp_path / "fns.py").write_text(
        "import os\nif os.environ.get('PMI_RANK') == '2':\n"
        "    raise ImportError('not on this host')\n"
        "def double(x):\n    return 2 * x\n")
    r = mpiexec(3, "--functions", "fns.py", cwd=tmp_path, stdin="list\n", timeout=60)
    assert r.returncode != 0
    errors = [line for line in r.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: worker 2 failed: --functions: ")
    assert "not on this host" in errors[0] and errors[0].endswith("; the server stops")


# ---------------------------------------------------------------- errors and the end

def test_script_errors_behave_as_with_one_worker(tmp_path):
    (tmp_path / "s.txt").write_text(
        f"install p {ROOT}/programs/producer.ddp\nfeed p 0 (1,2)\nbogus\npeek nope\ntick\n"
        "peek edges\nfeed nope 0 (1)\n")
    one = ddir("s.txt", cwd=tmp_path)
    r = mpiexec(3, "s.txt", cwd=tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, one.stdout, "")
    assert r.stdout.count("error:") == 3
    strict = mpiexec(3, "--strict", "s.txt", cwd=tmp_path)
    assert strict.returncode == 1 and strict.stdout == ddir("--strict", "s.txt", cwd=tmp_path).stdout
    missing = mpiexec(2, "no_such_script.txt", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stdout.count("error:") == 1


@pytest.mark.parametrize("stdin", ["list\n", "list\nexit\n", ""])
def test_end_of_input_ends_every_rank(stdin):
    """In order: the reporter leaves too, without a word."""
    p, ranks = _start(3, [])
    job = _job(ranks)
    out, err = p.communicate(stdin, timeout=30)
    assert (p.returncode, err) == (0, "")
    assert out == ("" if not stdin else ddir(stdin=stdin).stdout)
    time.sleep(0.2)
    assert not any(_alive(pid) for pid in job)


def test_without_mpi4py_one_line_says_what_to_install(tmp_path):
    fake = tmp_path / "mpi4py"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named mpi4py')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    alone = subprocess.run([sys.executable, "-m", "ddir", "--mpi"], input="list\n", env=env,
                           capture_output=True, text=True, timeout=60)
    job = subprocess.run(mpi_command(3), input="list\n", env=env, capture_output=True,
                         text=True, timeout=60)
    for r in (alone, job):
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.count("\n") == 1, r.stderr  # said once, by rank 0
        assert r.stderr.startswith("error: --mpi needs mpi4py") and \
            "pip install 'ddir[mpi]'" in r.stderr


def test_mpi_and_workers_exclude_each_other():
    for args in (("-w", "2"), ("serve", "--mpi", "-w", "2")):
        r = subprocess.run([launcher(), "-n", "2", sys.executable, "-m", "ddir", "--mpi", *args]
                           if args[0] != "serve" else
                           [launcher(), "-n", "2", sys.executable, "-m", "ddir", *args],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stderr.startswith("error: --mpi takes its workers from")
        assert r.stderr.count("error:") == 1  # said once, by rank 0


def test_serve_over_mpi():
    p = subprocess.Popen(mpi_command(3, "--port", "0", program=("-m", "ddir", "serve", "--mpi")),
                         cwd=ROOT, text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        ranks = _ranks(p.pid, 3)
        line = p.stderr.readline()
        assert line.startswith("ddir: serving on ws://"), line
        url = line.split()[-1]
        r = ddir("connect", url, "sessions/shared_trace.txt")
        assert r.stdout == (ROOT / "tests/golden/shared_trace.out").read_text(), r.stderr
        p.send_signal(signal.SIGINT)  # mpiexec hands Ctrl-C to every rank; rank 0 stops
        p.wait(timeout=20)
    finally:
        p.kill()
    assert p.returncode == 0
    assert not any(_alive(pid) for pid in ranks.values())


def test_functions_and_restore_through_mpi(tmp_path):
    """--functions is imported on every rank; --restore is read by rank 0
    only: both print what one worker prints."""
    from test_functions import FN_PATH, PROGRAM
    (tmp_path / "f.ddp").write_text(Path(PROGRAM).read_text())
    feeds = "".join(f"feed f 0 ({x})\n" for x in (1, 2, 3, 4)) + "feed f 1 (1,100)\n"
    (tmp_path / "a.txt").write_text(f"install f f.ddp\n{feeds}tick\ncheckpoint snap\n")
    (tmp_path / "b.txt").write_text("feed f 0 (3) diff=-1\ntick\npeek kept\npeek mapped\nlist\n")
    args = ["--functions", str(FN_PATH)]
    one = ddir(*args, "a.txt", cwd=tmp_path)
    assert one.returncode == 0 and "error" not in one.stdout, one.stdout
    r = mpiexec(3, *args, "a.txt", cwd=tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, one.stdout, "")
    one = ddir(*args, "--restore", "snap", "b.txt", cwd=tmp_path)
    r = mpiexec(3, *args, "--restore", "snap", "b.txt", cwd=tmp_path)
    assert one.returncode == 0 and 'peek "kept"' in one.stdout
    assert (r.returncode, r.stdout, r.stderr) == (0, one.stdout, "")
