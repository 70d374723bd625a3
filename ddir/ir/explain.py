"""``ddir explain``: the lowered scope tree in a readable indented form."""

from __future__ import annotations

from . import nodes as N
from ..lang.ast import Splice
from ..terms.ast import Term


def _term(t) -> str:
    if isinstance(t, Splice):
        return f"${t.n}.."
    return _short(t)


def _short(t: Term) -> str:
    text = repr(t)
    return text if len(text) <= 60 else text[:57] + "..."


def _proj(p) -> str:
    return "(" + ", ".join(_term(f) for f in p.key) + " ; " + ", ".join(_term(f) for f in p.val) + ")"


def _step(s) -> str:
    if isinstance(s, N.MapStep):
        return f"map{_proj(s.proj)}"
    if isinstance(s, (N.FilterStep, N.FlatMapStep)):
        return f"{s.op}({_short(s.term)})"
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
        extra = f" {_short(node.term)}"
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
