"""Checks that run inside an MPI job, started by tests/test_mpi.py:

    mpiexec -n 3 python tests/mpi_driver.py exchange ROUNDS
    mpiexec -n 3 python tests/mpi_driver.py oracle EXAMPLES
    mpiexec -n 3 python tests/mpi_driver.py sessions COUNT
    mpiexec -n 3 python tests/mpi_driver.py scripts 0

``exchange`` runs on every rank: the MPI transport's alltoall/allgather with
payload sizes around the slot size, each checked byte for byte. The others
run on rank 0 against a server whose workers are the job's ranks (the other
ranks serve it, as ``ddir --mpi`` does): the oracle property tests of
tests/test_workers.py, random command streams compared with one worker, and
every session script (ours and upstream, text and JSON) compared with its
golden output or one worker's (the CLI's path from the session on: one job
for all of them, where ``ddir --mpi`` would start one per script).
Prints ``ok ...`` and exits 0, or a traceback and exits 1.
"""
import os
import random
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import conftest  # noqa: F401,E402  (DDIR_CHECK_OWNERS, DDIR_CURSOR_SECRET)
from ddir.server.mpi import MpiCluster, MpiExchange, Ranks, SLOT, leave  # noqa: E402


def payload(src: int, dst: int, step: int, rng: random.Random) -> bytes:
    size = rng.choice([0, 1, SLOT - 17, SLOT - 16, SLOT - 15, SLOT, SLOT + 1, 3 * SLOT, 70_000])
    return bytes((src * 31 + dst * 7 + step + i) % 251 for i in range(size))


def exchange(ranks: Ranks, rounds: int) -> str:
    ex = MpiExchange(ranks.data, ranks.MPI)
    me, n = ex.index, ex.peers
    for step in range(rounds):
        # every rank draws the same sizes: seeded by (step, src, dst)
        sent = [None if p == me else payload(me, p, step, random.Random(step * 1000 + me * 50 + p))
                for p in range(n)]
        got = ex.alltoall(sent)
        for p in range(n):
            if p != me:
                assert got[p] == payload(p, me, step, random.Random(step * 1000 + p * 50 + me)), \
                    (step, p, me)
        mine = payload(me, me, step, random.Random(step * 7 + me))
        got = ex.allgather(mine)
        for p in range(n):
            if p != me:
                assert got[p] == payload(p, p, step, random.Random(step * 7 + p)), (step, p)
    # the least time over the ranks, None (nothing) counting for nothing
    assert ex.agree_min(None if me == 1 else (me + 5, 2)) == (5, 2)
    return f"ok {rounds} rounds on {n} ranks"


def oracle(ranks: Ranks, examples: int) -> str:
    from hypothesis import HealthCheck, given, settings, strategies as st
    from conftest import UPSTREAM
    from ddir.ir.lower import lower
    from ddir.lang.parser import parse_program, parse_program_file
    from ddir.server.registry import Server
    from oracle_cases import PROGRAMS, UPSTREAM_ARITIES
    from test_workers import check_through_server

    cluster = MpiCluster(ranks)
    server = Server(max_rounds=10_000, cluster=cluster)
    programs = [(name, lower(parse_program(src, f"{name}.ddp")), inputs)
                for name, (src, inputs) in sorted(PROGRAMS.items())]
    programs += [(name, lower(parse_program_file(str(UPSTREAM / "examples/programs" / name))),
                  arities) for name, arities in sorted(UPSTREAM_ARITIES.items())]
    for name, program, inputs in programs:
        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(seed=st.integers(0, 2 ** 32))
        def matches(seed):
            check_through_server(server, program, inputs, seed)
        matches()
    cluster.close()
    return f"ok {len(programs)} programs x {examples} streams"


def sessions(ranks: Ranks, count: int) -> str:
    import tempfile
    from ddir.server.cluster import LocalCluster
    from test_workers import RANDOM_SESSION_PROGRAMS, random_session, run_session_lines
    with tempfile.TemporaryDirectory() as folder:
        for name, text in RANDOM_SESSION_PROGRAMS.items():
            Path(folder, f"{name}.ddp").write_text(text)
        for seed in range(count):
            rng = random.Random(seed)
            lines = [line.replace("{dir}", folder) for line in random_session(rng)]
            json_mode = rng.random() < 0.3
            one = run_session_lines(lines, LocalCluster(), json_mode)
            here = run_session_lines(lines, MpiCluster(ranks), json_mode)  # closes it
            assert here == one, f"seed {seed}"
    return f"ok {count} sessions"


def scripts(ranks: Ranks, _) -> str:
    import io
    from conftest import ROOT, UPSTREAM
    from ddir.server.cluster import LocalCluster
    from ddir.server.registry import Server
    from ddir.server.session import Session
    from test_workers import OWN_SESSIONS, UPSTREAM_SESSIONS

    def run(path: str, cluster, json_mode: bool) -> str:
        out = io.StringIO()
        session = Session(out=out, json_mode=json_mode, server=Server(cluster=cluster))
        try:
            with open(path, encoding="utf-8") as f:
                session.run_script(path, f.readlines())
        finally:
            cluster.close()
        return out.getvalue()

    checked = 0
    for folder, names, where in ((ROOT, OWN_SESSIONS, "sessions"),
                                 (UPSTREAM, UPSTREAM_SESSIONS, "examples/server/sessions")):
        os.chdir(folder)
        for name in names:
            for json_mode, ext in ((False, "out"), (True, "jsonl")):
                path = f"{where}/{name}.txt"
                golden = ROOT / "tests/golden" / f"{name}.{ext}"
                want = (golden.read_text() if folder == ROOT
                        else run(path, LocalCluster(), json_mode))
                assert run(path, MpiCluster(ranks), json_mode) == want, (path, json_mode)
                checked += 1
    return f"ok {checked} scripts"


def main() -> int:
    what, count = sys.argv[1], int(sys.argv[2])
    ranks = Ranks()
    if what != "exchange" and ranks.rank != 0:
        ranks.serve()  # never returns
    try:
        modes = {"exchange": exchange, "oracle": oracle, "sessions": sessions, "scripts": scripts}
        result = modes[what](ranks, count)
        if ranks.rank == 0:
            print(result, flush=True)
        code = 0
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)  # the launcher ends the other ranks
    if what == "exchange":
        ranks.finalize()  # every rank is here
    else:
        ranks.finish()
    leave(code)


if __name__ == "__main__":
    main()
