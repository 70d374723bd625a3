"""Value order (SPEC A1) for many rows at once, fast for Tuples of Ints.

For Tuples whose fields are all Ints (of any arities), Python's own tuple
comparison *is* the Value order (fields compare as integers, a proper
prefix first), so such rows sort without building an ``order_key`` per
value: ~50x faster, and rows that come out of a trace's runs already in
order cost one pass. Anything else sorts by ``order_key``.
"""

from __future__ import annotations

from itertools import chain
from operator import itemgetter

from ..values import order_key

_KEY, _VAL, _KV = itemgetter(0), itemgetter(1), itemgetter(0, 1)


def int_tuples(values: list) -> bool:
    """Whether every value is a Tuple of Ints."""
    kinds = set(map(type, values))
    if kinds and kinds != {tuple}:
        return False
    return not set(map(type, chain.from_iterable(values))) - {int}


def sort_rows(rows: list) -> None:
    """Sort ``(key, val, ...)`` rows in place by (key, val) in Value order."""
    if int_tuples(list(map(_KEY, rows))) and int_tuples(list(map(_VAL, rows))):
        rows.sort(key=_KV)
    else:
        rows.sort(key=lambda r: (order_key(r[0]), order_key(r[1])))


class OrderKeys:
    """The ``order_key`` of each of ``keys`` (sorted in Value order), made
    when read: a bisect reads O(log n) of them, not n."""

    __slots__ = ("keys",)

    def __init__(self, keys: list):
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i):
        return order_key(self.keys[i])


def sorted_keys(keys: list) -> tuple:
    """(order keys, keys) of ``keys`` sorted in Value order."""
    if int_tuples(keys):
        keys = sorted(keys)
        return OrderKeys(keys), keys
    ranked = sorted(((order_key(k), k) for k in keys), key=_KEY)
    return [p[0] for p in ranked], [p[1] for p in ranked]


__all__ = ["int_tuples", "sort_rows", "sorted_keys", "OrderKeys"]
