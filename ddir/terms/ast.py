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
    "Call", "PyCall", "Case", "Fold", "BUILTIN_ARITY", "SIMPLE_BUILTINS", "children", "walk",
    "depth",
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
    """``a + b - c``: a left-associative chain of ``+``, ``-`` or ``*`` on
    Ints, ``rest`` = ``((op, term), ...)``. Flat, so that a 10,000-term sum
    is one node rather than 10,000 nested ones (SPEC B: size is not bad
    input); ``1 + 2 * 3`` nests the ``*`` chain as an operand."""
    first: Term
    rest: tuple


@dataclass(frozen=True)
class Cmp(Term):
    """``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` by the total order."""
    op: str
    left: Term
    right: Term


@dataclass(frozen=True)
class And(Term):
    """``a && b && ...``: short-circuit left to right, gives 1/0; flat like
    :class:`Arith`."""
    args: tuple


@dataclass(frozen=True)
class Index(Term):
    """``v[i]`` and ``proj(v, i)``: field ``i`` of a Tuple or List."""
    arg: Term
    index: int


@dataclass(frozen=True)
class Call(Term):
    """A builtin: tuple, list, inject, len, istag, not, or, if, hash, and
    the Float/String ones of :data:`SIMPLE_BUILTINS`.

    ``istag``'s first argument is kept as ``Lit``.
    """
    name: str
    args: tuple


@dataclass(frozen=True)
class PyCall(Term):
    """``@name(args...)``: a Python function the server was given
    (``--functions``, SPEC C5). ``line``/``col`` locate the ``@`` in the
    program, for the install error naming an unknown function."""
    name: str
    args: tuple
    line: int = 0
    col: int = 0


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
    # SPEC D1: Floats and Strings
    "float": 1,
    "fadd": 2,
    "fsub": 2,
    "fmul": 2,
    "fdiv": 2,
    "fneg": 1,
    "fint": 1,
    "idiv": 2,
    "append": 2,
    "bytes": 1,
    "utf8": 1,
}

# Builtins that are one call of a runtime function on their evaluated
# arguments (the compiler and the interpreter share this table).
SIMPLE_BUILTINS = {
    "float": "to_float", "fadd": "fadd", "fsub": "fsub", "fmul": "fmul", "fdiv": "fdiv",
    "fneg": "fneg", "fint": "fint", "idiv": "idiv", "append": "append", "bytes": "utf8_bytes",
    "utf8": "from_utf8",
}


def children(term: Term) -> tuple:
    """The direct sub-terms of ``term``, in evaluation order."""
    if isinstance(term, (Neg, Index)):
        return (term.arg,)
    if isinstance(term, Arith):
        return (term.first,) + tuple(t for _, t in term.rest)
    if isinstance(term, Cmp):
        return (term.left, term.right)
    if isinstance(term, And):
        return term.args
    if isinstance(term, (Call, PyCall)):
        return term.args
    if isinstance(term, Case):
        default = () if term.default is None else (term.default,)
        return (term.scrutinee,) + tuple(body for _, body in term.arms) + default
    if isinstance(term, Fold):
        return (term.items, term.init, term.step)
    return ()


def walk(term: Term):
    """Yield ``term`` and every sub-term (pre-order), without recursion."""
    stack = [term]
    while stack:
        t = stack.pop()
        yield t
        stack.extend(reversed(children(t)))


def depth(term: Term) -> int:
    """Nesting depth of ``term`` (a leaf is 1), without recursion."""
    deepest, stack = 0, [(term, 1)]
    while stack:
        t, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in children(t))
    return deepest
