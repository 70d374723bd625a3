"""The columnar path (ddir/engine/columns.py, runs.py, colops.py) against
the row path and the naive oracle.

Every test here drives batches through the columnar path on purpose: the
threshold ``ddir.engine.batch.COLUMNAR_MIN`` is lowered to 1 (every batch of
Int tuples goes columnar), or streams carry hundreds of rows per batch so
that the default threshold is crossed. The same stream then runs with the
threshold out of reach (rows only), and everything must agree at every
epoch: exports, term errors (operator, row, time, diff, message), inspect
events, and the naive oracle's result. Values include both ends of i64
(packing too wide for one int64: the lexsort path), retractions, future
times, nested scopes, unit keys and multiplicities that overflow i64.
"""
import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ddir.engine import batch as B
from ddir.engine import columns as C
from ddir.engine.dataflow import Dataflow
from ddir.engine.naive import evaluate
from ddir.engine.operators import consolidate
from ddir.engine.trace import Trace
from ddir.ir.lower import lower
from ddir.lang.parser import parse_program
from ddir.values import INT_MAX, INT_MIN
from oracle_cases import PROGRAMS

ROWS_ONLY = 10 ** 12

TC = """
let e = input 0 | key($0[0] ; $0[1]);
tc: { var p = e + (p | key($1 ; $0) | join(e, ($1 ; $2))) | key($0, $1 ;) | distinct | key($0[0] ; $0[1]); }
export "tc" = tc::p;
"""
UNIT = """
let xs = input 0 | key(; $0[0], $0[1]);
let ys = input 1 | key(; $0[0]);
export "pairs" = xs | join(ys, ($1[0] ; $2[0], $1[1])) | count;
export "all" = xs | count;
export "least" = xs | min;
"""
ARITH = """
let xs = input 0 | key($0[0] - 3, $0[1] * 2 ; $0[0] + $0[1], 7);
export "big" = xs | filter($1[0] > 2 && $0[0] != 4) | count;
export "neg" = xs - (xs | filter($0[0] < 3));
export "wrap" = input 0 | key($0[0] * 4000000000000000000 ; $0[1]) | count;
export "sum" = input 0 | key($0[0] ; $0[0] + $0[1] * 3) | distinct;
"""
MINPAIR = """
let edges = input 0 | key($0[0] ; $0[1]);
let roots = input 1 | key($0[0] ; 0, $0[0]);
sp: { var dist = roots + (dist | join(edges, ($2 ; $1[0] + 1, $1[1]))) | min; }
export "dist" = sp::dist;
export "deg" = edges | count | key($1 ; $0) | count;
"""
NESTED = """
let edges = input 0 | key($0[0] ; $0[1]);
let roots = input 1 | key($0[0] ;);
outer: {
    var seen = roots + inner::r | distinct;
    inner: { var r = seen + (r | join(edges, ($2 ;))) | distinct; }
}
export "seen" = outer::seen;
"""

EXTRA = {
    "tc": (TC, {0: 2}),
    "unit": (UNIT, {0: 2, 1: 1}),
    "arith": (ARITH, {0: 2}),
    "minpair": (MINPAIR, {0: 2, 1: 1}),
    "nested": (NESTED, {0: 2, 1: 1}),
}
ALL = {**PROGRAMS, **EXTRA}


@pytest.fixture
def threshold():
    """Set COLUMNAR_MIN for the test; restored after."""
    old = B.COLUMNAR_MIN, B.COLUMNAR_FIRST

    def set_(n):
        B.COLUMNAR_MIN = B.COLUMNAR_FIRST = n
    yield set_
    B.COLUMNAR_MIN, B.COLUMNAR_FIRST = old


# ------------------------------------------------------------ consolidation

def _value(rng, wide: bool) -> int:
    if wide and rng.random() < 0.3:
        return rng.choice([INT_MIN, INT_MIN + 1, INT_MAX, INT_MAX - 1, -1, 0])
    return rng.randrange(-5, 40) if rng.random() < 0.5 else rng.randrange(1 << 20)


def _batch(rng, n, ka, va, wide=False, big_diffs=False):
    rows = []
    for _ in range(n):
        k = tuple(_value(rng, wide) for _ in range(ka))
        v = tuple(_value(rng, wide) for _ in range(va))
        d = rng.choice([1, 1, -1, 2, -3])
        if big_diffs and rng.random() < 0.2:
            d = rng.choice([INT_MAX, INT_MIN, 1 << 62, -(1 << 62)])
        rows.append((k, v, d))
    return rows


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2 ** 32), n=st.integers(1, 400), ka=st.integers(0, 3),
       va=st.integers(0, 3), wide=st.booleans(), big=st.booleans())
def test_consolidation_matches_rows(seed, n, ka, va, wide, big):
    rng = random.Random(seed)
    rows = _batch(rng, n, ka, va, wide, big)
    if rng.random() < 0.5:  # many duplicates: the dense path
        rows = [rng.choice(rows[:5]) for _ in range(n)]
    c = C.from_rows(rows)
    assert c is not None and C.to_rows(c) == rows
    want = {(k, v): d for k, v, d in consolidate(rows)}
    got = C.consolidate(c)
    if got is None:  # a sum could leave i64: the caller uses rows
        assert not C.sums_fit(c.d)
        return
    got_rows = C.to_rows(got)
    assert {(k, v): d for k, v, d in got_rows} == want
    assert len(got_rows) == len(want)
    assert [r[:2] for r in got_rows] == sorted(r[:2] for r in got_rows)  # (key, val) order


def test_rows_that_are_not_int_tuples_stay_rows():
    from ddir.values import List, Variant
    for rows in ([((1,), (), 1), ((1, 2), (), 1)], [((1,), (2,), 1), ((1,), (2, 3), 1)],
                 [((1,), (), 1), (("1",), (), 1)], [((True,), (), 1)], [((1,), (), 1 << 64)],
                 [((1,), (List([1]),), 1)], [((1,), (Variant(0, 1),), 1)], [(1, (), 1)],
                 [(((1,),), (), 1)], [((1 << 63,), (), 1)]):
        assert C.from_rows(rows) is None, rows


# ------------------------------------------------------------ traces

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 32), ka=st.integers(0, 3), va=st.integers(0, 2))
def test_trace_with_runs_reads_like_rows(threshold, seed, ka, va):
    """Inserts (rows and Cols, at loop times over several epochs),
    compactions and holds: every reader of a trace with runs gives what a
    row-only trace gives."""
    rng = random.Random(seed)
    threshold(rng.choice([1, 8, 40]))
    cols, rows = Trace(), Trace()
    wide = rng.random() < 0.3
    keys = [tuple(_value(rng, wide) for _ in range(ka)) for _ in range(12)]
    for epoch in range(6):
        for it in range(rng.randint(1, 4)):
            t = (epoch, it)
            batch = []
            for _ in range(rng.choice([0, 3, 30, 90])):
                batch.append((rng.choice(keys), tuple(_value(rng, wide) for _ in range(va)),
                              rng.choice([1, -1, 2])))
            batch = consolidate(batch)
            if not batch:
                continue
            c = C.from_rows(batch)
            cols.insert(C.consolidate(c) if rng.random() < 0.8 else batch, t)
            rows.insert(batch, t)
        if rng.random() < 0.3:
            cols.settle()
        hold = rng.choice([None, None, epoch - 2])
        cols.hold = rows.hold = hold
        if epoch:
            cols.compact(epoch - 1)
            rows.compact(epoch - 1)
        if rng.random() < 0.3:
            assert cols.columnar() in (True, False)
        for before in (None, epoch, epoch + 1):
            assert cols.contents(before) == rows.contents(before)
            listed = cols.rows(before)
            assert {(k, v): d for k, v, d in listed} == rows.contents(before)
            assert len(listed) == len(rows.contents(before))
        probe = keys[:5] + [tuple(range(ka)), (1, 2, 3, 4)[:ka], ("x",)]
        # compaction folds differently (runs: every time; rows: keys spanning
        # epochs), so histories are compared by what they accumulate to at
        # the times still readable
        start = max(epoch - 1, 0) if hold is None else min(max(epoch - 1, 0), max(hold, 0))
        queries = [(e, i) for e in range(start, epoch + 2) for i in range(5)]
        got, want = cols.lookup(probe), rows.lookup(probe)
        for k in probe:
            for q in queries:
                assert _acc(cols.get(k), q) == _acc(rows.get(k), q), (k, q)
                assert _acc(got.get(k, ()), q) == _acc(want.get(k, ()), q), (k, q)
            assert cols.key_contents(k, epoch) == rows.key_contents(k, epoch)
        # every key with contents is listed, once (a key whose updates
        # cancelled may be listed by one part and not the other)
        listed = cols.keys()
        assert len(set(listed)) == len(listed)
        assert {k for k, _ in rows.contents()} <= set(listed)



@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 32))
def test_presence_bits_name_every_run_that_holds_a_key(threshold, seed):
    """A small lookup searches only the runs whose presence bit is set for
    the key: after inserts at loop times (merges that only interleave),
    compactions that fold epochs (merges that sum, some to nothing) and
    settles, a run holding a key always has its bit."""
    rng = random.Random(seed)
    threshold(1)
    tr = Trace()
    domain = rng.choice([50, 400])
    for epoch in range(8):
        for it in range(rng.randint(1, 5)):
            batch = consolidate([((rng.randrange(domain),), (rng.randrange(3),), rng.choice([1, -1]))
                                 for _ in range(rng.choice([1, 5, 40, 200]))])
            if batch:
                tr.insert(C.consolidate(C.from_rows(batch)), (epoch, it))
            tr.lookup([(0,)])  # builds the bits when missing
        if epoch:
            tr.compact(epoch - 1)
        if rng.random() < 0.3:
            tr.settle()
        present = tr._presence
        if present is None or present[0] is None:
            continue
        least, _, bits, _ = present
        for i, run in enumerate(tr.runs):
            held = np.unique(run.pk)
            assert ((bits[held - least] >> i) & 1).all(), (epoch, i)


def test_due_keys_keep_columns_until_tuples_are_needed():
    from ddir.engine.due import DueKeys
    due = DueKeys()
    due.add((7,))
    due.add_columns((np.array([1, 2, 7]),), 3)
    due.add_columns((np.array([2]),), 1)
    assert len(due) == 5  # at most: repeats across chunks count until taken
    assert (7,) in due and (1,) not in due  # only the tuples are looked up
    assert due.as_set() == {(1,), (2,), (7,)}
    assert len(due) == 3 and (1,) in due and not due.columns

def _acc(hist, q) -> dict:
    """val -> net diff of a history at times <= q."""
    acc: dict = {}
    for v, s, d in hist:
        if s[0] <= q[0] and s[1] <= q[1]:
            acc[v] = acc.get(v, 0) + d
    return {v: d for v, d in acc.items() if d}


# ------------------------------------------------------------ the engine, differential

def large_stream(seed: int, inputs: dict, epochs: int, domain: int, size: int,
                 wide: bool = False, big_diffs: bool = False):
    """[(epoch, [(time, input, key, diff)])]: like the oracle's random
    streams, with up to ``size`` updates per epoch (retracting only what is
    live at every later time, so accumulations stay non-negative)."""
    rng = random.Random(seed)
    live: dict = {n: Counter() for n in inputs}
    out = []
    for e in range(epochs):
        batch = []
        for _ in range(rng.randint(0, size)):
            n = rng.choice(sorted(inputs))
            t = e + rng.choice([0, 0, 0, 0, 1, 3])
            present = [k for k, c in live[n].items() if c > 0]
            if present and rng.random() < 0.3 and t == e:
                key, d = rng.choice(present), -1
            else:
                key = tuple((_value(rng, True) if wide else rng.randrange(domain))
                            for _ in range(inputs[n]))
                d = rng.choice([1, 1, 2])
                if big_diffs and rng.random() < 0.05:
                    d = rng.choice([1 << 62, (1 << 62) + 5])
            if t == e:
                live[n][key] += d
            batch.append((t, n, key, d))
        out.append((e, batch))
    return out


def run_engine(program, stream, min_rows: int, max_rounds: int = 10_000):
    """Per epoch: (exports, term errors, inspect events) of the engine with
    COLUMNAR_MIN = ``min_rows``."""
    old = B.COLUMNAR_MIN, B.COLUMNAR_FIRST
    B.COLUMNAR_MIN = B.COLUMNAR_FIRST = min_rows
    try:
        df = Dataflow(program, max_rounds=max_rounds)
        seen = []
        for epoch, batch in stream:
            staged: dict = {}
            for t, n, key, d in batch:
                staged.setdefault((n, t), []).append((key, (), d))
            for (n, t), rows in sorted(staged.items()):
                df.stage(n, (t,), rows)
            df.run(epoch)
            if epoch:
                df.compact(epoch - 1)
            errors = {where: sorted(rows, key=repr) for where, rows in df.take_errors().items()}
            events = Counter()
            for label, k, v, t, d in df.take_events():
                events[(label, k, v, t)] += d
            seen.append(({name: df.exports[name].trace.contents() for name, _ in program.exports},
                         errors, {x: d for x, d in events.items() if d}))
        return seen
    finally:
        B.COLUMNAR_MIN, B.COLUMNAR_FIRST = old


def check_stream(program, inputs, stream, oracle: bool = True) -> None:
    rows = run_engine(program, stream, ROWS_ONLY)
    for min_rows in (1, 64):
        got = run_engine(program, stream, min_rows)
        for epoch, (a, b) in enumerate(zip(got, rows)):
            assert a[0] == b[0], (min_rows, epoch, "exports")
            assert a[1] == b[1], (min_rows, epoch, "errors")
            assert a[2] == b[2], (min_rows, epoch, "events")
    if oracle:
        acc = {n: {} for n in program.inputs}
        last = stream[-1][0]
        for _, batch in stream:
            for t, n, key, d in batch:
                if t <= last:
                    a = acc[n]
                    a[(key, ())] = a.get((key, ()), 0) + d
                    if not a[(key, ())]:
                        del a[(key, ())]
        want = evaluate(program, acc)
        for name, _ in program.exports:
            assert rows[-1][0][name] == want[name], name


@pytest.mark.parametrize("name", sorted(ALL))
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2 ** 32))
def test_large_batches_agree_with_rows_and_oracle(name, seed):
    src, inputs = ALL[name]
    program = lower(parse_program(src, f"{name}.ddp"))
    rng = random.Random(seed)
    domain = 6 if name in ("scc", "cc", "tc", "nested") else rng.choice([8, 30])
    stream = large_stream(seed, inputs, 5, domain, rng.choice([40, 300]))
    check_stream(program, inputs, stream)


@pytest.mark.parametrize("name", ["arith", "unit", "joins", "count_of_count", "adt_case"])
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2 ** 32))
def test_values_at_both_ends_of_i64(name, seed):
    """Fields near INT_MIN/INT_MAX: too wide to pack (lexsort), arithmetic
    that overflows (a term error, found on rows), comparisons."""
    src, inputs = ALL[name]
    program = lower(parse_program(src, f"{name}.ddp"))
    check_stream(program, inputs, large_stream(seed, inputs, 4, 0, 150, wide=True))


@pytest.mark.parametrize("name", ["arith", "count_of_count"])
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2 ** 32))
def test_multiplicity_overflow_is_reported_as_with_rows(name, seed):
    """Diffs of 2^62: sums leave i64 at arrangements, where they are
    reported per row; the columnar path hands such a step to rows, so the
    same rows fail with the same messages at the same arrangements."""
    src, inputs = ALL[name]
    program = lower(parse_program(src, f"{name}.ddp"))
    stream = large_stream(seed, inputs, 4, 5, 120, big_diffs=True)
    check_stream(program, inputs, stream, oracle=False)


@pytest.mark.parametrize("name", ["unit", "joins", "minpair"])
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2 ** 32))
def test_join_products_that_overflow_are_errors(name, seed):
    """A join checks each product of a new row's diff with a history
    entry's. Which entries a history holds depends on how it was compacted
    (as in the row engine, where a cursor's lease changes it too), so the
    rows that fail can differ; but no sum ever wraps: an epoch whose
    results differ from the row engine's has an overflow reported in both."""
    src, inputs = ALL[name]
    program = lower(parse_program(src, f"{name}.ddp"))
    stream = large_stream(seed, inputs, 4, 5, 120, big_diffs=True)
    rows = run_engine(program, stream, ROWS_ONLY)
    got = run_engine(program, stream, 1)
    overflowed = [False, False]
    for epoch, (a, b) in enumerate(zip(got, rows)):
        for i, run in enumerate((a, b)):
            overflowed[i] |= any("overflow" in r[4] for rows_ in run[1].values() for r in rows_)
        if a[0] != b[0] or a[1] != b[1]:
            assert all(overflowed), epoch
        for export in a[0].values():
            assert all(INT_MIN <= d <= INT_MAX for d in export.values()) or overflowed[0]


def test_overflow_at_an_arrangement_of_a_large_batch():
    program = lower(parse_program('export "c" = input 0 | key($0[0] ; $0[1]);', "o.ddp"))
    stream = [(0, [(0, 0, (i % 7, 1), 1 << 62) for i in range(700)])]
    got = run_engine(program, stream, 1)
    want = run_engine(program, stream, ROWS_ONLY)
    assert got == want
    ((where, rows),) = got[0][1].items()
    assert where[0] == "arrange" and len(rows) == 7
    assert all("multiplicity overflow" in r[4] for r in rows)


def test_tc_on_a_large_graph_matches_semi_naive():
    rng = random.Random(5)
    edges = {(rng.randrange(120), rng.randrange(120)) for _ in range(400)}
    program = lower(parse_program(TC, "tc.ddp"))
    df = Dataflow(program)
    df.stage(0, (0,), [(e, (), 1) for e in edges])
    df.run(0)
    closure = set(edges)
    delta = set(edges)
    succ: dict = {}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
    while delta:
        delta = {(a, c) for a, b in delta for c in succ.get(b, ()) if (a, c) not in closure}
        closure |= delta
    got = df.exports["tc"].trace.contents()
    assert got == {((a,), (b,)): 1 for a, b in closure}
    assert df.exports["tc"].trace.runs  # it went columnar
    # retract a quarter of the edges in the next epoch
    gone = sorted(edges)[::4]
    df.stage(0, (1,), [(e, (), -1) for e in gone])
    df.run(1)
    df.compact(0)
    rest = edges - set(gone)
    closure, delta, succ = set(rest), set(rest), {}
    for a, b in rest:
        succ.setdefault(a, []).append(b)
    while delta:
        delta = {(a, c) for a, b in delta for c in succ.get(b, ()) if (a, c) not in closure}
        closure |= delta
    assert df.exports["tc"].trace.contents() == {((a,), (b,)): 1 for a, b in closure}


# ------------------------------------------------------------ workers

@pytest.mark.parametrize("workers", [1, 3])
def test_columns_cross_workers(threshold, workers):
    """Int batches move between worker processes as int64 buffers and are
    loaded as columns (feed_many); the results match the row engine."""
    import ddir
    threshold(1)  # inherited by the forked workers
    program_src, inputs = EXTRA["minpair"]
    program = lower(parse_program(program_src, "m.ddp"))
    stream = large_stream(11, inputs, 5, 25, 300)
    want = run_engine(program, stream, ROWS_ONLY)
    with ddir.Server(workers=workers) as s:
        s.install("m", source=program_src)
        for epoch, batch in stream:
            for (n, t), rows in sorted(_by_input_time(batch).items()):
                s.feed_many("m", n, rows=rows, time=t)
            s.tick()
            for name, _ in program.exports:
                got = {(k, v): d for k, v, d in s.peek(name)}
                assert got == want[epoch][0][name], (epoch, name)


def _by_input_time(batch) -> dict:
    out: dict = {}
    for t, n, key, d in batch:
        out.setdefault((n, t), []).append((key, (), d))
    return out


# ------------------------------------------------------------ Value order of rows

@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2 ** 32))
def test_sort_rows_is_value_order(seed):
    """The Int-tuple fast path of peek's sort (and of the cursor index) gives
    exactly the order_key order, also next to Lists, Variants and Ints."""
    from ddir.engine.order import sort_rows, sorted_keys
    from ddir.values import List, Variant, order_key
    rng = random.Random(seed)
    odd = rng.random() < 0.3

    def value(depth=0):
        r = rng.random()
        if odd and depth < 2 and r < 0.15:
            return List([value(depth + 1) for _ in range(rng.randint(0, 2))])
        if odd and depth < 2 and r < 0.25:
            return Variant(rng.randint(0, 2), value(depth + 1))
        if odd and r < 0.3:
            return rng.randint(-3, 3)
        return tuple(rng.choice([INT_MIN, INT_MAX, 0, rng.randint(-4, 4)])
                     for _ in range(rng.randint(0, 3)))
    rows = [(value(), value(), 1) for _ in range(rng.randint(0, 40))]
    got = list(rows)
    sort_rows(got)
    assert [r[:2] for r in got] == [r[:2] for r in sorted(
        rows, key=lambda r: (order_key(r[0]), order_key(r[1])))]
    keys = list(dict.fromkeys(r[0] for r in rows))
    okeys, ks = sorted_keys(keys)
    assert ks == sorted(keys, key=order_key)
    assert [okeys[i] for i in range(len(okeys))] == [order_key(k) for k in ks]
