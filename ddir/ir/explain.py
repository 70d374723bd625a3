"""``ddir explain``: the lowered scope tree in a readable indented form."""

from __future__ import annotations

from . import nodes as N
from ..lang.ast import Splice
from ..terms import ast as T
from ..values import Float, List, Variant, format_value

# Precedence levels of the .ddp term grammar (SPEC A3), loosest first.
_AND, _CMP, _ADD, _MUL, _UNARY, _POSTFIX, _ATOM = range(1, 8)


def term_text(term: T.Term) -> str:
    """``term`` in .ddp syntax, as a user would write it (``$0[0] == 1``),
    with only the parentheses the grammar needs. Iterative (an explicit
    stack of pieces still to write), so a 10,000-step chain prints safely.

    Lowering has dropped constructor and binder names, so a ``case`` arm is
    written ``#tag => body`` (the one form that is not .ddp) and a binder as
    ``^k`` (``x`` of ``Ctor(x)`` is ``^0[0]``)."""
    out = []
    # pieces still to write, last first: text, or (term, least level it may have unparenthesised)
    todo = [(term, 0)]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        t, need = item
        level, pieces = _layout(t)
        if level < need:
            pieces = ["(", *pieces, ")"]
        todo.extend(reversed(pieces))
    return "".join(out)


def _layout(t) -> tuple:
    """``(level, pieces)`` of one node; pieces are text or ``(child, level)``."""
    if isinstance(t, T.Row):
        return _ATOM, [f"${t.n}"]
    if isinstance(t, T.Bound):
        return _ATOM, [f"^{t.k}"]
    if isinstance(t, T.Lit):
        return _literal(t.value)
    if isinstance(t, T.Neg):  # a negative operand needs parentheses: `--` starts a comment
        return _UNARY, ["-", (t.arg, _POSTFIX)]
    if isinstance(t, T.Arith):  # a flat left-associative chain: first op1 t1 op2 t2 ...
        if not t.rest:
            return _layout(t.first)
        level = _MUL if t.rest[0][0] == "*" else _ADD
        pieces = [(t.first, level)]
        for op, operand in t.rest:
            op_level = _MUL if op == "*" else _ADD
            if op_level > level:  # `(a + b) * c`: what came before binds looser
                pieces = ["(", *pieces, ")"]
            level = op_level
            pieces += [f" {op} ", (operand, op_level + 1)]
        return level, pieces
    if isinstance(t, T.Cmp):  # non-associative
        return _CMP, [(t.left, _ADD), f" {t.op} ", (t.right, _ADD)]
    if isinstance(t, T.And):  # flat: a nested `&&` operand was written in parentheses
        pieces = []
        for i, arg in enumerate(t.args):
            pieces += [" && " if i else "", (arg, _CMP)]
        return _AND, pieces
    if isinstance(t, T.Index):
        return _POSTFIX, [(t.arg, _POSTFIX), f"[{t.index}]"]
    if isinstance(t, T.Call):
        return _ATOM, _call(t.name, t.args)
    if isinstance(t, T.PyCall):
        return _ATOM, _call("@" + t.name, t.args)
    if isinstance(t, T.Fold):
        return _ATOM, _call("fold", (t.items, t.init, t.step))
    if isinstance(t, T.Case):
        arms = [(f"#{tag} => ", body) for tag, body in t.arms]
        if t.default is not None:
            arms.append(("_ => ", t.default))
        pieces = ["case ", (t.scrutinee, 0), " { "]
        for i, (head, body) in enumerate(arms):
            pieces += [", " if i else "", head, (body, 0)]
        return _ATOM, pieces + [" }"]
    return _ATOM, [repr(t)]  # a node this printer does not know yet: at least show it


def _call(name: str, args) -> list:
    pieces = [f"{name}("]
    for i, a in enumerate(args):
        pieces += [", " if i else "", (a, 0)]
    return pieces + [")"]


def _literal(v) -> tuple:
    """A constant (the optimiser folds whole values) as the term that builds it."""
    t = type(v)
    if t is int:
        return (_ATOM if v >= 0 else _UNARY), [str(v)]
    if t is Float or t is str:  # SPEC D1: the printed form is the literal
        text = format_value(v)
        return (_UNARY if text.startswith("-") else _ATOM), [text]
    if t is Variant:
        return _ATOM, _call("inject", (T.Lit(v[0]), T.Lit(v[1])))
    return _ATOM, _call("list" if t is List else "tuple", [T.Lit(x) for x in v])


def _term(t) -> str:
    if isinstance(t, Splice):  # a field that is exactly `$n` splices row n (SPEC A4)
        return f"${t.n}"
    return term_text(t)


def _proj(p) -> str:
    key = ", ".join(_term(f) for f in p.key)
    val = ", ".join(_term(f) for f in p.val)
    return f"({key + ' ;' if key else ';'}{' ' + val if val else ''})"  # `($0 ; $1)`, `(;)`


def _step(s) -> str:
    if isinstance(s, N.MapStep) and s.proj.bare:  # `value(t)` keeps the key
        return f"value({_term(s.proj.val[0])})"
    if isinstance(s, N.MapStep):
        return f"map{_proj(s.proj)}"
    if isinstance(s, (N.FilterStep, N.FlatMapStep)):
        return f"{s.op}({term_text(s.term)})"
    if isinstance(s, N.InspectStep):
        return f"inspect({s.label})"
    return s.op


def describe(node) -> str:
    kind = N.NODE_KINDS[type(node)]
    args = ", ".join(f"#{i}" for i in node.inputs)
    extra = ""
    if isinstance(node, N.InputNode):
        extra = f" {node.n}"
    elif isinstance(node, N.ImportNode):
        extra = f' "{node.trace}"'
    elif isinstance(node, N.LinearNode):
        extra = " " + " | ".join(_step(s) for s in node.steps)
    elif isinstance(node, N.JoinNode):
        extra = " " + _proj(node.proj)
    elif isinstance(node, N.ReduceNode):
        extra = f" {node.reducer}"
    elif isinstance(node, N.EnterAtNode):
        extra = f" {term_text(node.term)}"
    name = f"  -- {node.name}" if node.name else ""
    return f"#{node.id} = {kind}({args}){extra}{name}"


def explain(program: N.Program) -> str:
    lines = [f"program {program.file}",
             f"  inputs: {list(program.inputs)}  imports: {list(program.imports)}"]
    children: dict = {}
    for s in program.scopes:
        children.setdefault(s.parent, []).append(s)

    def scope(s, indent: str) -> None:
        title = "root scope" if s.parent == -1 else f"scope {s.name} (depth {s.depth})"
        lines.append(f"{indent}{title}:")
        for kind, i in s.order:
            if kind == "node":
                lines.append(f"{indent}  {describe(program.nodes[i])}")
            else:
                scope(program.scopes[i], indent + "  ")
        for var, body in s.vars:
            lines.append(f"{indent}  var #{var} <- #{body} (next iteration)")

    scope(program.scopes[0], "  ")
    for name, i in program.exports:
        lines.append(f'  export "{name}" = #{i}')
    return "\n".join(lines)
