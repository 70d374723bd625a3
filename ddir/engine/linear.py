"""Compile a fused chain of linear steps into one Python function.

The generated function maps a batch ``[(key, val, diff)]`` at one time to
the output batch in a single loop; each step's term code is inlined (see
:mod:`ddir.terms.compile`). A term error drops the row and is reported to
``fail(step_index, error)``; ``flatmap`` opens a nested loop so that the
steps after it run per element.
"""

from __future__ import annotations

from ..ir import nodes as N
from ..lang.ast import Splice
from ..terms.compile import Codegen, build_function


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


def compile_chain(steps: tuple):
    """``f(rows, t, it, fail, events) -> out rows``; ``it`` is the iteration
    number lift_iter appends (0 at the root)."""
    gen = Codegen()
    lines = [
        "def chain(rows, t, it, fail, events):",
        "    out = []",
        "    append = out.append",
        "    for k, v, d in rows:",
    ]
    indent = "        "
    for i, step in enumerate(steps):
        if isinstance(step, N.FlatMapStep):
            lines += [indent + "try:", indent + f"    _l{i} = _aslist({gen.expr(step.term, ('k', 'v'))})",
                      indent + "except TermError as e:", indent + f"    fail({i}, e)", indent + "    continue",
                      indent + f"for _p{i}, _x{i} in enumerate(_l{i}):",
                      indent + f"    v = (_p{i}, _x{i})"]
            indent += "    "
            continue
        lines += [indent + line for line in _step_lines(gen, i, step)]
    lines.append(indent + "append((k, v, d))")
    lines.append("    return out")
    source = "\n".join(lines) + "\n"
    fn = build_function("chain", source, gen.consts)
    fn.source = source
    return fn


def _step_lines(gen: Codegen, i: int, step):
    rows = ("k", "v")
    if isinstance(step, N.MapStep):
        key, val = projection_source(gen, step.proj, rows)
        return ["try:", f"    k, v = {key}, {val}", "except TermError as e:",
                f"    fail({i}, e)", "    continue"]
    if isinstance(step, N.FilterStep):
        return ["try:", f"    _f = {gen.expr(step.term, rows)}", "except TermError as e:",
                f"    fail({i}, e)", "    continue",
                "if type(_f) is not int or _f == 0:", "    continue"]
    if isinstance(step, N.NegateStep):
        return ["d = -d"]
    if isinstance(step, N.LiftIterStep):
        return ["v = v + (it,) if type(v) is tuple else (v, it)"]
    if isinstance(step, N.InspectStep):
        return [f"events.append(({step.label!r}, k, v, t, d))"]
    raise TypeError(step)  # FlatMapStep is handled by the caller (it opens a loop)
