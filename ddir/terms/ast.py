"""Scalar term trees (SPEC A3), shared by the parser, the compiler and the
reference interpreter.

Binders are de Bruijn indices (``Bound(k)``, innermost = 0): a ``case`` arm
binds one (the payload), a ``fold`` step binds two (``^0`` element, ``^1``
accumulator). Named case binders are resolved by the parser into
``Index(Bound(k), i)``, so nothing below the parser knows about names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

__all__ = [
    "Term", "Row", "Bound", "Lit", "Neg", "Arith", "Cmp", "And", "Index",
    "Call", "Case", "Fold", "BUILTIN_ARITY", "walk",
]


class Term:
    """Base class of every term node (frozen dataclasses, hashable)."""

    __slots__ = ()


@dataclass(frozen=True)
class Row(Term):
    """``$n``: input row ``n`` of the operator."""
    n: int


@dataclass(frozen=True)
class Bound(Term):
    """``^k``: the k-th enclosing binder, innermost first."""
    k: int


@dataclass(frozen=True)
class Lit(Term):
    """A literal value (integers in programs; any value after folding)."""
    value: Any


@dataclass(frozen=True)
class Neg(Term):
    arg: Term


@dataclass(frozen=True)
class Arith(Term):
    """``+``, ``-`` or ``*`` on Ints."""
    op: str
    left: Term
    right: Term


@dataclass(frozen=True)
class Cmp(Term):
    """``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` by the total order."""
    op: str
    left: Term
    right: Term


@dataclass(frozen=True)
class And(Term):
    """``a && b``: short-circuit, gives 1/0."""
    left: Term
    right: Term


@dataclass(frozen=True)
class Index(Term):
    """``v[i]`` and ``proj(v, i)``: field ``i`` of a Tuple or List."""
    arg: Term
    index: int


@dataclass(frozen=True)
class Call(Term):
    """A builtin: tuple, list, inject, len, istag, not, or, if, hash.

    ``istag``'s first argument is kept as ``Lit``.
    """
    name: str
    args: tuple


@dataclass(frozen=True)
class Case(Term):
    """``case s { ... }``: ``arms`` is a tuple of ``(tag, body)``; each body
    sees the payload as ``Bound(0)``. ``default`` sees no new binder."""
    scrutinee: Term
    arms: tuple
    default: Optional[Term]


@dataclass(frozen=True)
class Fold(Term):
    """``fold(list, init, step)``: in ``step`` ``^0`` is the element and
    ``^1`` the accumulator."""
    items: Term
    init: Term
    step: Term


# Argument counts of the builtins (None: any count >= the given minimum).
BUILTIN_ARITY = {
    "tuple": None,
    "list": None,
    "inject": 2,
    "variant": 2,
    "proj": 2,
    "len": 1,
    "istag": 2,
    "not": 1,
    "or": 2,
    "if": 3,
    "hash": None,  # bound + at least one key
}


def walk(term: Term):
    """Yield ``term`` and every sub-term (pre-order)."""
    yield term
    if isinstance(term, (Neg,)):
        yield from walk(term.arg)
    elif isinstance(term, (Arith, Cmp, And)):
        yield from walk(term.left)
        yield from walk(term.right)
    elif isinstance(term, Index):
        yield from walk(term.arg)
    elif isinstance(term, Call):
        for a in term.args:
            yield from walk(a)
    elif isinstance(term, Case):
        yield from walk(term.scrutinee)
        for _, body in term.arms:
            yield from walk(body)
        if term.default is not None:
            yield from walk(term.default)
    elif isinstance(term, Fold):
        yield from walk(term.items)
        yield from walk(term.init)
        yield from walk(term.step)
