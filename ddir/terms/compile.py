"""Compile scalar terms to Python source once, at install time.

:class:`Codegen` turns a term into one Python *expression* string over row
variables (``r0``, ``r1``, ...); callers (the fused linear chains in the
engine, :func:`compile_term` here) embed those expressions in generated
functions and ``compile()`` them once. Walking the term tree per row is
2.6x-11x slower (``bench/terms.py``: 0.5 vs 4.4 us/row for `$0[0] + $1[1] * 2`).

Binders: a ``case`` arm's payload is read from the walrus-bound scrutinee
(``_cN[1]``), a ``fold`` step is a lambda over ``(_eN, _aN)``.
"""

from __future__ import annotations

from . import runtime as rt
from .ast import (SIMPLE_BUILTINS, And, Arith, Bound, Call, Case, Cmp, Fold, Index, Lit, Neg,
                  PyCall, Row, Term, depth)
from .interp import evaluate
from ..values import List

# Names visible to generated code.
GLOBALS = {
    "_add": rt.add, "_sub": rt.sub, "_mul": rt.mul, "_neg": rt.neg,
    "_eq": rt.eq, "_ne": rt.ne, "_lt": rt.lt, "_le": rt.le,
    "_truthy": rt.truthy, "_ix": rt.index, "_fields": rt.fields,
    "_inject": rt.inject, "_len": rt.length, "_istag": rt.istag,
    "_fold": rt.fold, "_scrut": rt.case_scrutinee, "_noarm": rt.no_arm,
    "_norow": rt.no_row, "_hash": rt.hash_term, "_bits": rt.bit_length_u64,
    "_aslist": lambda v: rt.as_list(v, "`flatmap`"),
    "_List": List, "TermError": rt.TermError, "_pycall": rt.call_function, "_capped": rt.capped,
}
GLOBALS.update({f"_{fn}": getattr(rt, fn) for fn in SIMPLE_BUILTINS.values()})

_ARITH_FN = {"+": "_add", "-": "_sub", "*": "_mul"}
_CMP_FN = {"==": "_eq", "!=": "_ne", "<": "_lt", "<=": "_le"}


class Codegen:
    """Generates expression source; collects non-int constants in ``consts``.

    One instance per generated function so walrus names stay unique in it.
    ``functions``: name -> callable for ``@name(...)`` (SPEC C5); each call
    site gets its callable as a constant, so nothing is looked up per row.
    """

    def __init__(self, functions: dict | None = None) -> None:
        self.consts: list = []
        self._counter = 0
        self.functions = functions or {}

    def fresh(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def const(self, value) -> str:
        if type(value) is int:
            return f"({value})"
        self.consts.append(value)
        return f"_K[{len(self.consts) - 1}]"

    def expr(self, term: Term, rows: tuple, binders: tuple = ()) -> str:
        """Source of ``term``; ``rows`` are the row variable names, ``binders``
        the expressions of the enclosing binders, innermost last."""
        e = lambda t, b=binders: self.expr(t, rows, b)  # noqa: E731
        if isinstance(term, Row):
            return rows[term.n] if term.n < len(rows) else f"_norow({term.n})"
        if isinstance(term, Bound):
            return binders[len(binders) - 1 - term.k]
        if isinstance(term, Lit):
            return self.const(term.value)
        if isinstance(term, Neg):
            return f"_neg({e(term.arg)})"
        if isinstance(term, Arith):
            # A flat tuple of walrus steps, evaluated left to right: however
            # long the chain, the source nests no deeper than one operand.
            acc = self.fresh("_s")
            parts = [f"({acc} := {e(term.first)})"]
            parts += [f"({acc} := {_ARITH_FN[op]}({acc}, {e(t)}))" for op, t in term.rest]
            return f"({', '.join(parts)})[-1]"
        if isinstance(term, Cmp):
            a, b = e(term.left), e(term.right)
            if term.op in (">", ">="):  # a > b  <=>  b < a, evaluated left first
                x, y = self.fresh("_x"), self.fresh("_y")
                fn = "_lt" if term.op == ">" else "_le"
                return f"(({x} := {a}), ({y} := {b}), {fn}({y}, {x}))[2]"
            return f"{_CMP_FN[term.op]}({a}, {b})"
        if isinstance(term, And):
            return f"(1 if ({' and '.join(f'_truthy({e(t)})' for t in term.args)}) else 0)"
        if isinstance(term, Index):
            return f"_ix({e(term.arg)}, {term.index})"
        if isinstance(term, Call):
            return self._call(term, e)
        if isinstance(term, PyCall):
            fn = self.const(self.functions.get(term.name))
            return f"_pycall({term.name!r}, {fn}" + "".join(", " + e(a) for a in term.args) + ")"
        if isinstance(term, Case):
            c = self.fresh("_c")
            inner = binders + (f"{c}[1]",)
            chain = (f"_noarm({c})" if term.default is None
                     else self.expr(term.default, rows, binders))
            for tag, body in reversed(term.arms):
                chain = f"({self.expr(body, rows, inner)} if {c}[0] == {tag} else {chain})"
            return f"(({c} := _scrut({e(term.scrutinee)})), {chain})[1]"
        if isinstance(term, Fold):
            el, acc = self.fresh("_e"), self.fresh("_a")
            step = self.expr(term.step, rows, binders + (acc, el))
            return f"_fold({e(term.items)}, {e(term.init)}, lambda {el}, {acc}: {step})"
        raise TypeError(f"not a term: {term!r}")

    def _call(self, term: Call, e) -> str:
        name, args = term.name, term.args
        if name == "tuple":
            return "(" + "".join(e(a) + ", " for a in args) + ")"
        if name == "list":
            return "_List((" + "".join(e(a) + ", " for a in args) + "))"
        if name in ("inject", "variant"):
            return f"_inject({e(args[0])}, {e(args[1])})"
        if name == "proj":
            return f"_ix({e(args[0])}, {args[1].value})"
        if name == "len":
            return f"_len({e(args[0])})"
        if name == "istag":
            return f"_istag({args[0].value}, {e(args[1])})"
        if name == "not":
            return f"(0 if _truthy({e(args[0])}) else 1)"
        if name == "or":
            return f"(1 if (_truthy({e(args[0])}) or _truthy({e(args[1])})) else 0)"
        if name == "if":
            return f"({e(args[1])} if _truthy({e(args[0])}) else {e(args[2])})"
        if name == "hash":
            return "_hash(" + ", ".join(e(a) for a in args) + ")"
        if name in SIMPLE_BUILTINS:
            return f"_{SIMPLE_BUILTINS[name]}(" + ", ".join(e(a) for a in args) + ")"
        raise TypeError(f"unknown builtin {name!r}")


# Python's own limits on one function: its parser refuses more than 200
# nested parentheses and its compiler more than 20 nested blocks, and deep
# sources can exhaust the C stack. Terms nested deeper than this are run by
# the interpreter instead (``compile`` would fail or be no faster).
MAX_COMPILED_DEPTH = 40


class CannotCompile(Exception):
    """The generated source is beyond what Python compiles; interpret."""


def build_function(name: str, source: str, consts: list, extra: dict | None = None):
    """``exec`` generated source defining ``name`` and return that function
    (:class:`CannotCompile` where Python refuses the source); ``extra``:
    more names the source uses."""
    namespace = dict(GLOBALS)
    namespace.update(extra or {})
    namespace["_K"] = tuple(consts)
    try:
        code = compile(source, f"<ddir:{name}>", "exec")
    except (SyntaxError, RecursionError, MemoryError) as e:
        raise CannotCompile(str(e)) from None
    exec(code, namespace)
    return namespace[name]


def compilable(*terms) -> bool:
    """Whether code generation for ``terms`` stays within Python's limits."""
    return all(depth(t) <= MAX_COMPILED_DEPTH for t in terms)


def compile_term(term: Term, nrows: int, functions: dict | None = None):
    """A Python function ``f(r0, ..., r{nrows-1})`` computing ``term``;
    the interpreter behind the same signature for a term too deep to compile.
    ``functions``: what ``@name(...)`` calls."""
    if compilable(term):
        gen = Codegen(functions)
        rows = tuple(f"r{i}" for i in range(nrows))
        body = gen.expr(term, rows)
        source = f"def term({', '.join(rows)}):\n    return {body}\n"
        try:
            return build_function("term", source, gen.consts)
        except CannotCompile:
            pass
    return lambda *rows: evaluate(term, rows, (), functions)
