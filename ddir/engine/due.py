"""The keys a reduce must process again at one time (its "interesting
times", DESIGN "Reduce").

The row path schedules keys one at a time as Python tuples; the columnar
path schedules them by the thousand as int64 key columns. Turning columns
into tuples to put them in a set, and the set back into columns at the
next step, cost ~0.3 us a key: a third of a deep tick's reduce time. So the
columnar path's keys stay columns until a reader needs tuples, and repeats
are removed when the keys are taken (the columnar reduce consolidates its
keys anyway).
"""

from __future__ import annotations


class DueKeys:
    __slots__ = ("tuples", "columns", "counted")

    def __init__(self) -> None:
        self.tuples: set = set()   # keys as tuples
        self.columns: list = []    # (key columns, n): keys as int64 columns
        self.counted = 0           # keys in ``columns``, repeats included

    def __len__(self) -> int:
        """How many keys, at most (a key scheduled twice may count twice)."""
        return len(self.tuples) + self.counted

    def __contains__(self, key) -> bool:
        """Whether ``key`` is known to be scheduled (the tuples only: a
        ``False`` for a key among the columns only schedules it twice)."""
        return key in self.tuples

    def add(self, key) -> None:
        self.tuples.add(key)

    def add_columns(self, cols: tuple, n: int) -> None:
        """``n`` keys given as key columns (never written to)."""
        self.columns.append((cols, n))
        self.counted += n

    def as_set(self) -> set:
        """Every key as a tuple (the columns are converted once)."""
        if self.columns:
            from .columns import key_tuples
            for cols, n in self.columns:
                self.tuples.update(key_tuples(cols, n))
            self.columns, self.counted = [], 0
        return self.tuples
