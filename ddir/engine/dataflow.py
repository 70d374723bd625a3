"""One installed program as a running dataflow: the engine's API.

Build it from a lowered :class:`ddir.ir.nodes.Program` (with the exported
arrangements of other dataflows it imports), stage input updates, run to an
epoch, compact, read exports. Nothing here knows about processes, commands
or printing.
"""

from __future__ import annotations

from ..ir import nodes as N
from . import operators as O
from .memory import running
from .scope import NonConvergence, ScopeRunner
from .trace import Trace

DEFAULT_MAX_ROUNDS = 1_000_000


class Dataflow:
    def __init__(self, program: N.Program, imports: dict | None = None,
                 max_rounds: int = DEFAULT_MAX_ROUNDS, exchange=None, functions: dict | None = None,
                 limits=None):
        """``imports``: trace name -> the exporting :class:`ArrangeOp`;
        ``exchange``: the other workers when this is one shard of N
        (:mod:`ddir.engine.exchange`), None when it is the only one;
        ``functions``: name -> callable, what ``@name(...)`` calls (SPEC C5);
        ``limits``: the worker's :class:`ddir.engine.limits.Limits` (a cancel,
        the memory budget), shared by its dataflows; None: nothing stops a run
        but the iteration bound."""
        self.program = program
        self.limits = limits
        self.functions = functions or {}
        self.exchange = exchange
        self.events: list = []   # (label, key, val, time, diff) of inspect
        self.errors: dict = {}   # (operator, loc) -> {(key, val, time): [diff, message]}
        self.ops: dict = {}
        self.scopes: dict = {}
        self.failures: list = []  # scopes that hit the iteration bound in this run
        self.frozen_at: int | None = None  # failed: its traces hold epochs < this
        for s in program.scopes:
            parent = self.scopes.get(s.parent)
            self.scopes[s.id] = ScopeRunner(s, parent, max_rounds, exchange, self.failures, limits)
        self.root = self.scopes[0]
        for node in program.nodes:
            self.ops[node.id] = self._make(node)
        for s in program.scopes:
            runner = self.scopes[s.id]
            for kind, i in s.order:
                runner.items.append(self.ops[i] if kind == "node" else self.scopes[i])
        for s in reversed(program.scopes):  # children come after their parents
            self.scopes[s.id].finish()
        self._wire()
        self.inputs = {n.n: self.ops[n.id] for n in program.nodes if isinstance(n, N.InputNode)}
        self.imports = {n.trace: self.ops[n.id] for n in program.nodes if isinstance(n, N.ImportNode)}
        self.exports = {name: self.ops[i] for name, i in program.exports}
        self.upstream: list = []
        for name, op in self.imports.items():
            source = (imports or {})[name]
            source.subscribers.append(op)
            self.upstream.append(source)

    def _make(self, node):
        scope = self.scopes[node.scope]
        if isinstance(node, N.LinearNode):
            return O.LinearOp(node, scope, self)
        if isinstance(node, N.ConcatNode):
            return O.ConcatOp(node, scope, self)
        if isinstance(node, N.ArrangeNode):
            return O.ArrangeOp(node, scope, self)
        if isinstance(node, N.ExchangeNode):
            return O.ExchangeOp(node, scope, self)
        if isinstance(node, N.JoinNode):
            return O.JoinOp(node, scope, self, self.ops[node.inputs[0]], self.ops[node.inputs[1]])
        if isinstance(node, N.ReduceNode):
            return O.ReduceOp(node, scope, self, self.ops[node.inputs[0]])
        if isinstance(node, N.EnterAtNode):
            return O.EnterAtOp(node, scope, self)
        return O.Operator(node, scope, self)  # input, import, var, enter, leave

    def _wire(self) -> None:
        for node in self.program.nodes:
            op = self.ops[node.id]
            adapt = (O.enter_time if isinstance(node, N.EnterNode)
                     else O.leave_time if isinstance(node, N.LeaveNode) else None)
            for port, src in enumerate(node.inputs):
                self.ops[src].outputs.append((op, port, adapt))
        for s in self.program.scopes:
            for var_id, body_id in s.vars:
                self.ops[body_id].outputs.append((self.ops[var_id], 0, O.feedback_time))

    # ------------------------------------------------------------ API

    def stage(self, n: int, t: tuple, rows) -> None:
        """Stage input ``n`` updates ``[(key, val, diff)]`` at root time ``t``."""
        self.inputs[n].receive(0, t, rows)

    def catch_up(self, epoch: int) -> None:
        """Feed every import the full contents of its trace at ``epoch`` (the
        last closed epoch) and run to it: a new dataflow sees all history
        (of a frozen upstream, what it held when it failed)."""
        for op, source in zip(self.imports.values(), self.upstream):
            contents = source.trace.contents(source.dataflow.frozen_at)
            op.receive(0, (epoch,), [(k, v, d) for (k, v), d in contents.items()])
        self.run(epoch)

    def run(self, epoch: int, stoppable: bool = True) -> None:
        """Process every pending time up to and including ``epoch``. A scope
        that hits the iteration bound gives up its times and the run goes on
        to its end; then :class:`NonConvergence` says which scope it was
        (or that a cancel or the memory budget stopped it). Not
        ``stoppable``: a run that only stores given rows (a generated
        source, a stand-in), which a cancel must not leave half done."""
        self.failures.clear()
        limits = self.limits if stoppable else None
        if limits is not None:
            limits.begin()
        for scope in self.scopes.values():
            scope.limits = limits
        with running():
            self.root.run_prefix((), limit=epoch)
        if self.failures:  # the least: one worker may see only some of them
            # (not settled: it is frozen next, and merging runs takes 2x their memory)
            raise NonConvergence(min(self.failures))
        for trace in self.traces():
            trace.settle()

    def compact(self, epoch: int) -> None:
        """Fold history before ``epoch`` onto it."""
        for trace in self.traces():
            trace.compact(epoch)

    def freeze(self, epoch: int) -> None:
        """The dataflow failed while closing ``epoch``: it never runs again,
        stops receiving from upstream, and its traces are read as of the
        epochs before ``epoch`` (what is at ``epoch`` is half a tick).
        Only its exported traces are read from now on (peek, importers,
        checkpoints): everything else it holds is let go, so that a
        program stopped by the memory budget gives its memory back."""
        self.frozen_at = epoch
        self.detach()
        self.release()

    def release(self) -> None:
        """Drop pending work and every operator's state but the exports',
        and what the exports hold of the failed tick (no one reads it):
        an export that no cursor's lease holds keeps only its contents
        before ``frozen_at``, consolidated, which is all anyone reads."""
        exported = {id(op) for op in self.exports.values()}
        for op in self.ops.values():
            op.ports = [dict() for _ in op.ports]
            if id(op) in exported:
                if isinstance(op, O.ArrangeOp) and op.trace.hold is None:
                    op.trace = _contents_before(op.trace, self.frozen_at)
                continue
            if isinstance(op, O.ExchangeOp):
                op.outbox = {}
            elif isinstance(op, O.ReduceOp):
                op.scheduled = {}
                op.output = Trace()
            elif isinstance(op, O.ArrangeOp):
                op.trace = Trace()
        for scope in self.scopes.values():
            scope.pending = set()

    def traces(self):
        for op in self.ops.values():
            if isinstance(op, O.ArrangeOp):
                yield op.trace
            elif isinstance(op, O.ReduceOp):
                yield op.output

    def record_error(self, operator: str, loc, message: str, k, v, t, d) -> None:
        """Row ``(k, v)`` with diff ``d`` at time ``t`` failed in an operator.

        Failures are kept per row, not counted: which rows meet in one batch
        (and cancel before a term sees them) depends on how rows are spread
        over workers, so a count per evaluation would differ between worker
        counts. The intake sums each row's diffs over all workers and counts
        the rows whose net diff is not zero (see ``take_errors``)."""
        rows = self.errors.get((operator, loc))
        if rows is None:
            rows = self.errors[(operator, loc)] = {}
        entry = rows.get((k, v, t))
        if entry is None:
            rows[(k, v, t)] = [d, message]
        else:
            entry[0] += d

    def take_events(self) -> list:
        events, self.events = self.events, []
        return events

    def take_errors(self) -> dict:
        """(operator, loc) -> [(key, val, time, diff, message)] since the last
        call, rows whose diffs cancelled left out."""
        errors, self.errors = self.errors, {}
        return {where: [(k, v, t, d, m) for (k, v, t), (d, m) in rows.items() if d]
                for where, rows in errors.items()}

    def detach(self) -> None:
        """Stop receiving from upstream exports (on drop)."""
        for op, source in zip(self.imports.values(), self.upstream):
            source.subscribers.remove(op)
        self.upstream = []

    def dispose(self) -> None:
        """Break the dataflow's reference cycles (operators <-> their scope
        and dataflow, scopes <-> their parent) so that dropping it frees it
        by reference counting alone: it may sit in the collector's frozen
        generation (:mod:`ddir.engine.memory`), where no collection looks."""
        self.detach()
        for op in self.ops.values():
            op.outputs = []
            op.ports = []
            op.__dict__.pop("scope", None)
            op.__dict__.pop("dataflow", None)
        for scope in self.scopes.values():
            scope.items = []
            scope.parent = None
        self.ops, self.scopes, self.root = {}, {}, None
        self.inputs, self.imports, self.exports = {}, {}, {}

    def stored_updates(self) -> int:
        return sum(t.size() for t in self.traces())

    def pending_updates(self) -> int:
        return sum(op.pending_size() for op in self.ops.values())


def _contents_before(trace: Trace, epoch: int) -> Trace:
    """A trace holding ``trace``'s contents before ``epoch``, consolidated,
    at ``epoch - 1``: what a reader of the epochs before ``epoch`` sees."""
    fresh = Trace()
    if epoch <= 0 or not trace.size():
        return fresh
    t = (epoch - 1,)
    got = trace.int_columns(epoch) if trace.runs else None
    if got is not None:
        from .batch import Cols
        keys, vals, d = got
        if len(d):
            fresh.insert(Cols(keys, vals, d, True), t, as_run=True)
    else:
        rows = trace.rows(epoch)
        if rows:
            fresh.insert(rows, t)
    fresh.settle()
    return fresh
