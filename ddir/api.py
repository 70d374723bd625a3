"""The Python API (SPEC C6): :class:`Server`.

::

    import ddir
    with ddir.Server(workers=2) as s:
        s.install("reach", "programs/reach.ddp")      # or source="..."
        s.feed("reach", 0, (1, 2))
        s.load("reach", 0, "edges.parquet")
        result = s.tick()                              # .epoch .events .errors
        s.peek("result")                               # [(key, val, diff), ...]
        s.peek_arrow("result")                         # a pyarrow.Table (also peek_pandas/polars)
        s.load("reach", 0, table)                      # a pyarrow.Table, pandas/polars DataFrame
        with s.subscribe("result") as sub:             # replay, then each tick's changes
            for change in sub: ...                     # what has arrived (see Subscription)
        page = s.peek("result", limit=100)             # a list of rows, + .total .cursor
        page = page.next()                             # the next page, as of page's epoch

Every command runs through :meth:`Server.execute` (typed command -> output
records, or a :class:`ddir.DdirError`); the CLI, the prompt and scripts are
clients of that same method and only render its records. Values are plain
Python: ``int``, ``tuple``, :class:`ddir.List`, :class:`ddir.Variant`.
"""

from __future__ import annotations

import os

import collections
import threading
import warnings
import weakref
from dataclasses import dataclass

from . import errors as E
from .engine.batch import intake_columnar_min
from .server import commands as C
from .server.cluster import LocalCluster, ProcessCluster, WorkerDied
from .server.functions import load_functions
from .server.interrupts import defer_interrupts
from .server.registry import Server as _Core
from .values import Float, as_value, value_problem

MAX_VALUE_DEPTH = 100  # as on the command line (ddir.lang.value_token.MAX_VALUE_DEPTH)


@dataclass(frozen=True)
class Event:
    """One inspect event: ``[label] key ; val  @time  diff``."""
    label: str
    key: object
    val: object
    time: tuple
    diff: int


@dataclass(frozen=True)
class Result:
    """What a tick (or an install's catch-up) reported: the epoch after it,
    the inspect events (sorted as printed) and the error messages (term
    errors, programs that failed), each exactly as the CLI prints it."""
    epoch: int
    events: tuple
    errors: tuple


TickResult = Result


@dataclass(frozen=True)
class Change:
    """What a :class:`Subscription` yields. The first is the replay
    (``replay=True``): the trace as `peek` showed it when subscribing, at
    ``epoch`` (the rows of every time before it). Then one per tick that
    changed the trace: ``epoch`` is the epoch that tick closed, ``rows`` the
    net changes ``(key, val, diff)`` at it, sorted. Adding them up gives
    exactly what :meth:`Server.peek` shows after that tick."""
    trace: str
    epoch: int
    rows: tuple
    replay: bool = False


class Page(list):
    """One page of a trace (:meth:`Server.peek` with ``limit=``,
    :meth:`Server.page`): the rows ``(key, val, diff)`` themselves (a
    ``list``, as ``peek`` returns them), and

    * ``trace``, ``total`` (the trace's rows as of the page's epoch),
      ``offset`` (of the first row);
    * ``cursor``: the token of the next page (SPEC C4), None on the last.
      It reads the trace as of this page's epoch, even after ticks, on any
      client of this server, until unused for 60 s;
    * :meth:`next`: that page (None after the last); :meth:`pages`: this
      page and every one after it.

    ``rows`` is the page itself (the name it had before ``Page`` was a list)."""

    def __init__(self, rows, trace: str, total: int, offset: int, cursor: str | None,
                 server: "Server | None" = None):
        super().__init__(rows)
        self.trace, self.total, self.offset, self.cursor = trace, total, offset, cursor
        self._server = server

    @property
    def rows(self) -> "Page":
        return self

    def next(self, limit: int | None = None) -> "Page | None":
        """The next page (``limit`` rows, by default this page's), or None
        if this is the last; :class:`ddir.CursorError` if the cursor
        expired."""
        if self.cursor is None:
            return None
        return self._server.page(cursor=self.cursor, limit=limit)

    def pages(self, limit: int | None = None):
        """This page, then each next one, to the end."""
        page = self
        while page is not None:
            yield page
            page = page.next(limit)

    def __repr__(self) -> str:
        return (f"Page(trace={self.trace!r}, rows={list.__repr__(self)}, total={self.total}, "
                f"offset={self.offset}, cursor={self.cursor!r})")


class Subscription:
    """A live view of a trace (``Server.subscribe``, SPEC C2).

    Changes arrive while the server ticks (in this thread or another) and
    wait in a queue. Iterating (``for change in sub``) yields the queued
    :class:`Change` objects - the replay first - and stops when the queue is
    empty, so it never blocks a single-threaded program; iterate again after
    the next tick. :meth:`follow` instead blocks for the next change, for a
    consumer thread, until the subscription ends. It ends with :meth:`close`
    (``with`` does it) or when the trace's producer is dropped (``ended``
    then says why)."""

    def __init__(self, server: "Server", trace: str, key, has_key: bool):
        self.server = server
        self.trace = trace
        self.key = key
        self.has_key = has_key
        self.epoch = None         # the epoch it started at
        self.replay: list = []    # the rows replayed
        self.ended: str | None = None
        self.id = None
        self._queue: collections.deque = collections.deque()
        self._ready = threading.Condition()

    def _deliver(self, records) -> None:
        with self._ready:
            for r in records:
                if r["kind"] == "change":
                    self._queue.append(Change(r["trace"], r["epoch"], tuple(r["rows"])))
                elif r["kind"] == "ended":
                    self.ended = r["reason"]
            self._ready.notify_all()

    def _started(self, record) -> None:
        self.trace, self.epoch, self.id = record["trace"], record["epoch"], record["sub"]
        self.replay = list(record["rows"])
        self._queue.append(Change(self.trace, self.epoch, tuple(self.replay), replay=True))

    def __iter__(self):
        while True:
            with self._ready:
                if not self._queue:
                    return
                change = self._queue.popleft()
            yield change

    def follow(self, timeout: float | None = None):
        """Yield changes as they arrive, blocking, until the subscription
        ends (or nothing came for ``timeout`` seconds)."""
        while True:
            with self._ready:
                if not self._queue and self.ended is None:
                    self._ready.wait(timeout)
                if not self._queue:
                    return
                change = self._queue.popleft()
            yield change

    def close(self) -> None:
        """Unsubscribe (idempotent); what is queued can still be read."""
        if self.ended is None and self.id is not None:
            self.server.core.end_subscription(self.id)
        with self._ready:
            if self.ended is None:
                self.ended = "unsubscribed"
            self._ready.notify_all()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"ended: {self.ended}" if self.ended else f"{len(self._queue)} queued"
        return f"<Subscription {self.trace!r} from epoch {self.epoch} ({state})>"


def _program(path, source, syntax) -> tuple:
    """(lowered program, its text) from a file or from ``source`` (``path``,
    if given too, labels errors and chooses `.ddp`/`.ddir`; without it the
    source is `.ddp` unless ``syntax="ddir"``)."""
    if source is not None and type(source) is not str:
        raise E.CommandError(f"source= must be the program's text (a str), not {_show(source)}")
    if syntax is not None and syntax not in ("ddp", "ddir"):
        raise E.CommandError(f'syntax= must be "ddp" or "ddir", not {_show(syntax)}')
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise E.CommandError(f"the program's path must be a str, not {_show(path)}")
    try:
        if source is None:
            return C.load_program(str(path)), C.read_source(str(path))
        label = str(path) if path is not None else "<source>"
        return (C.program_from_source(source, label,
                                      syntax or (None if path is not None else "ddp")), source)
    except C.ProgramError as e:
        raise E.InvalidProgram(str(e)) from None


class Server:
    """A running ddir server; ``with`` it (or call :meth:`close`) to stop its
    worker processes."""

    def __init__(self, workers: int = 1, *, max_rounds: int | None = None, on_death=None,
                 functions=None, mpi=None, max_memory: int | str | None = None):
        """``functions`` (SPEC C5): a module, a module name or a ``.py`` path
        whose public callables terms may call as ``@name(...)``; imported
        here, before the worker processes are forked, so each has them.
        ``mpi`` (SPEC C7): rank 0's :class:`ddir.server.mpi.Ranks` of an MPI
        job whose other ranks run ``Ranks.serve``; they are the workers
        (``workers`` is then the job's size, and is ignored).
        ``max_memory`` (SPEC E3, ``--max-memory``): bytes (or ``"512M"``)
        the workers' memory may grow by, split between them; a tick that
        would need more fails its program. Default: 80% of the machine's
        memory (or of its cgroup's limit)."""
        if mpi is not None:
            workers = mpi.size
        elif type(workers) is not int or not 1 <= workers <= 64:
            raise E.CommandError(f"workers needs a number from 1 to 64, got {workers!r}")
        if max_rounds is not None and (type(max_rounds) is not int or max_rounds < 1):
            raise E.CommandError(f"max_rounds needs a positive number, got {max_rounds!r}")
        budget = _budget(max_memory)
        table = None if functions is None else load_functions(functions)
        callables = table.table if table is not None else None
        if workers == 1:
            cluster = LocalCluster(functions=callables)
        elif mpi is not None:
            from .server.mpi import MpiCluster
            cluster = MpiCluster(mpi, on_death=on_death, functions=callables)
        else:
            cluster = ProcessCluster(workers, on_death=on_death, functions=callables)
        try:
            if budget is not None:
                total, label = budget
                cluster.broadcast(("budget", total // workers, label))
        except BaseException:
            cluster.close()
            raise
        self._init(_Core(max_rounds=max_rounds, cluster=cluster, functions=table), owns=True)

    @classmethod
    def restore(cls, path, workers: int = 1, *, max_rounds: int | None = None, on_death=None,
                functions=None, mpi=None, max_memory: int | str | None = None) -> "Server":
        """A server started from the checkpoint directory ``path`` (SPEC C5),
        with any number of workers; ``max_rounds`` defaults to the
        checkpointed server's."""
        from .server.checkpoint import restore_into
        server = cls(workers, max_rounds=max_rounds, on_death=on_death, functions=functions,
                     mpi=mpi, max_memory=max_memory)
        try:
            _deferring_interrupts(lambda: restore_into(server.core, str(path)))
        except BaseException:
            server.close()
            raise
        return server

    def checkpoint(self, path) -> dict:
        """``checkpoint <dir>``: the record (dir, epoch, programs, rows)."""
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise E.CommandError(f"checkpoint needs a directory path, not {_show(path)}")
        (record,) = self._call(C.Checkpoint(os.fspath(path)))
        return record

    @classmethod
    def attach(cls, core: _Core) -> "Server":
        """A client of an existing server state (whoever made it closes it)."""
        self = cls.__new__(cls)
        self._init(core, owns=False)
        return self

    def _init(self, core: _Core, owns: bool) -> None:
        self.core = core
        self._closed = False
        self._finalizer = weakref.finalize(self, core.cluster.close) if owns else None
        # Commands running (see cancel); reentrant: a signal handler may
        # cancel from the thread that holds it.
        self._busy = 0
        self._busy_lock = threading.RLock()

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop every worker process (idempotent)."""
        self._closed = True
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def workers(self) -> int:
        return self.core.cluster.shards

    def cancel(self) -> bool:
        """Stop the command another thread is running (a long tick), from any
        thread, and return at once: True if one was running. Its programs
        that were still running (or had yet to run) in the tick fail as a
        loop that does not converge does (``the tick was cancelled``): their
        traces keep their contents from before the tick, never half of it;
        the server and every other program carry on (SPEC E3)."""
        with self._busy_lock:
            if not self._busy:
                return False
            cancel = getattr(self.core.cluster, "cancel", None)
            if cancel is not None:
                cancel()
            return True

    def _running(self, run):
        """``run()`` as a command that :meth:`cancel` can stop."""
        with self._busy_lock:
            self._busy += 1
        try:
            return run()
        finally:
            with self._busy_lock:
                self._busy -= 1
                if not self._busy:  # nothing runs: a late cancel must not stop the next one
                    cancel = getattr(self.core.cluster, "cancel", None)
                    if cancel is not None:
                        cancel(False)

    # ------------------------------------------------------------ the one code path

    def execute(self, cmd, owner=None, deliver=None) -> list:
        """Run a typed command (:mod:`ddir.server.commands`) or a command
        line (as :meth:`command`): its output records, or a
        :class:`ddir.DdirError` with nothing changed. ``owner``/``deliver``:
        whose subscriptions these are, and where a ``subscribe``'s later
        records go (see :meth:`ddir.server.registry.Server.run`)."""
        if isinstance(cmd, str):
            cmd = C.parse_command(cmd)
            if cmd is None or isinstance(cmd, C.Exit):
                return []
        if self._closed:
            raise E.ServerStopped("the server is closed")
        if self.core.cluster is not None and getattr(self.core.cluster, "dead", None):
            raise E.ServerStopped(self.core.cluster.dead)
        try:
            return self._running(lambda: self.core.run(cmd, owner, deliver))
        except WorkerDied as e:
            self.close()
            raise E.ServerStopped(str(e)) from None

    def command(self, line: str, script_dir: str | None = None) -> list:
        """One command line, as typed at the prompt: its output records."""
        cmd = C.parse_command(line, script_dir)
        if cmd is None or isinstance(cmd, C.Exit):
            return []
        return self._call(cmd)

    def _call(self, cmd) -> list:
        return _deferring_interrupts(lambda: self.execute(cmd), self.cancel)

    # ------------------------------------------------------------ commands

    def install(self, name: str, path: str | None = None, *, source: str | None = None,
                syntax: str | None = None) -> Result:
        """Install a program from ``path`` or from ``source`` text (``path``,
        if given too, labels errors and chooses `.ddp`/`.ddir`; without it
        the source is `.ddp` unless ``syntax="ddir"``)."""
        _name(name, "a program name")
        if source is None and path is None:
            raise E.CommandError("install needs a file or source=")
        program, text = _program(path, source, syntax)
        return self._result(self._call(C.Install(name, str(path or "<source>"), program, text)))

    def reinstall(self, name: str, path: str | None = None, *, source: str | None = None,
                  syntax: str | None = None, functions: str | None = None) -> Result:
        """Make a read-only program live again (``reinstall <name> [<file>]
        [functions=<module>]``): from its stored program, or from
        ``path``/``source`` exporting the same traces; it catches up from its
        stored inputs. ``functions``: a module name or ``.py`` path to import
        first (in every worker too), for the functions it was missing."""
        _name(name, "a program name")
        if functions is not None and not isinstance(functions, (str, os.PathLike)):
            raise E.CommandError("reinstall functions= needs a module name or a .py path "
                                 "(workers import it by name)")
        module = None if functions is None else os.fspath(functions)
        if source is None and path is None:
            return self._result(self._call(C.Reinstall(name, None, functions=module)))
        program, text = _program(path, source, syntax)
        return self._result(self._call(C.Reinstall(name, str(path or "<source>"), program, text,
                                                   module)))

    def feed(self, program: str, input: int, key, val=(), *, time: int | None = None,
             diff: int = 1) -> None:
        """Stage one update (``feed <prog> <in#> <key> val= time= diff=``)."""
        _name(program, "a program name")
        cmd = C.Feed(program, _integer(input, "the input number", 0),
                     _value(_as_row(key), "key"), _value(_as_row(val), "val"),
                     None if time is None else _integer(time, "time=", 0),
                     _integer(diff, "diff="))
        self._call(cmd)

    def feed_many(self, program: str, input: int, rows=None, *, keys=None,
                  time: int | None = None, key=None, val=None, diff=None) -> int:
        """Stage many updates at once, all or nothing: ``rows``, an iterable
        of keys or of ``(key, val, diff)`` (SPEC C6), or ``keys=`` (val unit,
        diff +1 each). In ``rows`` an item is an update when it is a triple
        of a Tuple, a Tuple and an Int, and a key otherwise (a key of that
        very shape must go through ``keys=``). Returns how many. Rows whose
        keys and vals are Tuples of Ints go to their workers as int64
        columns, like a load. ``rows`` may also be a table (a
        ``pyarrow.Table`` or ``RecordBatch``, a pandas or polars DataFrame):
        then it is :meth:`load` of that table, ``key=``/``val=``/``diff=``
        naming its columns."""
        _name(program, "a program name")
        table = _table_of(rows, "feed_many") if keys is None else None
        if table is not None:
            return self._load_table(program, input, table, _what(rows, "feed_many"), key, val,
                                    diff, time)
        if key is not None or val is not None or diff is not None:
            raise E.CommandError("feed_many: key=, val= and diff= name the columns of a table; "
                                 "rows are not one")
        if rows is not None and keys is not None:
            raise E.CommandError("feed_many takes rows or keys=, not both")
        if rows is None and keys is None:
            raise E.CommandError("feed_many needs rows (keys, or (key, val, diff) updates) or keys=")
        n = _integer(input, "the input number", 0)
        when = None if time is None else _integer(time, "time=", 0)
        items = keys if keys is not None else rows
        try:
            items = iter(items)
        except TypeError:
            raise E.CommandError(f"feed_many: {'keys=' if keys is not None else 'rows'} must be "
                                 f"an iterable, not {_show(items)}") from None
        if keys is not None:
            batch = [(_as_row(k), (), 1) for k in items]
        else:
            batch = [tuple(row) if _is_update(row) else (_as_row(row), (), 1) for row in items]
        # As int64 columns (no Python object per row crosses to the workers)
        # when numpy pays; a small feed does not load numpy at all.
        columns = None
        if len(batch) >= intake_columnar_min():
            from .server.staged import from_rows
            columns = from_rows(batch)
        if columns is None:
            for i, (k, v, d) in enumerate(batch):
                k2 = _value(k, f"row {i + 1}: key")
                v2 = _value(v, f"row {i + 1}: val")
                _integer(d, f"row {i + 1}: diff=")
                if d == 0:
                    raise E.UpdateRefused(f"row {i + 1}: diff=0 changes nothing")
                if k2 is not k or v2 is not v:  # a Python float made a Float
                    batch[i] = (k2, v2, d)
        elif columns.diffs is not None and not columns.diffs.all():
            i = int((columns.diffs == 0).nonzero()[0][0])
            raise E.UpdateRefused(f"row {i + 1}: diff=0 changes nothing")

        def stage():
            if self._closed:
                raise E.ServerStopped("the server is closed")
            at = self.core.check_target(program, n, when)
            self.core.check_shape(program, n, columns if columns is not None else batch)
            try:
                self.core.stage_batch(program, n, at, columns if columns is not None else batch)
            except WorkerDied as e:
                self.close()
                raise E.ServerStopped(str(e)) from None
        _deferring_interrupts(stage)
        return len(batch)

    def load(self, program: str, input: int, path, *, key=None, val=None, diff=None,
             time: int | None = None) -> int:
        """``load``: stage one update per row of a Parquet / Arrow IPC / CSV
        file (a ``str`` or ``os.PathLike``) or of a table in memory (a
        ``pyarrow.Table`` or ``RecordBatch``, a pandas or polars DataFrame,
        converted through Arrow); ``key``/``val`` are column names (a list
        or ``"a,b"``), ``diff`` one column. Columns as SPEC C1: integers are
        Ints, floating point Floats, strings Strings, binary Lists of byte
        Ints, a column marked printed (``peek_arrow``'s ``key``/``val``)
        the values it prints. Returns the number of rows."""
        _name(program, "a program name")
        if not isinstance(path, (str, os.PathLike)):
            table = _table_of(path)
            if table is None:
                raise TypeError("load takes a file path (str or os.PathLike) or a table "
                                "(pyarrow.Table or RecordBatch, pandas or polars DataFrame), "
                                f"not {type(path).__module__}.{type(path).__qualname__}")
            return self._load_table(program, input, table, _what(path, "load"), key, val, diff,
                                    time)
        path = os.fspath(path)
        if not isinstance(path, str):
            raise TypeError(f"load takes a str path, not {type(path).__name__}")
        cmd = C.Load(program, _integer(input, "the input number", 0), str(path), str(path),
                     _cols(key, "key="), _cols(val, "val="),
                     None if diff is None else str(diff),
                     None if time is None else _integer(time, "time=", 0))
        (record,) = [r for r in self._call(cmd) if r["kind"] == "loaded"]
        return record["rows"]

    def _load_table(self, program: str, input: int, table, head: str, key, val, diff,
                    time) -> int:
        """Stage a table's rows as ``load`` stages a file's (all or nothing)."""
        from .server import bulk
        n = _integer(input, "the input number", 0)
        when = None if time is None else _integer(time, "time=", 0)
        key, val = _cols(key, "key="), _cols(val, "val=")
        if diff is not None and (type(diff) is not str or not diff):
            raise E.CommandError(f"diff= needs a column name, got {_show(diff)}")
        batch = bulk.table_to_batch(table, "", None, key, val, diff, head=head)
        count = len(batch) if isinstance(batch, list) else batch.count

        def stage():
            if self._closed:
                raise E.ServerStopped("the server is closed")
            at = self.core.check_target(program, n, when)
            self.core.check_shape(program, n, batch, f"{head}: ")
            try:
                self.core.stage_batch(program, n, at, batch)
            except WorkerDied as e:
                self.close()
                raise E.ServerStopped(str(e)) from None
        _deferring_interrupts(stage)
        return count

    def save(self, trace: str, path: str) -> int:
        """``save``: write a trace's consolidated contents; the number of rows."""
        _name(trace, "a trace name")
        records = self._call(C.Save(trace, str(path)))
        _warn(records)
        return next(r["rows"] for r in records if r["kind"] == "saved")

    def tick(self) -> Result:
        """Close the epoch and run every program: the epoch after it, the
        inspect events, the error messages."""
        return self._result(self._call(C.Tick()))

    def drop(self, name: str) -> None:
        _name(name, "a program name")
        self._call(C.Drop(name))

    def peek(self, trace: str, key=None, *, limit: int | None = None, offset: int = 0) -> list:
        """The trace's consolidated contents as of the closed past, sorted:
        ``[(key, val, diff), ...]`` (with ``key``, only that key's rows).
        With ``limit=``: a :class:`Page` of at most ``limit`` rows from
        ``offset`` on (a list too), whose ``.cursor`` / ``.next()`` give the
        rest as of this page's epoch, even after ticks (SPEC C4)."""
        _name(trace, "a trace name")
        cmd = C.Peek(trace, None if key is None else _value(key, "key"), key is not None,
                     None if limit is None else _integer(limit, "limit=", 0),
                     _integer(offset, "offset=", 0))
        records = self._call(cmd)
        _warn(records)
        if limit is not None:
            return self._page(records[-1])
        return [tuple(r) for r in records[-1]["rows"]]

    def page(self, trace: str | None = None, key=None, *, limit: int | None = None,
             offset: int = 0, cursor: str | None = None) -> Page:
        """One page of a trace (as :meth:`peek` with ``limit=``) or, with
        ``cursor`` (a :attr:`Page.cursor`, from this client or another), the
        page after it as of the cursor's epoch, even after ticks (SPEC C4;
        ``limit`` defaults to the cursor's). A cursor unused for 60 s expires
        (:class:`ddir.CursorError`)."""
        if cursor is None:
            _name(trace, "a trace name")
            if limit is None:
                raise E.CommandError("page needs limit= (or cursor=)")
            return self.peek(trace, key, limit=limit, offset=offset)
        if type(cursor) is not str or not cursor:
            raise E.CommandError(f"cursor must be a token string, got {_show(cursor)}")
        if trace is not None:
            _name(trace, "a trace name")
        if offset:
            raise E.CommandError("`offset=` cannot be combined with `cursor=` (a cursor "
                                 "knows where it is)")
        cmd = C.Peek(trace or "", None if key is None else _value(key, "key"), key is not None,
                     None if limit is None else _integer(limit, "limit=", 1), 0, cursor)
        records = self._call(cmd)
        _warn(records)
        return self._page(records[-1])

    def _page(self, r: dict) -> Page:
        return Page([tuple(x) for x in r["rows"]], r["trace"], r["total"], r["offset"],
                    r.get("cursor"), self)

    def subscribe(self, trace: str, key=None) -> Subscription:
        """Replay the trace's contents (as :meth:`peek`), then its net changes
        at every tick: see :class:`Subscription`."""
        _name(trace, "a trace name")
        sub = Subscription(self, trace, None if key is None else _value(key, "key"),
                           key is not None)
        records = _deferring_interrupts(
            lambda: self.execute(C.Subscribe(trace, sub.key, sub.has_key), sub, sub._deliver))
        _warn(records)
        sub._started(records[-1])
        return sub

    def peek_arrow(self, trace: str):
        """The trace's contents as a ``pyarrow.Table`` with save's columns."""
        _name(trace, "a trace name")
        if self._closed:
            raise E.ServerStopped("the server is closed")

        def read():
            try:
                _, table, records = self.core.table(trace)
            except WorkerDied as e:
                self.close()
                raise E.ServerStopped(str(e)) from None
            _warn(records)
            return table
        return _deferring_interrupts(read)

    def peek_pandas(self, trace: str):
        """The trace's contents as a pandas DataFrame: :meth:`peek_arrow`'s
        table through ``to_pandas`` (needs pandas)."""
        table = self.peek_arrow(trace)
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise ImportError("peek_pandas needs pandas (pip install pandas)") from None
        return table.to_pandas()

    def peek_polars(self, trace: str):
        """The trace's contents as a polars DataFrame: :meth:`peek_arrow`'s
        table through ``polars.from_arrow`` (needs polars)."""
        table = self.peek_arrow(trace)
        try:
            import polars
        except ImportError:
            raise ImportError("peek_polars needs polars (pip install polars)") from None
        return polars.from_arrow(table)

    def list(self) -> dict:
        """``{"epoch": e, "traces": [{name, importers}], "programs": [{name,
        origin, inputs, imports, exports[, failed]}]}``, as `--json` prints it."""
        (record,) = self._call(C.ListCmd())
        return {k: v for k, v in record.items() if k != "kind"}

    def help(self, command: str | None = None) -> list:
        """``[{name, usage, summary}]`` for every command, or one."""
        if command is not None and command not in C.COMMANDS:
            raise E.CommandError(f"no command `{command}` (try `help`)")
        (record,) = self._call(C.Help(command))
        return record["commands"]

    # ------------------------------------------------------------ state

    @property
    def epoch(self) -> int:
        return self.core.epoch

    @property
    def programs(self) -> list:
        return list(self.core.programs)

    @property
    def traces(self) -> list:
        return sorted(self.core.traces)

    def _result(self, records) -> Result:
        return Result(self.core.epoch,
                      tuple(Event(r["label"], r["key"], r["val"], tuple(r["time"]), r["diff"])
                            for r in records if r["kind"] == "inspect"),
                      tuple(r["message"] for r in records if r["kind"] == "error"))


# ============================================================ argument checks


def _as_row(v):
    """A key or val given as one Int, Float or String is a one-field Tuple,
    as on the command line (`feed p 0 7` is `(7)`, SPEC C1; issue 26: the
    API's `feed("p", 0, 7)` was the Int 7, and the mistake surfaced only at
    the tick, as a term error)."""
    return (v,) if type(v) in (int, float, str, Float) else v


def _name(name, what: str) -> None:
    if type(name) is not str or not name or any(c.isspace() for c in name):
        raise E.CommandError(f"{what} must be a non-empty string without blanks, got {_show(name)}")


def _integer(n, what: str, minimum: int | None = None) -> int:
    """An int as the command line would take it, with the CLI's messages."""
    if type(n) is not int:
        raise E.CommandError(f"{what} must be an integer, got `{_show(n)}`")
    return C._int(str(n), what, minimum)


def _cols(cols, what: str):
    if cols is None:
        return None
    if isinstance(cols, str):
        return C._columns(cols, what)
    cols = tuple(cols)
    if not all(type(c) is str and c for c in cols):
        raise E.CommandError(f"{what} needs column names, got {_show(cols)}")
    return cols


def _show(x) -> str:
    text = repr(x)
    return text if len(text) <= 40 else text[:18] + "..." + text[-18:]


def _value(v, what: str):
    """``v`` if it is a ddir value (int in i64, Float, str, tuple, List,
    Variant with a non-negative tag), nested at most as deep as the command
    line allows; a Python ``float`` anywhere in it becomes a ``ddir.Float``."""
    problem = value_problem(v, MAX_VALUE_DEPTH, python=True)
    if problem is None:
        return as_value(v)
    kind, part = problem
    if kind == "int":
        raise E.CommandError(f"{what}: {_show(part)} does not fit in a signed 64-bit integer")
    if kind == "deep":
        raise E.CommandError(f"{what}: nested more than {MAX_VALUE_DEPTH} levels deep")
    if kind == "tag":
        raise E.CommandError(f"{what}: a Variant tag must be a non-negative Int, got {_show(part)}")
    if kind == "string":
        raise E.CommandError(f"{what}: {_show(part)} is not valid Unicode (a lone surrogate)")
    raise E.CommandError(f"{what}: {_show(part)} is not a value (values are int, float, str, "
                         "tuple, ddir.List and ddir.Variant)")


def _table_of(obj, verb: str = "load"):
    """A ``pyarrow.Table`` of a table-like object (Table, RecordBatch, pandas
    or polars DataFrame), None for anything else. pyarrow is imported only
    when the object could be one; pandas and polars never are (their own
    objects convert themselves)."""
    module = type(obj).__module__ or ""
    if not module.startswith(("pyarrow", "pandas", "polars")):
        return None
    from .server.bulk import as_table
    try:
        return as_table(obj)
    except (ValueError, TypeError) as e:  # pyarrow's ArrowInvalid / ArrowTypeError
        text = str(e).strip().splitlines()
        raise E.DataFileError(f"{_what(obj, verb)}: cannot convert it to Arrow: "
                              f"{text[0] if text else type(e).__name__}") from None


def _what(obj, verb: str) -> str:
    """How messages about a table in memory begin: ``load (a pyarrow.Table)``."""
    kind = type(obj)
    name = {"pyarrow": "pyarrow", "pandas": "pandas", "polars": "polars"}.get(
        (kind.__module__ or "").split(".")[0], kind.__module__)
    return f"{verb} (a {name}.{kind.__name__})"


def _warn(records) -> None:
    for r in records:
        if r["kind"] == "error":
            warnings.warn(r["message"], RuntimeWarning, stacklevel=3)


def _is_update(item) -> bool:
    """An item of ``feed_many``'s rows that is ``(key, val, diff)``."""
    return (type(item) in (tuple, list) and len(item) == 3 and type(item[0]) is tuple
            and type(item[1]) is tuple and type(item[2]) is int)


def _budget(max_memory):
    """(bytes of all workers together, how failures name it) of
    ``max_memory``; None: no bound (the machine's memory is unknown)."""
    from .engine.limits import budget_label, default_budget
    if max_memory is None:
        total = default_budget()
        return None if total is None else (total, budget_label(total, False))
    if isinstance(max_memory, str):
        from .options import UsageError, size
        try:
            total = size("max_memory", max_memory)
        except UsageError as e:
            raise E.CommandError(str(e)) from None
    elif type(max_memory) is int and max_memory >= 1 << 20:
        total = max_memory
    else:
        raise E.CommandError(f"max_memory needs a number of bytes of at least 1M (or a size "
                             f'such as "512M"), got {_show(max_memory)}')
    return total, budget_label(total, True)


def _deferring_interrupts(run, cancel=None):
    """Ctrl-C during a command waits until it has finished (never half a
    tick, never half a load), then raises ``KeyboardInterrupt``; with
    ``cancel``, the Ctrl-C also cancels the command (SPEC E3), which then
    ends as soon as its workers see it."""
    result, held = defer_interrupts(run, cancel=cancel)
    if held:
        raise KeyboardInterrupt
    return result
