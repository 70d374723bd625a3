"""load / save (SPEC C1): round trips for every format, bad files, worker counts."""
import io
import os
import random
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

import ddir
from ddir import List, Variant
from ddir.engine.columns import owners_of
from ddir.engine.exchange import shard_of
from ddir.server import bulk
from ddir.server.session import Session
from conftest import ROOT

FORMATS = [".parquet", ".arrow", ".feather", ".ipc", ".csv"]
EXPORT = 'export "out" = input 0;\n'


def write(table: pa.Table, path) -> str:
    path = str(path)
    ext = os.path.splitext(path)[1]
    if ext == ".parquet":
        pq.write_table(table, path)
    elif ext == ".csv":
        pacsv.write_csv(table, path)
    else:
        feather.write_feather(table, path)
    return path


def read(path) -> pa.Table:
    return bulk.read_table(str(path), str(path))


def fresh(workers=1):
    s = ddir.Server(workers=workers)
    s.install("p", source=EXPORT)
    return s


def run_cli(args, cwd):
    r = subprocess.run([sys.executable, "-m", "ddir", *args], cwd=cwd, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    return r.stdout


@pytest.mark.parametrize("ext", FORMATS)
def test_int_tuple_trace_round_trip(tmp_path, ext):
    rows = [((i, -i, 2 ** 62 - i), (i % 3,), 1 + i % 2) for i in range(300)]
    with fresh() as s:
        s.feed_many("p", 0, rows=rows)
        s.tick()
        expected = s.peek("out")
        path = str(tmp_path / f"t{ext}")
        assert s.save("out", path) == len(expected)
        table = read(path)
        assert table.column_names == ["key_0", "key_1", "key_2", "val_0", "diff"]
        assert all(t == pa.int64() for t in table.schema.types)
        assert table.to_pydict()["key_0"] == [k[0] for k, _, _ in expected]  # sorted as peek
        s.install("q", source='export "back" = input 0;\n')
        assert s.load("q", 0, path) == len(expected)
        s.tick()
        assert s.peek("back") == expected
        assert s.peek_arrow("out").equals(table)
        assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []  # no temp file left


VALUES = [5, -3, (), (1,), (1, List([2, 3])), List([]), List([Variant(0, ())]), Variant(1, 5),
          Variant(2, (1, 2)), Variant(3, List([7])), (Variant(1, Variant(0, ())), -2 ** 63)]


@pytest.mark.parametrize("ext", FORMATS)
def test_list_and_variant_trace_round_trip_through_string_columns(tmp_path, ext):
    rows = [(k, v, d) for i, (k, v) in enumerate(zip(VALUES, reversed(VALUES)))
            for d in [1 + i]]
    with fresh() as s:
        s.feed_many("p", 0, rows=rows)
        s.tick()
        expected = s.peek("out")
        path = str(tmp_path / f"t{ext}")
        s.save("out", path)
        table = read(path)
        assert table.column_names == ["key", "val", "diff"]
        assert table.column("key").to_pylist() == [ddir.values.format_value(k) for k, _, _ in expected]
        s.install("q", source='export "back" = input 0;\n')
        s.load("q", 0, path)
        s.tick()
        assert s.peek("back") == expected
        # saving again writes the same bytes' worth of rows, replacing the file
        assert s.save("back", path) == len(expected)
        assert read(path).equals(table)


def test_column_selection_time_and_diff(tmp_path):
    path = write(pa.table({"a": [1, 2, 3], "b": [10, 20, 30],
                           "c": pa.array([7, 8, 9], pa.int32()), "n": [1, -1, 3]}),
                 tmp_path / "sel.parquet")
    with fresh() as s:
        assert s.load("p", 0, path, key="c,a", val=["b"], diff="n", time=1) == 3
        s.tick()
        assert s.peek("out") == []  # staged at time 1
        s.tick()
        assert s.peek("out") == [((7, 1), (10,), 1), ((8, 2), (20,), -1), ((9, 3), (30,), 3)]
        s.install("q", source='export "q" = input 0;\n')
        s.load("q", 0, path, val="b,n")  # default key: every column not in val/diff, in order
        s.install("r", source='export "r" = input 0;\n')
        s.load("r", 0, path, key="", val="a")  # no key columns: the unit key
        s.tick()
        assert s.peek("q")[0] == ((1, 7), (10, 1), 1)
        assert s.peek("r") == [((), (1,), 1), ((), (2,), 1), ((), (3,), 1)]


def printed(table: pa.Table, *names) -> pa.Table:
    """``table`` with the columns ``names`` marked as printed-form columns."""
    fields = [f.with_metadata(bulk.PRINTED) if f.name in names else f for f in table.schema]
    return pa.Table.from_arrays(table.columns, schema=pa.schema(fields))


def test_string_cells_are_strings_and_printed_columns_are_values(tmp_path):
    """A string column holds Strings, whatever they look like; one marked
    printed (field metadata, or a CSV header's `:printed`) holds values."""
    texts = ["1,2", "_", "(4, 5)", "7", " [1] ", "New York", ""]
    path = write(pa.table({"k": texts, "v": list(range(len(texts)))}), tmp_path / "s.parquet")
    with fresh() as s:
        s.load("p", 0, path, val="v")
        s.tick()
        assert sorted(s.peek("out")) == sorted(((t,), (i,), 1) for i, t in enumerate(texts))
    marked = printed(pa.table({"k": ["(4, 5)", "7", " [1] ", '"a b"', "#1:(2)"],
                               "v": [1, 2, 3, 4, 5]}), "k")
    for ext in (".parquet", ".arrow"):
        path = write(marked, tmp_path / f"m{ext}")
        with fresh() as s:
            s.load("p", 0, path, val="v")
            s.tick()
            assert s.peek("out") == [(7, (2,), 1), ("a b", (4,), 1), ((4, 5), (1,), 1),
                                     (Variant(1, (2,)), (5,), 1), (List([1]), (3,), 1)]
    (tmp_path / "m.csv").write_text('k:printed,v,w:string,f:float,i:int\n'
                                    '"(1, ""x"")",1,7,1,2\n')
    with fresh() as s:
        s.load("p", 0, str(tmp_path / "m.csv"), val="v,w,f,i")
        s.tick()
        assert s.peek("out") == [((1, "x"), (1, "7", ddir.Float(1.0), 2), 1)]
    # a key of an int column and a string column: a Tuple of both values
    path = write(pa.table({"i": [1], "s": ["[2]"]}), tmp_path / "m.parquet")
    with fresh() as s:
        s.load("p", 0, path)
        s.tick()
        assert s.peek("out") == [((1, "[2]"), (), 1)]


def test_float_and_binary_columns(tmp_path):
    nan = float("nan")
    table = pa.table({"f": pa.array([1.5, -0.0, nan, -nan, float("inf")], pa.float64()),
                      "g": pa.array([1, 2, 3, 4, 5], pa.float32()),
                      "b": pa.array([b"", b"ab", b"\x00\xff", b"ab", b"z"], pa.binary())})
    F = ddir.Float
    expected = [((F(-nan),), (F(4.0), List([97, 98])), 1), ((F(-0.0),), (F(2.0), List([97, 98])), 1),
                ((F(1.5),), (F(1.0), List([])), 1), ((F(float("inf")),), (F(5.0), List([122])), 1),
                ((F(nan),), (F(3.0), List([0, 255])), 1)]
    for ext in (".parquet", ".arrow"):
        path = write(table, tmp_path / f"f{ext}")
        with fresh() as s:
            s.load("p", 0, path, key="f", val="g,b")
            s.tick()
            assert s.peek("out") == expected
    with fresh() as s:  # a dictionary-encoded String column, a large_utf8 one
        s.load("p", 0, pa.table({"d": pa.array(["x", "y", "x"]).dictionary_encode(),
                                 "l": pa.array(["a", "b", "c"], pa.large_string())}))
        s.tick()
        assert s.peek("out") == [(("x", "a"), (), 1), (("x", "c"), (), 1), (("y", "b"), (), 1)]


def csv_file(tmp_path, text, name="bad.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BAD_FILES = [
    # (how to make the file, load options, what the one error says)
    (lambda d: str(d / "missing.parquet"), {}, 'missing.parquet": no such file'),
    (lambda d: csv_file(d, "a\n1\n", "data.txt"), {}, "extension `.txt`; use one of .parquet"),
    (lambda d: csv_file(d, "a\n1\n", "noext"), {}, "no extension; use one of"),
    (lambda d: write(pa.table({"a": [1, 2], "f": [1.0, None]}), d / "f.parquet"), {},
     'column "f", row 2: a null, not a Float'),
    (lambda d: csv_file(d, "a,f\n1,2.5\n2,\n"), {}, 'column "f", row 2: a null, not a Float'),
    (lambda d: write(pa.table({"a": [1, None, 3]}), d / "n.arrow"), {},
     'column "a", row 2: a null, not an Int'),
    (lambda d: csv_file(d, "a,b\n1,2\n2,\n"), {}, 'column "b", row 2: a null, not an Int'),
    (lambda d: write(pa.table({"s": ["(1)", None]}), d / "ns.parquet"), {},
     'column "s", row 2: a null, not a String'),
    (lambda d: write(printed(pa.table({"s": ["(1)", None]}), "s"), d / "np.parquet"), {},
     'column "s", row 2: a null, not a value'),
    (lambda d: write(pa.table({"b": [b"x", None]}), d / "nb.arrow"), {},
     'column "b", row 2: a null, not a List of bytes'),
    (lambda d: write(pa.table({"u": pa.array([1, 2 ** 63], pa.uint64())}), d / "u.parquet"), {},
     'column "u", row 2: 9223372036854775808 does not fit in a signed 64-bit integer'),
    (lambda d: csv_file(d, "a\n5\n99999999999999999999\n"), {},
     'column "a", row 2: 99999999999999999999 does not fit in a signed 64-bit integer'),
    (lambda d: write(printed(pa.table({"s": ["(1, 2)", "(1,", "[x]"]}), "s"), d / "s.feather"),
     {}, 'column "s", row 2: bad value `(1,`'),
    (lambda d: csv_file(d, 'a,s:printed\n1,"(1, 2)"\n2,1 2\n'), {},
     'column "s", row 2: bad value `1 2`'),
    (lambda d: write(printed(pa.table({"s": ["99999999999999999999"]}), "s"), d / "big.parquet"),
     {}, 'column "s", row 1: bad value `99999999999999999999`: integer 99999999999999999999 '
     'does not fit'),
    (lambda d: write(pa.table({"a": [1], "b": [2]}), d / "k.parquet"), {"key": "a,zz"},
     'key= names no column "zz" (columns: a, b)'),
    (lambda d: write(pa.table({"a": [1], "b": [2]}), d / "v.parquet"), {"val": "nope"},
     'val= names no column "nope"'),
    (lambda d: write(pa.table({"a": [1, 2], "d": [1, 0]}), d / "d0.parquet"), {"diff": "d"},
     'column "d", row 2: diff 0 changes nothing'),
    (lambda d: write(pa.table({"a": [1], "d": ["1"]}), d / "ds.parquet"), {"diff": "d"},
     'diff column "d" must hold integers'),
    (lambda d: write(pa.table({"a": [True]}), d / "b.parquet"), {},
     'column "a", row 1: a bool column; only integer, floating-point, string and binary '
     'columns can be loaded'),
    (lambda d: csv_file(d, "this is not, a parquet file", "junk.parquet"), {},
     "cannot read it as parquet"),
]


@pytest.mark.parametrize("make, options, message", BAD_FILES,
                         ids=[m[:30] for _, _, m in BAD_FILES])
def test_a_bad_file_is_one_error_and_stages_nothing(tmp_path, make, options, message):
    path = make(tmp_path)
    with fresh() as s:
        s.feed("p", 0, (42,))
        before = s.list()
        with pytest.raises(ddir.DataFileError) as caught:
            s.load("p", 0, path, **options)
        assert message in str(caught.value) and f'load "{path}"' in str(caught.value)
        line = f"load p 0 {path}" + "".join(f" {k}={v}" for k, v in options.items())
        out = io.StringIO()
        Session(out=out, client=s).run_line(line)
        assert out.getvalue() == f"error: {caught.value}\n"
        assert s.list() == before
        s.tick()
        assert s.peek("out") == [((42,), (), 1)]  # only what was fed: nothing of the file


def test_a_save_that_fails_half_way_leaves_the_old_file(tmp_path, monkeypatch):
    with fresh() as s:
        s.feed("p", 0, (1,))
        s.tick()
        path = tmp_path / "keep.csv"
        path.write_text("old\n")

        def broken(table, where, **_):
            with open(where, "w") as f:
                f.write("half")
            raise OSError(28, "No space left on device")
        with monkeypatch.context() as m:
            m.setattr(pacsv, "write_csv", broken)
            with pytest.raises(ddir.DataFileError) as caught:
                s.save("out", str(path))
        assert str(caught.value) == f'save "{path}": cannot write it: No space left on device'
        assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["keep.csv"]
        with pytest.raises(ddir.DataFileError, match="cannot write there"):
            s.save("out", str(tmp_path / "no" / "dir.csv"))
        assert s.save("out", str(path)) == 1
        assert path.read_text().splitlines() == ['"key_0","diff"', "1,1"]


# Every edge of msgpack's int widths (fixint, 8, 16, 32, 64 bits, both signs).
INT_EDGES = [-2 ** 63, -2 ** 31 - 1, -2 ** 31, -32769, -32768, -129, -128, -33, -32, -1, 0,
             127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 63 - 1]
INT_NEAR_EDGES = sorted({e + d for e in INT_EDGES for d in (-1, 0, 1)
                         if -2 ** 63 <= e + d < 2 ** 63})


def test_owners_of_columns_match_shard_of():
    """owners_of (column-wise CRC) equals shard_of bit for bit: every int width
    boundary and its neighbours, 0-17 key fields, columns of one msgpack class
    and of many, 1-7 shards, empty inputs."""
    rng = random.Random(7)

    def pool(kind):  # a column's values
        if kind == 0:
            return lambda: rng.choice(INT_NEAR_EDGES)
        if kind == 1:
            return lambda: rng.choice([rng.choice(INT_NEAR_EDGES),
                                       rng.randint(-2 ** 63, 2 ** 63 - 1),
                                       rng.randint(-300, 300), rng.randint(-2 ** 40, 2 ** 40)])
        lo, hi = sorted(rng.sample(INT_NEAR_EDGES, 2))  # often one class, sometimes narrow
        if kind == 3:
            hi = min(hi, lo + rng.choice([0, 1, 3, 100]))
        return lambda: rng.randint(lo, hi)

    for n in range(18):
        for trial in range(6):
            count = [0, 1, 2, 7, 300, 300][trial]
            gens = [pool(rng.randrange(4)) for _ in range(n)]
            rows = [tuple(g() for g in gens) for _ in range(count)]
            cols = [np.array([r[i] for r in rows], dtype=np.int64) for i in range(n)]
            for shards in range(1, 8):
                got = owners_of(cols, count, shards)
                assert got.dtype == np.int64, (n, trial, shards)
                assert got.tolist() == [shard_of(r, shards) for r in rows], (n, trial, shards)
    # several blocks of rows (the last one partial), a non-contiguous column
    count = 70_001
    nrng = np.random.default_rng(7)
    cols = [nrng.choice(np.array(INT_NEAR_EDGES, dtype=np.int64), count),
            nrng.integers(-2 ** 20, 2 ** 20, count), nrng.integers(0, 2 ** 40, 2 * count)[::2]]
    rows = list(zip(*(c.tolist() for c in cols)))
    for shards in (3, 4):
        assert owners_of(cols, count, shards).tolist() == [shard_of(r, shards) for r in rows]


def test_load_output_is_identical_for_1_and_3_workers(tmp_path):
    rng = np.random.default_rng(3)
    count = 20_000
    write(pa.table({"src": rng.integers(-50, 5000, count), "dst": rng.integers(0, 2 ** 40, count),
                    "w": rng.integers(1, 4, count)}), tmp_path / "edges.parquet")
    write(pa.table({"k": [f"[{i}, {i % 3}]" for i in range(500)], "v": list(range(500))}),
          tmp_path / "lists.csv")
    (tmp_path / "prog.ddp").write_text('export "e" = input 0 | inspect(in);\n'
                                       'export "l" = input 1;\n')
    (tmp_path / "s.txt").write_text(
        "install p prog.ddp\nload p 0 edges.parquet key=src val=dst diff=w\n"
        "load p 1 lists.csv val=v time=1\nload p 0 nope.csv\ntick\ntick\n"
        "peek e limit=5\npeek l limit=3 offset=10\nsave e out.parquet\nsave l out.csv\nlist\n")
    outs = []
    for workers in ("1", "3"):
        text = run_cli(["-w", workers, "s.txt"], tmp_path)
        json = run_cli(["--json", "-w", workers, "s.txt"], tmp_path)
        outs.append((text, json, read(tmp_path / "out.parquet"), read(tmp_path / "out.csv")))
    assert outs[0][:2] == outs[1][:2]
    assert outs[0][2].equals(outs[1][2]) and outs[0][3].equals(outs[1][3])
    text, json = outs[0][:2]
    assert f'loaded {count} rows into "p" input 0' in text
    assert 'loaded 500 rows into "p" input 1' in text and 'saved 500 rows of "l" to out.csv' in text
    assert '"kind": "loaded", "program": "p", "input": 0, "rows": 20000}' in json
    assert '{"kind": "saved", "trace": "l", "file": "out.csv", "rows": 500}' in json
    assert 'error: s.txt:4: load "nope.csv": no such file' in text


def test_load_and_save_paths_resolve_like_install(tmp_path):
    """A script's load finds its file beside the script; save writes where it is told."""
    sub = tmp_path / "sub"
    sub.mkdir()
    write(pa.table({"a": [1, 2]}), sub / "d.arrow")
    (sub / "s.txt").write_text(f"install p {ROOT}/programs/echo.ddp\nload p 0 d.arrow\ntick\n"
                               "save echoed saved.ipc\n")
    out = run_cli(["sub/s.txt"], tmp_path)
    assert 'loaded 2 rows into "p" input 0' in out and "saved 2 rows" in out
    assert read(tmp_path / "saved.ipc").to_pydict() == {"key_0": [1, 2], "diff": [1, 1]}


def test_progress_bar_runs_after_its_delay(tmp_path):
    from prompt_toolkit.output import DummyOutput
    from prompt_toolkit.input import create_pipe_input
    from ddir.repl import progress_bar
    with create_pipe_input() as pipe:
        progress = progress_bar(after=0.0, output=DummyOutput(), input=pipe)
        with progress("load x.parquet", None) as update:
            import time
            time.sleep(0.2)
            update(0, 10)
            update(10)
    with fresh() as s:  # the server calls it for loads and saves
        seen = []
        import contextlib

        @contextlib.contextmanager
        def record(label, total):
            seen.append(label)
            yield lambda done, total=None: seen.append(done)
        s.core.progress = record
        s.feed("p", 0, (1,))
        s.tick()
        s.save("out", str(tmp_path / "o.csv"))
        s.load("p", 0, str(tmp_path / "o.csv"))
        assert seen == ["save " + str(tmp_path / "o.csv"), 1,
                        "load " + str(tmp_path / "o.csv"), 0, 1]


@pytest.mark.slow
def test_a_million_rows_load_and_save(tmp_path):
    count = 1_000_000
    a = np.arange(count, dtype=np.int64)
    write(pa.table({"a": a, "b": a * 3}), tmp_path / "big.parquet")
    with ddir.Server(workers=2) as s:
        s.install("p", source=EXPORT)
        assert s.load("p", 0, str(tmp_path / "big.parquet")) == count
        s.tick()
        assert s.save("out", str(tmp_path / "back.parquet")) == count
    back = pq.read_table(tmp_path / "back.parquet")
    assert back.column("key_0").to_numpy().tolist() == a.tolist()


@pytest.mark.parametrize("workers", [1, 3])
def test_saved_columns_equal_the_peeked_rows(workers):
    """save/peek_arrow/checkpoints take int64 columns straight from the
    traces (runs and row part, retractions, epochs of a failed program left
    aside): on random histories they give exactly the table of peek's rows."""
    rng = random.Random(workers)
    with ddir.Server(workers=workers) as s:
        s.install("p", source=EXPORT)
        s.install("w", source='export "wide" = input 0 | key($0[0], $0[1] ; $0[2]);\n')
        live: dict = {}
        for tick in range(6):
            big = rng.random() < 0.5  # a batch past the columnar threshold, or a handful
            count = rng.randrange(300, 1200) if big else rng.randrange(1, 12)
            rows = []
            for _ in range(count):
                key = (rng.randrange(-50, 50), rng.randrange(2 ** 40))
                if live and rng.random() < 0.3:
                    key = rng.choice(sorted(live))
                    d = -live[key] if rng.random() < 0.5 else rng.randrange(-2, 3) or 1
                else:
                    d = rng.randrange(1, 4)
                live[key] = live.get(key, 0) + d
                if not live[key]:
                    del live[key]
                rows.append((key, (), d))
            s.feed_many("p", 0, rows=rows)
            # keys over the whole i64 range: too wide to pack, kept as rows
            s.feed_many("w", 0, rows=[((a, b, b * 2654435761 % 2 ** 64 - 2 ** 63), (), d)
                                      for (a, b), _, d in rows])
            s.tick()
            for trace in ("out", "wide"):
                expected = bulk.rows_to_table(s.peek(trace))
                assert s.peek_arrow(trace).equals(expected), (tick, trace)
        assert sorted(k for k, _, _ in s.peek("out")) == sorted(live)
        # a List among the Ints: the whole trace goes the row way, same table
        s.feed("p", 0, (List([1]), 2))
        s.tick()
        assert (List([1]), 2) in [k for k, _, _ in s.peek("out")]
        assert s.peek_arrow("out").equals(bulk.rows_to_table(s.peek("out")))


def test_a_column_named_twice_is_one_error(tmp_path):
    (tmp_path / "dup.csv").write_text("a,a\n1,2\n")
    pq.write_table(pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"]),
                   tmp_path / "dup.parquet")
    with fresh() as s:
        with pytest.raises(ddir.DataFileError, match=f'load "{tmp_path / "dup.csv"}": column '
                           '"a" appears more than once'):
            s.load("p", 0, str(tmp_path / "dup.csv"))
        with pytest.raises(ddir.DataFileError, match="cannot read it as parquet: Multiple matches"):
            s.load("p", 0, str(tmp_path / "dup.parquet"))  # pyarrow's reader refuses it itself
        s.tick()
        assert s.peek("out") == []


def test_an_empty_csv_loads_as_zero_rows(tmp_path):
    """A CSV of a header alone (what `save` writes for an empty trace) has
    columns of no type: it loads as nothing, not as an error."""
    with fresh() as s:
        s.tick()
        assert s.save("out", str(tmp_path / "e.csv")) == 0
        (tmp_path / "h.csv").write_text("x\n")
        assert s.load("p", 0, str(tmp_path / "e.csv")) == 0
        assert s.load("p", 0, str(tmp_path / "h.csv")) == 0
        s.feed("p", 0, (1,))
        s.tick()
        assert s.peek("out") == [((1,), (), 1)]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_keys_of_several_arities_on_different_workers_save_as_printed_values(workers, tmp_path):
    """Each worker's part may be Tuples of Ints of one arity while the parts
    differ: the table is then the printed one, whatever -w N."""
    with ddir.Server(workers=workers) as s:
        s.install("p", source=EXPORT)
        for key in [(3, 4), (5, 6), (1, 2, 3), (7, 8, 9)]:
            s.feed("p", 0, key)
        s.tick()
        table = s.peek_arrow("out")
        assert table.equals(bulk.rows_to_table(s.peek("out")))
        assert table.column_names == ["key", "val", "diff"]
        assert s.save("out", str(tmp_path / "o.parquet")) == 4
