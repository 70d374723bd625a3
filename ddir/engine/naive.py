"""The naive oracle: evaluate a program from scratch on accumulated inputs.

Synchronous rounds: in an iterative scope every var starts empty and in
round ``i`` takes its body's value from round ``i - 1``; iterate until no
collection of the scope changes (and no ``enter_at`` row still waits for a
later round). Slow and obviously right, and deliberately independent of the
engine: terms go through the reference interpreter, reducers are written
again here.

Two operators depend on the iteration counter, simulated exactly as the
engine's times make them behave:

* ``enter_at`` in round ``j`` passes the rows of its input whose delay is
  ``<= j``;
* ``lift_iter`` in round ``j`` is the sum over rounds ``i <= j`` of the
  *change* of its input in round ``i``, each tagged with ``i``.
"""

from __future__ import annotations

from ..ir import nodes as N
from ..lang.ast import Splice
from ..terms.interp import evaluate as eval_term
from ..terms.runtime import TermError, bit_length_u64, fields
from ..values import List, order_key

MAX_ROUNDS = 100_000


def _add(acc: dict, kv, d: int) -> None:
    n = acc.get(kv, 0) + d
    if n:
        acc[kv] = n
    else:
        acc.pop(kv, None)


def _project(proj, rows: tuple, functions=None):
    def side(fs):
        out = []
        for f in fs:
            if isinstance(f, Splice):
                if f.n >= len(rows):
                    raise TermError(f"`${f.n}` does not exist here")
                out.extend(fields(rows[f.n]))
            else:
                out.append(eval_term(f, rows, functions=functions))
        return tuple(out)
    if getattr(proj, "bare", False):  # `value(t)` (SPEC D2): each side is its one term itself
        return (eval_term(proj.key[0], rows, functions=functions),
                eval_term(proj.val[0], rows, functions=functions))
    return side(proj.key), side(proj.val)


def _reduce(kind: str, coll: dict) -> dict:
    groups: dict = {}
    for (k, v), d in coll.items():
        groups.setdefault(k, {})[v] = d
    out: dict = {}
    for k, vals in groups.items():
        if kind == "min":
            out[(k, sorted(vals, key=order_key)[0])] = 1
        elif kind == "distinct":
            out[(k, ())] = 1
        elif kind == "count":
            n = sum(vals.values())
            if n > 0:
                out[(k, (n,))] = 1
        elif kind == "collect":
            items = []
            for v in sorted(vals, key=order_key):
                items += [v] * max(vals[v], 0)
            out[(k, List(items))] = 1
    return out


class _ScopeEval:
    """Evaluation of one scope instance (fresh per outer round)."""

    def __init__(self, oracle, scope, outer: dict):
        self.oracle = oracle
        self.scope = scope
        self.outer = outer        # node id -> value, enclosing scopes
        self.lift_acc: dict = {}  # (node, step) -> (previous input, accumulated output)

    def run(self) -> dict:
        scope = self.scope
        prev: dict = {}
        body_of = {var: body for var, body in scope.vars}
        rnd = 0
        while rnd < MAX_ROUNDS:
            cur: dict = {}
            self.waiting = None  # the least enter_at delay not reached yet
            env = dict(self.outer)
            for kind, i in scope.order:
                if kind == "scope":
                    child = self.oracle.program.scopes[i]
                    env.update(_ScopeEval(self.oracle, child, env).run())
                    continue
                node = self.oracle.program.nodes[i]
                if isinstance(node, N.VarNode):
                    value = prev.get(body_of[node.id], {}) if rnd > 0 else {}
                else:
                    value = self.node(node, env, rnd)
                cur[i] = value
                env[i] = value
            if scope.parent == -1:
                return env
            if rnd > 0 and cur == prev:
                if self.waiting is None:
                    return env
                # Nothing changes until the next enter_at delay is reached:
                # skip the identical rounds (lift_iter sees no change in them).
                prev = cur
                rnd = self.waiting
                continue
            prev = cur
            rnd += 1
        raise RuntimeError(f"oracle: scope `{scope.name}` did not converge")

    def node(self, node, env: dict, rnd: int) -> dict:
        inputs = [env[i] for i in node.inputs]
        if isinstance(node, N.InputNode):
            return dict(self.oracle.inputs.get(node.n, {}))
        if isinstance(node, N.ImportNode):
            return dict(self.oracle.imports.get(node.trace, {}))
        if isinstance(node, (N.ArrangeNode, N.ExchangeNode, N.EnterNode, N.LeaveNode)):
            return dict(inputs[0])
        if isinstance(node, N.ConcatNode):
            out: dict = {}
            for coll in inputs:
                for kv, d in coll.items():
                    _add(out, kv, d)
            return out
        if isinstance(node, N.LinearNode):
            coll = inputs[0]
            for index, step in enumerate(node.steps):
                coll = self.step(node.id, index, step, coll, rnd)
            return coll
        if isinstance(node, N.JoinNode):
            right: dict = {}
            for (k, v), d in inputs[1].items():
                right.setdefault(k, []).append((v, d))
            out = {}
            for (k, a), d1 in inputs[0].items():
                for b, d2 in right.get(k, ()):
                    try:
                        _add(out, _project(node.proj, (k, a, b), self.oracle.functions), d1 * d2)
                    except TermError:
                        pass
            return out
        if isinstance(node, N.ReduceNode):
            return _reduce(node.reducer, inputs[0])
        if isinstance(node, N.EnterAtNode):
            out = {}
            for (k, v), d in inputs[0].items():
                try:
                    value = eval_term(node.term, (k, v), functions=self.oracle.functions)
                    delay = 256 * bit_length_u64(value)
                except TermError:
                    continue
                if delay <= rnd:
                    _add(out, (k, v), d)
                elif self.waiting is None or delay < self.waiting:
                    self.waiting = delay
            return out
        raise TypeError(node)

    def step(self, node_id: int, index: int, step, coll: dict, rnd: int) -> dict:
        out: dict = {}
        if isinstance(step, N.MapStep):
            for (k, v), d in coll.items():
                try:
                    _add(out, _project(step.proj, (k, v), self.oracle.functions), d)
                except TermError:
                    pass
        elif isinstance(step, N.FilterStep):
            for (k, v), d in coll.items():
                try:
                    keep = eval_term(step.term, (k, v), functions=self.oracle.functions)
                except TermError:
                    continue
                if type(keep) is int and keep != 0:
                    _add(out, (k, v), d)
        elif isinstance(step, N.NegateStep):
            out = {kv: -d for kv, d in coll.items()}
        elif isinstance(step, N.FlatMapStep):
            for (k, v), d in coll.items():
                try:
                    items = eval_term(step.term, (k, v), functions=self.oracle.functions)
                except TermError:
                    continue
                if type(items) is not List:
                    continue
                for i, e in enumerate(items):
                    _add(out, (k, (i, e)), d)
        elif isinstance(step, N.LiftIterStep):
            before, acc = self.lift_acc.get((node_id, index), ({}, {}))
            acc = dict(acc)
            change = dict(coll)
            for kv, d in before.items():
                _add(change, kv, -d)
            tag = rnd if self.scope.parent != -1 else 0
            for (k, v), d in change.items():
                _add(acc, (k, v + (tag,) if type(v) is tuple else (v, tag)), d)
            self.lift_acc[(node_id, index)] = (dict(coll), acc)
            out = acc
        elif isinstance(step, N.InspectStep):
            out = dict(coll)
        else:
            raise TypeError(step)
        return out


class Oracle:
    def __init__(self, program: N.Program, inputs: dict, imports: dict | None = None,
                 functions: dict | None = None):
        """``inputs``: input number -> {(key, val): diff}; likewise ``imports``;
        ``functions``: name -> callable, what ``@name(...)`` calls."""
        self.program = program
        self.inputs = inputs
        self.imports = imports or {}
        self.functions = functions or {}

    def exports(self) -> dict:
        env = _ScopeEval(self, self.program.scopes[0], {}).run()
        return {name: env[i] for name, i in self.program.exports}


def evaluate(program: N.Program, inputs: dict, imports: dict | None = None,
             functions: dict | None = None) -> dict:
    """Export name -> {(key, val): diff}, computed from scratch."""
    return Oracle(program, inputs, imports, functions).exports()
