"""The incremental engine against the naive oracle on random insert/retract
streams (future times and multiplicities above 1 included)."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import UPSTREAM
from ddir.engine.dataflow import Dataflow
from ddir.engine.naive import evaluate
from ddir.ir.lower import lower
from ddir.lang.parser import parse_program, parse_program_file
from oracle_cases import PROGRAMS, REACH, UPSTREAM_ARITIES, check_against_oracle, random_stream


@pytest.mark.parametrize("name", sorted(PROGRAMS))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2 ** 32))
def test_program_matches_oracle(name, seed):
    src, inputs = PROGRAMS[name]
    check_against_oracle(lower(parse_program(src, f"{name}.ddp")), inputs, seed)


@pytest.mark.parametrize("name", sorted(UPSTREAM_ARITIES))
@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2 ** 32))
def test_upstream_program_matches_oracle(name, seed):
    program = lower(parse_program_file(str(UPSTREAM / "examples/programs" / name)))
    check_against_oracle(program, UPSTREAM_ARITIES[name], seed)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_program_matches_oracle_long(name):
    src, inputs = PROGRAMS[name]
    program = lower(parse_program(src, f"{name}.ddp"))
    for seed in range(3000):
        check_against_oracle(program, inputs, seed, epochs=10)


def test_import_of_exported_trace_matches_oracle():
    producer = lower(parse_program('export "edges" = input 0 | key($0[0] ; $0[1]);', "p.ddp"))
    consumer = lower(parse_program(REACH.replace('input 0 | key($0[0] ; $0[1])', 'import "edges"'),
                                   "c.ddp"))
    roots = {((0,), ()): 1, ((1,), ()): 1}
    for seed in range(60):
        prod = Dataflow(producer)
        cons = None
        for epoch, batch in random_stream(seed, {0: 2}, 8):
            for t, n, key, d in batch:
                prod.stage(0, (t,), [(key, (), d)])
            prod.run(epoch)
            if epoch == 3:  # install the consumer late: it must catch up
                cons = Dataflow(consumer, {"edges": prod.exports["edges"]})
                cons.stage(1, (epoch,), [(k, v, d) for (k, v), d in roots.items()])
                cons.catch_up(epoch)
            elif cons is not None:
                cons.run(epoch)
            for df in (prod, cons):
                if df is not None:
                    df.compact(epoch)
            if cons is None:
                continue
            edges = prod.exports["edges"].trace.contents()
            want = evaluate(consumer, {1: roots}, {"edges": edges})
            assert cons.exports["reach"].trace.contents() == want["reach"], (seed, epoch)


def test_retraction_in_loop_is_exact_and_idle_tick_does_nothing():
    program = lower(parse_program(REACH, "r.ddp"))
    df = Dataflow(program)
    df.stage(0, (0,), [((1, 2), (), 1), ((2, 3), (), 1), ((3, 4), (), 1), ((1, 5), (), 1)])
    df.stage(1, (0,), [((1,), (), 1)])
    df.run(0)
    df.compact(0)
    reach = df.exports["reach"].trace
    assert sorted(k for (k, _), d in reach.contents().items()) == [(1,), (2,), (3,), (4,), (5,)]
    df.stage(0, (1,), [((2, 3), (), -1)])
    df.run(1)
    df.compact(1)
    assert sorted(k for (k, _), d in reach.contents().items()) == [(1,), (2,), (5,)]
    rounds = sum(s.rounds for s in df.scopes.values())
    df.run(2)
    df.compact(2)
    assert sum(s.rounds for s in df.scopes.values()) == rounds  # an idle tick processes nothing


def test_memory_is_bounded_under_churn():
    program = lower(parse_program(REACH + '\nexport "cnt" = edges | count | key($1 ;) | count;', "r.ddp"))
    df = Dataflow(program)
    df.stage(0, (0,), [((i, i + 1), (), 1) for i in range(20)])
    df.stage(1, (0,), [((0,), (), 1)])
    sizes = []
    for epoch in range(2000):
        rows = [((5, 6), (), -1), ((5, 60), (), 1)] if epoch % 2 == 0 else [((5, 6), (), 1), ((5, 60), (), -1)]
        if epoch > 0:
            df.stage(0, (epoch,), rows)
        df.run(epoch)
        df.compact(epoch)
        sizes.append(df.stored_updates())
    assert max(sizes[100:]) <= max(sizes[:100]) + 10
    assert max(sizes) < 400


def test_non_converging_scope_stops_with_a_clear_error():
    import io
    from ddir.server.session import Session
    from ddir.server.registry import Server
    import tempfile, os
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "flip.ddp")
        with open(path, "w") as f:
            f.write('let r = input 0;\nflip: { var x = r - x; }\nexport "x" = flip::x;\n')
        out = io.StringIO()
        s = Session(out=out, server=Server(max_rounds=50))
        for line in [f"install f {path}", "feed f 0 1", "tick", "list"]:
            s.run_line(line)
        text = out.getvalue()
        assert "error: f: scope `flip` did not converge within 50 rounds" in text
        assert "tick -> epoch 1" in text and "epoch: 1" in text
