"""Bulk data in and out through pyarrow (SPEC C1): `load`, `save`, `peek_arrow`.

Reading a file (or taking a pyarrow Table / RecordBatch, a pandas or a polars
DataFrame) gives a batch of updates, validated as a whole before anything is
staged (a load is all-or-nothing):

* :class:`ddir.server.staged.IntColumns` when every key and val field comes
  from an integer column: int64 numpy arrays, never a Python object per row
  on the intake (split by owner and sent to the workers as raw bytes);
* a list of ``(key, val, diff)`` rows otherwise.

Column kinds (SPEC C1 as amended by D1): integer columns give Ints,
floating-point columns Floats, string columns (utf8, large_utf8, string
views, dictionary-encoded) Strings, binary columns Lists of byte Ints, and a
column marked *printed* holds values in the printed form (what `save` writes
for values that are not flat scalars). The mark is the field metadata
``{"ddir": "printed"}`` in Parquet, Arrow IPC and in-memory tables; in a CSV
it is a header suffix: ``name:printed``. A CSV header may type any column
with a suffix ``:int``, ``:float``, ``:string`` or ``:printed`` (`save` writes
``:float`` and ``:string`` for such columns, so a String ``"1"`` or a Float
``1.0`` reads back as it was); an untagged CSV column is typed by pyarrow's
inference. In a CSV only an empty cell is a null (and only outside string
columns, where it is the empty String): ``nan``, ``NA`` and ``null`` are a
Float NaN or text.

Writing turns consolidated, sorted rows into a table with save's columns
(``key_0.. val_0..`` typed int64 / float64 / utf8 when every key and every
val is a Tuple of flat scalars of one type per position, else printed-form
``key``, ``val``; plus ``diff`` int64) and writes it atomically.
"""

from __future__ import annotations

import os
import re
import tempfile
from itertools import repeat

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .staged import IntColumns, from_rows, merged
from ..engine.columns import no_gc
from ..errors import DataFileError
from ..lang.value_token import MAX_VALUE_DEPTH
from ..values import INT_MAX, INT_MIN, Float, List, ValueSyntaxError, format_value, \
    order_key, parse_printed

FORMATS = {".parquet": "parquet", ".arrow": "ipc", ".feather": "ipc", ".ipc": "ipc", ".csv": "csv"}
ACCEPTED = ", ".join(FORMATS)

# A column in the printed form: its field's metadata (Parquet, Arrow IPC,
# tables in memory) or, in a CSV, a header suffix.
PRINTED_KEY, PRINTED_VALUE = b"ddir", b"printed"
PRINTED = {PRINTED_KEY: PRINTED_VALUE}
CSV_TAGS = {"int": pa.int64(), "float": pa.float64(), "string": pa.string(),
            "printed": pa.string()}
_CSV_TAG = re.compile(r"(.*):(int|float|string|printed)", re.S)

_INT_TEXT = re.compile(r"-?[0-9]+")


def is_printed(field: pa.Field) -> bool:
    """Whether ``field`` holds values in the printed form."""
    meta = field.metadata or {}
    return meta.get(PRINTED_KEY) == PRINTED_VALUE


def file_format(path: str, verb: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    fmt = FORMATS.get(ext)
    if fmt is None:
        what = f"extension `{ext}`" if ext else "no extension"
        raise DataFileError(f'{verb} "{path}": {what}; use one of {ACCEPTED}')
    return fmt


# ============================================================ reading


def read_table(path: str, shown: str, quote: bool = True) -> pa.Table:
    """``quote``: False for a network client's load (SPEC E2): a reader's
    message may quote the file, so it is left out. A CSV's header tags are
    taken off its column names (a ``:printed`` one becomes field metadata)."""
    fmt = file_format(shown, "load")
    if not os.path.isfile(path):
        reason = "is a directory" if os.path.isdir(path) else "no such file"
        raise DataFileError(f'load "{shown}": {reason}')
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq
            return pq.read_table(path)
        if fmt == "ipc":
            import pyarrow.feather as feather
            return feather.read_table(path)
        return _read_csv(path)
    except (pa.ArrowException, OSError, ValueError) as e:
        detail = f": {_first_line(e)}" if quote else ""
        raise DataFileError(f'load "{shown}": cannot read it as {fmt}{detail}') from None


def csv_header(path: str) -> list:
    """The column names of a CSV's header row, as pyarrow reads them."""
    import csv
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        return next(csv.reader(f), [])


def _read_csv(path: str) -> pa.Table:
    import pyarrow.csv as csv
    header = csv_header(path)
    tagged = {}
    for name in header:
        m = _CSV_TAG.fullmatch(name)
        if m:
            tagged[name] = (m.group(1), m.group(2))
    table = csv.read_csv(path, convert_options=csv.ConvertOptions(
        column_types={name: CSV_TAGS[tag] for name, (_, tag) in tagged.items()},
        null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=False))
    if not tagged:
        return table
    fields = []
    for field in table.schema:
        if field.name in tagged:
            name, tag = tagged[field.name]
            field = pa.field(name, field.type, metadata=PRINTED if tag == "printed" else None)
        fields.append(field)
    return pa.Table.from_arrays(table.columns, schema=pa.schema(fields))


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class _Bad(Exception):
    """A bad cell: its row, the problem, and the problem without the cell's
    text (``hidden``, for a network client, SPEC E2; None: it has none)."""

    def __init__(self, row: int, problem: str, hidden: str | None = None):
        self.row, self.problem = row, problem
        self.hidden = problem if hidden is None else hidden


def _is_str_type(t) -> bool:
    return (pa.types.is_string(t) or pa.types.is_large_string(t)
            or getattr(pa.types, "is_string_view", lambda _: False)(t))


def _is_bin_type(t) -> bool:
    return (pa.types.is_binary(t) or pa.types.is_large_binary(t)
            or pa.types.is_fixed_size_binary(t)
            or getattr(pa.types, "is_binary_view", lambda _: False)(t))


def _first(mask) -> int:
    return int(pc.index(mask, True).as_py())


def _no_nulls(col: pa.Array, what: str) -> None:
    if col.null_count:
        raise _Bad(_first(pc.is_null(col)), f"a null, not {what}")


def _int_column(col: pa.Array) -> np.ndarray:
    _no_nulls(col, "an Int")
    if col.type == pa.uint64() and len(col):
        over = pc.greater(col, pa.scalar(INT_MAX, pa.uint64()))
        if pc.any(over).as_py():
            i = _first(over)
            raise _Bad(i, f"{col[i].as_py()} does not fit in a signed 64-bit integer",
                       "an Int that does not fit in a signed 64-bit integer")
    return col.cast(pa.int64()).to_numpy(zero_copy_only=False)


def _float_column(col: pa.Array) -> np.ndarray:
    _no_nulls(col, "a Float")
    return col.cast(pa.float64()).to_numpy(zero_copy_only=False)


def floats(a: np.ndarray) -> list:
    """float64 values as ``Float`` objects, every NaN the one quiet NaN of
    its sign (as ``Float()`` makes them): a C-level ``map`` of
    ``float.__new__``, no Python frame per cell."""
    nan = np.isnan(a)
    if nan.any():
        a = np.where(nan, np.copysign(np.nan, a), a)
    with no_gc():
        return list(map(float.__new__, repeat(Float, len(a)), a.tolist()))


def _clip(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[:n // 2 - 2] + "..." + text[-(n // 2 - 2):]


def _text_column(col: pa.Array, kind: str) -> list:
    """A string or binary column as a Python list of values: Strings
    (``"str"``), Lists of byte Ints (``"bin"``) or printed values
    (``"printed"``). A plain string column is pyarrow's ``to_pylist``
    (C++; faster than a dictionary pass, which costs a hash per cell);
    otherwise each distinct cell is converted once (``dictionary_encode``)."""
    what = {"str": "a String", "bin": "a List of bytes", "printed": "a value"}[kind]
    if kind == "str" and not pa.types.is_dictionary(col.type):
        _no_nulls(col, what)
        try:
            with no_gc():
                return col.to_pylist()
        except UnicodeDecodeError:
            pass  # find the row below
    if pa.types.is_dictionary(col.type):
        encoded = col
    else:
        if getattr(pa.types, "is_string_view", lambda _: False)(col.type):
            col = col.cast(pa.string())
        elif getattr(pa.types, "is_binary_view", lambda _: False)(col.type):
            col = col.cast(pa.binary())
        _no_nulls(col, what)
        encoded = col.dictionary_encode()
    _no_nulls(encoded, what)
    dictionary = encoded.dictionary
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    if pa.types.is_dictionary(col.type):
        if getattr(pa.types, "is_string_view", lambda _: False)(dictionary.type):
            dictionary = dictionary.cast(pa.string())
        if dictionary.null_count:  # a null among the values: bad if a row uses it
            nulls = np.flatnonzero(pc.is_null(dictionary).to_numpy(zero_copy_only=False))
            used = np.flatnonzero(np.isin(indices, nulls))
            if len(used):
                raise _Bad(int(used[0]), f"a null, not {what}")
    bad: dict = {}
    if kind == "bin":
        parsed = [None if b is None else List(b) for b in dictionary.to_pylist()]
    else:
        try:
            texts = dictionary.to_pylist()
        except UnicodeDecodeError:
            texts = []
            for i, raw in enumerate(dictionary.cast(pa.binary()).to_pylist()):
                try:
                    texts.append(None if raw is None else raw.decode("utf-8"))
                except UnicodeDecodeError:
                    texts.append(None)
                    bad[i] = ("a cell that is not valid UTF-8", None)
        if kind == "str":
            parsed = texts
        else:
            parsed = []
            for i, text in enumerate(texts):
                if text is None:
                    parsed.append(None)
                    continue
                try:
                    parsed.append(parse_printed(text, MAX_VALUE_DEPTH))
                except ValueSyntaxError as e:
                    parsed.append(None)
                    bad[i] = (f"bad value `{_clip(text.strip())}`: {e}",
                              "a cell that is not a value in the printed form")
    if bad:
        rows = np.flatnonzero(np.isin(indices, np.fromiter(bad, dtype=np.int64)))
        row = int(rows[0])
        problem, hidden = bad[int(indices[row])]
        raise _Bad(row, problem, hidden)
    values = np.empty(len(parsed), dtype=object)
    values[:] = parsed
    with no_gc():
        return values[indices].tolist()


def _problem_of_type(col: pa.Array) -> _Bad:
    t = col.type
    if col.null_count == len(col) and len(col):
        return _Bad(0, "a null, not a value")
    return _Bad(0, f"a {t} column; only integer, floating-point, string and binary columns "
                   "can be loaded")


def _csv_overflow(path: str, name: str, raw: str):
    """A CSV column pyarrow inferred as float although every cell is an
    integer: one of them does not fit in i64 (an Int out of range, not a
    Float). The first such row as a :class:`_Bad`, or None (a Float column)."""
    try:
        import pyarrow.csv as csv
        text = csv.read_csv(path, convert_options=csv.ConvertOptions(
            column_types={raw: pa.string()}, include_columns=[raw],
            strings_can_be_null=False)).column(raw).combine_chunks()
    except (pa.ArrowException, OSError):
        return None
    if not pc.all(pc.match_substring_regex(text, r"^\s*-?[0-9]+\s*$")).as_py():
        return None
    for i, cell in enumerate(text.to_pylist()):
        if not INT_MIN <= int(cell) <= INT_MAX:
            return _Bad(i, f"{_clip(cell.strip())} does not fit in a signed 64-bit integer",
                        "an Int that does not fit in a signed 64-bit integer")
    return None


def _raw_csv_name(path: str, name: str) -> str:
    """The header name of column ``name`` (with its tag, if any)."""
    for raw in csv_header(path):
        m = _CSV_TAG.fullmatch(raw)
        if (m.group(1) if m else raw) == name:
            return raw
    return name


def as_table(obj) -> pa.Table | None:
    """A pyarrow Table of a Table, a RecordBatch, a pandas or a polars
    DataFrame (neither library imported here: only an object of theirs is
    converted, by its own module); None for anything else."""
    if isinstance(obj, pa.Table):
        return obj
    if isinstance(obj, pa.RecordBatch):
        return pa.Table.from_batches([obj])
    module = type(obj).__module__ or ""
    if module.startswith("pandas") and type(obj).__name__ == "DataFrame":
        table = pa.Table.from_pandas(obj, preserve_index=False)
        # pyarrow reads NaN in a numpy float column as a null; here it is
        # the Float NaN (what peek_pandas gives for one). pd.NA stays a null.
        for i, dtype in enumerate(obj.dtypes):
            if getattr(dtype, "kind", None) == "f" and table.column(i).null_count:
                table = table.set_column(i, table.field(i), pa.array(obj.iloc[:, i].to_numpy()))
        return table
    if module.startswith("polars") and type(obj).__name__ == "DataFrame":
        return obj.to_arrow()
    return None


def table_to_batch(table: pa.Table, shown: str, path: str | None, key=None, val=None,
                   diff=None, quote: bool = True, head: str | None = None):
    """Validate and convert a whole table: an :class:`IntColumns` or a list of
    rows. One :class:`DataFileError` for the first problem; nothing else
    happens (the caller stages only what this returns). ``quote``: False
    for a network client (SPEC E2): messages name columns it did not name by
    position (a CSV header is the file's text) and never quote a cell.
    ``path``: the file read (None: a table in memory); ``head``: how
    messages begin (default ``load "<shown>"``)."""
    head = f'load "{shown}"' if head is None else head
    names = table.column_names
    named = set(key or ()) | set(val or ()) | ({diff} if diff is not None else set())

    def label(name):
        return f'column "{name}"' if quote or name in named else f"column {names.index(name) + 1}"
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        if quote:
            raise DataFileError(f'{head}: column "{twice[0]}" appears more than once; '
                                "give every column its own name")
        first = min(i for i, c in enumerate(names) if c in twice)
        second = names.index(names[first], first + 1)
        raise DataFileError(f"{head}: columns {first + 1} and {second + 1} have the "
                            "same name; give every column its own name")

    def check(cols, what):
        for c in cols:
            if c not in names:
                known = (f"columns: {', '.join(names) or 'none'}" if quote
                         else f"the file has {len(names)} columns")
                raise DataFileError(f'{head}: {what} names no column "{c}" ({known})')
    if diff is not None:
        check([diff], "diff=")
    if val is not None:
        check(val, "val=")
    if key is not None:
        check(key, "key=")
    if key is None and val is None and diff is None:
        key, val, diff = _saved_layout(table)
    val = tuple(val or ())
    if key is None:
        key = tuple(c for c in names if c not in val and c != diff)
    count = table.num_rows
    is_csv = path is not None and path.lower().endswith(".csv")

    columns: dict = {}

    def column(name):
        if name not in columns:
            field = table.schema.field(name)
            col = table.column(name).combine_chunks()
            t = col.type
            value_t = t.value_type if pa.types.is_dictionary(t) else t
            try:
                if pa.types.is_null(t) and not len(col):
                    # a CSV of a header alone: no cell says what the column holds
                    columns[name] = ("int", np.zeros(0, dtype=np.int64))
                elif is_printed(field) and _is_str_type(value_t):
                    columns[name] = ("printed", _text_column(col, "printed"))
                elif _is_str_type(value_t):
                    columns[name] = ("str", _text_column(col, "str"))
                elif _is_bin_type(value_t):
                    columns[name] = ("bin", _text_column(col, "bin"))
                elif pa.types.is_integer(value_t):
                    columns[name] = ("int", _int_column(col.cast(value_t) if t != value_t
                                                        else col))
                elif pa.types.is_floating(value_t):
                    if is_csv:
                        bad = _csv_overflow(path, name, _raw_csv_name(path, name))
                        if bad is not None:
                            raise bad
                    columns[name] = ("float", _float_column(col.cast(value_t) if t != value_t
                                                            else col))
                else:
                    raise _problem_of_type(col)
            except _Bad as bad:
                raise DataFileError(f"{head}: {label(name)}, row {bad.row + 1}: "
                                    f"{bad.problem if quote else bad.hidden}") from None
        return columns[name]

    diffs = None
    if diff is not None:
        kind, d = column(diff)
        if kind != "int":
            raise DataFileError(f"{head}: diff {label(diff)} must hold integers")
        zero = np.nonzero(d == 0)[0]
        if len(zero):
            raise DataFileError(f"{head}: {label(diff)}, row {int(zero[0]) + 1}: "
                                "diff 0 changes nothing")
        diffs = d
    key_cols = [column(c) for c in key]
    val_cols = [column(c) for c in val]
    if all(kind == "int" for kind, _ in key_cols + val_cols):
        return IntColumns([c for _, c in key_cols], [c for _, c in val_cols], diffs, count)
    with no_gc():
        keys = _values(key_cols, count)
        vals = _values(val_cols, count)
        ds = repeat(1, count) if diffs is None else diffs.tolist()
        return list(zip(keys, vals, ds))


def _cell_values(kind: str, c) -> list:
    if kind == "int":
        return c.tolist()
    if kind == "float":
        return floats(c)
    return c


def _values(cols: list, count: int) -> list:
    """One printed column is its values; otherwise a Tuple of the columns'
    values per row (a one-column key is a one-field Tuple)."""
    if not cols:
        return [()] * count
    if len(cols) == 1 and cols[0][0] == "printed":
        return cols[0][1]
    return list(zip(*(_cell_values(kind, c) for kind, c in cols)))


def _saved_layout(table: pa.Table):
    """A file that `save` wrote, read back as it was written: (key, val, diff)
    column names, or ``(None, None, None)`` for the default layout."""
    names = table.column_names
    if names == ["key", "val", "diff"]:
        return ("key",), ("val",), "diff"
    if names and names[-1] == "diff":
        n = sum(1 for c in names if c.startswith("key_"))
        m = len(names) - 1 - n
        if names[:-1] == [f"key_{i}" for i in range(n)] + [f"val_{i}" for i in range(m)]:
            return tuple(names[:n]), tuple(names[n:-1]), "diff"
    return None, None, None


# ============================================================ writing


def rows_to_table(rows: list) -> pa.Table:
    """Consolidated rows ``[(key, val, diff)]`` -> save's columns, sorted as
    peek sorts them (by key, then val, in Value order)."""
    cols = from_rows(rows)
    if cols is not None:
        # Tuples of Ints of one arity: Value order is lexicographic on the fields
        fields = cols.keys + cols.vals
        diffs = np.ones(cols.count, dtype=np.int64) if cols.diffs is None else cols.diffs
        if fields:
            order = np.lexsort(fields[::-1])
            fields, diffs = [c[order] for c in fields], diffs[order]
        n = len(cols.keys)
        return _int_table(fields[:n], fields[n:], diffs)
    rows = sorted(rows, key=lambda r: (order_key(r[0]), order_key(r[1])))
    with no_gc():
        keys = [k for k, _, _ in rows]
        vals = [v for _, v, _ in rows]
        diffs = pa.array([d for _, _, d in rows], type=pa.int64())
    key_cols, val_cols = _flat_columns(keys), _flat_columns(vals)
    if rows and key_cols is not None and val_cols is not None:
        data = {f"key_{i}": c for i, c in enumerate(key_cols)}
        data.update({f"val_{i}": c for i, c in enumerate(val_cols)})
        data["diff"] = diffs
        return pa.Table.from_pydict(data)
    printed = pa.field("key", pa.string(), metadata=PRINTED)
    return pa.Table.from_arrays(
        [pa.array([format_value(k) for k in keys], type=pa.string()),
         pa.array([format_value(v) for v in vals], type=pa.string()), diffs],
        schema=pa.schema([printed, printed.with_name("val"), pa.field("diff", pa.int64())]))


_FLAT_TYPES = {int: pa.int64(), Float: pa.float64(), str: pa.string()}


def _flat_columns(values: list):
    """Arrow arrays, one per field, when every value is a Tuple of one arity
    whose fields are flat scalars of one type per position (Int, Float or
    String); None otherwise."""
    if set(map(type, values)) != {tuple} or len(set(map(len, values))) != 1:
        return None
    out = []
    for field in zip(*values):
        kinds = set(map(type, field))
        if len(kinds) != 1 or next(iter(kinds)) not in _FLAT_TYPES:
            return None
        out.append(pa.array(field, type=_FLAT_TYPES[kinds.pop()]))
    return out


def columns_to_table(parts: list) -> pa.Table:
    """Workers' ``peek_columns`` payloads (int64 column bytes, each
    consolidated and in (key, val) order) -> save's columns."""
    cols = merged(parts)
    return _int_table(cols.keys, cols.vals, cols.diffs)


def _int_table(keys, vals, diffs) -> pa.Table:
    """Save's layout for Tuples of Ints: int64 ``key_i``, ``val_i``, ``diff``."""
    data = {f"key_{i}": c for i, c in enumerate(keys)}
    data.update({f"val_{i}": c for i, c in enumerate(vals)})
    data["diff"] = diffs
    return pa.Table.from_pydict({name: pa.array(col, type=pa.int64())
                                 for name, col in data.items()})


def csv_table(table: pa.Table) -> pa.Table:
    """``table`` as a CSV says it: a printed column's name gets ``:printed``,
    a String column's ``:string``, a Float column's ``:float`` (its cells
    then text when one is a negative NaN, which pyarrow's writer would
    print as ``nan``); Int columns keep their names."""
    fields, columns = [], []
    for field, col in zip(table.schema, table.columns):
        if is_printed(field):
            field = pa.field(f"{field.name}:printed", field.type)
        elif _is_str_type(field.type):
            field = pa.field(f"{field.name}:string", field.type)
        elif pa.types.is_floating(field.type):
            a = col.to_numpy()
            negative_nan = np.isnan(a) & np.signbit(a)
            if negative_nan.any():
                col = pc.if_else(pa.array(negative_nan), pa.scalar("-nan"),
                                 pc.cast(col, pa.string()))
            field = pa.field(f"{field.name}:float", col.type)
        fields.append(field)
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def write_table(table: pa.Table, path: str, shown: str | None = None) -> None:
    """Write ``table`` to ``path`` in the format its extension names,
    atomically and durably: into a temporary sibling file (created 0600),
    given the mode of the file it replaces (never wider; a new file gets
    ``0o666 & ~umask``, the umask read without changing it), fsynced,
    renamed into place, and the directory fsynced. ``shown``: the path as
    the client wrote it, for messages (default ``path``)."""
    from .confine import adopt_owner, file_mode, fsync_dir, fsync_file
    shown = path if shown is None else shown
    fmt = file_format(shown, "save")
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise DataFileError(f'save "{shown}": cannot write there: {e.strerror or e}') from None
    os.close(fd)
    replacing = path if os.path.exists(path) else None
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq
            pq.write_table(table, tmp)
        elif fmt == "ipc":
            with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
        else:
            import pyarrow.csv as csv
            csv.write_csv(csv_table(table), tmp)
        os.chmod(tmp, adopt_owner(tmp, replacing, file_mode(replacing)))
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(directory)
    except (pa.ArrowException, OSError) as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        reason = e.strerror if isinstance(e, OSError) and e.strerror else _first_line(e)
        raise DataFileError(f'save "{shown}": cannot write it: {reason}') from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
