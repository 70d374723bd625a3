"""N worker processes: the same results for every -w N, the engine against
the oracle through a multi-process server, and clean failure when a worker
dies."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import ROOT, UPSTREAM
from ddir.engine.exchange import shard_of
from ddir.engine.naive import evaluate
from ddir.ir.lower import lower
from ddir.lang.parser import parse_program, parse_program_file
from ddir.server import commands as C
from ddir.server.cluster import ProcessCluster, WorkerDied
from ddir.server.registry import Server
from ddir.values import List, Variant
from oracle_cases import (PROGRAMS, REACH, UPSTREAM_ARITIES, ServerDriver, check_against_oracle,
                          random_stream)

OWN_SESSIONS = sorted(p.stem for p in (ROOT / "sessions").glob("*.txt"))
UPSTREAM_SESSIONS = sorted(p.stem for p in (UPSTREAM / "examples/server/sessions").glob("*.txt"))


def ddir(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "ddir", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


# ---------------------------------------------------------------- identical output

@pytest.mark.parametrize("name", OWN_SESSIONS)
def test_own_session_is_identical_for_every_worker_count(name):
    golden_text = (ROOT / "tests/golden" / f"{name}.out").read_text()
    golden_json = (ROOT / "tests/golden" / f"{name}.jsonl").read_text()
    for workers in (1, 2, 3, 4):
        r = ddir("-w", str(workers), f"sessions/{name}.txt")
        assert r.returncode == 0, r.stderr
        assert r.stdout == golden_text, f"-w {workers}"
    for workers in (1, 3):
        r = ddir("-w", str(workers), "--json", f"sessions/{name}.txt")
        assert r.stdout == golden_json, f"--json -w {workers}"


@pytest.mark.parametrize("name", UPSTREAM_SESSIONS)
def test_upstream_session_is_identical_for_every_worker_count(name):
    script = f"examples/server/sessions/{name}.txt"
    outputs = {w: ddir("-w", str(w), script, cwd=UPSTREAM) for w in (1, 2, 3, 4)}
    for w, r in outputs.items():
        assert r.returncode == 0 and r.stderr == "", (w, r.stderr)
        assert r.stdout == outputs[1].stdout, f"-w {w}"
    assert ddir("-w", "4", "--json", script, cwd=UPSTREAM).stdout == \
        ddir("--json", script, cwd=UPSTREAM).stdout


def test_term_errors_and_inspect_events_merge_identically(tmp_path):
    """Errors on several workers are counted once each and reported once;
    inspect events from every shard come out in one order."""
    (tmp_path / "p.ddp").write_text(
        'let xs = input 0 | map($0[0] ; $0[2]);\n'
        'export "q" = xs | inspect(q) | key($1 ;) | count;\n')
    rows = [f"({i},{i % 3})" if i % 3 else f"({i},0,{i % 4})" for i in range(30)]
    lines = ["install p p.ddp"] + [f"feed p 0 {r}" for r in rows] + \
        ["tick", "peek q", "feed p 0 (3,0,3) diff=-1", "feed p 0 (1,1) diff=-1", "tick", "peek q"]
    (tmp_path / "s.txt").write_text("\n".join(lines) + "\n")
    outs = {w: ddir("-w", str(w), "s.txt", cwd=tmp_path) for w in (1, 2, 4)}
    assert "error: s.txt:32: p: map at p.ddp:1:20: index 2 out of range for Tuple (1, 1)" in outs[1].stdout
    assert "(20 rows dropped)" in outs[1].stdout and "(1 rows dropped)" in outs[1].stdout
    assert outs[1].stdout.count("error:") == 2 and outs[1].stdout.count("[q]") == 11
    for w in (2, 4):
        assert outs[w].stdout == outs[1].stdout, w


# ---------------------------------------------------------------- the oracle, through workers

@pytest.fixture(scope="module")
def server3():
    cluster = ProcessCluster(3)
    server = Server(max_rounds=10_000, cluster=cluster)
    yield server
    cluster.close()


def check_through_server(server, program, inputs: dict, seed: int, epochs: int = 7) -> None:
    """Install ``program`` on ``server``, drive the oracle stream, drop it."""
    driver = ServerDriver(server, program)
    try:
        check_against_oracle(program, inputs, seed, epochs, driver=driver)
    finally:
        driver.close()


@pytest.mark.parametrize("name", sorted(PROGRAMS))
@settings(max_examples=25, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 32))
def test_program_matches_oracle_with_3_workers(server3, name, seed):
    src, inputs = PROGRAMS[name]
    check_through_server(server3, lower(parse_program(src, f"{name}.ddp")), inputs, seed)


@pytest.mark.parametrize("name", sorted(UPSTREAM_ARITIES))
@settings(max_examples=15, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 32))
def test_upstream_program_matches_oracle_with_3_workers(server3, name, seed):
    program = lower(parse_program_file(str(UPSTREAM / "examples/programs" / name)))
    check_through_server(server3, program, UPSTREAM_ARITIES[name], seed)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 3, 4, 6])
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_program_matches_oracle_with_workers_long(name, workers):
    src, inputs = PROGRAMS[name]
    program = lower(parse_program(src, f"{name}.ddp"))
    cluster = ProcessCluster(workers)
    server = Server(max_rounds=10_000, cluster=cluster)
    try:
        for seed in range(300):
            check_through_server(server, program, inputs, seed, epochs=10)
    finally:
        cluster.close()


def test_late_importer_catches_up_across_workers(server3):
    producer = lower(parse_program('export "edges" = input 0 | key($0[0] ; $0[1]);', "p.ddp"))
    consumer = lower(parse_program(REACH.replace("input 0 | key($0[0] ; $0[1])", 'import "edges"'),
                                   "c.ddp"))
    for seed in range(8):
        prod = ServerDriver(server3, producer, "prod")
        cons = None
        for epoch, batch in random_stream(seed, {0: 2}, 6):
            for t, n, key, d in batch:
                prod.stage(n, t, key, d)
            if epoch == 3:  # installed late: it must see the whole history
                cons = ServerDriver(server3, consumer, "cons")
                for root in ((0,), (1,)):
                    cons.stage(1, 0, root, 1)  # its own epoch 0 is the server's current one
            prod.tick(epoch)
            if cons is not None:
                want = evaluate(consumer, {1: {((0,), ()): 1, ((1,), ()): 1}},
                                {"edges": prod.export("edges")})
                assert cons.export("reach") == want["reach"], (seed, epoch)
        cons.close()
        prod.close()


# ---------------------------------------------------------------- sharding

def test_shard_of_is_stable_and_spreads_keys():
    # Fixed expectations: the owner of a key must not change between runs or versions.
    assert [shard_of((i,), 4) for i in range(8)] == [shard_of((i,), 4) for i in range(8)]
    assert shard_of(7, 1) == 0
    owners = [shard_of((i, i + 1), 4) for i in range(4000)]
    assert all(800 < owners.count(w) < 1200 for w in range(4))
    # Values that print differently are different keys, with their own owner.
    keys = [(1,), List([1]), Variant("A", 1), "1", 1]
    assert len({shard_of(k, 1 << 30) for k in keys}) == len(keys)


def test_shard_of_is_the_same_in_another_process():
    keys = [(1, 2), "x", List([(1,), Variant("B", ())]), -5, (2 ** 63 - 1,)]
    here = [shard_of(k, 7) for k in keys]
    code = ("from ddir.engine.exchange import shard_of; from ddir.values import List, Variant; "
            f"print([shard_of(k, 7) for k in {keys!r}])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONHASHSEED": "123"})
    assert r.stdout.strip() == str(here), r.stderr


def test_feed_rows_go_only_to_the_owner_of_the_key():
    cluster = ProcessCluster(3)
    server = Server(cluster=cluster)
    try:
        program = lower(parse_program('export "e" = input 0;', "e.ddp"))
        server.execute(C.Install("e", "e.ddp", program))
        keys = [(i,) for i in range(30)]
        for k in keys:
            server.execute(C.Feed("e", 0, k, (), None, 1))
        pending = [r["pending"] for r in cluster.broadcast(("stats",))]
        assert pending == [sum(1 for k in keys if shard_of(k, 3) == w) for w in range(3)]
        server.execute(C.Tick())
        stored = [r["stored"] for r in cluster.broadcast(("stats",))]
        assert stored == pending and sum(stored) == 30
    finally:
        cluster.close()


# ---------------------------------------------------------------- failure

def _start_server(args: list, workers: int, **popen):
    """Start ``ddir`` with ``args``; return it and its worker pids once all
    ``workers`` have been forked."""
    p = subprocess.Popen([sys.executable, "-m", "ddir", *args], stdout=subprocess.PIPE,
                         text=True, **popen)
    deadline = time.monotonic() + 20
    while len(_children(p.pid)) < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    return p, _children(p.pid)


def _children(pid: int) -> list:
    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("json_mode", [False, True])
def test_killed_worker_is_reported_and_the_server_exits(json_mode):
    args = ["-w", "3"] + (["--json"] if json_mode else [])
    p, workers = _start_server(args, 3, cwd=ROOT, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.stdin.write("install p programs/producer.ddp\nfeed p 0 (1,2)\ntick\n")
        p.stdin.flush()
        assert len(workers) == 3
        time.sleep(0.3)
        os.kill(workers[1], signal.SIGKILL)
        start = time.monotonic()
        rc = p.wait(timeout=5)  # stdin stays open: the server notices by itself
        assert time.monotonic() - start < 5
        out = p.stdout.read()
    finally:
        p.kill()
    assert rc != 0
    last = out.splitlines()[-1]
    if json_mode:
        record = json.loads(last)
        assert record["kind"] == "error" and "killed by SIGKILL" in record["message"]
    else:
        assert last.startswith("error: worker ") and "died (killed by SIGKILL)" in last
    assert 'installed "p"' in out or '"installed"' in out
    time.sleep(0.2)
    assert not any(_alive(w) for w in workers)


def test_worker_killed_during_a_long_tick(tmp_path):
    """A worker that dies mid-tick (while the others wait on it in an
    exchange) ends the tick with a clean error, not a hang."""
    (tmp_path / "s.txt").write_text(
        "install r reach_random.ddp\ntick\n")
    (tmp_path / "reach_random.ddp").write_text(
        # large enough that the (columnar) tick still runs 1 s after the start
        'let edges = import "random:nodes=200000,edges=600000" | key($0[0] ; $0[1]);\n'
        'let roots = import "iota:50" | key($0[0] ;);\n'
        'r: { var reach = roots + (reach | join(edges, ($2 ;))) | distinct; }\n'
        'export "reach" = r::reach;\n')
    p, workers = _start_server(["-w", "2", "s.txt"], 2, cwd=tmp_path, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)  # well inside the install / tick
        os.kill(workers[0], signal.SIGKILL)
        start = time.monotonic()
        rc = p.wait(timeout=5)
        assert time.monotonic() - start < 5
        out = p.stdout.read()
    finally:
        p.kill()
    assert rc != 0 and "error: worker 0 died (killed by SIGKILL)" in out
    assert "tick -> epoch 1" not in out  # it really died in the middle of the tick
    time.sleep(0.2)
    assert not any(_alive(w) for w in workers)


def test_exit_and_end_of_input_leave_no_worker_behind():
    for stdin in ("list\nexit\n", "list\n"):
        p, workers = _start_server(["-w", "4"], 4, cwd=ROOT, stdin=subprocess.PIPE)
        out, _ = p.communicate(stdin, timeout=10)
        assert p.returncode == 0 and out.startswith("epoch: 0")
        assert len(workers) == 4 and not any(_alive(w) for w in workers)


def test_sigterm_stops_the_workers():
    p, workers = _start_server(["-w", "3"], 3, cwd=ROOT, stdin=subprocess.PIPE)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=5)
    p.stdin.close()
    assert p.returncode != 0
    time.sleep(0.2)
    assert len(workers) == 3 and not any(_alive(w) for w in workers)


def test_in_process_cluster_raises_after_a_worker_dies():
    cluster = ProcessCluster(2)
    server = Server(cluster=cluster)
    try:
        os.kill(cluster.processes[1].pid, signal.SIGKILL)
        cluster.processes[1].join(5)
        with pytest.raises(WorkerDied, match="worker 1 died"):
            server.execute(C.Tick())
        assert server.epoch == 0
    finally:
        cluster.close()


def test_ctrl_c_to_the_process_group_cancels_a_tick(tmp_path):
    """Ctrl-C at a terminal reaches the intake and every worker: workers
    ignore it, the intake cancels the running tick (SPEC E3): its program
    fails whole (never half a tick), the script goes on, and it is said
    once on stderr."""
    (tmp_path / "loop.ddp").write_text(  # never converges: only a cancel ends the tick
        'let seed = input 0 | key($0[0] ;);\n'
        'l: { var n = seed + (n | map($0[0] + 1 ;)) | distinct; }\n'
        'export "n" = l::n;\n')
    (tmp_path / "s.txt").write_text("install p loop.ddp\nfeed p 0 1\ntick\nlist\n")
    p, workers = _start_server(["-w", "2", "s.txt"], 2, cwd=tmp_path, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        assert p.stdout.readline() == 'installed "p"\n'
        time.sleep(0.5)  # inside the tick
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert "error: s.txt:3: p: the tick was cancelled at epoch 0; it has stopped" in out
    assert "tick -> epoch 1" in out and "epoch: 1" in out
    assert "[failed: the tick was cancelled at epoch 0]" in out
    assert err.count("ddir: cancelling the running command") == 1  # said once, on stderr
    assert not any(_alive(w) for w in workers)


def test_prompt_drives_a_multi_process_server(tmp_path, monkeypatch):
    import io
    from test_repl import run_keys
    from ddir.server.session import Session
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("DDIR_HISTORY", str(tmp_path / "hist"))
    cluster = ProcessCluster(2)
    try:
        out = io.StringIO()
        s = Session(out=out, interactive=True, server=Server(cluster=cluster))
        run_keys("install prod programs/producer.ddp\rfeed prod 0 (1,2)\rfeed prod 0 (2,3)\r"
                 "tick\rpeek edges\r\x04", s)
        assert 'peek "edges" (2 rows):' in out.getvalue()
    finally:
        cluster.close()
    assert all(p.exitcode is not None for p in cluster.processes)


def test_iteration_bound_is_reported_once_and_install_is_undone_everywhere(tmp_path):
    """A scope that never converges: the tick reports it once (even if only
    some workers held its data), and an install whose catch-up does not
    converge is undone on every worker. Same records for 1 and 3 workers."""
    (tmp_path / "prod.ddp").write_text('export "xs" = input 0;\n')
    (tmp_path / "flip.ddp").write_text(
        'let r = import "xs";\nflip: { var x = r - x; }\nexport "x" = flip::x;\n')
    (tmp_path / "ok.ddp").write_text('export "n" = import "xs" | key(;) | count;\n')

    def session(cluster):
        server = Server(max_rounds=50, cluster=cluster)
        lines = [C.Install("prod", "prod.ddp", load(tmp_path / "prod.ddp")),
                 C.Install("flip", "flip.ddp", load(tmp_path / "flip.ddp")),
                 C.Feed("prod", 0, (1,), (), None, 1), C.Feed("prod", 0, (2,), (), None, 1),
                 C.Tick(), C.Drop("flip"),
                 C.Install("flip2", "flip.ddp", load(tmp_path / "flip.ddp")),
                 C.Install("ok", "ok.ddp", load(tmp_path / "ok.ddp")), C.Tick(),
                 C.Peek("n", None, False, None, 0), C.ListCmd()]
        try:
            return [server.execute(cmd) for cmd in lines]
        finally:
            cluster.close()

    from ddir.server.cluster import LocalCluster
    one, three = session(LocalCluster()), session(ProcessCluster(3))
    assert one == three
    tick = one[4]
    assert [r["message"] for r in tick if r["kind"] == "error"] == \
        ["flip: scope `flip` did not converge within 50 rounds at epoch 0; it has stopped, "
         "and its traces keep their contents from before epoch 0"]
    assert one[6] == [{"kind": "error", "message":
                       'install "flip2": scope `flip` did not converge within 50 rounds'}]
    assert one[9][0]["rows"] == [((), (2,), 1)]
    assert [p["name"] for p in one[10][0]["programs"]] == ["ok", "prod"]


def load(path):
    return lower(parse_program_file(str(path)))


def test_a_worker_that_hits_a_bug_is_reported_with_its_error():
    cluster = ProcessCluster(3)
    try:
        with pytest.raises(WorkerDied, match=r"worker \d failed: AttributeError: .*do_bogus"):
            cluster.broadcast(("bogus",))
        with pytest.raises(WorkerDied):  # and stays dead: no half-working server
            cluster.broadcast(("stats",))
    finally:
        cluster.close()
    assert all(p.exitcode is not None for p in cluster.processes)


def test_closing_one_cluster_is_prompt_while_another_lives():
    """Workers forked for a second cluster must not keep the first one's
    control sockets open (its workers would never see end of stream)."""
    first = ProcessCluster(2)
    second = ProcessCluster(2)
    try:
        start = time.monotonic()
        first.close()
        assert time.monotonic() - start < 1.5
        assert [p.exitcode for p in first.processes] == [0, 0]  # they exited, not killed
        assert second.broadcast(("stats",))[1]["stored"] == 0
    finally:
        second.close()


def test_64_workers_start_under_a_1024_open_file_limit_or_fail_cleanly():
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def low_soft_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    r = subprocess.run([sys.executable, "-m", "ddir", "-w", "64", "sessions/shared_trace.txt"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120,
                       preexec_fn=low_soft_limit)
    if hard == resource.RLIM_INFINITY or hard >= 2 * 64 * 64 + 64:
        assert r.returncode == 0, r.stderr
        assert r.stdout == (ROOT / "tests/golden/shared_trace.out").read_text()
    else:  # the machine cannot give 64 workers their sockets: one clear line, status 2
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.strip() == "error: cannot start 64 worker processes: Too many open files"


def test_workers_do_not_outlive_a_killed_intake():
    p, workers = _start_server(["-w", "3"], 3, cwd=ROOT, stdin=subprocess.PIPE)
    p.kill()  # SIGKILL: no cleanup code runs in the intake
    p.wait()
    deadline = time.monotonic() + 5
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(workers) == 3 and not any(_alive(w) for w in workers)


# ---------------------------------------------------------------- random sessions

RANDOM_SESSION_PROGRAMS = {
    "prod": (ROOT / "programs/producer.ddp").read_text(),
    "reach": (ROOT / "programs/reach_import.ddp").read_text(),
    "errs": 'export "e" = input 0 | map($0[0] ; $0[2]) | inspect(e) | key($1 ;) | count;\n',
    "deg": 'export "deg" = import "random:nodes=12,edges=40,seed=3" | key($0[0] ;) | count'
           ' | key($1 ;) | count | inspect(deg);\n',
    "hist": 'export "hist" = import "edges" | count | key($1 ;) | count | inspect(hist);\n',
    "clk": 'let c = import "clock";\nlet x = input 0 | key($0[0] ; $0[1]);\n'
           'export "at" = c | join(x, ($0 ; $2)) | inspect(at);\n',
}


def random_session(rng) -> list:
    """A command stream with good and bad lines: unknown names, duplicate
    installs, drops refused by importers, feeds into the past, term errors."""
    names = sorted(RANDOM_SESSION_PROGRAMS)
    traces = ["edges", "reachable", "e", "deg", "hist", "at", "clock", "nope", "iota:5"]
    lines, epoch, installed = [], 0, set()
    if rng.random() < 0.8:  # most importers need the producer
        lines.append("install prod {dir}/prod.ddp")
        installed.add("prod")
    for _ in range(rng.randint(5, 40)):
        kind = rng.choice("iiffffffffttdpl")
        if kind == "i":  # usually under its own name, sometimes a clash
            file = rng.choice(names)
            name = file if rng.random() < 0.85 else rng.choice(names)
            lines.append(f"install {name} {{dir}}/{file}.ddp")
            installed.add(name)
        elif kind == "f":
            fed = sorted(installed & {"prod", "errs", "reach", "clk"})
            prog = rng.choice(fed if fed and rng.random() < 0.9 else names)
            shape = rng.choice(["({a},{b})", "({a},{b})", "({a},{b},{c})", "({a})", "[{a},{b}]"])
            row = shape.format(a=rng.randint(0, 5), b=rng.randint(0, 5), c=rng.randint(0, 2))
            extra = rng.choice(["", "", " diff=-1", " diff=2", f" time={epoch + rng.randint(-1, 2)}"])
            lines.append(f"feed {prog} {rng.choice([0, 0, 0, 0, 1])} {row}{extra}")
        elif kind == "t":
            lines.append("tick")
            epoch += 1
        elif kind == "d":
            name = rng.choice(sorted(installed) if installed else names)
            lines.append(f"drop {name}")
            installed.discard(name)
        elif kind == "p":
            key = rng.choice(["", "", " (1)", " (2)", " ()"])
            lines.append(f"peek {rng.choice(traces)}{key}{rng.choice(['', ' limit=2 offset=1'])}")
        else:
            lines.append("list")
    return lines + ["tick", "list"] + [f"peek {t}" for t in traces]


def run_session_lines(lines, cluster, json_mode=False, max_rounds=200) -> str:
    """Run command lines on a fresh server over ``cluster`` (closed after);
    the printed output. (A retracted edge that was never there makes reach
    oscillate: a low iteration bound ends that fast.)"""
    import io
    from ddir.server.session import Session
    out = io.StringIO()
    server = Server(max_rounds=max_rounds, cluster=cluster)
    session = Session(out=out, json_mode=json_mode, server=server)
    try:
        for line in lines:
            session.run_line(line)
    finally:
        cluster.close()
    return out.getvalue()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2 ** 32))
def test_random_sessions_print_the_same_for_1_and_3_workers(tmp_path_factory, seed):
    import random
    from ddir.server.cluster import LocalCluster
    folder = tmp_path_factory.mktemp("progs")
    for name, text in RANDOM_SESSION_PROGRAMS.items():
        (folder / f"{name}.ddp").write_text(text)
    rng = random.Random(seed)
    lines = [line.replace("{dir}", str(folder)) for line in random_session(rng)]
    json_mode = rng.random() < 0.3
    one = run_session_lines(lines, LocalCluster(), json_mode)
    three = run_session_lines(lines, ProcessCluster(3), json_mode)
    assert one == three, seed


@pytest.mark.slow
def test_random_sessions_print_the_same_for_2_and_4_workers_long(tmp_path):
    import random
    from ddir.server.cluster import LocalCluster
    for name, text in RANDOM_SESSION_PROGRAMS.items():
        (tmp_path / f"{name}.ddp").write_text(text)
    for seed in range(400):
        lines = [line.replace("{dir}", str(tmp_path)) for line in random_session(random.Random(seed))]
        one = run_session_lines(lines, LocalCluster(), seed % 3 == 0)
        for workers in (2, 4):
            assert run_session_lines(lines, ProcessCluster(workers), seed % 3 == 0) == one, seed


@pytest.mark.parametrize("bound", [25, 26])
def test_an_oscillating_loop_stops_at_the_same_round_for_any_worker_count(bound, tmp_path):
    """reach over a negative edge never converges; each worker count must hit
    the bound at the same round and leave the same state behind (the loop
    guesses its next time, and agrees again right before the bound). The
    inspect inside the loop shows every round that was processed."""
    (tmp_path / "r.ddp").write_text(
        'let edges = import "edges";\nlet roots = input 0 | key($0[0] ;);\n'
        'reach: { var reach = roots + (reach | join(edges, ($2 ;))) | distinct | inspect(r); }\n'
        'export "reachable" = reach::reach;\n')
    lines = ["install prod programs/producer.ddp", f"install r {tmp_path / 'r.ddp'}",
             "feed r 0 (1)", "feed prod 0 (1,2)", "feed prod 0 (2,1) diff=-1",
             "feed prod 0 (2,3)", "tick", "peek reachable", "feed prod 0 (2,1)", "tick",
             "peek reachable", "peek edges"]
    from ddir.server.cluster import LocalCluster
    one = run_session_lines(lines, LocalCluster(), max_rounds=bound)
    # the failed program stops: the second tick does not run it, and its trace
    # keeps what it held before the failed tick (nothing: it failed in the first)
    assert one.count(f"error: r: scope `reach` did not converge within {bound} rounds") == 1
    assert one.count('peek "reachable" (0 rows):') == 2
    first_tick = one.split("tick -> epoch 1")[0]
    assert f"@0.{bound - 1} " in first_tick and f"@0.{bound} " not in first_tick  # 0..bound-1
    for workers in (2, 3, 4):
        assert run_session_lines(lines, ProcessCluster(workers), max_rounds=bound) == one, workers


def test_clock_rows_live_on_their_owner_so_joins_with_the_clock_agree(tmp_path):
    """The clock's rows are staged on the worker owning (epoch), like a feed:
    a join of the clock with a collection keyed by epoch finds them there."""
    (tmp_path / "p.ddp").write_text(
        'let c = import "clock";\nlet x = input 0 | key($0[0] ; $0[1]);\n'
        'export "at" = c | join(x, ($0 ; $2)) | inspect(at);\n')
    (tmp_path / "s.txt").write_text(
        "install p p.ddp\n" + "".join(f"feed p 0 ({e},{10 * e})\n" for e in range(1, 6)) +
        "tick\n" * 5 + "peek at\npeek clock\n")
    one = ddir("s.txt", cwd=tmp_path)
    assert "  [at] (3) ; (30)  @3  +1" in one.stdout and 'peek "at" (1 rows):\n  (4) ; (40)' in one.stdout
    for workers in (2, 3, 4):
        r = ddir("-w", str(workers), "s.txt", cwd=tmp_path)
        assert r.stdout == one.stdout and r.returncode == 0, (workers, r.stderr[-500:])
