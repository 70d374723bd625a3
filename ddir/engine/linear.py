"""Compile a fused chain of linear steps into one Python function.

The generated function maps a batch ``[(key, val, diff)]`` at one time to
the output batch in a single loop; each step's term code is inlined (see
:mod:`ddir.terms.compile`). A term error drops the row and is reported to
``fail(step_index, error, key, val, diff)`` with the row that step failed on; ``flatmap`` opens a nested loop so that the
steps after it run per element.
"""

from __future__ import annotations

from .time import join as time_join, less_equal
from ..ir import nodes as N
from ..lang.ast import Splice
from ..terms import ast as T
from ..terms import runtime as rt
from ..terms.compile import CannotCompile, Codegen, build_function, compilable
from ..terms.interp import evaluate
from ..values import INT_MAX, INT_MIN

OVERFLOW = "multiplicity overflow: a diff left the signed 64-bit range"


def _fields(gen: Codegen, fields: tuple, rows: tuple) -> str:
    if len(fields) == 1 and isinstance(fields[0], Splice) and fields[0].n < len(rows):
        # `($1 ; ...)`: a Tuple row is itself the result, no new tuple
        src = rows[fields[0].n]
        return f"({src} if type({src}) is tuple else _fields({src}))"
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
    if proj.bare:  # `value(t)`: each side is its one field itself
        return gen.expr(proj.key[0], rows), gen.expr(proj.val[0], rows)
    return _fields(gen, proj.key, rows), _fields(gen, proj.val, rows)


def compile_join(proj, depth: int, functions: dict | None = None):
    """``f(dl, dr, left, right, t, fail) -> {time: rows}``: the pairs a join
    forms at ``t`` in a scope of ``depth``, in one generated function with
    the projection and the time arithmetic inlined (a call per pair cost
    more than the projection itself). ``dl`` meets every ``right`` entry
    (this time's right rows included), ``dr`` the ``left`` entries of
    earlier times: (L + dL)(R + dR) - LR, each pair evaluated once.
    ``fail(error, key, (a, b), time, diff)`` gets each failing pair;
    ``functions``: what ``@name(...)`` calls."""
    if not compilable(*proj_terms(proj)):
        return _interpret_join(proj, depth, functions)
    gen = Codegen(functions)
    key, val = projection_source(gen, proj, ("k", "a", "b"))
    if deepens(proj):
        key, val = f"_capped({key}, 'the key')", f"_capped({val}, 'the val')"

    def loop(delta, hist_of, skip_now):
        d_new, d_old, row = ("d1", "d2", "b") if delta == "dl" else ("d2", "d1", "a")
        lines = [f"    for k, {'a' if delta == 'dl' else 'b'}, {d_new} in {delta}:",
                 f"        hist = {hist_of}.get(k)",
                 "        if hist is None:",
                 "            continue",
                 f"        for {row}, s, {d_old} in hist:"]
        if skip_now:
            lines += ["            if s == t:", "                continue"]
        if depth == 0:  # at the root every entry is at or before t
            lines += ["            st = t"]
        elif depth == 1:
            lines += ["            st = t if (s[0] <= t0 and s[1] <= t1) else "
                      "(s[0] if s[0] > t0 else t0, s[1] if s[1] > t1 else t1)"]
        else:
            lines += ["            st = t if _time_le(s, t) else _time_join(s, t)"]
        lines += ["            d = d1 * d2",
                  "            if not -9223372036854775808 <= d <= 9223372036854775807:",
                  "                fail(_OVERFLOW, k, (a, b), st, d)",
                  "                continue",
                  "            try:",
                  f"                row = ({key}, {val}, d)",
                  "            except TermError as e:",
                  "                fail(e, k, (a, b), st, d)",
                  "                continue",
                  "            if st is t:",
                  "                now(row)",
                  "            else:",
                  "                out.setdefault(st, []).append(row)"]
        return lines

    lines = ["def join(dl, dr, left, right, t, fail):",
             "    cur = []",
             "    now = cur.append",
             "    out = {t: cur}"]
    if depth == 1:
        lines.append("    t0, t1 = t")
    lines += loop("dl", "right", False) + loop("dr", "left", True) + ["    return out"]
    try:
        return build_function("join", "\n".join(lines) + "\n", gen.consts,
                              {"_time_le": less_equal, "_time_join": time_join, "_OVERFLOW": OVERFLOW})
    except CannotCompile:
        return _interpret_join(proj, depth, functions)


def _interpret_join(proj, depth: int, functions: dict | None = None):
    """:func:`compile_join` through the interpreter."""
    def join(dl, dr, left, right, t, fail):
        out: dict = {}
        pairs = [(k, a, b, s, d1 * d2) for k, a, d1 in dl for b, s, d2 in right.get(k, ())]
        pairs += [(k, a, b, s, d1 * d2) for k, b, d2 in dr for a, s, d1 in left.get(k, ()) if s != t]
        for k, a, b, s, d in pairs:
            st = t if less_equal(s, t) else time_join(s, t)
            if not INT_MIN <= d <= INT_MAX:
                fail(OVERFLOW, k, (a, b), st, d)
                continue
            try:
                key, v = project(proj, (k, a, b), functions)
            except rt.TermError as e:
                fail(e, k, (a, b), st, d)
                continue
            out.setdefault(st, []).append((key, v, d))
        return out
    return join


def compile_chain(steps: tuple, functions: dict | None = None):
    """``f(rows, t, it, fail, events) -> out rows``; ``it`` is the iteration
    number lift_iter appends (0 at the root).

    Every step that changes the key, val or diff binds *new* names
    (``k3``, ``v3``...), never the loop's own: after a ``flatmap`` the later
    steps run once per element inside a nested loop, and rebinding ``k``
    there would hand the next element the previous element's key.
    """
    if compilable(*step_terms(steps)):
        try:
            return _generate_chain(steps, functions)
        except CannotCompile:
            pass
    return interpret_chain(steps, functions)


def deepens(proj) -> bool:
    """Whether a projection can build a value deeper than its input rows:
    a field other than an Int-valued term, a field of a row (``$0[1]``) or a
    splice. Its key and val are then checked (``runtime.capped``): repeated
    in a loop, such a projection could otherwise nest without bound."""
    return not all(_shallow(f) for f in proj_terms(proj))


def _shallow(term) -> bool:
    """An Int-valued term or a proper part of a row (``$0[1][2]``): never
    deeper than the row it reads."""
    if isinstance(term, (T.Lit, T.Neg, T.Arith, T.Cmp, T.And)):
        return True
    if isinstance(term, T.Index):
        return _path(term.arg)
    if isinstance(term, T.Call):
        return term.name in ("len", "istag", "not", "or", "hash")
    return False


def _path(term) -> bool:
    return isinstance(term, T.Row) or (isinstance(term, T.Index) and _path(term.arg))


def step_terms(steps: tuple):
    """Every term the steps evaluate."""
    for step in steps:
        if isinstance(step, N.MapStep):
            yield from proj_terms(step.proj)
        elif isinstance(step, (N.FilterStep, N.FlatMapStep)):
            yield step.term


def proj_terms(proj):
    return [f for f in proj.key + proj.val if not isinstance(f, Splice)]


def _generate_chain(steps: tuple, functions: dict | None = None):
    gen = Codegen(functions)
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
                      indent + f"for _p{i}, _x{i} in enumerate(_l{i}):"]
            if _shallow(step.term):  # its elements are parts of the row: (i, e) is no deeper
                lines += [indent + f"    v{i} = (_p{i}, _x{i})"]
            else:  # `(i, e)` wraps what the term built: in a loop, one level a round
                lines += [indent + "    try:",
                          indent + f"        v{i} = _capped((_p{i}, _x{i}), 'the val')",
                          indent + "    except TermError as e:",
                          indent + f"        fail({i}, e, {k}, {v}, {d})",
                          indent + "        continue"]
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
        if deepens(step.proj):
            key, val = f"_capped({key}, 'the key')", f"_capped({val}, 'the val')"
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

def project(proj, rows: tuple, functions: dict | None = None) -> tuple:
    """(key, val) of a projection, through the interpreter."""
    if proj.bare:  # `value(t)`: each side is its one field itself
        return (rt.capped(evaluate(proj.key[0], rows, (), functions), "the key"),
                rt.capped(evaluate(proj.val[0], rows, (), functions), "the val"))
    return (rt.capped(_side(proj.key, rows, functions), "the key"),
            rt.capped(_side(proj.val, rows, functions), "the val"))


def _side(fields: tuple, rows: tuple, functions: dict | None = None) -> tuple:
    out = []
    for f in fields:
        if isinstance(f, Splice):
            out.extend(rt.fields(rows[f.n]) if f.n < len(rows) else rt.no_row(f.n))
        else:
            out.append(evaluate(f, rows, (), functions))
    return tuple(out)


def interpret_chain(steps: tuple, functions: dict | None = None):
    """The same function as :func:`compile_chain` generates, walking the
    terms instead: for terms too deep for Python to compile."""
    def run(row, i, t, it, fail, events, append):
        k, v, d = row
        while i < len(steps):
            step = steps[i]
            try:
                if isinstance(step, N.MapStep):
                    k, v = project(step.proj, (k, v), functions)
                elif isinstance(step, N.FilterStep):
                    f = evaluate(step.term, (k, v), (), functions)
                    if type(f) is not int or f == 0:
                        return
                elif isinstance(step, N.NegateStep):
                    d = -d
                elif isinstance(step, N.LiftIterStep):
                    v = v + (it,) if type(v) is tuple else (v, it)
                elif isinstance(step, N.InspectStep):
                    events.append((step.label, k, v, t, d))
                elif isinstance(step, N.FlatMapStep):
                    items = rt.as_list(evaluate(step.term, (k, v), (), functions), "`flatmap`")
                    for p, x in enumerate(items):
                        try:
                            element = rt.capped((p, x), "the val")
                        except rt.TermError as e:
                            fail(i, e, k, v, d)
                            continue
                        run((k, element, d), i + 1, t, it, fail, events, append)
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
