"""Place the exchanges that move rows to the worker owning their key.

An arrangement (what join and reduce read, and what a trace exports) must
hold every row of a key on that key's owner. Rows already are there when
they come from an arrangement, a reduce, an import, or an input (the intake
sends each fed row to its key's owner), and stay there through steps that
keep the key (filter, negate, inspect, lift_iter), concat, enter, leave,
enter_at and a var whose body stays there. Every other arrangement gets an
:class:`ExchangeNode` in front of it.

Each exchange is one collective step per time its scope processes, so it is
placed as far out as possible: an arrangement of an entered collection
exchanges that collection once per epoch in the outer scope, not once per
loop iteration. The exchange replaces the collection for all its readers,
so a collection is exchanged at most once.
"""

from __future__ import annotations

from dataclasses import replace as dc_replace

from .. import nodes as N

_KEY_KEEPING_STEPS = (N.FilterStep, N.NegateStep, N.InspectStep, N.LiftIterStep)
_ALWAYS_ON_OWNER = (N.InputNode, N.ImportNode, N.ArrangeNode, N.ReduceNode, N.ExchangeNode)
_LIKE_INPUTS = (N.ConcatNode, N.EnterNode, N.LeaveNode, N.EnterAtNode)


def place_exchanges(program: N.Program) -> N.Program:
    while True:
        on_owner = rows_on_owner(program)
        for n in program.nodes:
            if isinstance(n, N.ArrangeNode) and not on_owner[n.inputs[0]]:
                program = _exchange(program, _outermost(program, n.inputs[0]))
                break
        else:
            return program


def rows_on_owner(program: N.Program) -> dict:
    """id -> True when every row of that node is on its key's owner. The
    greatest fixed point: a var is on the owner if its body is, assuming it
    is (it starts empty, so that holds iteration by iteration)."""
    body = {v: b for s in program.scopes for v, b in s.vars}
    on = {n.id: True for n in program.nodes}
    changed = True
    while changed:
        changed = False
        for n in program.nodes:
            if on[n.id] and not _keeps_owner(n, on, body):
                on[n.id] = False
                changed = True
    return on


def _keeps_owner(n: N.Node, on: dict, body: dict) -> bool:
    if isinstance(n, _ALWAYS_ON_OWNER):
        return True
    if isinstance(n, _LIKE_INPUTS):
        return all(on[i] for i in n.inputs)
    if isinstance(n, N.VarNode):
        return on[body[n.id]]
    if isinstance(n, N.LinearNode):
        return on[n.inputs[0]] and all(isinstance(s, _KEY_KEEPING_STEPS) for s in n.steps)
    return False  # join and key-changing maps: the output key is new


def _outermost(program: N.Program, i: int) -> int:
    """Exchange before entering: climb out of enters to the outer collection."""
    while isinstance(program.nodes[i], N.EnterNode):
        i = program.nodes[i].inputs[0]
    return i


def _exchange(program: N.Program, source: int) -> N.Program:
    """Insert ``exchange(source)`` right after ``source`` (ids stay in
    topological order) and make every reader of ``source`` read it."""
    src = program.nodes[source]
    new_id = {n.id: n.id + (n.id > source) for n in program.nodes}
    ex = source + 1

    def reader_input(i: int) -> int:
        return ex if i == source else new_id[i]

    nodes = []
    for n in program.nodes:
        nodes.append(dc_replace(n, id=new_id[n.id], inputs=tuple(reader_input(i) for i in n.inputs)))
        if n.id == source:
            nodes.append(N.ExchangeNode(id=ex, scope=src.scope, inputs=(source,), loc=src.loc,
                                        name=None))
    scopes = []
    for s in program.scopes:
        order = []
        for kind, i in s.order:
            order.append((kind, new_id[i]) if kind == "node" else (kind, i))
            if kind == "node" and i == source:
                order.append(("node", ex))
        scopes.append(dc_replace(s, order=tuple(order),
                                 vars=tuple((new_id[v], reader_input(b)) for v, b in s.vars)))
    exports = tuple((name, new_id[i]) for name, i in program.exports)
    return dc_replace(program, nodes=tuple(nodes), scopes=tuple(scopes), exports=exports)
