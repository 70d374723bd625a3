"""Compile a fused chain of linear steps into one Python function.

The generated function maps a batch ``[(key, val, diff)]`` at one time to
the output batch in a single loop; each step's term code is inlined (see
:mod:`ddir.terms.compile`). A term error drops the row and is reported to
``fail(step_index, error, key, val, diff)`` with the row that step failed on; ``flatmap`` opens a nested loop so that the
steps after it run per element.
"""

from __future__ import annotations

from ..ir import nodes as N
from ..lang.ast import Splice
from ..terms import runtime as rt
from ..terms.compile import CannotCompile, Codegen, build_function, compilable
from ..terms.interp import evaluate


def _fields(gen: Codegen, fields: tuple, rows: tuple) -> str:
    parts = []
    for f in fields:
        if isinstance(f, Splice):
            src = rows[f.n] if f.n < len(rows) else f"_norow({f.n})"
            parts.append(f"*_fields({src})")
        else:
            parts.append(gen.expr(f, rows))
    return "(" + "".join(p + ", " for p in parts) + ")"


def projection_source(gen: Codegen, proj, rows: tuple) -> tuple:
    """(key source, val source) of a projection over ``rows`` variables."""
    return _fields(gen, proj.key, rows), _fields(gen, proj.val, rows)


def compile_projection(proj):
    """``f(k, a, b) -> (key, val)`` for a join's projection."""
    if compilable(*proj_terms(proj)):
        gen = Codegen()
        key, val = projection_source(gen, proj, ("k", "a", "b"))
        try:
            return build_function("proj", f"def proj(k, a, b):\n    return {key}, {val}\n",
                                  gen.consts)
        except CannotCompile:
            pass
    return lambda k, a, b: project(proj, (k, a, b))


def compile_chain(steps: tuple):
    """``f(rows, t, it, fail, events) -> out rows``; ``it`` is the iteration
    number lift_iter appends (0 at the root).

    Every step that changes the key, val or diff binds *new* names
    (``k3``, ``v3``...), never the loop's own: after a ``flatmap`` the later
    steps run once per element inside a nested loop, and rebinding ``k``
    there would hand the next element the previous element's key.
    """
    if compilable(*step_terms(steps)):
        try:
            return _generate_chain(steps)
        except CannotCompile:
            pass
    return interpret_chain(steps)


def step_terms(steps: tuple):
    """Every term the steps evaluate."""
    for step in steps:
        if isinstance(step, N.MapStep):
            yield from proj_terms(step.proj)
        elif isinstance(step, (N.FilterStep, N.FlatMapStep)):
            yield step.term


def proj_terms(proj):
    return [f for f in proj.key + proj.val if not isinstance(f, Splice)]


def _generate_chain(steps: tuple):
    gen = Codegen()
    lines = [
        "def chain(rows, t, it, fail, events):",
        "    out = []",
        "    append = out.append",
        "    for k, v, d in rows:",
    ]
    indent = "        "
    names = ("k", "v", "d")  # the names holding the current row
    for i, step in enumerate(steps):
        k, v, d = names
        if isinstance(step, N.FlatMapStep):
            lines += [indent + "try:", indent + f"    _l{i} = _aslist({gen.expr(step.term, (k, v))})",
                      indent + "except TermError as e:", indent + f"    fail({i}, e, {k}, {v}, {d})",
                      indent + "    continue",
                      indent + f"for _p{i}, _x{i} in enumerate(_l{i}):",
                      indent + f"    v{i} = (_p{i}, _x{i})"]
            indent += "    "
            names = (k, f"v{i}", d)
            continue
        step_lines, names = _step_lines(gen, i, step, names)
        lines += [indent + line for line in step_lines]
    lines.append(indent + "append(({}, {}, {}))".format(*names))
    lines.append("    return out")
    source = "\n".join(lines) + "\n"
    fn = build_function("chain", source, gen.consts)
    fn.source = source
    return fn


def _step_lines(gen: Codegen, i: int, step, names: tuple):
    """(source lines of one step, the names holding its output row)."""
    k, v, d = names
    rows = (k, v)
    if isinstance(step, N.MapStep):
        key, val = projection_source(gen, step.proj, rows)
        return (["try:", f"    k{i}, v{i} = {key}, {val}", "except TermError as e:",
                 f"    fail({i}, e, {k}, {v}, {d})", "    continue"], (f"k{i}", f"v{i}", d))
    if isinstance(step, N.FilterStep):
        return (["try:", f"    _f = {gen.expr(step.term, rows)}", "except TermError as e:",
                 f"    fail({i}, e, {k}, {v}, {d})", "    continue",
                 "if type(_f) is not int or _f == 0:", "    continue"], names)
    if isinstance(step, N.NegateStep):
        return [f"d{i} = -{d}"], (k, v, f"d{i}")
    if isinstance(step, N.LiftIterStep):
        return [f"v{i} = {v} + (it,) if type({v}) is tuple else ({v}, it)"], (k, f"v{i}", d)
    if isinstance(step, N.InspectStep):
        return [f"events.append(({step.label!r}, {k}, {v}, t, {d}))"], names
    raise TypeError(step)  # FlatMapStep is handled by the caller (it opens a loop)


# ------------------------------------------------------------ interpreted

def project(proj, rows: tuple) -> tuple:
    """(key, val) of a projection, through the interpreter."""
    return _side(proj.key, rows), _side(proj.val, rows)


def _side(fields: tuple, rows: tuple) -> tuple:
    out = []
    for f in fields:
        if isinstance(f, Splice):
            out.extend(rt.fields(rows[f.n]) if f.n < len(rows) else rt.no_row(f.n))
        else:
            out.append(evaluate(f, rows))
    return tuple(out)


def interpret_chain(steps: tuple):
    """The same function as :func:`compile_chain` generates, walking the
    terms instead: for terms too deep for Python to compile."""
    def run(row, i, t, it, fail, events, append):
        k, v, d = row
        while i < len(steps):
            step = steps[i]
            try:
                if isinstance(step, N.MapStep):
                    k, v = project(step.proj, (k, v))
                elif isinstance(step, N.FilterStep):
                    f = evaluate(step.term, (k, v))
                    if type(f) is not int or f == 0:
                        return
                elif isinstance(step, N.NegateStep):
                    d = -d
                elif isinstance(step, N.LiftIterStep):
                    v = v + (it,) if type(v) is tuple else (v, it)
                elif isinstance(step, N.InspectStep):
                    events.append((step.label, k, v, t, d))
                elif isinstance(step, N.FlatMapStep):
                    items = rt.as_list(evaluate(step.term, (k, v)), "`flatmap`")
                    for p, x in enumerate(items):
                        run((k, (p, x), d), i + 1, t, it, fail, events, append)
                    return
            except rt.TermError as e:
                fail(i, e, k, v, d)
                return
            i += 1
        append((k, v, d))

    def chain(rows, t, it, fail, events):
        out = []
        for row in rows:
            run(row, 0, t, it, fail, events, out.append)
        return out
    return chain
