"""A small reference interpreter for terms.

Used by tests to cross-check :mod:`ddir.terms.compile` and by the naive
oracle; it shares the primitive operations of :mod:`ddir.terms.runtime`, so
the two can only disagree where code generation is wrong.
"""

from __future__ import annotations

from . import runtime as rt
from .ast import (SIMPLE_BUILTINS, And, Arith, Bound, Call, Case, Cmp, Fold, Index, Lit, Neg,
                  PyCall, Row, Term)
from ..values import List


def evaluate(term: Term, rows: tuple, binders: tuple = (), functions: dict | None = None):
    """Value of ``term`` with input rows ``rows``; ``binders`` innermost last;
    ``functions``: name -> callable for ``@name(...)`` (SPEC C5)."""
    ev = lambda t: evaluate(t, rows, binders, functions)  # noqa: E731
    if isinstance(term, Row):
        if term.n < len(rows):
            return rows[term.n]
        rt.no_row(term.n)
    if isinstance(term, Bound):
        return binders[len(binders) - 1 - term.k]
    if isinstance(term, Lit):
        return term.value
    if isinstance(term, Neg):
        return rt.neg(ev(term.arg))
    if isinstance(term, Arith):
        acc = ev(term.first)
        for op, t in term.rest:
            acc = rt.ARITH[op](acc, ev(t))
        return acc
    if isinstance(term, Cmp):
        a = ev(term.left)
        return rt.COMPARE[term.op](a, ev(term.right))
    if isinstance(term, And):
        return 1 if all(rt.truthy(ev(t)) for t in term.args) else 0
    if isinstance(term, Index):
        return rt.index(ev(term.arg), term.index)
    if isinstance(term, Call):
        return _call(term, ev)
    if isinstance(term, PyCall):
        fn = functions.get(term.name) if functions else None
        return rt.call_function(term.name, fn, *[ev(a) for a in term.args])
    if isinstance(term, Case):
        v = rt.case_scrutinee(ev(term.scrutinee))
        for tag, body in term.arms:
            if v[0] == tag:
                return evaluate(body, rows, binders + (v[1],), functions)
        if term.default is not None:
            return ev(term.default)
        rt.no_arm(v)
    if isinstance(term, Fold):
        items = ev(term.items)
        acc = ev(term.init)
        for item in rt.as_list(items, "`fold`"):
            acc = evaluate(term.step, rows, binders + (acc, item), functions)
        return rt.capped(acc, "`fold`")
    raise TypeError(f"not a term: {term!r}")


def _call(term: Call, ev):
    name, args = term.name, term.args
    if name == "tuple":
        return tuple(ev(a) for a in args)
    if name == "list":
        return List(ev(a) for a in args)
    if name in ("inject", "variant"):
        tag = ev(args[0])
        return rt.inject(tag, ev(args[1]))
    if name == "proj":
        return rt.index(ev(args[0]), args[1].value)
    if name == "len":
        return rt.length(ev(args[0]))
    if name == "istag":
        return rt.istag(args[0].value, ev(args[1]))
    if name == "not":
        return 0 if rt.truthy(ev(args[0])) else 1
    if name == "or":
        return 1 if rt.truthy(ev(args[0])) or rt.truthy(ev(args[1])) else 0
    if name == "if":
        return ev(args[1]) if rt.truthy(ev(args[0])) else ev(args[2])
    if name == "hash":
        return rt.hash_term(*[ev(a) for a in args])
    if name in SIMPLE_BUILTINS:
        return getattr(rt, SIMPLE_BUILTINS[name])(*[ev(a) for a in args])
    raise TypeError(f"unknown builtin {name!r}")
