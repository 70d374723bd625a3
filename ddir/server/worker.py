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
  column bytes (a load or feed_many, :mod:`ddir.server.staged`); the worker
  builds the rows, so the intake never encodes one object per row
* ``("tick", epoch, watched, leases)`` - first each random source with
  ``churn=C`` stages its window's move at ``epoch`` (server.generated);
  ``watched``: the subscribed traces, whose
  rows at ``(epoch,)`` the reply carries as ``changes``; ``leases``: ``[trace,
  e]`` pairs of held cursor leases: such a trace is compacted only up to ``e - 1``
* ``("drop", name)``, ``("peek", trace, key, has_key[, columns])`` - with
  ``columns``, a trace held as int64 runs answers like ``peek_columns``
* ``("peek_columns", trace)`` - the whole trace as int64 column bytes when it
  is all Tuples of Ints (``save``, checkpoints), else its rows
* ``("cursor_index", trace, epoch, key, has_key, after)`` - at a cursor's first page:
  prepare the lease's :class:`~ddir.server.cursor.PageIndex` (sorted keys, the
  rows of the key the next page starts in)
* ``("page", trace, epoch, key, has_key, after, n)`` - the first ``n`` rows after
  ``after`` (a ``(key, val)`` or None) as of ``epoch``, in (key, val) order
* ``("fail", names, epoch)`` - freeze programs that failed closing ``epoch``
* ``("standin", name, exports)`` - a read-only or failed program restored from a
  checkpoint: only its exported traces (:mod:`ddir.server.standin`), filled by
  ``stage`` at time 0 and ``settle``
* ``("settle", name, closed)`` - run one dataflow to ``closed`` and compact it
* ``("functions", module)`` - import a functions module (``reinstall functions=``)
* ``("reinstall", name, program, aliases, max_rounds)`` - the live dataflow of a
  read-only program, beside its stand-in; staged like an install, then
* ``("reconnect", name, epoch)`` - catch it up to ``epoch - 1`` and make the
  stand-in's traces follow it (or, when it does not converge, undo the reinstall)
* ``("advance", closed, epoch)`` - a tick closing ``epoch`` right after ``closed``
  (epochs between them had nothing to do: a restore's replay)
* ``("bound", max_rounds)`` - set every dataflow's iteration bound
* ``("budget", nbytes, label)`` - this worker's memory budget (SPEC E3,
  :mod:`ddir.engine.limits`): what its resident set may grow by from now
  on; ``label`` names it in the failure message
* ``("stats",)`` - stored and pending updates, collective steps taken, peak
  memory: for tests and benchmarks
"""

from __future__ import annotations

import resource

from ..engine.dataflow import DEFAULT_MAX_ROUNDS, Dataflow
from ..engine.exchange import split_by_owner
from ..engine.limits import Limits, trim
from ..engine.memory import settle
from ..engine.scope import NonConvergence
from .cursor import PageIndex
from .generated import Recipe, source_program
from .standin import Republished, standin_program


class Worker:
    def __init__(self, index: int = 0, shards: int = 1, exchange=None, functions: dict | None = None,
                 flag=None):
        """``flag``: a byte the intake sets to cancel the running command
        (:mod:`ddir.engine.limits`); None where the intake cannot reach this
        process's memory (an MPI rank: it learns of a cancel from the
        collective steps)."""
        self.index = index
        self.limits = Limits(flag)
        if exchange is not None:
            exchange.limits = self.limits
        self.functions = functions or {}  # name -> callable for `@name(...)` (SPEC C5)
        self.shards = shards
        self.exchange = exchange
        self.dataflows: dict = {}  # program name -> Dataflow, in install order
        self.exports: dict = {}    # trace name -> exporting ArrangeOp
        self.clocks: list = []     # names of clock sources
        # name -> (Recipe, epoch installed at): random sources with churn=C > 0,
        # whose window every tick moves (server.generated)
        self.churning: dict = {}
        # (trace, epoch) -> cursor.PageIndex, for the pages of a lease
        self.cursor_index: dict = {}

    def execute(self, message):
        op, *args = message
        self.limits.reset()
        return getattr(self, "do_" + op)(*args)

    # ------------------------------------------------------------ install / drop

    def _dataflow(self, program, imports, max_rounds) -> Dataflow:
        return Dataflow(program, imports, max_rounds or DEFAULT_MAX_ROUNDS, exchange=self.exchange,
                        functions=self.functions, limits=self.limits)

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
        if recipe.churn:
            self.churning[name] = (recipe, epoch)
        if epoch > 0:
            dataflow.run(closed, stoppable=False)
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
        self.churning.pop(name, None)
        dataflow.dispose()  # frees its memory now, frozen for the collector or not
        return {}

    def do_standin(self, name, exports) -> dict:
        self._add(name, self._dataflow(standin_program(name, exports), {}, None))
        return {}

    def do_settle(self, name, closed) -> dict:
        dataflow = self.dataflows[name]
        dataflow.run(closed, stoppable=False)  # a stand-in's contents
        dataflow.compact(closed)
        settle()
        return {}

    def do_functions(self, spec) -> dict:
        """Import a functions module here too (``reinstall functions=``): the
        dataflows built from now on can call its functions."""
        from ..errors import CommandError
        from .functions import load_functions
        try:
            self.functions.update(load_functions(spec, fresh=True).table)
        except CommandError as e:
            return {"error": str(e)}
        return {}

    def do_reinstall(self, name, program, aliases, max_rounds) -> dict:
        """Build the live dataflow; it keeps the stand-in's place in the run
        order (importers run after it), and the stand-in publishes."""
        imports = {alias: self.exports[trace] for alias, trace in aliases}
        standin = self.dataflows[name]
        self.dataflows[name] = Republished(self._dataflow(program, imports, max_rounds), standin)
        return {}

    def do_reconnect(self, name, epoch) -> dict:
        pair = self.dataflows[name]
        if epoch > 0:
            try:
                pair.live.catch_up(epoch - 1)
            except NonConvergence as e:  # undone here; the intake reports it
                pair.live.dispose()
                self.dataflows[name] = pair.standin
                return {"failed": str(e), "events": [], "errors": []}
            pair.live.compact(epoch - 1)
        pair.connect(epoch)
        settle()
        return self._collect([name])

    def do_advance(self, closed, epoch) -> dict:
        """Close ``epoch`` when the last tick closed ``closed`` < ``epoch - 1``:
        every pending time up to ``epoch`` is processed in order, and each
        clock jumps to show ``epoch``."""
        for name in self.clocks:
            self._stage_clock(name, closed + 1, epoch)
        self._stage_churn(closed, epoch)
        return self._tick(epoch)

    def do_budget(self, nbytes, label) -> dict:
        self.limits.set_budget(nbytes, label)
        return {}

    def do_bound(self, max_rounds) -> dict:
        for dataflow in self.dataflows.values():
            for part in (getattr(dataflow, "live", None), getattr(dataflow, "standin", dataflow)):
                if part is not None and part.frozen_at is None and part.scopes:
                    for scope in part.scopes.values():
                        scope.max_rounds = max_rounds or DEFAULT_MAX_ROUNDS
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
        from .staged import rows_from_message
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
        self._stage_churn(epoch - 1, epoch)
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
            failed = {name for name, _ in failures}  # frozen next: nothing to fold
            for name, dataflow in live:
                if name not in failed:
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
        trim()  # what the failed programs let go goes back to the system
        return {}

    def _stage_clock(self, name, old: int, new: int) -> None:
        """The clock's row moves from ``(old)`` to ``(new)`` at time ``new``;
        each row on the worker that owns its key, like a feed."""
        rows = [((old,), (), -1), ((new,), (), 1)]
        mine = split_by_owner(rows, self.shards)[self.index]
        if mine:
            self.dataflows[name].stage(0, (new,), mine)

    def _stage_churn(self, closed: int, epoch: int) -> None:
        """Each churning source's window moves by the ticks closing
        ``closed + 1 .. epoch`` (one, but a restore's replay closes several
        in one step), staged at ``epoch``: each worker makes the rows whose
        numbers are its own and sends each to the owner of its key."""
        for name, (recipe, since) in self.churning.items():
            rows = recipe.changes(closed + 1 - since, epoch + 1 - since, self.index, self.shards)
            if self.exchange is not None:
                boxes = split_by_owner(rows, self.shards)
                batches, _ = self.exchange.swap(("churn", name, epoch), boxes)
                rows = [row for batch in batches for row in batch]
            if rows:
                self.dataflows[name].stage(0, (epoch,), rows)

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

    def do_peek(self, trace, key, has_key, columns=False) -> dict:
        """The trace's rows (one key's with ``has_key``). With ``columns``, a
        trace held in runs (so numpy is loaded) of Tuples of Ints answers as
        ``peek_columns`` does: what a limited peek of a large trace sorts and
        slices without a Python row per row."""
        export = self.exports[trace]
        before = export.dataflow.frozen_at
        contents = export.trace
        if not has_key:
            if columns and contents.runs and not contents.data:
                got = self._int_columns(export)
                if got is not None:
                    return got
            return {"rows": contents.rows(before)}
        rows = contents.key_contents(key, before)
        return {"rows": [(k, v, d) for (k, v), d in rows.items()]}

    def do_peek_columns(self, trace) -> dict:
        """The whole trace as int64 column bytes (``columns``: key columns,
        val columns, diffs, count), consolidated and in (key, val) order;
        ``empty`` when it holds nothing; ``rows`` when it is not all Tuples
        of Ints (see Trace.int_columns)."""
        export = self.exports[trace]
        if not export.trace.size():
            return {"empty": True}
        return self._int_columns(export) or {"rows": export.trace.rows(export.dataflow.frozen_at)}

    @staticmethod
    def _int_columns(export):
        """``{"columns": (key bytes, val bytes, diff bytes, count)}`` of a
        trace of Tuples of Ints, consolidated, in (key, val) order; or None."""
        got = export.trace.int_columns(export.dataflow.frozen_at)
        if got is None:
            return None
        keys, vals, d = got
        wire = [c.astype("<i8", copy=False).tobytes() for c in keys]
        return {"columns": (wire, [c.astype("<i8", copy=False).tobytes() for c in vals],
                            d.astype("<i8", copy=False).tobytes(), len(d))}

    def do_cursor_index(self, trace, epoch, key=None, has_key=False, after=None) -> dict:
        self._page_index(trace, epoch).prepare(key, has_key, after)
        return {}

    def _page_index(self, trace, epoch) -> PageIndex:
        """The lease's reading state, built once per lease (and again if the
        trace is another object, which a dropped name's lease never reaches)."""
        export = self.exports[trace]
        index = self.cursor_index.get((trace, epoch))
        if index is None or index.trace is not export.trace:
            frozen = export.dataflow.frozen_at
            index = PageIndex(export.trace, epoch if frozen is None else min(epoch, frozen))
            self.cursor_index[(trace, epoch)] = index
        return index

    def do_page(self, trace, epoch, key, has_key, after, n) -> dict:
        """The first ``n`` rows (key, val, diff) after ``after`` as of
        ``epoch``, in (key, val) order (see PageIndex for the cost)."""
        return {"rows": self._page_index(trace, epoch).page(key, has_key, after, n)}

    def do_stats(self) -> dict:
        return {"stored": sum(df.stored_updates() for df in self.dataflows.values()),
                "pending": sum(df.pending_updates() for df in self.dataflows.values()),
                "steps": getattr(self.exchange, "steps", 0),
                "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
