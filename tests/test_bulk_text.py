"""load / save / peek_arrow with Floats, Strings and binary columns, and
tables in memory (SPEC C1 as amended by D1)."""
import io
import math
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ddir
from ddir import Float, List, Variant
from ddir.server import bulk
from ddir.server.session import Session

FORMATS = [".parquet", ".arrow", ".feather", ".ipc", ".csv"]
EXPORT = 'export "out" = input 0;\n'
NAN = Float(math.nan)


def fresh(workers=1):
    s = ddir.Server(workers=workers)
    s.install("p", source=EXPORT)
    return s


def reload(s, path_or_table, **options):
    """Load into a fresh program "q" (export "back") and tick: its peek."""
    if "q" in [p["name"] for p in s.list()["programs"]]:
        s.drop("q")
    s.install("q", source='export "back" = input 0;\n')
    s.load("q", 0, path_or_table, **options)
    s.tick()
    return s.peek("back")


CITIES = pa.table({"id": pa.array([3, 1, 2, 4], pa.int64()),
                   "city": ["New York", "Zürich", "(1, 2)", 'say "hi", then\nleave'],
                   "temp": pa.array([21.5, -0.0, float("nan"), 1e300], pa.float64())})


@pytest.mark.parametrize("workers", [1, 3])
def test_parquet_of_int_string_float_round_trips_through_every_format(tmp_path, workers):
    """The acceptance test: load a Parquet file with an Int, a String and a
    Float column, save to each format, load again: identical peek."""
    pq.write_table(CITIES, tmp_path / "cities.parquet")
    with fresh(workers) as s:
        assert s.load("p", 0, str(tmp_path / "cities.parquet"), key="city", val="id,temp") == 4
        s.tick()
        expected = s.peek("out")
        assert expected == [(("(1, 2)",), (2, NAN), 1), (("New York",), (3, Float(21.5)), 1),
                            (("Zürich",), (1, Float(-0.0)), 1),
                            (('say "hi", then\nleave',), (4, Float(1e300)), 1)]
        table = s.peek_arrow("out")
        assert table.column_names == ["key_0", "val_0", "val_1", "diff"]
        assert table.schema.types == [pa.string(), pa.int64(), pa.float64(), pa.int64()]
        for ext in FORMATS:
            path = str(tmp_path / f"out{ext}")
            assert s.save("out", path) == 4
            assert bulk.read_table(path, path).column_names == table.column_names
            assert reload(s, path) == expected, ext
        # the table itself loads back, and so does a default-layout load of the file
        assert reload(s, table) == expected
        assert reload(s, str(tmp_path / "cities.parquet")) == sorted(
            ((i, c, Float(t)), (), 1) for i, c, t in zip(*CITIES.to_pydict().values()))


def test_values_with_spaces_feed_back_as_peek_prints_them(tmp_path):
    pq.write_table(CITIES, tmp_path / "cities.parquet")
    with fresh() as s:
        s.load("p", 0, str(tmp_path / "cities.parquet"), key="city,id", val="temp")
        s.tick()
        out = io.StringIO()
        session = Session(out=out, client=s)
        session.run_line("peek out")
        lines = [line for line in out.getvalue().splitlines() if line.startswith("  (")]
        assert '  ("New York", 3) ; (21.5)  x1' in lines
        s.install("q", source='export "back" = input 0;\n')
        for line in lines:  # `  KEY ; VAL  x1` -> feed q 0 KEY val=VAL
            key, val = line.strip().rsplit("  ", 1)[0].split(" ; ")
            session.run_line(f"feed q 0 {key} val={val}")
        assert "error" not in out.getvalue()
        s.tick()
        assert s.peek("back") == s.peek("out")


PRINTED_ROWS = [
    ((1, List([2, 3])), (Variant(1, "x"),)),
    (List([]), ()),
    (Variant(0, ()), ("a\"b,c\nd\\e",)),
    ("(1, 2)", List(["", "1", " x "])),
    ((("nested", (Float(-0.0), NAN)),), (Variant(2, List([Float(1.5)])),)),
    (5, "plain"),
    ((), (Float(math.inf), "ü,\t")),
]


@pytest.mark.parametrize("ext", FORMATS)
def test_printed_columns_round_trip_exactly(tmp_path, ext):
    """Non-flat values are saved in the printed form, marked as such, and load
    back as they were: Tuples, Variants, Lists, Strings with quotes, commas
    and newlines, Strings that look like printed values."""
    with fresh() as s:
        s.feed_many("p", 0, rows=[(k, v, 1 + i) for i, (k, v) in enumerate(PRINTED_ROWS)])
        s.tick()
        expected = s.peek("out")
        path = str(tmp_path / f"o{ext}")
        s.save("out", path)
        table = bulk.read_table(path, path)
        assert table.column_names == ["key", "val", "diff"]
        assert bulk.is_printed(table.schema.field("key"))
        assert table.column("key").to_pylist() == [ddir.values.format_value(k)
                                                   for k, _, _ in expected]
        if ext == ".csv":
            assert open(path).readline() == '"key:printed","val:printed","diff"\n'
        assert reload(s, path) == expected
        assert reload(s, s.peek_arrow("out")) == expected


def test_csv_strings_and_floats_that_look_like_something_else(tmp_path):
    """A CSV's header tags keep Strings that read as numbers, nulls or
    printed values, and Floats that read as Ints or nulls, as they were."""
    rows = [(("1", Float(1.0)), (), 1), (("", Float(-0.0)), (), 1), (("nan", NAN), (), 1),
            (("NA", Float(-math.nan)), (), 1), (("(1, 2)", Float(-math.inf)), (), 1),
            ((" x ", Float(5e-324)), (), 1), (("null", Float(0.1)), (), 1)]
    with fresh() as s:
        s.feed_many("p", 0, rows=rows)
        s.tick()
        expected = s.peek("out")
        path = str(tmp_path / "tricky.csv")
        s.save("out", path)
        assert open(path).readline() == '"key_0:string","key_1:float","diff"\n'
        back = reload(s, path)
        assert back == expected
        assert [str(k[1]) for k, _, _ in back] == [str(k[1]) for k, _, _ in expected]
        assert any(math.copysign(1, k[1]) < 0 and math.isnan(k[1]) for k, _, _ in back)


def test_a_csv_without_tags_is_typed_by_inference(tmp_path):
    (tmp_path / "plain.csv").write_text('name,n,x\nNew York,1,1.5\n"a, b",2,nan\n,3,2\n')
    with fresh() as s:
        assert reload(s, str(tmp_path / "plain.csv")) == [
            (("", 3, Float(2.0)), (), 1), (("New York", 1, Float(1.5)), (), 1),
            (("a, b", 2, NAN), (), 1)]


BAD = [
    # (table, options, message): one error, nothing staged
    (pa.table({"s": ["a", None]}), {}, 'column "s", row 2: a null, not a String'),
    (pa.table({"f": pa.array([1.0, None, 2.0])}), {}, 'column "f", row 2: a null, not a Float'),
    (pa.table({"i": pa.array([1, None], pa.int32())}), {}, 'column "i", row 2: a null, not an Int'),
    (pa.table({"u": pa.array([0, 1, 2 ** 64 - 1], pa.uint64())}), {},
     'column "u", row 3: 18446744073709551615 does not fit in a signed 64-bit integer'),
    (pa.table({"d": pa.array(["x", None, "y"]).dictionary_encode()}), {},
     'column "d", row 2: a null, not a String'),
    (pa.Table.from_arrays([pa.array(["(1, 2)", "(1, 2", "x"])], schema=pa.schema(
        [pa.field("k", pa.string(), metadata=bulk.PRINTED)])), {},
     'column "k", row 2: bad value `(1, 2`'),
    (pa.table({"t": pa.array([1, 2], pa.date32())}), {},
     'column "t", row 1: a date32[day] column; only integer, floating-point, string and '
     "binary columns can be loaded"),
    (pa.table({"a": [1], "d": [1.5]}), {"diff": "d"}, 'diff column "d" must hold integers'),
]


@pytest.mark.parametrize("table, options, message", BAD, ids=[m[:28] for _, _, m in BAD])
def test_a_bad_table_or_file_is_one_error_and_stages_nothing(tmp_path, table, options, message):
    path = str(tmp_path / "bad.parquet")
    pq.write_table(table, path)
    with fresh() as s:
        s.feed("p", 0, (42,))
        for source, head in [(path, f'load "{path}"'), (table, "load (a pyarrow.Table)"),
                             (table.to_batches()[0] if table.num_rows else table,
                              "load (a pyarrow.RecordBatch)")]:
            with pytest.raises(ddir.DataFileError) as caught:
                s.load("p", 0, source, **options)
            assert str(caught.value) == f"{head}: {message}" or (
                message in str(caught.value) and str(caught.value).startswith(head))
        with pytest.raises(ddir.DataFileError, match="^feed_many \\(a pyarrow.Table\\): "):
            s.feed_many("p", 0, table, **options)
        s.tick()
        assert s.peek("out") == [((42,), (), 1)]


def test_csv_null_and_bad_cell_name_the_file_column_and_row(tmp_path):
    (tmp_path / "n.csv").write_text("k:string,x\na,1.5\nb,\n")
    (tmp_path / "b.csv").write_text('k:printed,x\n"(1)",1\n"(2",2\n')
    with fresh() as s:
        for name, message in [("n.csv", 'column "x", row 2: a null, not a Float'),
                              ("b.csv", 'column "k", row 2: bad value `(2`')]:
            path = str(tmp_path / name)
            with pytest.raises(ddir.DataFileError) as caught:
                s.load("p", 0, path)
            assert str(caught.value).startswith(f'load "{path}": {message}')
        s.tick()
        assert s.peek("out") == []


def test_tables_in_memory_take_the_same_options():
    table = pa.table({"name": ["alice", "bob", "alice"], "n": [1, 2, 3],
                      "w": pa.array([2, 1, -1], pa.int8()), "blob": [b"\x01", b"", b"ab"]})
    with fresh() as s:
        assert s.load("p", 0, table, key="name", val="n", diff="w", time=1) == 3
        assert s.feed_many("p", 0, table.to_batches()[0], key=["blob"], val="name") == 3
        s.tick()
        assert s.peek("out") == [((List([]),), ("bob",), 1), ((List([1]),), ("alice",), 1),
                                 ((List([97, 98]),), ("alice",), 1)]
        s.tick()
        assert s.peek("out")[:3] == [(("alice",), (1,), 2), (("alice",), (3,), -1),
                                     (("bob",), (2,), 1)]
        with pytest.raises(ddir.DataFileError, match='key= names no column "zz"'):
            s.load("p", 0, table, key="zz")
        with pytest.raises(ddir.CommandError, match="name the columns of a table"):
            s.feed_many("p", 0, [(1,)], key="a")


@pytest.mark.parametrize("thing", [42, None, b"x.parquet", [("a", 1)], {"a": [1]}])
def test_load_of_neither_a_path_nor_a_table_is_a_type_error(thing):
    with fresh() as s:
        with pytest.raises(TypeError, match="load takes a file path") as caught:
            s.load("p", 0, thing)
        assert len(str(caught.value)) < 200


def test_a_path_like_loads(tmp_path):
    pq.write_table(pa.table({"a": [1]}), tmp_path / "a.parquet")
    with fresh() as s:
        assert s.load("p", 0, tmp_path / "a.parquet") == 1


def test_saving_an_empty_trace_and_a_trace_of_mixed_types(tmp_path):
    with fresh() as s:
        s.tick()
        for ext in FORMATS:
            assert s.save("out", str(tmp_path / f"e{ext}")) == 0
            assert reload(s, str(tmp_path / f"e{ext}")) == []
        s.feed("p", 0, (1, "a"))
        s.feed("p", 0, ("b", 2))  # one type per position fails: printed
        s.tick()
        table = s.peek_arrow("out")
        assert table.column_names == ["key", "val", "diff"]
        for ext in FORMATS:
            s.save("out", str(tmp_path / f"m{ext}"))
            assert reload(s, str(tmp_path / f"m{ext}")) == s.peek("out")


def test_checkpoint_keeps_typed_exports(tmp_path):
    with fresh(2) as s:
        s.load("p", 0, CITIES, key="city", val="temp")
        s.tick()
        before = s.peek("out")
        s.checkpoint(tmp_path / "ck")
    with ddir.Server.restore(tmp_path / "ck", workers=1) as r:
        assert r.peek("out") == before
        assert r.peek_arrow("out").schema.types[:2] == [pa.string(), pa.float64()]


def test_pandas_round_trip():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"city": ["New York", "Zürich"], "n": [1, 2], "t": [1.5, float("nan")]})
    with fresh() as s:
        assert s.load("p", 0, df, key="city", val="n,t") == 2
        assert s.feed_many("p", 0, df[["n"]]) == 2
        s.tick()
        assert s.peek("out") == [((1,), (), 1), ((2,), (), 1),
                                 (("New York",), (1, Float(1.5)), 1), (("Zürich",), (2, NAN), 1)]
        s.drop("p")
        s.install("p", source=EXPORT)
        s.load("p", 0, df, key="city", val="n,t")
        s.tick()
        back = s.peek_pandas("out")
        assert list(back.columns) == ["key_0", "val_0", "val_1", "diff"]
        assert back["key_0"].tolist() == ["New York", "Zürich"]
        assert reload(s, back) == s.peek("out")


def test_polars_round_trip():
    pl = pytest.importorskip("polars")
    df = pl.DataFrame({"city": ["New York", "Zürich"], "n": [1, 2], "t": [1.5, -0.0]})
    with fresh() as s:
        assert s.load("p", 0, df, key="city", val="n,t") == 2
        s.tick()
        expected = [(("New York",), (1, Float(1.5)), 1), (("Zürich",), (2, Float(-0.0)), 1)]
        assert s.peek("out") == expected
        back = s.peek_polars("out")
        assert back.columns == ["key_0", "val_0", "val_1", "diff"]
        assert reload(s, back) == expected
        with pytest.raises(ddir.DataFileError, match=r"^feed_many \(a polars.DataFrame\): "
                           r'column "n", row 2: a null, not an Int'):
            s.feed_many("p", 0, pl.DataFrame({"n": [1, None]}))


def test_tables_save_and_load_need_neither_pandas_nor_polars(tmp_path):
    """With pandas and polars unimportable (as where they are not installed),
    every table path works: ddir imports them only through their objects."""
    import subprocess
    import sys
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('pandas', 'polars'):\n"
            "            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import ddir, pyarrow as pa\n"
            "with ddir.Server() as s:\n"
            "    s.install('p', source='export \"o\" = input 0;\\n')\n"
            "    s.load('p', 0, pa.Table.from_pydict({'a': ['x', 'y'], 'f': [1.5, 2.5]}))\n"
            "    s.feed_many('p', 0, pa.record_batch({'a': ['z'], 'f': [0.5]}))\n"
            "    s.tick(); t = s.peek_arrow('o'); s.save('o', 'o.csv'); s.save('o', 'o.parquet')\n"
            "    s.load('p', 0, 'o.csv'); s.load('p', 0, t); s.tick()\n"
            "    print(s.peek('o')[0])\n"
            "    try:\n"
            "        s.peek_pandas('o')\n"
            "    except ImportError as e:\n"
            "        print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.stdout.splitlines() == ["(('x', Float(1.5)), (), 3)",
                                       "peek_pandas needs pandas (pip install pandas)"], out.stderr
