"""The two shapes a batch of updates takes between operators.

* *Rows*: a list (or tuple) of ``(key, val, diff)`` Python tuples. Any value
  fits, and a small batch costs nothing to build.
* :class:`Cols`: rows whose key and val are Tuples of Ints, one arity each,
  held as int64 columns (:mod:`ddir.engine.columns` works on them with
  numpy). A large batch of such rows is consolidated, joined, reduced and
  stored without a Python object per row.

Operators choose per step: a step whose input has at least
:data:`COLUMNAR_MIN` rows, all of one Int-tuple shape, takes the columnar
path; anything else (small batches, Lists, Variants, mixed arities, diffs
outside i64) takes the row path, which every operator keeps. Both give the
same results; a :class:`Cols` iterates as rows, so code that only reads rows
works on either.

This module does not import numpy: a session that never meets a large batch
never loads it.
"""

from __future__ import annotations

import os
import sys

# numpy's fixed cost per call (~1-10 us) pays off from about this many rows.
# Tests lower it (monkeypatch, or DDIR_COLUMNAR_MIN=1) to drive every batch
# they can through the columnar path.
COLUMNAR_MIN = int(os.environ.get("DDIR_COLUMNAR_MIN", "256"))

# Importing numpy costs ~0.1 s, what the row path spends on ~100k rows:
# until something has imported it (a load, an earlier large batch), a step
# goes columnar only from this many rows, so a small workload (a 1,000-edge
# closure, 10k pairs) finishes on rows. DDIR_COLUMNAR_MIN sets both.
COLUMNAR_FIRST = int(os.environ.get("DDIR_COLUMNAR_MIN", "32768"))


# Rows fed from outside (`feed_many`, a script's feed lines) flow on through
# joins whose output no step can foresee (the first join of an 11,000-edge
# closure makes 200k rows, on rows if numpy is not loaded yet): a fed batch
# of this many rows loads numpy and enters as columns. Below it a small
# session never imports numpy. DDIR_COLUMNAR_MIN sets this too.
INTAKE_FIRST = int(os.environ.get("DDIR_COLUMNAR_MIN", "4096"))


def _until_numpy(first: int) -> int:
    """``COLUMNAR_MIN`` once numpy is loaded, ``first`` (if larger) before."""
    return COLUMNAR_MIN if "numpy" in sys.modules else max(COLUMNAR_MIN, first)


def columnar_min() -> int:
    """The size from which a step takes the columnar path."""
    return _until_numpy(COLUMNAR_FIRST)


def intake_columnar_min() -> int:
    """The size from which fed rows are staged as int64 columns."""
    return _until_numpy(INTAKE_FIRST)


def reduce_columnar_min() -> int:
    """The step size (input rows plus scheduled keys) from which a reduce
    takes the columnar path: half what other operators need, since its row
    path costs ~20 us a key (a lookup in both traces over every run, and
    interesting times), twice a join's per row. Measured on the reach
    rounds: a deep change's max round 45 -> 29 ms."""
    return max(1, columnar_min() // 2)


class Cols:
    """``n`` updates as int64 columns: ``keys`` (a tuple of arrays, one per
    key field), ``vals`` (likewise), ``d`` (the diffs). ``sorted``: the batch
    is consolidated and in (key, val) order (what consolidation returns).
    Arrays are shared between batches and never written to."""

    __slots__ = ("keys", "vals", "d", "n", "sorted")

    def __init__(self, keys: tuple, vals: tuple, d, sorted: bool = False):
        self.keys = keys
        self.vals = vals
        self.d = d
        self.n = len(d)
        self.sorted = sorted

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(self.rows())

    def rows(self) -> list:
        from .columns import to_rows
        return to_rows(self)

    def __repr__(self) -> str:
        return f"Cols({len(self.keys)}+{len(self.vals)} columns, {self.n} rows)"


def is_rows(batch) -> bool:
    t = type(batch)
    return t is list or t is tuple
