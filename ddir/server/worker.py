"""One worker: a shard of every installed dataflow.

The intake (:mod:`ddir.server.registry`) validates a command and then hands
workers *worker messages*: plain msgpack-able tuples ``(op, args...)``.
Every worker gets every message except ``stage``, which goes to the worker
that owns the fed key. Collective messages (install, source, tick, peek...)
are answered with one reply dict per worker, which the intake merges.

Messages:

* ``("install", name, program, aliases, catch_up, max_rounds)``
* ``("source", name, kind, params, epoch, max_rounds)`` - a generated source;
  each worker produces only its share of the rows
* ``("stage", name, input, time, rows)`` - no reply
* ``("stage_columns", name, input, time, keys, vals, diffs, count)`` - no reply:
  the same for rows whose key and val are Tuples of Ints, sent as int64
  column bytes (a load or feed_many, :mod:`ddir.server.bulk`); the worker
  builds the rows, so the intake never encodes one object per row
* ``("tick", epoch, watched, leases)`` - ``watched``: the subscribed traces, whose
  rows at ``(epoch,)`` the reply carries as ``changes``; ``leases``: ``[trace,
  e]`` pairs of held cursor leases: such a trace is compacted only up to ``e - 1``
* ``("drop", name)``, ``("peek", trace, key, has_key)``
* ``("cursor_index", trace, epoch)`` - sort the trace's keys once for cursor pages
* ``("page", trace, epoch, key, has_key, after, n)`` - the first ``n`` rows after
  ``after`` (a ``(key, val)`` or None) as of ``epoch``, in (key, val) order
* ``("fail", names, epoch)`` - freeze programs that failed closing ``epoch``
* ``("stats",)`` - stored and pending updates, collective steps taken, peak
  memory: for tests and benchmarks
"""

from __future__ import annotations

import bisect
import resource

from ..engine.dataflow import DEFAULT_MAX_ROUNDS, Dataflow
from ..engine.exchange import split_by_owner
from ..engine.memory import settle
from ..engine.order import sorted_keys
from ..engine.scope import NonConvergence
from .generated import Recipe, source_program
from ..values import INT_MAX, INT_MIN, order_key


class Worker:
    def __init__(self, index: int = 0, shards: int = 1, exchange=None, functions: dict | None = None):
        self.index = index
        self.functions = functions or {}  # name -> callable for `@name(...)` (SPEC C5)
        self.shards = shards
        self.exchange = exchange
        self.dataflows: dict = {}  # program name -> Dataflow, in install order
        self.exports: dict = {}    # trace name -> exporting ArrangeOp
        self.clocks: list = []     # names of clock sources
        # (trace, epoch) -> (Trace, order keys, keys) sorted, for cursor pages
        self.cursor_index: dict = {}

    def execute(self, message):
        op, *args = message
        return getattr(self, "do_" + op)(*args)

    # ------------------------------------------------------------ install / drop

    def _dataflow(self, program, imports, max_rounds) -> Dataflow:
        return Dataflow(program, imports, max_rounds or DEFAULT_MAX_ROUNDS, exchange=self.exchange,
                        functions=self.functions)

    def _add(self, name: str, dataflow: Dataflow) -> None:
        self.dataflows[name] = dataflow
        self.exports.update(dataflow.exports)

    def do_install(self, name, program, aliases, catch_up, max_rounds) -> dict:
        imports = {alias: self.exports[trace] for alias, trace in aliases}
        dataflow = self._dataflow(program, imports, max_rounds)
        self._add(name, dataflow)
        if catch_up is not None:
            try:
                dataflow.catch_up(catch_up)
            except NonConvergence as e:  # the intake then drops it on every worker
                return {"failed": str(e), "events": [], "errors": []}
            dataflow.compact(catch_up)
        settle()
        return self._collect([name])

    def do_source(self, name, kind, params, epoch, max_rounds) -> dict:
        """A generated source's rows are at time 0 (SPEC A8): installed after
        epoch 0 they are in the closed past at once, for the importer's
        catch-up and for ``peek``. A clock shows the last closed epoch, so one
        installed at epoch e > 0 starts at (e - 1) and moves on at tick e."""
        recipe = Recipe(kind, tuple(params))
        dataflow = self._dataflow(source_program(recipe), {}, max_rounds)
        closed = epoch - 1 if epoch > 0 else 0
        rows = [(k, v, 1) for k, v in recipe.rows(closed, self.index, self.shards)]
        if self.exchange is not None:  # produced by row number, stored by key owner
            boxes = split_by_owner(rows, self.shards)
            batches, _ = self.exchange.swap(("source", name), boxes)
            rows = [row for batch in batches for row in batch]
        dataflow.stage(0, (0,), rows)
        self._add(name, dataflow)
        if kind == "clock":
            self.clocks.append(name)
        if epoch > 0:
            dataflow.run(closed)
            dataflow.compact(closed)
            if kind == "clock":
                self._stage_clock(name, closed, epoch)
        return {}

    def do_drop(self, name) -> dict:
        dataflow = self.dataflows.pop(name)
        dataflow.detach()
        for trace in dataflow.exports:
            self.exports.pop(trace, None)
            for lease in [lease for lease in self.cursor_index if lease[0] == trace]:
                del self.cursor_index[lease]
        if name in self.clocks:
            self.clocks.remove(name)
        dataflow.dispose()  # frees its memory now, frozen for the collector or not
        return {}

    # ------------------------------------------------------------ feed / tick

    def do_stage(self, name, n, time, rows) -> None:
        self.dataflows[name].stage(n, (time,), rows)

    def do_stage_columns(self, name, n, time, keys, vals, diffs, count) -> None:
        from ..engine import batch
        if count >= batch.COLUMNAR_MIN:  # stays columns (ddir.engine.columns)
            from ..engine.columns import from_buffers
            self.dataflows[name].stage(n, (time,), from_buffers(keys, vals, diffs, count))
            return
        from .bulk import rows_from_message
        self.dataflows[name].stage(n, (time,), rows_from_message(keys, vals, diffs, count))

    def do_tick(self, epoch, watched=(), leases=()) -> dict:
        """Run every live dataflow to ``epoch``. History is compacted only
        up to ``epoch - 1``, so that this tick's updates stay apart until the
        intake knows whether some program failed in it (see ``do_fail``),
        and a trace a cursor's lease reads as of epoch ``e`` only up to
        ``e - 1``. The reply's ``changes``: each watched trace's rows at
        ``(epoch,)``, for its subscriptions."""
        holds: dict = {}
        for trace, e in leases:
            holds[trace] = min(holds.get(trace, e - 1), e - 1)
        leased = {(trace, e) for trace, e in leases}
        for lease in [lease for lease in self.cursor_index if lease not in leased]:
            del self.cursor_index[lease]
        for name, op in self.exports.items():
            op.trace.hold = holds.get(name)
        watching = [(name, self.exports[name]) for name in watched if name in self.exports]
        for _, op in watching:
            op.watch = []
        try:
            reply = self._tick(epoch)
        finally:
            seen = {id(op): [row for t, batch in op.watch if t == (epoch,) for row in batch]
                    for _, op in watching}
            for _, op in watching:
                op.watch = None
        changes = [(name, seen[id(op)]) for name, op in watching if seen[id(op)]]
        reply["changes"] = changes
        return reply

    def _tick(self, epoch) -> dict:
        failures = []
        live = [(name, df) for name, df in self.dataflows.items() if df.frozen_at is None]
        for name, dataflow in live:
            try:
                dataflow.run(epoch)
            except NonConvergence as e:
                failures.append((name, str(e)))
        for name in self.clocks:
            self._stage_clock(name, epoch, epoch + 1)
        if epoch > 0:
            for _, dataflow in live:
                dataflow.compact(epoch - 1)
        reply = self._collect(list(self.dataflows))
        reply["failures"] = failures
        settle()
        return reply

    def do_fail(self, names, epoch) -> dict:
        """These programs failed while closing ``epoch`` (on some worker, or
        upstream of them): freeze them here too."""
        for name in names:
            self.dataflows[name].freeze(epoch)
        return {}

    def _stage_clock(self, name, old: int, new: int) -> None:
        """The clock's row moves from ``(old)`` to ``(new)`` at time ``new``;
        each row on the worker that owns its key, like a feed."""
        rows = [((old,), (), -1), ((new,), (), 1)]
        mine = split_by_owner(rows, self.shards)[self.index]
        if mine:
            self.dataflows[name].stage(0, (new,), mine)

    def _collect(self, names) -> dict:
        """Inspect events and term errors of ``names`` since the last collect."""
        events, errors = [], []
        for name in names:
            dataflow = self.dataflows[name]
            events.extend(dataflow.take_events())
            for (operator, loc), rows in dataflow.take_errors().items():
                errors.append((name, operator, loc, rows))
        return {"events": events, "errors": errors}

    # ------------------------------------------------------------ reading

    def do_peek(self, trace, key, has_key) -> dict:
        export = self.exports[trace]
        before = export.dataflow.frozen_at
        contents = export.trace
        if not has_key:
            return {"rows": contents.rows(before)}
        rows = contents.key_contents(key, before)
        return {"rows": [(k, v, d) for (k, v), d in rows.items()]}

    def do_cursor_index(self, trace, epoch) -> dict:
        self._index(trace, epoch)
        return {}

    def _index(self, trace, epoch) -> tuple:
        """The trace's keys sorted in Value order (with their order keys),
        built once per lease: the keys a page as of ``epoch`` can meet (a key
        first seen later has nothing before ``epoch``)."""
        contents = self.exports[trace].trace
        cached = self.cursor_index.get((trace, epoch))
        if cached is None or cached[0] is not contents:
            okeys, keys = sorted_keys(contents.keys())
            cached = (contents, okeys, keys)
            self.cursor_index[(trace, epoch)] = cached
        return cached

    def do_page(self, trace, epoch, key, has_key, after, n) -> dict:
        """The first ``n`` rows (key, val, diff) after ``after`` as of
        ``epoch``, in (key, val) order: the cost is that of the rows walked,
        not of the trace."""
        if n <= 0:
            return {"rows": []}
        export = self.exports[trace]
        before = epoch
        if export.dataflow.frozen_at is not None:
            before = min(before, export.dataflow.frozen_at)
        history = export.trace.get
        if has_key:
            okeys, keys = [order_key(key)], [key]
        else:
            _, okeys, keys = self._index(trace, epoch)
        start = 0
        after_key = after_val = None
        if after is not None:
            after_key, after_val = order_key(after[0]), order_key(after[1])
            start = bisect.bisect_left(okeys, after_key)
        rows: list = []
        for i in range(start, len(keys)):
            hist = history(keys[i])
            if not hist:
                continue
            acc: dict = {}
            for v, s, d in hist:
                if s[0] < before:
                    acc[v] = acc.get(v, 0) + d
            vals = sorted(((order_key(v), v, d) for v, d in acc.items()
                           if d and INT_MIN <= d <= INT_MAX), key=lambda x: x[0])
            if after_key is not None and okeys[i] == after_key:
                vals = [x for x in vals if x[0] > after_val]
            elif after_key is not None and okeys[i] < after_key:
                continue
            k = keys[i]
            for _, v, d in vals:
                rows.append((k, v, d))
                if len(rows) >= n:
                    return {"rows": rows}
        return {"rows": rows}

    def do_stats(self) -> dict:
        return {"stored": sum(df.stored_updates() for df in self.dataflows.values()),
                "pending": sum(df.pending_updates() for df in self.dataflows.values()),
                "steps": getattr(self.exchange, "steps", 0),
                "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
