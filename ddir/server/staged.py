"""Updates staged as int64 columns: :class:`IntColumns`.

A batch whose keys and vals are Tuples of Ints of one arity each (a load of
integer columns, a large ``feed_many``, a checkpoint's inputs) travels from
the intake to its workers as one int64 array per field, never as a Python
object per row: it is split by owner column-wise (:func:`split_columns`),
sent as raw little-endian bytes (:meth:`IntColumns.message`) and turned into
rows only by the worker that stages it (:func:`rows_from_message`).

This module needs numpy but not pyarrow, so feeding does not load pyarrow.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..engine.columns import int_columns, no_gc, owners_of


@dataclass
class IntColumns:
    """Updates whose key and val are Tuples of Ints: one int64 array per
    field (``keys``: n arrays, ``vals``: m arrays), ``diffs`` (None: +1)."""
    keys: list
    vals: list
    diffs: np.ndarray | None
    count: int

    def take(self, index) -> "IntColumns":
        return IntColumns([c[index] for c in self.keys], [c[index] for c in self.vals],
                          None if self.diffs is None else self.diffs[index], len(index))

    def slice(self, start: int, stop: int) -> "IntColumns":
        return IntColumns([c[start:stop] for c in self.keys], [c[start:stop] for c in self.vals],
                          None if self.diffs is None else self.diffs[start:stop],
                          max(0, min(stop, self.count) - start))

    def rows(self):
        """``(key, val, diff)`` rows (an iterator)."""
        n = self.count
        keys = zip(*(c.tolist() for c in self.keys)) if self.keys else itertools.repeat((), n)
        vals = zip(*(c.tolist() for c in self.vals)) if self.vals else itertools.repeat((), n)
        diffs = self.diffs.tolist() if self.diffs is not None else itertools.repeat(1, n)
        return zip(keys, vals, diffs)

    def message(self) -> tuple:
        """The payload of a ``stage_columns`` worker message."""
        return ([c.astype("<i8", copy=False).tobytes() for c in self.keys],
                [c.astype("<i8", copy=False).tobytes() for c in self.vals],
                None if self.diffs is None else self.diffs.astype("<i8", copy=False).tobytes(),
                self.count)


def from_rows(rows: list) -> IntColumns | None:
    """``[(key, val, diff)]`` as :class:`IntColumns` when every key is a
    Tuple of n Ints, every val a Tuple of m Ints and every diff an int, all
    within i64; None otherwise (and for no rows: no shape to give them).
    ``diffs`` is None when every diff is +1."""
    count = len(rows)
    if not count:
        return None
    with no_gc():
        keys, vals, diffs = (list(c) for c in zip(*rows))
    key_cols = int_columns(keys, count)
    val_cols = int_columns(vals, count) if key_cols is not None else None
    if val_cols is None or set(map(type, diffs)) != {int}:
        return None
    try:
        d = np.fromiter(diffs, dtype=np.int64, count=count)
    except OverflowError:
        return None
    return IntColumns(list(key_cols), list(val_cols), None if (d == 1).all() else d, count)


def from_message(keys: list, vals: list, diffs, count: int) -> IntColumns:
    """A ``stage_columns`` or ``peek_columns`` payload as :class:`IntColumns`
    (views of the bytes, no copy)."""
    def arrays(columns):
        return [np.frombuffer(c, dtype="<i8") for c in columns]
    return IntColumns(arrays(keys), arrays(vals),
                      None if diffs is None else np.frombuffer(diffs, dtype="<i8"), count)


def merged(parts: list) -> IntColumns:
    """Workers' ``peek_columns`` payloads of one trace, each consolidated and
    in (key, val) order, as one batch in (key, val) order: a key lives on
    one worker, so merging sums nothing and only restores the order."""
    batches = [from_message(*p) for p in parts]
    return batches[0] if len(batches) == 1 else consolidated(batches, check=False)


def consolidated(batches: list, check: bool = True) -> IntColumns | None:
    """IntColumns of one shape as one, equal rows summed, in (key, val)
    order (the engine's column consolidation); None when ``check`` finds
    that a sum could leave int64 (the caller sums Python ints instead)."""
    from ..engine.columns import consolidate_columns, sums_fit
    n, m = len(batches[0].keys), len(batches[0].vals)
    cols = tuple(np.concatenate([b.keys[i] for b in batches]) for i in range(n))
    cols += tuple(np.concatenate([b.vals[i] for b in batches]) for i in range(m))
    d = np.concatenate([np.ones(b.count, dtype=np.int64) if b.diffs is None else b.diffs
                        for b in batches])
    if check and not sums_fit(d):
        return None
    cols, d = consolidate_columns(cols, d, len(d))
    return IntColumns(list(cols[:n]), list(cols[n:]), d, len(d))


def rows_from_message(keys: list, vals: list, diffs, count: int) -> list:
    """A worker's ``stage_columns`` payload -> ``[(key, val, diff)]``."""
    with no_gc():
        return list(from_message(keys, vals, diffs, count).rows())


def split_columns(batch: IntColumns, shards: int) -> list:
    """``[IntColumns]`` per owner (rows keep their order within an owner);
    owners are :func:`ddir.engine.exchange.shard_of`, computed column-wise."""
    if shards == 1:
        return [batch]
    owners = owners_of(batch.keys, batch.count, shards)
    order = np.argsort(owners, kind="stable")
    bounds = np.searchsorted(owners[order], np.arange(shards + 1))
    return [batch.take(order[bounds[w]:bounds[w + 1]]) for w in range(shards)]
