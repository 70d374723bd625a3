"""Timestamps: tuples ``(epoch, i1, ..., id)`` under the product order.

Lexicographic order (Python's tuple order) extends the product order, which
is what lets a scope process its pending times one at a time, smallest
first (DESIGN "Scheduling").
"""

from __future__ import annotations


def less_equal(a: tuple, b: tuple) -> bool:
    """Product order: every coordinate of ``a`` <= that of ``b``."""
    if len(a) == 1:
        return a[0] <= b[0]
    if len(a) == 2:
        return a[0] <= b[0] and a[1] <= b[1]
    for x, y in zip(a, b):
        if x > y:
            return False
    return True


def join(a: tuple, b: tuple) -> tuple:
    """Least upper bound: coordinate-wise max."""
    if len(a) == 2:
        return (a[0] if a[0] >= b[0] else b[0], a[1] if a[1] >= b[1] else b[1])
    return tuple(x if x >= y else y for x, y in zip(a, b))


def meet(a: tuple, b: tuple) -> tuple:
    """Greatest lower bound: coordinate-wise min."""
    return tuple(x if x <= y else y for x, y in zip(a, b))


def advance(t: tuple, epoch: int) -> tuple:
    """Compaction: fold every epoch before ``epoch`` onto ``epoch``, keeping
    the iteration coordinates (all future times have epoch > ``epoch``, so
    accumulations at every future time are unchanged)."""
    if t[0] >= epoch:
        return t
    return (epoch,) + t[1:]


def format_time(t: tuple) -> str:
    """``0`` at the root, ``0.3`` (epoch.iteration...) inside scopes."""
    return ".".join(str(c) for c in t)
