"""Bulk data in and out through pyarrow (SPEC C1): `load`, `save`, `peek_arrow`.

Reading a file gives a :class:`Batch` of updates, validated as a whole
before anything is staged (a load is all-or-nothing):

* :class:`ddir.server.staged.IntColumns` when every key and val field comes
  from an integer column: int64 numpy arrays, never a Python object per row
  on the intake (split by owner and sent to the workers as raw bytes);
* a list of ``(key, val, diff)`` rows otherwise (string columns hold any value).

Writing turns consolidated, sorted rows into a table with save's columns
(``key_0.. val_0.. diff`` int64 when every key/val is a Tuple of Ints of one
arity, else strings ``key``, ``val`` in the printed form plus ``diff``) and
writes it atomically.
"""

from __future__ import annotations

import os
import re
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .staged import IntColumns, from_rows, merged
from ..engine.columns import no_gc
from ..errors import DataFileError
from ..lang.value_token import ValueTokenError, parse_value_token
from ..values import INT_MAX, INT_MIN, format_value, order_key

FORMATS = {".parquet": "parquet", ".arrow": "ipc", ".feather": "ipc", ".ipc": "ipc", ".csv": "csv"}
ACCEPTED = ", ".join(FORMATS)

_INT_TEXT = re.compile(r"-?[0-9]+")


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
    message may quote the file, so it is left out."""
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
        import pyarrow.csv as csv
        return csv.read_csv(path)
    except (pa.ArrowException, OSError, ValueError) as e:
        detail = f": {_first_line(e)}" if quote else ""
        raise DataFileError(f'load "{shown}": cannot read it as {fmt}{detail}') from None


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class _Bad(Exception):
    """A bad cell: its row, the problem, and the problem without the cell's
    text (``hidden``, for a network client, SPEC E2; None: it has none)."""

    def __init__(self, row: int, problem: str, hidden: str | None = None):
        self.row, self.problem = row, problem
        self.hidden = problem if hidden is None else hidden


def _is_int_type(t) -> bool:
    return pa.types.is_integer(t)


def _is_str_type(t) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _first(mask) -> int:
    return int(pc.index(mask, True).as_py())


def _int_column(col: pa.Array) -> np.ndarray:
    if col.null_count:
        raise _Bad(_first(pc.is_null(col)), "a null, not an Int")
    if col.type == pa.uint64() and len(col):
        over = pc.greater(col, pa.scalar(INT_MAX, pa.uint64()))
        if pc.any(over).as_py():
            i = _first(over)
            raise _Bad(i, f"{col[i].as_py()} does not fit in a signed 64-bit integer",
                       "an Int that does not fit in a signed 64-bit integer")
    return col.cast(pa.int64()).to_numpy(zero_copy_only=False)


def parse_cell(text: str):
    """A string cell: the printed form (`5` is the Int 5, `(1, 2)` a Tuple), else
    the command-line value syntax (`1,2`, `_`, `tuple(1,2)`)."""
    text = text.strip()
    if _INT_TEXT.fullmatch(text):
        n = int(text)
        if not INT_MIN <= n <= INT_MAX:
            raise ValueTokenError(f"{text if len(text) <= 40 else text[:18] + '...'} "
                                  "does not fit in a signed 64-bit integer")
        return n
    return parse_value_token(text)


def _str_column(col: pa.Array) -> list:
    """Each distinct string parsed once; a Python list of values."""
    if col.null_count:
        raise _Bad(_first(pc.is_null(col)), "a null, not a value")
    encoded = col.dictionary_encode()
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    parsed, bad = [], {}
    for i, text in enumerate(encoded.dictionary.to_pylist()):
        try:
            parsed.append(parse_cell(text))
        except ValueTokenError as e:
            parsed.append(None)
            bad[i] = str(e)
    if bad:
        rows = np.nonzero(np.isin(indices, np.fromiter(bad, dtype=indices.dtype)))[0]
        row = int(rows[0])
        raise _Bad(row, bad[int(indices[row])], "a cell that is not a value")
    values = np.empty(len(parsed), dtype=object)
    values[:] = parsed
    return values[indices].tolist()


def _problem_of_type(col: pa.Array, name: str) -> _Bad:
    t = col.type
    if col.null_count == len(col) and len(col):
        return _Bad(0, "a null, not a value")
    i = _first(pc.is_valid(col)) if len(col) else 0
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return _Bad(i, f"{col[i].as_py()} is a float ({t}), not an Int", f"a float ({t}), not an Int")
    return _Bad(i, f"a {t} column; only integer and string columns can be loaded")


def _csv_number_problem(path: str, name: str, fallback: _Bad) -> _Bad:
    """A CSV column pyarrow read as float: the first cell that is not an
    integer that fits in i64 (pyarrow reads a too-large integer as float)."""
    try:
        import pyarrow.csv as csv
        text = csv.read_csv(path, convert_options=csv.ConvertOptions(
            column_types={name: pa.string()}, include_columns=[name])).column(name)
    except (pa.ArrowException, OSError):
        return fallback
    for i, cell in enumerate(text.to_pylist()):
        if cell is None:
            return _Bad(i, "a null, not an Int")
        if not _INT_TEXT.fullmatch(cell.strip()):
            return _Bad(i, f"{cell.strip()} is a float, not an Int", "a float, not an Int")
        if not INT_MIN <= int(cell) <= INT_MAX:
            return _Bad(i, f"{cell.strip()} does not fit in a signed 64-bit integer",
                        "an Int that does not fit in a signed 64-bit integer")
    return fallback


def table_to_batch(table: pa.Table, shown: str, path: str, key=None, val=None, diff=None,
                   quote: bool = True):
    """Validate and convert a whole table: an :class:`IntColumns` or a list of
    rows. One :class:`DataFileError` for the first problem; nothing else
    happens (the caller stages only what this returns). ``quote``: False
    for a network client (SPEC E2): messages name columns it did not name by
    position (a CSV header is the file's text) and never quote a cell."""
    names = table.column_names
    named = set(key or ()) | set(val or ()) | ({diff} if diff is not None else set())

    def label(name):
        return f'column "{name}"' if quote or name in named else f"column {names.index(name) + 1}"
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        if quote:
            raise DataFileError(f'load "{shown}": column "{twice[0]}" appears more than once; '
                                "give every column its own name")
        first = min(i for i, c in enumerate(names) if c in twice)
        second = names.index(names[first], first + 1)
        raise DataFileError(f'load "{shown}": columns {first + 1} and {second + 1} have the '
                            "same name; give every column its own name")

    def check(cols, what):
        for c in cols:
            if c not in names:
                known = (f"columns: {', '.join(names) or 'none'}" if quote
                         else f"the file has {len(names)} columns")
                raise DataFileError(f'load "{shown}": {what} names no column "{c}" ({known})')
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

    columns: dict = {}

    def column(name):
        if name not in columns:
            col = table.column(name).combine_chunks()
            try:
                if pa.types.is_null(col.type) and not len(col):
                    # a CSV of a header alone: no cell says what the column holds
                    columns[name] = ("int", np.zeros(0, dtype=np.int64))
                elif _is_int_type(col.type):
                    columns[name] = ("int", _int_column(col))
                elif _is_str_type(col.type):
                    columns[name] = ("str", _str_column(col))
                elif pa.types.is_dictionary(col.type) and _is_str_type(col.type.value_type):
                    columns[name] = ("str", _str_column(col.cast(col.type.value_type)))
                else:
                    bad = _problem_of_type(col, name)
                    if path.lower().endswith(".csv") and pa.types.is_floating(col.type):
                        bad = _csv_number_problem(path, name, bad)
                    raise bad
            except _Bad as bad:
                raise DataFileError(f'load "{shown}": {label(name)}, row {bad.row + 1}: '
                                    f"{bad.problem if quote else bad.hidden}") from None
        return columns[name]

    diffs = None
    if diff is not None:
        kind, d = column(diff)
        if kind != "int":
            raise DataFileError(f'load "{shown}": diff {label(diff)} must hold integers')
        zero = np.nonzero(d == 0)[0]
        if len(zero):
            raise DataFileError(f'load "{shown}": {label(diff)}, row {int(zero[0]) + 1}: '
                                "diff 0 changes nothing")
        diffs = d
    key_cols = [column(c) for c in key]
    val_cols = [column(c) for c in val]
    if all(kind == "int" for kind, _ in key_cols + val_cols):
        return IntColumns([c for _, c in key_cols], [c for _, c in val_cols], diffs, count)
    with no_gc():
        keys = _values(key_cols, count)
        vals = _values(val_cols, count)
        ds = [1] * count if diffs is None else diffs.tolist()
        return list(zip(keys, vals, ds))


def _values(cols: list, count: int) -> list:
    """One column of string cells is its values; otherwise a Tuple of the
    columns' values (an int column gives Ints) per row."""
    if not cols:
        return [()] * count
    if len(cols) == 1 and cols[0][0] == "str":
        return cols[0][1]
    return list(zip(*(c.tolist() if kind == "int" else c for kind, c in cols)))


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
    return pa.table({"key": pa.array([format_value(k) for k, _, _ in rows], type=pa.string()),
                     "val": pa.array([format_value(v) for _, v, _ in rows], type=pa.string()),
                     "diff": pa.array([d for _, _, d in rows], type=pa.int64())})


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
    return pa.table({name: pa.array(col, type=pa.int64()) for name, col in data.items()})


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
            csv.write_csv(table, tmp)
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
