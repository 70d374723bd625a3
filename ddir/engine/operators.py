"""Dataflow operators. Each holds, per input port, pending batches keyed by
time; its scope calls ``step(t)`` once the time is due (all inputs at times
<= t have been processed, see :mod:`ddir.engine.scope`).

Outputs go to ``(consumer, port, adapt)`` edges; ``adapt`` changes the time
where an edge crosses a scope boundary (enter: append 0; leave: drop the
last coordinate; var feedback: +1 on the last coordinate).
"""

from __future__ import annotations

from itertools import repeat
from operator import itemgetter

from . import batch as B
from .batch import Cols
from .due import DueKeys
from .exchange import CHECK_OWNERS, check_owners, split_by_owner
from .limits import MEMORY, ROW_PAIR_BYTES, OverBudget
from .linear import OVERFLOW, compile_chain, compile_join
from .time import join as time_join, less_equal
from .trace import Trace
from ..ir import nodes as N
from ..terms.compile import compile_term
from ..terms.runtime import TermError, bit_length_u64, capped
from ..values import INT_MAX, INT_MIN, List, order_key

# A `collect` result is a materialised list: one element per unit of
# multiplicity. Past this many it is an operator error, not an out-of-memory.
MAX_COLLECT = 10_000_000


def consolidate(rows, overflow=None) -> list:
    """Sum the diffs of equal (key, val) pairs and drop zeros.

    With ``overflow``, a sum outside the signed 64-bit range (SPEC A1) is
    dropped and reported to it (one C-level min/max per batch). Only
    arrangements check: rows meet there on their key's owner, so where an
    overflow is found does not depend on the number of workers; elsewhere a
    large intermediate sum just flows on to the arrangement (Python ints do
    not wrap)."""
    if len(rows) == 1:
        d = rows[0][2]
        if overflow is None or INT_MIN <= d <= INT_MAX:
            return rows if d else []
        acc = {(rows[0][0], rows[0][1]): d}
    else:
        acc = {}
        for k, v, d in rows:
            kv = (k, v)
            acc[kv] = acc.get(kv, 0) + d
        if overflow is None or not acc or (max(acc.values()) <= INT_MAX
                                           and min(acc.values()) >= INT_MIN):
            return [(k, v, d) for (k, v), d in acc.items() if d]
    out = []
    for (k, v), d in acc.items():
        if INT_MIN <= d <= INT_MAX:
            if d:
                out.append((k, v, d))
        else:
            overflow(k, v, d)
    return out


_DIFF = itemgetter(2)


def enter_time(t):
    return t + (0,)


def leave_time(t):
    return t[:-1]


def feedback_time(t):
    return t[:-1] + (t[-1] + 1,)


class Operator:
    exchanged = False  # True: swaps its input with the other workers before stepping

    def __init__(self, node, scope, dataflow):
        self.node = node
        self.scope = scope
        self.dataflow = dataflow
        # Per port: time -> [clean, chunk, chunk...]. Chunks are the senders'
        # lists, shared and never mutated, so receiving copies nothing;
        # ``clean`` says the only chunk is already consolidated (an arrangement,
        # a reduce or a join emitted it), so taking it needs no second pass.
        self.ports = [dict() for _ in range(max(1, len(node.inputs)))]
        self.outputs: list = []

    def receive(self, port: int, t: tuple, rows, clean: bool = False) -> None:
        if not rows:
            return
        pending = self.ports[port]
        entry = pending.get(t)
        if entry is None:
            pending[t] = [clean, rows]
            self.scope.schedule(t)
        else:
            entry[0] = False
            entry.append(rows)

    def has_work(self, t: tuple) -> bool:
        for p in self.ports:
            if t in p:
                return True
        return False

    def take(self, port: int, t: tuple) -> list:
        entry = self.ports[port].pop(t, None)
        if entry is None:
            return []
        if entry[0]:
            return entry[1]
        return _consolidated(_batch(entry))

    def take_raw(self, port: int, t: tuple) -> tuple:
        """(rows, clean): this time's rows as received, not consolidated.
        For linear operators: f(a) + f(b) = f(a + b), so consolidating first
        changes nothing but the cost, and whoever needs consolidated rows
        (an arrangement, a var, a concat) consolidates on its own take. A
        join's pairs (4.7M in a transitive closure) used to be consolidated
        twice, before and after the map that follows it. Term errors and
        inspect events are per row and summed per row, so they agree."""
        entry = self.ports[port].pop(t, None)
        if entry is None:
            return [], True
        return _batch(entry, self.converts), entry[0]

    converts = True  # whether take_raw turns large row batches into Cols

    def emit(self, t: tuple, rows, clean: bool = False) -> None:
        """Send ``rows`` at ``t`` downstream; ``clean``: they are consolidated."""
        if not rows:
            return
        for consumer, port, adapt in self.outputs:
            consumer.receive(port, adapt(t) if adapt else t, rows, clean)

    def pending_size(self) -> int:
        return sum(len(c) for p in self.ports for entry in p.values() for c in entry[1:])

    def step(self, t: tuple) -> None:  # pass-through (input, import, var, enter, leave)
        self.emit(t, self.take(0, t), True)

    def fail(self, what: str, error, k, v, t, d) -> None:
        """The row ``(k, v)`` with diff ``d`` at ``t`` failed here."""
        self.dataflow.record_error(what, self.node.loc, str(error), k, v, t, d)


def _rows(entry: list) -> list:
    """The rows of a pending entry's chunks, as one list."""
    if len(entry) == 2:
        chunk = entry[1]
        return chunk.rows() if type(chunk) is Cols else chunk
    rows = []
    for chunk in entry[1:]:
        rows.extend(chunk.rows() if type(chunk) is Cols else chunk)
    return rows


_columns = None


def columns():
    """:mod:`ddir.engine.columns`, imported on first use (it loads numpy)."""
    global _columns
    if _columns is None:
        from . import columns as module
        _columns = module
    return _columns


def _batch(entry: list, convert: bool = True):
    """The chunks of a pending entry as one batch: a :class:`Cols` when
    they are at least ``COLUMNAR_MIN`` rows of one Int-tuple shape (rows
    are converted only with ``convert``), else rows."""
    chunks = entry[1:]
    if len(chunks) == 1:
        chunk = chunks[0]
        if type(chunk) is Cols:
            if chunk.n >= B.COLUMNAR_MIN:
                return chunk
        elif len(chunk) < B.COLUMNAR_MIN or not convert:
            return chunk
    total = sum(map(len, chunks))
    least = B.columnar_min()
    if total >= least and (convert or all(type(c) is Cols for c in chunks)):
        c = columns().gather(chunks, least)
        if c is not None:
            return c
    return _rows(entry)


def _consolidated(batch, overflow=None):
    """Consolidate a batch of either shape (rows when a sum could leave i64)."""
    if type(batch) is Cols:
        c = columns().consolidate(batch)
        if c is not None:
            return c
        batch = batch.rows()
    return consolidate(batch, overflow)


class ConcatOp(Operator):
    def step(self, t):
        chunks = [False]
        for port in self.ports:
            entry = port.pop(t, None)
            if entry:
                chunks.extend(entry[1:])
        if len(chunks) > 1:
            self.emit(t, _consolidated(_batch(chunks)), True)


class LinearOp(Operator):
    def __init__(self, node, scope, dataflow):
        super().__init__(node, scope, dataflow)
        self.steps = node.steps
        self.chain = compile_chain(node.steps, dataflow.functions)
        self.iterative = scope.depth > 0
        # filter and inspect keep a consolidated batch consolidated; a map can
        # merge rows, a negate can overflow INT_MIN, lift_iter can map two
        # vals to one ((5) and 5 both become (5, i)).
        self.keeps_clean = all(isinstance(s, (N.FilterStep, N.InspectStep)) for s in node.steps)
        # the same steps on columns, per (key fields, val fields); None: rows only
        self.col_chains: dict = {}
        self.converts = not any(isinstance(s, (N.FlatMapStep, N.InspectStep)) for s in node.steps)

    def _col_chain(self, c: Cols):
        shape = (len(c.keys), len(c.vals))
        chain = self.col_chains.get(shape, self)
        if chain is self:
            chain = self.col_chains[shape] = columns().column_chain(self.steps, *shape)
        return chain

    def _fail(self, index: int, error: TermError, k, v, d) -> None:
        step = self.steps[index]
        self.dataflow.record_error(step.op, step.loc, str(error), k, v, self._time, d)

    def step(self, t):
        rows, clean = self.take_raw(0, t)
        if rows:
            it = t[-1] if self.iterative else 0
            if type(rows) is Cols:
                chain = self._col_chain(rows)
                if chain is not None:
                    try:
                        out, keeps = chain(rows, it)
                    except columns().Fallback:
                        pass
                    else:
                        self.emit(t, out, clean and keeps)
                        return
                rows = rows.rows()
            self._time = t
            self.emit(t, self.chain(rows, t, it, self._fail, self.dataflow.events),
                      clean and self.keeps_clean)


class EnterAtOp(Operator):
    converts = False

    def __init__(self, node, scope, dataflow):
        super().__init__(node, scope, dataflow)
        self.delay = compile_term(node.term, 2, dataflow.functions)

    def step(self, t):
        by_time: dict = {}
        it = t[-1]
        rows, clean = self.take_raw(0, t)
        if type(rows) is Cols:
            rows = rows.rows()
        for k, v, d in rows:
            try:
                delay = 256 * bit_length_u64(self.delay(k, v))
            except TermError as e:
                self.fail("enter_at", e, k, v, t, d)
                continue
            s = t if delay <= it else t[:-1] + (delay,)
            by_time.setdefault(s, []).append((k, v, d))
        for s, part in by_time.items():
            self.emit(s, part, clean)


class ExchangeOp(Operator):
    """Moves rows to the worker that owns their key. Incoming rows wait in
    an outbox by owner until the scope reaches this operator at their time;
    then every worker swaps its outboxes for that time with every other one
    and passes on what it received. With one worker it just passes rows on."""

    def __init__(self, node, scope, dataflow):
        super().__init__(node, scope, dataflow)
        self.mesh = dataflow.exchange
        self.exchanged = self.mesh is not None
        self.outbox: dict = {}  # time -> rows per owning worker

    def receive(self, port, t, rows, clean=False):
        if not self.exchanged or not rows:
            return super().receive(port, t, rows, clean)
        shards = self.mesh.peers
        boxes = self.outbox.get(t)
        if boxes is None:
            boxes = self.outbox[t] = [[] for _ in range(shards)]
        if type(rows) is Cols:
            for box, part in zip(boxes, columns().split_by_owner(rows, shards)):
                if part.n:
                    box.append(part)
        else:
            for box, part in zip(boxes, split_by_owner(rows, shards)):
                if part:
                    box.append(part)
        self.scope.schedule(t)

    def exchange_at(self, t, note=None):
        """Swap this time's rows with every worker; returns the least note.
        A worker's share is a list of chunks: rows, or a Cols as raw int64
        buffers (:func:`ddir.engine.columns.to_message`)."""
        me = self.mesh.index
        box = self.outbox.pop(t, None) or [[] for _ in range(self.mesh.peers)]
        box = [chunks if w == me else [_wire(c) for c in chunks] for w, chunks in enumerate(box)]
        batches, least_note = self.mesh.swap((self.node.id, t), box, note)
        received = []
        for w, chunks in enumerate(batches):
            for chunk in chunks:
                if w != me and chunk and type(chunk[0]) is str:
                    chunk = columns().from_message(chunk)
                if len(chunk):
                    received.append(chunk)
        if received:
            entry = self.ports[0].setdefault(t, [False])
            entry[0] = False
            entry.extend(received)
        return least_note

    def pending_size(self) -> int:
        return super().pending_size() + sum(len(c) for box in self.outbox.values()
                                            for chunks in box for c in chunks)


def _wire(chunk):
    return columns().to_message(chunk) if type(chunk) is Cols else chunk


class ArrangeOp(Operator):
    """Maintains the trace of its input; passes the batch on. An exported
    arrangement also forwards each batch to importing dataflows. Its input
    is on the key's owner (an exchange precedes it where needed), so a key's
    whole history lives on one worker: what join and reduce rely on."""

    def __init__(self, node, scope, dataflow):
        super().__init__(node, scope, dataflow)
        self.trace = Trace()
        self.subscribers: list = []  # ImportOps of other dataflows
        self.watch: list | None = None  # (time, rows) of each step, while a subscription watches
        mesh = dataflow.exchange
        self.check = (mesh.index, mesh.peers) if CHECK_OWNERS and mesh is not None else None

    def take(self, port: int, t: tuple) -> list:
        """This time's rows, consolidated, with multiplicities checked
        against i64 (SPEC A1): here every row of a key is on its owner, so
        the check finds the same overflows for any number of workers."""
        entry = self.ports[port].pop(t, None)
        if entry is None:
            return []
        if not entry[0]:
            return _consolidated(_batch(entry), self.overflowed)
        rows = entry[1]
        if type(rows) is Cols:  # int64 diffs: in range
            return rows
        diffs = list(map(_DIFF, rows))
        if max(diffs) <= INT_MAX and min(diffs) >= INT_MIN:
            return rows
        return consolidate(rows, self.overflowed)

    def overflowed(self, k, v, d) -> None:
        self.fail("arrange", OVERFLOW, k, v, self._time, d)

    def step(self, t):
        self._time = t
        rows = self.take(0, t)
        if rows:
            if self.check:
                check_owners(rows, *self.check)
            self.trace.insert(rows, t)
            if self.watch is not None:
                self.watch.append((t, rows.rows() if type(rows) is Cols else rows))
            self.emit(t, rows, True)
            for sub in self.subscribers:
                sub.receive(0, t, rows, True)


class JoinOp(Operator):
    """Bilinear: new left rows meet the right history (this time's new right
    rows included), new right rows meet the left history before this time."""

    def __init__(self, node, scope, dataflow, left: ArrangeOp, right: ArrangeOp):
        super().__init__(node, scope, dataflow)
        self.left, self.right = left, right
        self.join = compile_join(node.proj, scope.depth, dataflow.functions)

    def _fail(self, error, k, ab, s, d) -> None:
        self.fail("join", error, k, ab, s, d)

    def step(self, t):
        dl, dr = self.take(0, t), self.take(1, t)
        out: dict = {}
        if dl:
            self._half(dl, self.right.trace, t, True, out)
        if dr:
            self._half(dr, self.left.trace, t, False, out)
        for s, chunks in out.items():  # consolidated by whoever needs it (see take_raw)
            for rows in chunks:
                if len(rows):
                    self.emit(s, rows)

    def _half(self, delta, trace, t, left: bool, out: dict) -> None:
        """``delta`` (new rows of one side) meets the other side's ``trace``:
        on columns when both are Int tuples, else on rows. Either way the
        number of pairs is known before they are made, and checked against
        the memory budget (:mod:`ddir.engine.limits`): past it this worker
        makes none, and the program fails."""
        limits = self.dataflow.limits
        allow = limits.allow if limits is not None and limits.budget is not None else None
        if type(delta) is Cols:
            if trace.columnar():
                project = self._col_projection(delta, trace, left)
                if project is not None:
                    try:
                        columns()
                        from .colops import join_half
                        join_half(delta, trace.runs, t, project, left, not left, out, allow)
                        return
                    except columns().Fallback:
                        pass
                    except OverBudget:
                        self._over_budget(out)
                        return
            delta = delta.rows()
        hist = trace.lookup(k for k, _, _ in delta)
        if allow is not None and hist and not allow(_row_pairs(delta, hist)):
            self._over_budget(out)
            return
        if left:
            res = self.join(delta, (), None, hist, t, self._fail)
        else:
            res = self.join((), delta, hist, None, t, self._fail)
        for s, rows in res.items():
            if rows:
                out.setdefault(s, []).append(rows)

    def _over_budget(self, out: dict) -> None:
        """This step would pass the memory budget: it makes nothing (what an
        earlier part of it made is dropped too), and the program fails."""
        out.clear()
        limits = self.dataflow.limits
        self.dataflow.failures.append(limits.reason(MEMORY))

    def _col_projection(self, delta: Cols, trace, left: bool):
        """The projection on columns for these arities (cached), or None."""
        if not trace.runs:
            return _NO_PAIRS
        shape = trace.shape
        if shape is None or shape[0] != len(delta.keys):
            return None
        va = len(delta.vals)
        arities = (shape[0], va, shape[1]) if left else (shape[0], shape[1], va)
        cache = self.__dict__.setdefault("col_projections", {})
        f = cache.get(arities, self)
        if f is self:
            f = cache[arities] = columns().column_projection(self.node.proj, arities)
        return f


def _row_pairs(delta, hist: dict) -> int:
    """The bytes the pairs of ``delta`` with ``hist`` (key -> history) will
    take on rows: one pass at C speed over the new rows (~30 ns each, where
    the join spends a microsecond or more per row)."""
    return ROW_PAIR_BYTES * sum(map(len, map(hist.get, map(_KEY, delta), repeat(()))))


_KEY = itemgetter(0)


def _NO_PAIRS(rows, n):  # an empty trace: no pair to project
    raise AssertionError("no pairs")


def _sum_history(hist) -> dict:
    """val -> net diff over a whole history (zeros left out)."""
    acc: dict = {}
    for v, _, d in hist:
        acc[v] = acc.get(v, 0) + d
    return {v: d for v, d in acc.items() if d} if acc else acc


def _difference(k, want: dict, have: dict, out: list) -> None:
    """Append the rows that turn output ``have`` into ``want`` for key ``k``."""
    for v, d in want.items():
        delta = d - have.pop(v, 0)
        if delta:
            out.append((k, v, delta))
    for v, d in have.items():
        out.append((k, v, -d))


def _reduce_min(acc: dict):
    vals = list(acc)
    if all(type(x) is int for x in vals):
        return {min(vals): 1}
    return {min(vals, key=order_key): 1}


def _reduce_distinct(acc: dict):
    return {(): 1}


def _reduce_count(acc: dict):
    n = sum(acc.values())
    if n > INT_MAX:
        raise TermError(f"the count {n} does not fit in 64 bits")
    return {(n,): 1} if n > 0 else {}


def _reduce_collect(acc: dict):
    size = sum(d for d in acc.values() if d > 0)
    if size > MAX_COLLECT:
        raise TermError(f"the collected list would have {size} elements (at most {MAX_COLLECT})")
    items = []
    for v in sorted(acc, key=order_key):
        if acc[v] > 0:
            items.extend([v] * acc[v])
    return {capped(List(items), "`collect`"): 1}


def _reduce(reducer, acc: dict):
    """``reducer(acc)``, after checking that the accumulated multiplicities
    fit in i64 (SPEC A1: leaving the range while accumulating is an error of
    the operator). The check is a function of the accumulation, so once a
    retraction brings it back the key's output is right again."""
    out = reducer(acc)  # its own errors first (a count too large says so)
    if max(acc.values()) > INT_MAX or min(acc.values()) < INT_MIN:
        raise TermError("multiplicity overflow: the net diff of a value left the signed "
                        "64-bit range")
    return out


_COLUMNAR_REDUCERS = ("min", "distinct", "count")

REDUCERS = {"min": _reduce_min, "distinct": _reduce_distinct, "count": _reduce_count,
            "collect": _reduce_collect}


class ReduceOp(Operator):
    """Per key: output(t) = f(input accumulated at t), emitted as the
    difference to the output accumulated at t. After processing (key, t) it
    schedules join(t, s) for every history time s not <= t ("interesting
    times"): without this, a retraction inside a loop would leave stale
    output at later iterations."""

    def __init__(self, node, scope, dataflow, source: ArrangeOp):
        super().__init__(node, scope, dataflow)
        self.source = source
        self.output = Trace()
        self.reducer = REDUCERS[node.reducer]
        self.scheduled: dict = {}   # time -> DueKeys

    def has_work(self, t):
        return t in self.ports[0] or t in self.scheduled

    def pending_size(self) -> int:
        return super().pending_size() + sum(len(k) for k in self.scheduled.values())

    def _due(self, s: tuple) -> DueKeys:
        keys = self.scheduled.get(s)
        if keys is None:
            self.scheduled[s] = keys = DueKeys()
            self.scope.schedule(s)
        return keys

    def _schedule(self, key, s: tuple) -> None:
        self._due(s).add(key)

    def schedule_chunks(self, chunks: list) -> None:
        """:meth:`_schedule` for keys given as int64 key columns: ``chunks``
        are (time, key columns, n)."""
        due = self._due
        for s, cols, n in chunks:
            due(s).add_columns(cols, n)

    def incomparable(self, t: tuple) -> list:
        """The scheduled times neither <= nor >= ``t`` (another epoch's
        later iterations, or in nested loops another outer iteration's):
        none in a single loop within one epoch."""
        return [s for s in self.scheduled if not less_equal(s, t) and not less_equal(t, s)]

    def join_scheduled(self, keys, t: tuple, times: list) -> None:
        """After processing ``keys`` at ``t``: schedule ``join(s, t)`` for each
        of them scheduled at a time ``s`` of ``times`` (:meth:`incomparable`).
        A scheduled ``s >= t`` needs nothing (the join is ``s`` itself), and
        every time scheduled while processing ``t`` is >= ``t``; so this one
        pass per step is all the interesting times a scheduled time adds."""
        for s in times:
            scheduled = self.scheduled.get(s)
            if not scheduled:
                continue
            scheduled = scheduled.as_set()
            common = keys & scheduled if len(keys) < len(scheduled) else scheduled & keys
            if common:
                j = time_join(s, t)
                for k in common:
                    self._schedule(k, j)

    def step(self, t):
        batch = self.take(0, t)
        due = self.scheduled.pop(t, None)
        parts = []
        keys = ()
        if self.node.reducer in _COLUMNAR_REDUCERS and \
                len(batch) + (len(due) if due else 0) >= B.reduce_columnar_min():
            from .colops import reduce_columns
            emitted = reduce_columns(self, batch, t, due)
            if emitted is not None:
                if emitted.n:
                    parts.append(emitted)
                batch = due = None
        if batch is not None:
            if type(batch) is Cols:
                keys = set(columns().key_tuples(batch.keys, batch.n))
            else:
                keys = {k for k, _, _ in batch}
            if due:
                keys |= due.as_set()
        if keys:
            emitted = self._reduce_rows(keys, t)
            if emitted:
                parts.append(emitted)
        for emitted in parts:
            self.output.insert(emitted, t, True)
        for emitted in parts:
            self.emit(t, emitted, True)

    def _reduce_rows(self, keys, t) -> list:
        in_data = self.source.trace.lookup(keys)
        out_data = self.output.lookup(keys)
        reducer, name = self.reducer, self.node.reducer
        emitted = []
        if len(t) == 1:
            # At the root times are totally ordered and every entry of both
            # histories is at or before t: sum them whole, no interesting times.
            for k in keys:
                acc = _sum_history(in_data.get(k, ()))
                try:
                    want = _reduce(reducer, acc) if acc else {}
                except TermError as e:  # the key keeps no output: as if its input were empty
                    self.fail(name, e, k, None, t, 1)
                    want = {}
                _difference(k, want, _sum_history(out_data.get(k, ())), emitted)
        else:
            for k in keys:
                # one pass over each history: accumulate what is <= t, and
                # schedule join(s, t) for every s that is not (DESIGN, reduce)
                acc = self._accumulate(k, in_data.get(k, ()), t)
                try:
                    want = _reduce(reducer, acc) if acc else {}
                except TermError as e:
                    self.fail(name, e, k, None, t, 1)
                    want = {}
                have = self._accumulate(k, out_data.get(k, ()), t)
                _difference(k, want, have, emitted)
            if self.scheduled:
                times = self.incomparable(t)
                if times:
                    self.join_scheduled(set(keys), t, times)
        return emitted

    def _accumulate(self, k, hist, t: tuple) -> dict:
        """val -> net diff of ``hist`` at times <= ``t`` (zeros left out);
        each later-or-concurrent time ``s`` schedules ``join(s, t)`` for ``k``."""
        acc: dict = {}
        if len(t) == 2:  # one loop level, the common case: the order inlined
            t0, t1 = t
            for v, s, d in hist:
                if s[0] <= t0 and s[1] <= t1:
                    acc[v] = acc.get(v, 0) + d
                else:
                    j = (s[0] if s[0] > t0 else t0, s[1] if s[1] > t1 else t1)
                    if k not in self.scheduled.get(j, ()):
                        self._schedule(k, j)
        else:
            for v, s, d in hist:
                if less_equal(s, t):
                    acc[v] = acc.get(v, 0) + d
                else:
                    j = time_join(s, t)
                    if k not in self.scheduled.get(j, ()):
                        self._schedule(k, j)
        return {v: d for v, d in acc.items() if d} if acc else acc
