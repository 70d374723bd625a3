"""Checkpoints (SPEC C5): ``checkpoint <dir>`` and ``ddir --restore <dir>``.

A checkpoint is a directory: ``manifest.json`` (format, epoch, every
program in install order with its origin, source text, IR, inputs, imports,
exports, the functions it calls, why it failed; generated sources by their
recipe) and one Arrow IPC file per program input holding every update ever
staged for it, consolidated per (time, key, val): columns ``time`` (int64),
``key`` and ``val`` (the printed value), ``diff`` (int64, or its decimal
text if it left the 64-bit range). Updates at times >= the epoch are the
staged future updates.

Restore replays history rather than loading operator state: a fresh server
installs each program at the epoch it was installed at (the same catch-up
as the original), stages all of its stored updates right after, and ticks
epoch by epoch up to the checkpoint's epoch, discarding every record the
replay makes (inspect events, term errors, failures). Dataflows are
deterministic functions of their timed inputs, so afterwards every trace,
every program's failure and every later tick is what the original server
would show — for any number of workers.

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

def _rows(batch):
    """(key, val, diff) rows of a journal batch (a list of rows or IntColumns)."""
    if isinstance(batch, list):
        return batch
    keys = list(zip(*(c.tolist() for c in batch.keys))) if batch.keys else [()] * batch.count
    vals = list(zip(*(c.tolist() for c in batch.vals))) if batch.vals else [()] * batch.count
    diffs = batch.diffs.tolist() if batch.diffs is not None else [1] * batch.count
    return zip(keys, vals, diffs)


def consolidated(entries) -> dict:
    """input -> {(time, key text, val text): diff} with zero diffs gone."""
    out: dict = {}
    for n, time, batch in entries:
        acc = out.setdefault(n, {})
        for k, v, d in _rows(batch):
            key = (time, format_value(k), format_value(v))
            acc[key] = acc.get(key, 0) + d
    return {n: {k: d for k, d in acc.items() if d} for n, acc in out.items()}


def _write_arrow(path: str, updates: dict) -> None:
    import pyarrow as pa
    import pyarrow.ipc as ipc
    items = sorted(updates.items())
    diffs = [d for _, d in items]
    wide = any(not INT_MIN <= d <= INT_MAX for d in diffs)
    table = pa.table({
        "time": pa.array([t for (t, _, _), _ in items], type=pa.int64()),
        "key": pa.array([k for (_, k, _), _ in items], type=pa.string()),
        "val": pa.array([v for (_, _, v), _ in items], type=pa.string()),
        "diff": (pa.array([str(d) for d in diffs], type=pa.string()) if wide
                 else pa.array(diffs, type=pa.int64())),
    })
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
        programs, total = [], 0
        staged = 0
        for i, entry in enumerate(core.programs.values()):
            record = {"name": entry.name, "origin": entry.origin, "path": entry.path,
                      "file": entry.file, "since": entry.since, "inputs": list(entry.inputs),
                      "imports": list(entry.imports), "exports": list(entry.exports),
                      "functions": list(entry.functions), "failed": entry.failed}
            if entry.origin == "program":
                from ..ir.codec import packb
                record["source"] = entry.source
                record["ir"] = base64.b64encode(packb(entry.program)).decode("ascii")
                files = {}
                for n, updates in sorted(consolidated(core.journal.get(entry.name, ())).items()):
                    name = f"p{i}_input{n}.arrow"
                    _write_arrow(os.path.join(tmp, name), updates)
                    files[str(n)] = {"file": name, "rows": len(updates)}
                    total += len(updates)
                    staged += sum(1 for (t, _, _) in updates if t >= core.epoch)
                record["input_files"] = files
            else:
                record["recipe"] = entry.name
            programs.append(record)
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


def _read_updates(path: str) -> list:
    """[(time, key, val, diff)] of one input file."""
    import pyarrow.ipc as ipc
    with open(path, "rb") as f:
        table = ipc.open_file(f).read_all()
    cols = table.to_pydict()
    return [(t, parse_printed(k), parse_printed(v), int(d))
            for t, k, v, d in zip(cols["time"], cols["key"], cols["val"], cols["diff"])]


def restore_into(core, path: str) -> None:
    """Rebuild the checkpoint at ``path`` into ``core``, a fresh registry
    Server (any number of workers). Raises :class:`CommandError`."""
    directory, manifest = _read_manifest(path)
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise CommandError(f'restore "{path}": not a ddir checkpoint of version {VERSION}')
    from ..ir.codec import unpackb
    epoch = manifest["epoch"]
    if core.max_rounds is None:
        core.max_rounds = manifest.get("max_rounds")
    by_epoch: dict = {}
    for p in manifest["programs"]:
        by_epoch.setdefault(p["since"], []).append(p)
    for e in range(epoch + 1):
        for p in by_epoch.get(e, ()):
            try:
                _install(core, p, directory, unpackb)
            except DdirError as err:
                raise CommandError(f'restore "{path}": program "{p["name"]}": {err}') from None
        if e < epoch:
            core.tick(C.Tick())  # its records (inspect events, errors) are history: dropped
    assert core.epoch == epoch


def _install(core, p: dict, directory: str, unpackb) -> None:
    if p["origin"] != "program":
        if p["name"] not in core.programs:
            core._install_source(parse_recipe(p["recipe"]))
        return
    program = unpackb(base64.b64decode(p["ir"]))
    core.install(C.Install(p["name"], p["path"], program, p.get("source")))
    for n, info in sorted(p.get("input_files", {}).items(), key=lambda i: int(i[0])):
        by_time: dict = {}
        for t, k, v, d in _read_updates(os.path.join(directory, info["file"])):
            by_time.setdefault(t, []).append((k, v, d))
        for t, rows in sorted(by_time.items()):
            core.stage_batch(p["name"], int(n), t, rows)
