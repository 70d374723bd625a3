"""Checkpoints (SPEC C5): ``checkpoint <dir>`` and ``ddir --restore <dir>``.

A checkpoint is a directory: ``manifest.json`` (format, epoch, every
program in install order with its origin, source text, IR and its format
version, inputs, imports, exports, the functions it calls, why it failed or
is read-only; generated sources by their recipe), one Arrow IPC file per
program input holding its journal (server.journal: every update staged for
it, the past folded), consolidated per (time, key, val), and one per
exported trace with its contents (save's columns). Input files have int64
columns ``time``, ``key_i``, ``val_i``, ``diff`` when every key and val is
a Tuple of Ints of one arity, else ``time``, printed ``key`` and ``val``,
and ``diff``. Updates at times >= the epoch are the staged future updates.
The manifest records each data file's row count and SHA-256, and its own
``checksum`` (SHA-256 of its other fields as canonical JSON), so a damaged
checkpoint is found before anything is restored (both are optional when
reading: a hand-edited manifest may drop them).

Reading checks everything first (:func:`_read_checkpoint`): the manifest's
every field, every data file's checksum, schema and values, each program's
IR; any problem is one :class:`CheckpointError` naming the directory, the
file and what is wrong, raised before the server is changed.

Restore replays history rather than loading operator state: a fresh server
installs each program at the epoch it was installed at and stages its
stored updates; the epochs in between are closed in one step each
(dataflows are deterministic functions of their accumulated timed inputs,
so only the contents at each install and at the end matter), and every
record the replay makes is discarded. Programs that had failed, and
programs that cannot run here (read-only), come back as stand-ins holding
their exports' stored contents (server.standin). Afterwards every command
prints what the original server would have printed, for any number of
workers.

Atomicity: everything is written into a sibling temporary directory and
fsynced, then swapped with the target in one ``renameat2(RENAME_EXCHANGE)``
(Linux), the old one removed after. Where that call is missing the old
directory is renamed aside first; a crash between the two renames leaves it
there as ``.<name>.old``, which :func:`restore` falls back to.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import json
import os
import re
import shutil
import stat

from . import commands as C
from .confine import fsync_dir as _fsync_dir, process_umask
from .functions import missing_names
from .generated import parse_recipe
from .journal import rows_of
from ..errors import CheckpointError, CommandError, DdirError, ServerStopped
from ..values import INT_MAX, INT_MIN, format_value, parse_printed

FORMAT = "ddir-checkpoint"
VERSION = 1
MANIFEST = "manifest.json"

# tests: DDIR_CHECKPOINT_FAULT=<point> kills the process (SIGKILL) at that point
_FAULT = os.environ.get("DDIR_CHECKPOINT_FAULT")


def _point(name: str) -> None:
    if _FAULT == name:
        import signal
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------- writing

def _input_table(batches: list):
    """One input's updates ``[(time, rows or IntColumns)]``, consolidated per
    (time, key, val), as a table: int64 ``time``, ``key_i``, ``val_i``,
    ``diff`` when every key and val is a Tuple of Ints of one arity (read
    back without a Python object per row), else ``key``/``val`` in the
    printed form and ``diff`` (its decimal text if a sum left int64)."""
    import numpy as np
    import pyarrow as pa
    from . import staged
    from .journal import consolidate
    timed = []
    for time, batch in batches:
        cols = batch if isinstance(batch, staged.IntColumns) else staged.from_rows(batch)
        if cols is None:
            break
        timed.append(staged.IntColumns([np.full(cols.count, time, dtype=np.int64)] + list(cols.keys),
                                       cols.vals, cols.diffs, cols.count))
    if len(timed) == len(batches) and len({(len(c.keys), len(c.vals)) for c in timed}) == 1:
        merged = consolidate(timed)
        if isinstance(merged, staged.IntColumns):
            data = {"time": merged.keys[0]}
            data.update({f"key_{i}": c for i, c in enumerate(merged.keys[1:])})
            data.update({f"val_{i}": c for i, c in enumerate(merged.vals)})
            data["diff"] = merged.diffs
            return pa.Table.from_pydict({k: pa.array(v, type=pa.int64())
                                         for k, v in data.items()})
    acc: dict = {}
    for time, batch in batches:
        for k, v, d in rows_of(batch):
            key = (time, format_value(k), format_value(v))
            acc[key] = acc.get(key, 0) + d
    items = sorted((item for item in acc.items() if item[1]))
    diffs = [d for _, d in items]
    wide = any(not INT_MIN <= d <= INT_MAX for d in diffs)
    return pa.Table.from_pydict({
        "time": pa.array([t for (t, _, _), _ in items], type=pa.int64()),
        "key": pa.array([k for (_, k, _), _ in items], type=pa.string()),
        "val": pa.array([v for (_, _, v), _ in items], type=pa.string()),
        "diff": (pa.array([str(d) for d in diffs], type=pa.string()) if wide
                 else pa.array(diffs, type=pa.int64())),
    })


def _write_ipc(path: str, table) -> str:
    """Write ``table`` as an Arrow IPC file; its SHA-256 (hex)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue()
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return hashlib.sha256(data).hexdigest()


def _manifest_checksum(manifest: dict) -> str:
    """SHA-256 of the manifest's fields other than ``checksum``, as
    canonical JSON (what ``json.load`` gives back encodes the same)."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()




def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False
    where that is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    return False


def _program_record(core, entry, i: int, tmp: str) -> tuple:
    """(manifest record, input rows, of them staged for the future) of one
    program, its input and export files written into ``tmp``."""
    from ..ir.codec import IR_VERSION, packb
    record = {"name": entry.name, "origin": entry.origin, "path": entry.path,
              "file": entry.file, "since": entry.since, "inputs": list(entry.inputs),
              "imports": list(entry.imports), "exports": list(entry.exports),
              "functions": list(entry.functions), "failed": entry.failed,
              "readonly": entry.readonly}
    if entry.origin != "program":
        record["recipe"] = entry.name
        return record, 0, 0
    record["source"] = entry.source
    if entry.program is not None:
        record["ir_version"] = IR_VERSION
        record["ir"] = base64.b64encode(packb(entry.program)).decode("ascii")
    else:  # read-only because its IR could not be read: kept as it came
        record["ir_version"], record["ir"] = entry.stored_ir
    journal = core.journal.get(entry.name)
    record["folded_at"] = journal.frontier if journal is not None else None
    files, rows, future = {}, 0, 0
    by_input: dict = {}
    for n, time, batch in (journal.entries() if journal else ()):
        by_input.setdefault(n, []).append((time, batch))
    for n, batches in sorted(by_input.items()):
        name = f"p{i}_input{n}.arrow"
        table = _input_table(batches)
        if table.num_rows == 0:
            continue
        digest = _write_ipc(os.path.join(tmp, name), table)
        files[str(n)] = {"file": name, "rows": table.num_rows, "sha256": digest}
        rows += table.num_rows
        times = table.column("time").to_numpy()
        future += int((times >= core.epoch).sum())
    record["input_files"] = files
    exports = {}
    for j, trace in enumerate(entry.exports):
        _, table, _ = core.table(trace)
        name = f"p{i}_export{j}.arrow"
        digest = _write_ipc(os.path.join(tmp, name), table)
        exports[trace] = {"file": name, "rows": table.num_rows, "sha256": digest}
    record["export_files"] = exports
    return record, rows, future


_DATA_FILE = re.compile(r"p[0-9]+_(?:input|export)[0-9]+\.arrow")


def _checkpoint_files_only(directory: str) -> bool:
    """``directory`` holds nothing but regular files with the names a
    checkpoint writes (``manifest.json``, ``p<i>_input<n>.arrow``,
    ``p<i>_export<j>.arrow``): no other file, no subdirectory, no link."""
    try:
        if os.path.islink(directory) or not os.path.isdir(directory):
            return False
        for name in os.listdir(directory):
            if name != MANIFEST and not _DATA_FILE.fullmatch(name):
                return False
            if not stat.S_ISREG(os.lstat(os.path.join(directory, name)).st_mode):
                return False
    except OSError:
        return False
    return True


def is_checkpoint(directory: str) -> bool:
    """A directory ``checkpoint`` may replace (SPEC E2): empty, or a ddir
    checkpoint: its ``manifest.json`` says so (``"format":
    "ddir-checkpoint"``) and it holds only the files a checkpoint writes.
    Anything else (a web app's ``public/`` with a ``manifest.json`` of its
    own) is never deleted."""
    if not _checkpoint_files_only(directory):
        return False
    if not os.listdir(directory):
        return True
    try:
        with open(os.path.join(directory, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def write_checkpoint(core, path: str, resolved: str | None = None) -> dict:
    """Write ``core`` (a registry Server) to directory ``path`` (``resolved``:
    where, when a network client named it, SPEC E2; symlinks are followed,
    so the directory a link names is the one replaced); the ``checkpoint``
    record. An existing directory is replaced only when it is a checkpoint
    (:func:`is_checkpoint`); the sibling ``.<name>.tmp`` / ``.<name>.old``
    a checkpoint uses are removed only when they hold a checkpoint's files
    alone; the new directory keeps the mode of the one it replaces."""
    target = os.path.realpath(resolved or path)
    parent, base = os.path.split(target)
    if not base or not os.path.basename(os.path.abspath(path)):
        raise CommandError(f'checkpoint "{path}": needs a directory name')
    if not os.path.isdir(parent):
        raise CommandError(f'checkpoint "{path}": no such directory "{parent}"')
    if os.path.exists(target) and not os.path.isdir(target):
        raise CommandError(f'checkpoint "{path}": exists and is not a directory')
    refused = f'checkpoint "{path}": is a directory that holds no checkpoint (refusing to replace it)'
    if os.path.isdir(target) and not is_checkpoint(target):
        raise CommandError(refused)
    tmp = os.path.join(parent, f".{base}.tmp")
    old = os.path.join(parent, f".{base}.old")
    for sibling in (tmp, old):
        if os.path.lexists(sibling) and not _checkpoint_files_only(sibling):
            raise CommandError(f'checkpoint "{path}": "{os.path.basename(sibling)}" beside it '
                               "is not a checkpoint's (refusing to remove it)")
    if not os.path.exists(target) and os.path.isdir(old) and is_checkpoint(old):
        os.rename(old, target)  # an interrupted swap: put it back
    shutil.rmtree(tmp, ignore_errors=True)
    try:  # its mode is set once it is written: never wider than the one it replaces
        mode = (os.stat(target).st_mode & 0o777 if os.path.isdir(target)
                else 0o777 & ~process_umask())
        os.mkdir(tmp, 0o700)
    except OSError as e:
        raise CommandError(f'checkpoint "{path}": cannot write beside it: {e.strerror}') from None
    try:
        programs, total, staged = [], 0, 0
        for i, entry in enumerate(core.programs.values()):
            record, rows, future = _program_record(core, entry, i, tmp)
            programs.append(record)
            total += rows
            staged += future
        _point("files")
        manifest = {"format": FORMAT, "version": VERSION, "epoch": core.epoch,
                    "max_rounds": core.max_rounds, "programs": programs,
                    "rows": total, "staged_future_rows": staged}
        manifest["checksum"] = _manifest_checksum(manifest)
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        _fsync_dir(tmp)
        _point("manifest")
        if os.path.exists(target):
            if not is_checkpoint(target):  # changed while this one was written
                raise CommandError(refused)
            if _exchange(tmp, target):
                _fsync_dir(parent)
                _point("swap")
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                shutil.rmtree(old, ignore_errors=True)
                os.rename(target, old)
                _point("aside")
                os.rename(tmp, target)
                _fsync_dir(parent)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
            _fsync_dir(parent)
    except CommandError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CommandError(f'checkpoint "{path}": {e.strerror or e}') from None
    return {"kind": "checkpoint", "dir": path, "epoch": core.epoch,
            "programs": len(programs), "rows": total}


# ---------------------------------------------------------------- reading

REPLAY_BOUND = 1 << 62   # the restore's replay runs without an iteration bound

# How deeply a stored value may nest: an input's values passed feed/load's
# limit (100, ddir.lang.value_token.MAX_VALUE_DEPTH); an export's may be
# computed deeper, but not as deep as msgpack refuses (511) to send it.
INPUT_VALUE_DEPTH = 100
EXPORT_VALUE_DEPTH = 400

_ORIGINS = ("program", "generated", "clock")


class _Damaged(Exception):
    """What is wrong with a checkpoint: the message after ``restore "<dir>": ``."""


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else f"{text[:width // 2 - 2]}...{text[-(width // 2 - 2):]}"


def _show(value) -> str:
    """A manifest value for a message (JSON, shortened)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return _clip(text, 40)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return _clip(text[0] if text else type(error).__name__, 120)


def _is_nat(v) -> bool:
    return type(v) is int and 0 <= v <= INT_MAX


def _is_str(v) -> bool:
    return type(v) is str


def _is_opt_str(v) -> bool:
    return v is None or type(v) is str


def _list_of(ok):
    return lambda v: type(v) is list and all(ok(x) for x in v)


def _is_file_name(v) -> bool:
    """A plain file name inside the checkpoint directory (no path)."""
    return (type(v) is str and v not in ("", ".", "..") and "/" not in v and "\\" not in v
            and "\0" not in v)


_MISSING = object()


def _field(record: dict, key: str, ok, what: str, where: str, default=_MISSING):
    if key not in record:
        if default is not _MISSING:
            return default
        raise _Damaged(f'{where}has no "{key}"')
    value = record[key]
    if not ok(value):
        raise _Damaged(f'{where}"{key}" must be {what}, got {_show(value)}')
    return value


def _read_manifest(path: str) -> tuple:
    """(directory actually read, manifest)."""
    target = os.path.abspath(path)
    parent, base = os.path.split(target)
    candidates = [target, os.path.join(parent, f".{base}.old")]
    for d in candidates:
        try:
            with open(os.path.join(d, MANIFEST), encoding="utf-8") as f:
                return d, json.load(f)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
            raise CheckpointError(f'restore "{path}": cannot read its manifest: '
                                  f"{_one_line(e)}") from None
        except RecursionError:  # JSON nested too deeply for the json module
            raise CheckpointError(f'restore "{path}": cannot read its manifest: '
                                  "nested too deeply") from None
    raise CheckpointError(f'restore "{path}": no checkpoint there (no {MANIFEST})')


def _check_manifest(m) -> None:
    """The manifest's top level and every program record's fields."""
    where = f"{MANIFEST}: "
    if type(m) is not dict:
        raise _Damaged(f"{where}must be a JSON object, got {_show(m)}")
    if m.get("format") != FORMAT or m.get("version") != VERSION:
        raise _Damaged(f"not a ddir checkpoint of version {VERSION}")
    epoch = _field(m, "epoch", _is_nat, "a non-negative integer", where)
    _field(m, "max_rounds", lambda v: v is None or (_is_nat(v) and v >= 1),
           "a positive integer or null", where, None)
    programs = _field(m, "programs", lambda v: type(v) is list, "a list", where)
    names: set = set()
    published: set = set()   # traces exported by the programs so far
    for i, p in enumerate(programs):
        _check_program(p, i, epoch, names, published)
    checksum = _field(m, "checksum", _is_str, "a string", where, None)
    try:
        expected = _manifest_checksum(m) if checksum is not None else None
    except RecursionError:  # a field nested about as deeply as json reads
        raise _Damaged(f"{where}nested too deeply") from None
    if checksum is not None and checksum != expected:
        raise _Damaged(f"{where}damaged: its contents do not match its checksum")


def _check_program(p, i: int, epoch: int, names: set, published: set) -> None:
    where = f"{MANIFEST}: program {i}: "
    if type(p) is not dict:
        raise _Damaged(f"{where}must be a JSON object, got {_show(p)}")
    name = _field(p, "name", lambda v: _is_str(v) and v != "", "a non-empty string", where)
    where = f'{MANIFEST}: program {i} ("{_clip(name, 40)}"): '
    if name in names:
        raise _Damaged(f"{where}a second program of that name")
    names.add(name)
    origin = _field(p, "origin", lambda v: v in _ORIGINS, "one of " + ", ".join(
        f'"{o}"' for o in _ORIGINS), where)
    since = _field(p, "since", _is_nat, "a non-negative integer", where)
    if since > epoch:
        raise _Damaged(f'{where}"since" ({since}) is after the checkpoint\'s epoch ({epoch})')
    if origin != "program":
        recipe = _field(p, "recipe", _is_str, "a string", where)
        try:
            parsed = parse_recipe(recipe)
        except ValueError as e:  # RecipeError
            raise _Damaged(f"{where}{e}") from None
        if parsed is None or parsed.name != name or parsed.origin != origin:
            raise _Damaged(f'{where}"recipe" {_show(recipe)} is not the {origin} source "{name}"')
        published.add(name)
        return
    for key in ("path", "file"):
        _field(p, key, _is_str, "a string", where)
    _field(p, "source", _is_opt_str, "a string or null", where, None)
    inputs = _field(p, "inputs", _list_of(_is_nat), "a list of input numbers", where)
    imports = _field(p, "imports", _list_of(_is_str), "a list of trace names", where)
    exports = _field(p, "exports", _list_of(_is_str), "a list of trace names", where)
    _field(p, "functions", _list_of(_is_str), "a list of function names", where, [])
    for key in ("failed", "readonly"):
        _field(p, key, _is_opt_str, "a string or null", where, None)
    _field(p, "ir_version", lambda v: type(v) is int, "an integer", where, 1)
    _field(p, "ir", _is_str, "a string", where)
    _field(p, "folded_at", lambda v: v is None or type(v) is int, "an integer or null", where, None)
    if len(set(exports)) != len(exports):
        raise _Damaged(f'{where}"exports" names a trace twice')
    for trace in imports:
        try:
            generated = parse_recipe(trace) is not None
        except ValueError:
            generated = False
        if trace not in published and not generated:
            raise _Damaged(f'{where}imports "{_clip(trace, 40)}", which no earlier program exports')
    for trace in exports:
        if trace in published:
            raise _Damaged(f'{where}exports "{_clip(trace, 40)}", which an earlier program exports')
    published.update(exports)
    for key, allowed, what in (("input_files", {str(n) for n in inputs}, "one of its inputs"),
                               ("export_files", set(exports), "one of its exports")):
        files = _field(p, key, lambda v: type(v) is dict, "an object", where, {})
        for k, info in files.items():
            if k not in allowed:
                raise _Damaged(f'{where}"{key}" has an entry {_show(k)} that is not {what}')
            at = f'{where}"{key}" entry {_show(k)}: '
            if type(info) is not dict:
                raise _Damaged(f"{at}must be a JSON object, got {_show(info)}")
            _field(info, "file", _is_file_name, "a file name", at)
            _field(info, "rows", _is_nat, "a non-negative integer", at)
            _field(info, "sha256", _is_str, "a string", at, None)


def _file_bytes(directory: str, info: dict):
    """The bytes of a data file, checked against the manifest's checksum."""
    name = info["file"]
    try:
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise _Damaged(f"{name}: missing") from None
    except OSError as e:
        raise _Damaged(f"{name}: cannot be read ({e.strerror or e})") from None
    digest = info.get("sha256")
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        raise _Damaged(f"{name}: damaged: its contents do not match the checksum in {MANIFEST}")
    return data


def _read_table(directory: str, info: dict, timed: bool):
    """(table, "int" | "printed") of a checked data file: an Arrow IPC file
    with the columns a checkpoint writes, no nulls, the rows the manifest
    says."""
    import pyarrow as pa
    import pyarrow.ipc as ipc
    name = info["file"]
    data = _file_bytes(directory, info)
    try:
        table = ipc.open_file(pa.BufferReader(data)).read_all()
        table.validate(full=True)
    except (pa.ArrowException, ValueError, OSError, EOFError, IndexError) as e:
        raise _Damaged(f"{name}: not an Arrow IPC file ({_one_line(e)})") from None
    names = table.column_names
    if len(set(names)) != len(names):
        raise _Damaged(f"{name}: a column name appears twice")
    int64, string = pa.int64(), pa.string()

    def want(column: str, *types) -> None:
        if column not in names:
            raise _Damaged(f'{name}: no column "{column}"')
        if table.schema.field(column).type not in types:
            raise _Damaged(f'{name}: column "{column}" is {table.schema.field(column).type}, '
                           f"not {' or '.join(str(t) for t in types)}")

    if timed:
        want("time", int64)
    if "key" in names or "val" in names:
        layout = "printed"
        want("key", string)
        want("val", string)
        want("diff", *((int64, string) if timed else (int64,)))
        expected = {"key", "val", "diff"}
    else:
        # int64 fields; an export's fields may also be float64 or utf8 (save's
        # typed columns of Floats and Strings, SPEC C1)
        layout = "int"
        want("diff", int64)
        expected = {"diff"}
        for prefix in ("key_", "val_"):
            count = sum(1 for c in names if c.startswith(prefix))
            for j in range(count):
                want(f"{prefix}{j}", int64, pa.float64(), string)
                expected.add(f"{prefix}{j}")
                if table.schema.field(f"{prefix}{j}").type != int64:
                    layout = "typed"
    if timed:
        expected.add("time")
    extra = [c for c in names if c not in expected]
    if extra:
        raise _Damaged(f'{name}: unexpected column "{_clip(extra[0], 40)}"')
    for c in names:
        if table.column(c).null_count:
            raise _Damaged(f'{name}: column "{c}" has nulls')
    if table.num_rows != info["rows"]:
        raise _Damaged(f"{name}: holds {table.num_rows} rows; {MANIFEST} says {info['rows']}")
    return table, layout


def _printed(name: str, column: str, texts, depth: int) -> list:
    out = []
    for r, text in enumerate(texts):
        try:
            out.append(parse_printed(text, depth))
        except ValueError as e:  # ValueSyntaxError, ValueTooDeepError
            raise _Damaged(f'{name}: row {r + 1}: column "{column}": bad value '
                           f"`{_clip(text, 40)}`: {e}") from None
    return out


def _by_time(directory: str, info: dict) -> list:
    """[(time, rows or IntColumns)] of one checked input file, in time order."""
    import numpy as np
    from .staged import IntColumns
    name = info["file"]
    table, layout = _read_table(directory, info, timed=True)
    times = table.column("time").to_numpy()
    if len(times) and times.min() < 0:
        r = int(np.flatnonzero(times < 0)[0])
        raise _Damaged(f"{name}: row {r + 1}: time {int(times[r])} is negative")
    if layout != "int":
        if layout == "printed":
            keys = _printed(name, "key", table.column("key").to_pylist(), INPUT_VALUE_DEPTH)
            vals = _printed(name, "val", table.column("val").to_pylist(), INPUT_VALUE_DEPTH)
        else:
            keys, vals = _typed_fields(table, "key_"), _typed_fields(table, "val_")
        diffs = table.column("diff").to_pylist()
        by_time: dict = {}
        for r, (t, k, v, d) in enumerate(zip(times.tolist(), keys, vals, diffs)):
            try:
                d = int(d)  # a sum beyond int64 is stored as decimal text
            except ValueError:
                raise _Damaged(f'{name}: row {r + 1}: column "diff": `{_clip(d, 40)}` is not an '
                               "integer") from None
            by_time.setdefault(t, []).append((k, v, d))
        return sorted(by_time.items())
    names = table.column_names
    cols = {c: table.column(c).to_numpy() for c in names}
    keys = [cols[f"key_{i}"] for i in range(sum(c.startswith("key_") for c in names))]
    vals = [cols[f"val_{i}"] for i in range(sum(c.startswith("val_") for c in names))]
    diffs = cols["diff"]
    order = np.argsort(times, kind="stable")
    times = times[order]
    starts = np.flatnonzero(np.r_[True, times[1:] != times[:-1]]) if len(times) else []
    ends = list(starts[1:]) + [len(times)]
    out = []
    for a, b in zip(starts, ends):
        index = order[a:b]
        out.append((int(times[a]), IntColumns([c[index] for c in keys], [c[index] for c in vals],
                                              diffs[index], int(b - a))))
    return out


def _trace_rows(directory: str, info: dict) -> list:
    """[(key, val, diff)] of one checked export file (save's columns)."""
    name = info["file"]
    table, layout = _read_table(directory, info, timed=False)
    diffs = table.column("diff").to_pylist()
    if layout == "printed":
        keys = _printed(name, "key", table.column("key").to_pylist(), EXPORT_VALUE_DEPTH)
        vals = _printed(name, "val", table.column("val").to_pylist(), EXPORT_VALUE_DEPTH)
        return list(zip(keys, vals, diffs))
    return list(zip(_typed_fields(table, "key_"), _typed_fields(table, "val_"), diffs))


def _typed_fields(table, prefix: str) -> list:
    """Tuples of the columns ``{prefix}0..``, int64 as Ints, float64 as
    Floats, utf8 as Strings."""
    import pyarrow as pa
    from .bulk import floats
    count = sum(c.startswith(prefix) for c in table.column_names)
    columns = []
    for j in range(count):
        col = table.column(f"{prefix}{j}")
        columns.append(floats(col.to_numpy()) if col.type == pa.float64() else col.to_pylist())
    return list(zip(*columns)) if columns else [()] * table.num_rows


def _ir_problem(program) -> str | None:
    """Why a decoded IR is not a well-formed program (None when it is):
    ids dense, every node reading earlier nodes, every scope inside an
    earlier one, orders, vars and exports naming real nodes and scopes."""
    from ..ir import nodes as N
    if not isinstance(program, N.Program):
        return "not a program"
    nodes, scopes = program.nodes, program.scopes
    if type(nodes) is not tuple or type(scopes) is not tuple or not scopes:
        return "no nodes or no scopes"

    def node_id(i, before=None) -> bool:
        return type(i) is int and 0 <= i < (len(nodes) if before is None else before)
    for k, s in enumerate(scopes):
        if not isinstance(s, N.Scope) or s.id != k or (s.parent != -1 if k == 0 else
                                                      not (type(s.parent) is int and 0 <= s.parent < k)):
            return f"scope {k} is malformed"
        if type(s.order) is not tuple or type(s.vars) is not tuple:
            return f"scope {k} is malformed"
        for item in s.order:
            if not (type(item) is tuple and len(item) == 2 and (
                    (item[0] == "node" and node_id(item[1]))
                    or (item[0] == "scope" and type(item[1]) is int and k < item[1] < len(scopes)))):
                return f"scope {k} lists an item that does not exist"
        for pair in s.vars:
            if not (type(pair) is tuple and len(pair) == 2 and all(node_id(i) for i in pair)):
                return f"scope {k} has a malformed var"
    for k, n in enumerate(nodes):
        if (not isinstance(n, N.Node) or n.id != k or type(n.scope) is not int
                or not 0 <= n.scope < len(scopes) or type(n.inputs) is not tuple
                or not all(node_id(i, k) for i in n.inputs)):
            return f"node {k} is malformed"
    if type(program.exports) is not tuple or not all(
            type(e) is tuple and len(e) == 2 and type(e[0]) is str and node_id(e[1])
            for e in program.exports):
        return "its exports are malformed"
    if type(program.inputs) is not tuple or not all(_is_nat(n) for n in program.inputs):
        return "its inputs are malformed"
    return None


def _readonly_reason(core, p: dict):
    """(IR program or None, why it cannot run or None)."""
    from ..ir.codec import IR_VERSION, unpackb
    version = p.get("ir_version", 1)
    if version != IR_VERSION:
        return None, f"its program is stored in IR format {version}; this ddir reads format {IR_VERSION}"
    try:
        program = unpackb(base64.b64decode(p["ir"]))
        problem = _ir_problem(program)
    except Exception as e:  # noqa: BLE001 - any undecodable IR makes it read-only
        return None, f"its stored program cannot be read ({_one_line(e)})"
    if problem is not None:
        return None, f"its stored program cannot be read ({problem})"
    table = core.functions.table if core.functions is not None else {}
    missing = [f for f in p.get("functions", ()) if f not in table]
    if missing:  # all of them, as `reinstall` names them (issue 26, item 9)
        where = (f"not among the functions of {core.functions.label}" if core.functions is not None
                 else "not available: no functions were given (--functions MODULE, or "
                      f"`reinstall {p['name']} functions=MODULE`)")
        verb = "is" if len(missing) == 1 else "are"
        return program, f"it calls {missing_names(missing)}, which {verb} {where}"
    return program, None


class _Plan:
    """One program of a checkpoint, read and checked: what the replay does."""

    def __init__(self, record: dict):
        self.record = record
        self.program = None       # the IR (live or read-only programs)
        self.reason = None        # why it is read-only
        self.inputs: list = []    # [(input, [(time, rows or IntColumns)])]
        self.contents: list = []  # a stand-in's rows per export


def _read_checkpoint(core, path: str) -> tuple:
    """(epoch, max_rounds, [_Plan]): the checkpoint at ``path`` read and
    checked whole, before anything is restored; a problem is one
    :class:`CheckpointError`."""
    directory, manifest = _read_manifest(path)
    try:
        _check_manifest(manifest)
        plans = [_plan(core, p, i, directory) for i, p in enumerate(manifest["programs"])]
    except _Damaged as e:
        raise CheckpointError(f'restore "{path}": {e}') from None
    except MemoryError:
        raise CheckpointError(f'restore "{path}": too large to read into memory') from None
    return manifest["epoch"], manifest.get("max_rounds"), plans


def _plan(core, p: dict, i: int, directory: str) -> _Plan:
    plan = _Plan(p)
    if p["origin"] != "program":
        return plan
    plan.program, plan.reason = _readonly_reason(core, p)
    live = plan.reason is None and not p.get("failed")
    input_files = p.get("input_files", {})
    for n, info in sorted(input_files.items(), key=lambda item: int(item[0])):
        if live and int(n) not in plan.program.inputs:
            raise _Damaged(f'{MANIFEST}: program {i} ("{_clip(p["name"], 40)}"): "input_files" '
                           f"has input {n}, which its program does not read")
        plan.inputs.append((int(n), _by_time(directory, info)))
    export_files = p.get("export_files", {})
    if live:  # replayed, not read: only the checksums are checked
        for info in export_files.values():
            _file_bytes(directory, info)
    else:
        plan.contents = [_trace_rows(directory, export_files[t]) if t in export_files else []
                         for t in p["exports"]]
    return plan


def restore_into(core, path: str) -> None:
    """Rebuild the checkpoint at ``path`` into ``core``, a fresh registry
    Server (any number of workers). Raises :class:`CheckpointError` (the
    caller discards ``core``) or :class:`ServerStopped`.

    The whole checkpoint is read and checked first (:func:`_read_checkpoint`).
    Then programs are installed in their order, each at its epoch; the
    epochs between are closed in single steps (``Server.advance``): only the
    contents at the checkpoint's epoch matter, and they depend on the
    accumulated inputs alone. Failed and read-only programs come back as
    stand-ins with their exported traces' stored contents. The replay runs
    without an iteration bound (every live program converged at every
    epoch it is replaying, and a folded journal may need more rounds in
    one step); the bound is set once the replay is done."""
    epoch, stored_bound, plans = _read_checkpoint(core, path)
    bound = core.max_rounds if core.max_rounds is not None else stored_bound
    core.max_rounds = REPLAY_BOUND
    name = None
    try:
        for plan in plans:
            p = plan.record
            name = p["name"]
            if p["since"] > core.epoch:
                core.advance(p["since"])
            try:
                _install(core, plan)
            except (ServerStopped, CheckpointError):
                raise
            except DdirError as err:
                raise CheckpointError(f'restore "{path}": program "{name}": {err}') from None
        name = None
        if epoch > core.epoch:
            core.advance(epoch)
    except (DdirError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - a checkpoint this ddir cannot replay: one error
        which = f'program "{name}": ' if name is not None else ""
        raise CheckpointError(f'restore "{path}": {which}cannot be replayed '
                              f"({type(e).__name__}: {_one_line(e)})") from None
    core.max_rounds = bound
    core.cluster.broadcast(("bound", bound))
    if core.epoch != epoch:
        raise CheckpointError(f'restore "{path}": replayed to epoch {core.epoch}, not its '
                              f"epoch {epoch}")


def _install(core, plan: _Plan) -> None:
    from .registry import Installed
    from .journal import Journal
    p = plan.record
    if p["origin"] != "program":
        if p["name"] not in core.programs:
            core._install_source(parse_recipe(p["recipe"]))
        return
    program, reason = plan.program, plan.reason
    if reason is None and not p.get("failed"):
        core.install(C.Install(p["name"], p["path"], program, p.get("source")))
        for n, batches in plan.inputs:
            for t, rows in batches:
                core.stage_batch(p["name"], n, t, rows)
        return
    entry = Installed(p["name"], p["path"], p["file"], inputs=tuple(p["inputs"]),
                      imports=tuple(p["imports"]), exports=tuple(p["exports"]),
                      failed=p.get("failed"), readonly=None if p.get("failed") else reason,
                      functions=tuple(p.get("functions", ())), source=p.get("source"),
                      program=program)
    if program is None:
        entry.stored_ir = (p.get("ir_version", 1), p["ir"])
    journal = core.journal[entry.name] = Journal()
    for n, batches in plan.inputs:
        for t, rows in batches:
            journal.add(n, t, rows)
    core.install_standin(entry, plan.contents)
