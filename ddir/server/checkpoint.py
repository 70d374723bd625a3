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
import json
import os
import shutil

from . import commands as C
from .generated import parse_recipe
from .journal import rows_of
from ..errors import CommandError, DdirError
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
    from . import bulk
    from .journal import consolidate
    timed = []
    for time, batch in batches:
        cols = batch if isinstance(batch, bulk.IntColumns) else bulk.rows_to_columns(batch)
        if cols is None:
            break
        timed.append(bulk.IntColumns([np.full(cols.count, time, dtype=np.int64)] + list(cols.keys),
                                     cols.vals, cols.diffs, cols.count))
    if len(timed) == len(batches) and len({(len(c.keys), len(c.vals)) for c in timed}) == 1:
        merged = consolidate(timed)
        if isinstance(merged, bulk.IntColumns):
            data = {"time": merged.keys[0]}
            data.update({f"key_{i}": c for i, c in enumerate(merged.keys[1:])})
            data.update({f"val_{i}": c for i, c in enumerate(merged.vals)})
            data["diff"] = merged.diffs
            return pa.table({k: pa.array(v, type=pa.int64()) for k, v in data.items()})
    acc: dict = {}
    for time, batch in batches:
        for k, v, d in rows_of(batch):
            key = (time, format_value(k), format_value(v))
            acc[key] = acc.get(key, 0) + d
    items = sorted((item for item in acc.items() if item[1]))
    diffs = [d for _, d in items]
    wide = any(not INT_MIN <= d <= INT_MAX for d in diffs)
    return pa.table({
        "time": pa.array([t for (t, _, _), _ in items], type=pa.int64()),
        "key": pa.array([k for (_, k, _), _ in items], type=pa.string()),
        "val": pa.array([v for (_, _, v), _ in items], type=pa.string()),
        "diff": (pa.array([str(d) for d in diffs], type=pa.string()) if wide
                 else pa.array(diffs, type=pa.int64())),
    })


def _write_ipc(path: str, table) -> None:
    import pyarrow.ipc as ipc
    with open(path, "wb") as f:
        with ipc.new_file(f, table.schema) as writer:
            writer.write_table(table)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
        _write_ipc(os.path.join(tmp, name), table)
        files[str(n)] = {"file": name, "rows": table.num_rows}
        rows += table.num_rows
        times = table.column("time").to_numpy()
        future += int((times >= core.epoch).sum())
    record["input_files"] = files
    exports = {}
    for j, trace in enumerate(entry.exports):
        _, table, _ = core.table(trace)
        name = f"p{i}_export{j}.arrow"
        _write_ipc(os.path.join(tmp, name), table)
        exports[trace] = {"file": name, "rows": table.num_rows}
    record["export_files"] = exports
    return record, rows, future


def _read_trace(path: str) -> list:
    """[(key, val, diff)] of an export file a checkpoint wrote (save's columns)."""
    import pyarrow.ipc as ipc
    with open(path, "rb") as f:
        cols = ipc.open_file(f).read_all().to_pydict()
    diffs = cols["diff"]
    if "key" in cols:
        return [(parse_printed(k), parse_printed(v), d)
                for k, v, d in zip(cols["key"], cols["val"], diffs)]
    def fields(prefix):
        named = sorted((c for c in cols if c.startswith(prefix)), key=lambda c: int(c[len(prefix):]))
        return list(zip(*(cols[c] for c in named))) if named else [()] * len(diffs)
    return list(zip(fields("key_"), fields("val_"), diffs))


def write_checkpoint(core, path: str) -> dict:
    """Write ``core`` (a registry Server) to directory ``path``; the
    ``checkpoint`` record."""
    target = os.path.abspath(path)
    parent, base = os.path.split(target)
    if not base:
        raise CommandError(f'checkpoint "{path}": needs a directory name')
    if not os.path.isdir(parent):
        raise CommandError(f'checkpoint "{path}": no such directory "{parent}"')
    if os.path.exists(target) and not os.path.isdir(target):
        raise CommandError(f'checkpoint "{path}": exists and is not a directory')
    if os.path.isdir(target) and os.listdir(target) and not os.path.exists(
            os.path.join(target, MANIFEST)):
        raise CommandError(f'checkpoint "{path}": is a directory that holds no checkpoint '
                           "(refusing to replace it)")
    tmp = os.path.join(parent, f".{base}.tmp")
    old = os.path.join(parent, f".{base}.old")
    if not os.path.exists(target) and os.path.isdir(old):  # an interrupted swap: put it back
        os.rename(old, target)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.mkdir(tmp)
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
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        _point("manifest")
        if os.path.exists(target):
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
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CommandError(f'checkpoint "{path}": {e.strerror or e}') from None
    return {"kind": "checkpoint", "dir": path, "epoch": core.epoch,
            "programs": len(programs), "rows": total}


# ---------------------------------------------------------------- reading

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
        except (OSError, ValueError) as e:
            raise CommandError(f'restore "{path}": cannot read its manifest: {e}') from None
    raise CommandError(f'restore "{path}": no checkpoint there (no {MANIFEST})')


def _by_time(path: str) -> list:
    """[(time, rows or IntColumns)] of one input file, in time order."""
    import numpy as np
    import pyarrow.ipc as ipc
    from .bulk import IntColumns
    with open(path, "rb") as f:
        table = ipc.open_file(f).read_all()
    if "key" in table.column_names:
        cols = table.to_pydict()
        by_time: dict = {}
        for t, k, v, d in zip(cols["time"], cols["key"], cols["val"], cols["diff"]):
            by_time.setdefault(t, []).append((parse_printed(k), parse_printed(v), int(d)))
        return sorted(by_time.items())
    cols = {name: table.column(name).to_numpy() for name in table.column_names}
    keys = [cols[f"key_{i}"] for i in range(sum(n.startswith("key_") for n in cols))]
    vals = [cols[f"val_{i}"] for i in range(sum(n.startswith("val_") for n in cols))]
    times, diffs = cols["time"], cols["diff"]
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


REPLAY_BOUND = 1 << 62   # the restore's replay runs without an iteration bound


def restore_into(core, path: str) -> None:
    """Rebuild the checkpoint at ``path`` into ``core``, a fresh registry
    Server (any number of workers). Raises :class:`CommandError`.

    Programs are installed in their order, each at its epoch; the epochs
    between are closed in single steps (``Server.advance``): only the
    contents at the checkpoint's epoch matter, and they depend on the
    accumulated inputs alone. Failed and read-only programs come back as
    stand-ins with their exported traces' stored contents. The replay runs
    without an iteration bound (every live program converged at every
    epoch it is replaying, and a folded journal may need more rounds in
    one step); the bound is set once the replay is done."""
    directory, manifest = _read_manifest(path)
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise CommandError(f'restore "{path}": not a ddir checkpoint of version {VERSION}')
    epoch = manifest["epoch"]
    bound = core.max_rounds if core.max_rounds is not None else manifest.get("max_rounds")
    core.max_rounds = REPLAY_BOUND
    for p in manifest["programs"]:
        if p["since"] > core.epoch:
            core.advance(p["since"])
        try:
            _install(core, p, directory)
        except DdirError as err:
            raise CommandError(f'restore "{path}": program "{p["name"]}": {err}') from None
    if epoch > core.epoch:
        core.advance(epoch)
    core.max_rounds = bound
    core.cluster.broadcast(("bound", bound))
    assert core.epoch == epoch


def _readonly_reason(core, p: dict):
    """(IR program or None, why it cannot run or None)."""
    from ..ir.codec import IR_VERSION, unpackb
    version = p.get("ir_version", 1)
    if version != IR_VERSION:
        return None, f"its program is stored in IR format {version}; this ddir reads format {IR_VERSION}"
    try:
        program = unpackb(base64.b64decode(p["ir"]))
    except Exception as e:  # noqa: BLE001 - any undecodable IR makes it read-only
        return None, f"its stored program cannot be read ({e})"
    table = core.functions.table if core.functions is not None else {}
    missing = [f for f in p.get("functions", ()) if f not in table]
    if missing:
        where = (f"not among the functions of {core.functions.label}" if core.functions is not None
                 else "not available: no functions were given (--functions MODULE)")
        return program, f"it calls @{missing[0]}, which is {where}"
    return program, None


def _install(core, p: dict, directory: str) -> None:
    from .registry import Installed
    from .journal import Journal
    if p["origin"] != "program":
        if p["name"] not in core.programs:
            core._install_source(parse_recipe(p["recipe"]))
        return
    program, reason = _readonly_reason(core, p)
    inputs = sorted(p.get("input_files", {}).items(), key=lambda i: int(i[0]))
    if reason is None and not p.get("failed"):
        core.install(C.Install(p["name"], p["path"], program, p.get("source")))
        for n, info in inputs:
            for t, rows in _by_time(os.path.join(directory, info["file"])):
                core.stage_batch(p["name"], int(n), t, rows)
        return
    entry = Installed(p["name"], p["path"], p["file"], inputs=tuple(p["inputs"]),
                      imports=tuple(p["imports"]), exports=tuple(p["exports"]),
                      failed=p.get("failed"), readonly=None if p.get("failed") else reason,
                      functions=tuple(p.get("functions", ())), source=p.get("source"),
                      program=program)
    if program is None:
        entry.stored_ir = (p.get("ir_version", 1), p["ir"])
    journal = core.journal[entry.name] = Journal()
    for n, info in inputs:
        for t, rows in _by_time(os.path.join(directory, info["file"])):
            journal.add(int(n), t, rows)
    files = p.get("export_files", {})
    contents = [_read_trace(os.path.join(directory, files[t]["file"])) if t in files else []
                for t in entry.exports]
    core.install_standin(entry, contents)
