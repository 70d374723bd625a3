"""Lower a parsed program to the scope-tree IR and validate it (SPEC A7).

Definitions are lowered on demand with memoisation, so nodes are created in
dependency order and a definition that is reached again while it is still
being lowered is a cycle ("use var for recursion"). A child scope is lowered
as one unit: everything it reads from enclosing scopes is lowered first,
then all of its definitions, then it takes its place in the parent's order.

The on-demand walk follows definitions: ``let a2 = a1; let a1 = a0; ...``
goes as deep as the chain is long. So the walk is written as generators
driven by :func:`_drive` with an explicit stack: a step yields the
generator of a sub-step and is sent its result, and no chain of any length
recurses in Python.
"""

from __future__ import annotations

from . import nodes as N
from .optimize import optimize
from ..lang import ast as A
from ..lang import shapes as S
from ..lang.errors import ProgramError

__all__ = ["lower", "lower_unoptimized"]


def lower(program: A.Program) -> N.Program:
    """Lower, validate and optimise (fuse linear chains, share arrangements)."""
    return optimize(lower_unoptimized(program))


def lower_unoptimized(program: A.Program) -> N.Program:
    return _Lowerer(program).run()


def _drive(step):
    """Run the generator ``step`` to its return value. A generator it
    yields runs first, and its return value is sent back to the one that
    yielded it (a call, on a stack of our own instead of Python's)."""
    stack = [step]
    value = None
    while True:
        try:
            sub = stack[-1].send(value)
        except StopIteration as done:
            stack.pop()
            if not stack:
                return done.value
            value = done.value
            continue
        stack.append(sub)
        value = None


class _ScopeBuild:
    def __init__(self, sid: int, parent, name: str, loc):
        self.id = sid
        self.parent = parent
        self.name = name
        self.loc = loc
        self.depth = 0 if parent is None else parent.depth + 1
        self.defs: dict = {}       # name -> Let | Var | ScopeDecl
        self.children: dict = {}   # name -> _ScopeBuild
        self.order: list = []
        self.vars: list = []       # (var node id, body node id)
        self.var_nodes: dict = {}  # name -> VarNode id
        self.values: dict = {}     # name -> node id (let value or var node)
        self.state: dict = {}      # name -> "lowering" | "done"


def _uses_lift_iter(expr) -> bool:
    """Does ``expr`` itself (not through names) apply ``lift_iter``?
    (A work list, not recursion: a pipe chain may have 10,000 steps.)"""
    todo = [expr]
    while todo:
        e = todo.pop()
        if isinstance(e, A.Op):
            if e.kind == "lift_iter":
                return True
            todo.append(e.source)
            if e.other is not None:
                todo.append(e.other)
        elif isinstance(e, A.Concat):
            todo.extend(e.parts)
    return False


class _Lowerer:
    def __init__(self, program: A.Program):
        self.program = program
        self.file = program.file
        self.nodes: list = []
        self.names: dict = {}
        self.memo: dict = {}
        self.scopes: list = []
        self.exports: dict = {}
        self.export_stmts: list = []
        self.lowering_stack: list = []

    def error(self, message: str, loc) -> ProgramError:
        return ProgramError(message, self.file, loc[0], loc[1], self.program.source)

    # -------------------------------------------------------- scope tree

    def declare(self, body, parent, name: str, loc) -> _ScopeBuild:
        scope = _ScopeBuild(len(self.scopes), parent, name, loc)
        self.scopes.append(scope)
        for stmt in body:
            if isinstance(stmt, A.Export):
                if parent is not None:
                    raise self.error("`export` is only allowed at the root of a program", stmt.loc)
                self.export_stmts.append(stmt)
                continue
            if stmt.name in scope.defs:
                raise self.error(f"`{stmt.name}` is defined twice in this scope", stmt.loc)
            if isinstance(stmt, A.Var) and parent is None:
                raise self.error("`var` is only allowed inside a scope (the root does not iterate)",
                                 stmt.loc)
            scope.defs[stmt.name] = stmt
            if isinstance(stmt, A.ScopeDecl):
                scope.children[stmt.name] = self.declare(stmt.body, scope, stmt.name, stmt.loc)
        return scope

    # -------------------------------------------------------- nodes

    def add(self, cls, scope: _ScopeBuild, inputs: tuple, loc, **fields) -> int:
        node_id = len(self.nodes)
        self.nodes.append(cls(id=node_id, scope=scope.id, inputs=tuple(inputs), loc=loc,
                              name=None, **fields))
        scope.order.append(("node", node_id))
        return node_id

    def shared(self, key, make) -> int:
        """Hash-consing: one node per ``key`` (inputs, imports, enter, leave)."""
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]

    # -------------------------------------------------------- driver

    def run(self) -> N.Program:
        root = self.declare(self.program.body, None, "", (1, 1))
        _drive(self.lower_scope(root))
        for stmt in self.export_stmts:
            if stmt.name in self.exports:
                raise self.error(f'export "{stmt.name}" is defined twice', stmt.loc)
            self.exports[stmt.name] = self.arrange(_drive(self.expr(stmt.expr, root)), root, stmt.loc)
        shapes = self.declared_shapes(root)
        nodes = tuple(_with_name(n, self.names.get(n.id)) for n in self.nodes)
        scopes = tuple(
            N.Scope(id=s.id, parent=-1 if s.parent is None else s.parent.id, name=s.name,
                    depth=s.depth, order=tuple(s.order), vars=tuple(s.vars))
            for s in self.scopes)
        inputs = sorted(n.n for n in nodes if isinstance(n, N.InputNode))
        imports = sorted(n.trace for n in nodes if isinstance(n, N.ImportNode))
        return N.Program(file=self.file, nodes=nodes, scopes=scopes, inputs=tuple(inputs),
                         imports=tuple(imports), exports=tuple(sorted(self.exports.items())),
                         shapes=shapes)

    # -------------------------------------------------------- shapes (SPEC D2)

    def declared_shapes(self, root: _ScopeBuild) -> tuple:
        """``(("input", n, shape), ("import", trace, shape), ("export",
        name, shape))`` for each ascribed source and each export whose
        shape is declared or follows from declared ones (:meth:`shape_of`);
        sorted. Two ascriptions of one source must agree, and so must an
        export's ascription and the shape its value has."""
        found: dict = {}
        todo = [s.expr for s in root.defs.values() if isinstance(s, A.Let)]
        todo += [s.expr for s in self.export_stmts]
        for scope in self.scopes[1:]:  # sources are root only, but a scope may hold none
            todo += [s.expr for s in scope.defs.values() if isinstance(s, (A.Let, A.Var))]
        while todo:
            e = todo.pop()
            if isinstance(e, A.Op):
                todo.append(e.source)
                if e.other is not None:
                    todo.append(e.other)
            elif isinstance(e, A.Concat):
                todo.extend(e.parts)
            elif isinstance(e, (A.Input, A.Import)) and e.shape is not None:
                key = ("input", e.n) if isinstance(e, A.Input) else ("import", e.name)
                other = found.get(key)
                if other is not None and other[0] != e.shape:
                    what = f"input {e.n}" if isinstance(e, A.Input) else f'import "{e.name}"'
                    first, second = sorted((other[1], e.loc))
                    shape = e.shape if second == e.loc else other[0]
                    earlier = other[0] if second == e.loc else e.shape
                    raise self.error(f"{what} is ascribed {S.show(shape)} here but "
                                     f"{S.show(earlier)} at line {first[0]}", second)
                if other is None or e.loc < other[1]:
                    found[key] = (e.shape, e.loc)
        out = [(kind, name, shape) for (kind, name), (shape, _) in found.items()]
        self.source_shapes = {k: v[0] for k, v in found.items()}
        for stmt in self.export_stmts:
            inferred = self.shape_of(stmt.expr, root, set())
            if stmt.shape is not None and inferred is not None and inferred != stmt.shape:
                raise self.error(f'export "{stmt.name}" is declared {S.show(stmt.shape)} but its '
                                 f"value is {S.show(inferred)}", stmt.loc)
            shape = stmt.shape or inferred
            if shape is not None:
                out.append(("export", stmt.name, shape))
        return tuple(sorted(out, key=lambda x: (x[0], str(x[1]))))

    def _binding_shape(self, home, name: str, seen: set):
        """The shape of ``name`` bound in scope ``home`` (a ``var``'s
        ascription, or what its ``let`` expression has), None if unknown."""
        stmt = None if home is None else home.defs.get(name)
        if isinstance(stmt, A.Var):
            return stmt.shape
        if isinstance(stmt, A.Let) and (home.id, name) not in seen:
            return self.shape_of(stmt.expr, home, seen | {(home.id, name)})
        return None

    def shape_of(self, e, scope: _ScopeBuild, seen: set):
        """The shape of ``e``'s rows where it follows from ascriptions
        through operators that keep or simply change it (arrange, filter,
        negate, inspect, concat of equal shapes, the reducers), else None.
        Terms are not typed: a map's or join's shape is unknown."""
        steps = []
        while isinstance(e, A.Op):
            if e.kind not in _SHAPE_KEEPING:
                return None
            steps.append(e.kind)
            e = e.source
        if isinstance(e, (A.Input, A.Import)):
            key = ("input", e.n) if isinstance(e, A.Input) else ("import", e.name)
            shape = e.shape or self.source_shapes.get(key)
        elif isinstance(e, A.Concat):
            parts = [self.shape_of(p, scope, seen) for p in e.parts]
            shape = parts[0] if parts and all(p is not None and p == parts[0] for p in parts) \
                else None
        elif isinstance(e, A.Ref):
            home = scope
            while home is not None and e.name not in home.defs:
                home = home.parent
            shape = self._binding_shape(home, e.name, seen)
        elif isinstance(e, A.FieldRef):
            shape = self._binding_shape(scope.children.get(e.scope), e.field, seen)
        else:
            shape = None
        for kind in reversed(steps):
            if shape is None:
                return None
            if kind == "distinct":
                shape = S.RowShape(shape.key, S.UNIT)
            elif kind == "count":
                shape = S.RowShape(shape.key, S.TupleShape((S.INT,)))
            elif kind == "collect":
                shape = S.RowShape(shape.key, S.ListShape(shape.val))
        return shape

    # Below, the steps of the walk are generators (see :func:`_drive`):
    # ``x = yield self.f(...)`` is the call ``x = self.f(...)``.

    def lower_scope(self, scope: _ScopeBuild):
        for name, stmt in scope.defs.items():
            if isinstance(stmt, A.Var):
                var_id = self.add(N.VarNode, scope, (), stmt.loc)
                scope.var_nodes[name] = var_id
                scope.values[name] = var_id
                self.names[var_id] = name
        for name in scope.defs:
            yield self.ensure(scope, name, scope.defs[name].loc)

    def ensure(self, scope: _ScopeBuild, name: str, loc):
        """Lower definition ``name`` of ``scope`` (once); its value node."""
        state = scope.state.get(name)
        if state == "done":
            return scope.values.get(name)
        stmt = scope.defs[name]
        if state == "lowering":
            cycle = self.lowering_stack[self.lowering_stack.index((scope.id, name)):]
            path = " -> ".join(f"`{n}`" for _, n in cycle + [(scope.id, name)])
            raise self.error(f"cyclic definition: {path} (use var for recursion)", loc)
        scope.state[name] = "lowering"
        self.lowering_stack.append((scope.id, name))
        if isinstance(stmt, A.ScopeDecl):
            child = scope.children[name]
            yield self.lower_scope(child)
            scope.order.append(("scope", child.id))
        elif isinstance(stmt, A.Let):
            value = yield self.expr(stmt.expr, scope)
            scope.values[name] = value
            self.names.setdefault(value, name)
        else:  # Var
            body = yield self.expr(stmt.expr, scope)
            scope.vars.append((scope.var_nodes[name], body))
        self.lowering_stack.pop()
        scope.state[name] = "done"
        return scope.values.get(name)

    # -------------------------------------------------------- expressions

    def expr(self, e, scope: _ScopeBuild):
        if isinstance(e, A.Input):
            if scope.parent is not None:
                raise self.error("`input` is only allowed at the root of a program", e.loc)
            return self.shared(("input", e.n), lambda: self.add(N.InputNode, scope, (), e.loc, n=e.n))
        if isinstance(e, A.Import):
            if scope.parent is not None:
                raise self.error("`import` is only allowed at the root of a program", e.loc)
            # located at the trace's name: what install and check report on
            return self.shared(("import", e.name),
                               lambda: self.add(N.ImportNode, scope, (), e.at, trace=e.name))
        if isinstance(e, A.Ref):
            return (yield self.ref(e, scope))
        if isinstance(e, A.FieldRef):
            return (yield self.field_ref(e, scope))
        if isinstance(e, A.Concat):
            parts = []
            for p in e.parts:
                parts.append((yield self.expr(p, scope)))
            return self.add(N.ConcatNode, scope, tuple(parts), e.loc)
        if isinstance(e, A.Op):  # a pipe chain, lowered in a loop (it may be long)
            chain = []
            while isinstance(e, A.Op):
                chain.append(e)
                e = e.source
            src = yield self.expr(e, scope)
            for op in reversed(chain):
                if op.kind == "join":
                    src = yield self.join(op, src, scope)
                else:
                    src = self.op(op, src, scope)
            return src
        raise AssertionError(e)

    def join(self, e: A.Op, src: int, scope: _ScopeBuild):
        left = self.arrange(src, scope, e.loc)
        right = self.arrange((yield self.expr(e.other, scope)), scope, e.loc)
        return self.add(N.JoinNode, scope, (left, right), e.loc, proj=e.proj)

    def op(self, e: A.Op, src: int, scope: _ScopeBuild) -> int:
        """One step of a pipe chain other than a join (which reads another
        expression: :meth:`join`)."""
        kind, loc = e.kind, e.loc
        step = {
            "map": lambda: N.MapStep(e.proj, loc),
            "value": lambda: N.MapStep(e.proj, loc, op="value"),
            "filter": lambda: N.FilterStep(e.term, loc),
            "negate": lambda: N.NegateStep(loc),
            "flatmap": lambda: N.FlatMapStep(e.term, loc),
            "lift_iter": lambda: N.LiftIterStep(loc),
            "inspect": lambda: N.InspectStep(e.label, loc),
        }.get(kind)
        if step is not None:
            return self.add(N.LinearNode, scope, (src,), loc, steps=(step(),))
        if kind in A.REDUCERS:
            return self.add(N.ReduceNode, scope, (self.arrange(src, scope, loc),), loc, reducer=kind)
        if kind == "arrange":
            return self.arrange(src, scope, loc)
        if kind == "enter_at":
            if scope.parent is None:
                raise self.error("`enter_at` needs an enclosing iterative scope; at the root "
                                 "there is no iteration to delay", loc)
            return self.add(N.EnterAtNode, scope, (src,), loc, term=e.term)
        raise AssertionError(kind)

    def arrange(self, src: int, scope: _ScopeBuild, loc) -> int:
        if isinstance(self.nodes[src], N.ArrangeNode):
            return src
        return self.add(N.ArrangeNode, scope, (src,), loc)

    def ref(self, e: A.Ref, scope: _ScopeBuild):
        home = scope
        while home is not None and e.name not in home.defs:
            home = home.parent
        if home is None:
            raise self.error(f"unknown name `{e.name}`", e.loc)
        stmt = home.defs[e.name]
        if isinstance(stmt, A.ScopeDecl):
            raise self.error(f"`{e.name}` is a scope: read one of its fields with "
                             f"`{e.name}::field`", e.loc)
        if home.parent is not None and _uses_lift_iter(stmt.expr):
            raise self.error(f"`{e.name}` applies lift_iter, so it can only be read from an "
                             f"enclosing scope (as `{home.name}::{e.name}`)", e.loc)
        if isinstance(stmt, A.Var):  # feedback: readable before its body is lowered
            node = home.var_nodes[e.name]
        else:
            node = yield self.ensure(home, e.name, e.loc)
        return self.enter(node, home, scope)

    def enter(self, node: int, home: _ScopeBuild, scope: _ScopeBuild) -> int:
        """Bring ``node`` of ``home`` into the descendant ``scope``."""
        path = []
        s = scope
        while s is not home:
            path.append(s)
            s = s.parent
        for child in reversed(path):
            prev = node
            node = self.shared(("enter", prev, child.id),
                               lambda: self.add(N.EnterNode, child, (prev,), self.nodes[prev].loc))
        return node

    def field_ref(self, e: A.FieldRef, scope: _ScopeBuild):
        child = scope.children.get(e.scope)
        if child is None:
            exists = any(s.name == e.scope for s in self.scopes if s.parent is not None)
            if exists:
                raise self.error(f"`{e.scope}::{e.field}` can only be used in the scope that "
                                 f"directly contains `{e.scope}`", e.loc)
            raise self.error(f"unknown scope `{e.scope}`", e.loc)
        stmt = child.defs.get(e.field)
        if stmt is None or isinstance(stmt, A.ScopeDecl):
            raise self.error(f"scope `{e.scope}` has no let or var named `{e.field}`", e.loc)
        yield self.ensure(scope, e.scope, e.loc)
        inner = child.values[e.field]
        return self.shared(("leave", inner, scope.id),
                           lambda: self.add(N.LeaveNode, scope, (inner,), e.loc))


# Operators after which a collection's shape still follows from its input's.
_SHAPE_KEEPING = frozenset(("arrange", "filter", "negate", "inspect", "min", "distinct", "count",
                            "collect"))


def _with_name(node, name):
    if name is None:
        return node
    from dataclasses import replace
    return replace(node, name=name)
