"""The one way optimisation passes change a program: replace or drop nodes,
redirect readers of dropped nodes, then renumber ids densely."""

from __future__ import annotations

from dataclasses import replace as dc_replace

from .. import nodes as N


def rebuild(program: N.Program, changed: dict, redirect: dict) -> N.Program:
    """``changed``: id -> new node, or None to drop it; ``redirect``: dropped
    id -> the id its readers should read instead (followed transitively)."""

    def target(i: int) -> int:
        while i in redirect:
            i = redirect[i]
        return i

    survivors = [changed.get(n.id, n) for n in program.nodes]
    survivors = [n for n in survivors if n is not None]
    new_id = {n.id: i for i, n in enumerate(survivors)}

    def renum(i: int) -> int:
        return new_id[target(i)]

    nodes = tuple(dc_replace(n, id=new_id[n.id], inputs=tuple(renum(i) for i in n.inputs))
                  for n in survivors)
    scopes = tuple(
        dc_replace(s,
                   order=tuple(item if item[0] == "scope" else ("node", new_id[item[1]])
                               for item in s.order
                               if item[0] == "scope" or item[1] in new_id),
                   vars=tuple((renum(v), renum(b)) for v, b in s.vars))
        for s in program.scopes)
    exports = tuple((name, renum(i)) for name, i in program.exports)
    return dc_replace(program, nodes=nodes, scopes=scopes, exports=exports)


def consumers(program: N.Program) -> dict:
    """id -> number of uses (node inputs, var bodies, exports)."""
    uses = {n.id: 0 for n in program.nodes}
    for n in program.nodes:
        for i in n.inputs:
            uses[i] += 1
    for s in program.scopes:
        for _, body in s.vars:
            uses[body] += 1
    for _, i in program.exports:
        uses[i] += 1
    return uses
