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
    """Arrangements in node order: the first whose input is not on its
    key's owner gets an exchange at the outermost source, then the next.
    Adding an exchange only ever moves more nodes onto their owners, so
    one pass in order with incremental updates places exactly the exchanges
    that restarting from the first arrangement after each one would, in
    time linear in the program (restarting was quadratic: 85 s for a
    program of 2,000 exports)."""
    body = {v: b for s in program.scopes for v, b in s.vars}
    readers: dict = {n.id: [] for n in program.nodes}
    for n in program.nodes:
        for i in n.inputs:
            readers[i].append(n.id)
    for v, b in body.items():
        readers[b].append(v)
    exchanged: set = set()
    on = rows_on_owner(program, exchanged)
    for n in program.nodes:
        if isinstance(n, N.ArrangeNode) and not _seen(n.inputs[0], on, exchanged):
            source = _outermost(program, n.inputs[0])
            exchanged.add(source)
            _refresh(program, on, exchanged, body, readers, source)
    return _insert_exchanges(program, exchanged) if exchanged else program


def _seen(i: int, on: dict, exchanged: set) -> bool:
    """Whether a reader of node ``i`` gets rows on their owner: an
    exchanged node's readers read its exchange."""
    return i in exchanged or on[i]


def rows_on_owner(program: N.Program, exchanged: set = frozenset()) -> dict:
    """id -> True when every row of that node is on its key's owner. The
    greatest fixed point: a var is on the owner if its body is, assuming it
    is (it starts empty, so that holds iteration by iteration)."""
    body = {v: b for s in program.scopes for v, b in s.vars}
    on = {n.id: True for n in program.nodes}
    _remove(program, on, exchanged, body, [n.id for n in program.nodes])
    return on


def _remove(program, on: dict, exchanged: set, body: dict, ids: list) -> None:
    """Turn off, among ``ids``, every node that does not keep rows on the
    owner, until nothing changes (the greatest fixed point over ``ids``)."""
    changed = True
    while changed:
        changed = False
        for i in ids:
            if on[i] and not _keeps_owner(program.nodes[i], on, body, exchanged):
                on[i] = False
                changed = True


def _refresh(program, on: dict, exchanged: set, body: dict, readers: dict, source: int) -> None:
    """After exchanging ``source``: nodes that were off and read it (through
    other off nodes) may now be on. Turn them on and remove again; nodes
    that were on stay on, so nothing beyond them can change."""
    region, todo = set(), list(readers[source])
    while todo:
        i = todo.pop()
        if i not in region and not on[i]:
            region.add(i)
            todo.extend(readers[i])
    for i in region:
        on[i] = True
    _remove(program, on, exchanged, body, sorted(region))


def _keeps_owner(n: N.Node, on: dict, body: dict, exchanged: set) -> bool:
    if isinstance(n, _ALWAYS_ON_OWNER):
        return True
    if isinstance(n, _LIKE_INPUTS):
        return all(_seen(i, on, exchanged) for i in n.inputs)
    if isinstance(n, N.VarNode):
        return _seen(body[n.id], on, exchanged)
    if isinstance(n, N.LinearNode):
        return (_seen(n.inputs[0], on, exchanged)
                and all(isinstance(s, _KEY_KEEPING_STEPS) for s in n.steps))
    return False  # join and key-changing maps: the output key is new


def _outermost(program: N.Program, i: int) -> int:
    """Exchange before entering: climb out of enters to the outer collection."""
    while isinstance(program.nodes[i], N.EnterNode):
        i = program.nodes[i].inputs[0]
    return i


def _insert_exchanges(program: N.Program, sources: set) -> N.Program:
    """Insert ``exchange(s)`` right after each source ``s`` (ids stay in
    topological order) and make every reader of ``s`` read it."""
    ordered = sorted(sources)
    new_id, shift = {}, 0
    for n in program.nodes:
        new_id[n.id] = n.id + shift
        if shift < len(ordered) and ordered[shift] == n.id:
            shift += 1
    ex_of = {s: new_id[s] + 1 for s in ordered}

    def reader_input(i: int) -> int:
        return ex_of.get(i, new_id[i])

    nodes = []
    for n in program.nodes:
        nodes.append(dc_replace(n, id=new_id[n.id], inputs=tuple(reader_input(i) for i in n.inputs)))
        if n.id in ex_of:
            nodes.append(N.ExchangeNode(id=ex_of[n.id], scope=n.scope, inputs=(new_id[n.id],),
                                        loc=n.loc, name=None))
    scopes = []
    for s in program.scopes:
        order = []
        for kind, i in s.order:
            order.append((kind, new_id[i]) if kind == "node" else (kind, i))
            if kind == "node" and i in ex_of:
                order.append(("node", ex_of[i]))
        scopes.append(dc_replace(s, order=tuple(order),
                                 vars=tuple((new_id[v], reader_input(b)) for v, b in s.vars)))
    exports = tuple((name, new_id[i]) for name, i in program.exports)
    return dc_replace(program, nodes=tuple(nodes), scopes=tuple(scopes), exports=exports)
