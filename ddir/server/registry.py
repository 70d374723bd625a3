"""The server state and command semantics (SPEC Part B).

Installed programs, the traces they publish, the epoch: the control plane.
``execute`` takes a typed command, validates it here, then has the workers
(:mod:`ddir.server.cluster`) run it, and returns output *records* (dicts
with a ``kind``) merged from their replies; printing them is someone else's
job. Every refused command leaves the state exactly as it was.

Importer counts are derived from the live programs' imports rather than
stored, so they cannot drift from the truth.
"""

from __future__ import annotations

import contextlib
import re
import heapq
from dataclasses import dataclass, field
from operator import itemgetter

from . import commands as C
from .cluster import LocalCluster
from .cursor import Cursors
from .functions import calls_of, check_calls, load_functions, missing_names
from .generated import (Recipe, RecipeError, import_at, parse_recipe, shadow_message,
                        shadows_a_source)
from .journal import Journal
from ..engine.exchange import split_by_owner
from ..engine.order import sort_rows
from ..errors import (CommandError, CursorError, DdirError, DropRefused, InstallFailed,
                      InvalidProgram, InvalidSource, NameTaken, ServerError, UnknownName,
                      UpdateRefused)
from ..values import INT_MAX, INT_MIN, format_value, order_key

STAGE_CHUNK = 1 << 16  # rows per stage message (progress and memory stay bounded)

__all__ = ["Server", "ServerError", "Installed"]


@contextlib.contextmanager
def no_progress(label: str, total):
    yield lambda done, total=None: None


@dataclass
class Installed:
    name: str
    path: str
    file: str = ""                    # the program's file, for error locations
    origin: str = "program"           # "program" | "generated" | "clock"
    recipe: Recipe | None = None
    inputs: tuple = ()
    imports: tuple = ()
    exports: tuple = ()
    seq: int = 0
    failed: str | None = None         # why it stopped (a tick it could not finish)
    readonly: str | None = None       # why it cannot run (restored without a function...)
    functions: tuple = ()             # the `@f` names it calls, sorted (SPEC C5)
    since: int = 0                    # the epoch it was installed at (checkpoints replay it)
    source: str | None = None         # its program text, when known (for checkpoints)
    program: object = None            # its IR program (for checkpoints)
    stored_ir: tuple | None = None    # (format, base64) of an IR this version cannot read


@dataclass
class Subscription:
    """One ``subscribe`` (SPEC C2). ``owner`` is whoever subscribed (None:
    the one local session; the API and ``serve`` pass their own object), and
    ``deliver(records)``, when set, receives its change and end records as
    they happen; without it they are part of the records the tick (or the
    drop) returns."""
    id: int
    trace: str
    key: object
    has_key: bool
    owner: object = None
    deliver: object = None


@dataclass
class Server:
    epoch: int = 0
    programs: dict = field(default_factory=dict)   # name -> Installed, in install order
    traces: dict = field(default_factory=dict)     # trace name -> program name
    max_rounds: int | None = None
    cluster: object = field(default_factory=LocalCluster)
    # progress(label, total) -> a context manager yielding update(done, total=None):
    # how a long load or save shows that it is running (the prompt's progress bar)
    progress: object = no_progress
    subscriptions: dict = field(default_factory=dict)  # id -> Subscription, in order
    cursors: Cursors = field(default_factory=Cursors)   # peek cursors' secret and leases
    # the Python functions terms may call (server.functions.Functions; None: none given);
    # the cluster's workers were made with the same callables
    functions: object = None
    # name -> Journal: every update staged for each installed program, its past
    # folded (server.journal); what a checkpoint stores and reinstall replays
    journal: dict = field(default_factory=dict)
    _seq: int = 0
    _sub_seq: int = 0

    # ------------------------------------------------------------ queries

    def importers(self, trace: str) -> list:
        return [p.name for p in self.programs.values() if trace in p.imports]

    # ------------------------------------------------------------ dispatch

    def execute(self, cmd) -> list:
        """Records for one command; a refused command gives one error record."""
        try:
            return self.run(cmd)
        except DdirError as e:
            return [{"kind": "error", "message": str(e)}]

    def run(self, cmd, owner=None, deliver=None) -> list:
        """Records for one command; a refused command raises a
        :class:`ddir.errors.DdirError` and changes nothing (the one code path
        every client uses: the CLI, the prompt, scripts, :class:`ddir.Server`).

        ``owner`` names the client (any object; None: the one local session):
        ``unsubscribe`` ends only its subscriptions (:meth:`release_owner`
        ends them when it goes away). Cursor leases belong to no client: a
        token works on any connection and after a reconnect (SPEC C4). A
        ``subscribe`` with ``deliver`` has its later records (``change``,
        ``ended``) passed to ``deliver(records)`` as ticks and drops happen,
        each carrying ``"sub"``, the id its ``subscribed`` record carries;
        without ``deliver`` they are returned by the tick or drop that made
        them, whoever ran it."""
        if isinstance(cmd, (C.Subscribe, C.Unsubscribe)):
            return (self.subscribe(cmd, owner, deliver) if isinstance(cmd, C.Subscribe)
                    else self.unsubscribe(cmd, owner))
        handler = {
            C.Install: self.install, C.Feed: self.feed, C.Tick: self.tick, C.Drop: self.drop,
            C.Peek: self.peek, C.ListCmd: self.list, C.Help: self.help,
            C.Load: self.load, C.Save: self.save, C.Checkpoint: self.checkpoint,
            C.Reinstall: self.reinstall,
        }.get(type(cmd))
        if handler is None:
            raise CommandError(f"not a command: {type(cmd).__name__}")
        try:
            if isinstance(cmd, C.Peek):
                return self.page(cmd) if cmd.cursor is not None else self.peek(cmd)
            return handler(cmd)
        except RecipeError as e:
            raise InvalidSource(str(e)) from None

    # ------------------------------------------------------------ install / drop

    def _taken(self, name: str) -> bool:
        return name in self.programs

    def install(self, cmd: C.Install) -> list:
        program = cmd.program
        if '"' in cmd.name or not cmd.name.isprintable():
            # every message quotes the name: "q" would print as ""q""
            raise CommandError(f"a program name cannot hold a double quote or a control "
                               f"character: {cmd.name!r}")
        try:
            calls = check_calls(program, self.functions, program.file)
        except C.ProgramError as e:
            raise InvalidProgram(str(e)) from None
        if self._taken(cmd.name):
            raise NameTaken(f'a program named "{cmd.name}" is already installed')
        if parse_recipe(cmd.name) is not None:
            raise NameTaken(f'"{cmd.name}" names a generated source; choose another program name')
        for name, _ in program.exports:
            if name in self.traces:
                raise NameTaken(f'trace "{name}" is already published by "{self.traces[name]}"')
            if shadows_a_source(name):  # a checkpoint's program was not checked by check_recipes
                raise NameTaken(shadow_message(name))
        new_sources = []
        for trace in program.imports:
            if trace in self.traces:
                continue
            try:  # a program from a checkpoint was not checked by check_recipes
                recipe = parse_recipe(trace)
            except RecipeError as e:
                raise InvalidSource(f"{import_at(program, trace)}: {e}") from None
            if recipe is None:
                raise UnknownName(f'{import_at(program, trace)}: imports unknown trace "{trace}"')
            if recipe.name in self.traces:
                continue
            if self._taken(recipe.name):
                raise NameTaken(f'generated source "{recipe.name}" clashes with a program of that name')
            new_sources.append(recipe)
        self.check_import_shapes(program, new_sources)
        for recipe in dict.fromkeys(new_sources):
            self._install_source(recipe)
        aliases = tuple((t, self.canonical(t)) for t in program.imports)
        catch_up = self.epoch - 1 if self.epoch > 0 else None
        replies = self.cluster.broadcast(("install", cmd.name, program, aliases, catch_up,
                                          self.max_rounds))
        failed = sorted(r["failed"] for r in replies if "failed" in r)
        if failed:  # a scope hit the iteration bound while catching up: undo everywhere
            self.cluster.broadcast(("drop", cmd.name))
            raise InstallFailed(f'install "{cmd.name}": {failed[0]}')
        self._add(Installed(cmd.name, cmd.path, program.file, inputs=program.inputs,
                            imports=tuple(sorted({a for _, a in aliases})),
                            exports=tuple(n for n, _ in program.exports), functions=calls,
                            source=getattr(cmd, "source", None), program=program))
        return [{"kind": "installed", "name": cmd.name}] + self._collect(replies)

    def check_import_shapes(self, program, new_sources=()) -> None:
        """Refuse ``program`` when an import's ascription differs from the
        shape its exporter declared (SPEC D2); an exporter that declared
        none is not checked."""
        from ..lang.shapes import show
        for kind, trace, shape in getattr(program, "shapes", ()):
            if kind != "import":
                continue
            exporter, theirs = self.export_shape(trace, new_sources)
            if theirs is not None and theirs != shape:
                raise InvalidProgram(f'{import_at(program, trace)}: import "{trace}" is ascribed '
                                     f'{show(shape)}, but {exporter} exports it as {show(theirs)}')

    def export_shape(self, trace: str, new_sources=()) -> tuple:
        """``(who, RowShape or None)``: the declared shape of ``trace``."""
        from ..lang.shapes import INT, RowShape, TupleShape, UNIT
        name = self.canonical(trace)
        producer = self.programs.get(self.traces.get(name, ""))
        recipe = producer.recipe if producer is not None else next(
            (r for r in new_sources if r.name == name), None)
        if recipe is not None:  # a generated source's rows have a known shape (SPEC A8)
            if recipe.kind in ("iota", "clock"):
                return f'the generated source "{recipe.name}"', RowShape(TupleShape((INT,)), UNIT)
            arity = re.search(r"arity=([0-9]+)", recipe.name)
            if recipe.kind == "random" and arity:
                key = TupleShape((INT,) * int(arity.group(1)))
                return f'the generated source "{recipe.name}"', RowShape(key, UNIT)
            return None, None
        if producer is None or producer.program is None:
            return None, None
        return f'"{producer.name}"', producer.program.shape("export", name)

    def check_shape(self, program: str, n: int, batch, what: str = "") -> None:
        """Refuse a batch for input ``n`` of ``program`` with a row that
        does not fit the input's ascribed shape (SPEC D2): one error naming
        the row, the field and the shape; nothing is staged. Checked here,
        where data enters, so workers never check a row."""
        entry = self.programs.get(program)
        ir = getattr(entry, "program", None)
        shape = ir.shape("input", n) if ir is not None else None
        if shape is None:
            return
        from ..lang.shapes import first_misfit, misfit_message
        bad = first_misfit(batch, shape)
        if bad is not None:
            single = isinstance(batch, list) and len(batch) == 1
            raise UpdateRefused(f'{what}"{program}" input {n}: '
                                f"{misfit_message(bad, shape, single)}")

    def _add(self, entry: Installed) -> None:
        self._seq += 1
        entry.seq = self._seq
        entry.since = self.epoch
        self.programs[entry.name] = entry
        for name in entry.exports:
            self.traces[name] = entry.name

    def _install_source(self, recipe: Recipe) -> None:
        self.cluster.broadcast(("source", recipe.name, recipe.kind, recipe.params, self.epoch,
                                self.max_rounds))
        self._add(Installed(recipe.name, recipe.name, f"<{recipe.name}>", origin=recipe.origin,
                            recipe=recipe, inputs=(0,), exports=(recipe.name,)))

    def install_standin(self, entry: Installed, contents: list) -> None:
        """Install ``entry`` (read-only or failed, from a checkpoint) as a
        stand-in holding ``contents``: rows per export, in order
        (server.standin); they are in the closed past at once."""
        self.cluster.broadcast(("standin", entry.name, list(entry.exports)))
        for i, rows in enumerate(contents):
            self.stage_batch(entry.name, i, 0, rows, journal=False)
        if self.epoch > 0:
            self.cluster.broadcast(("settle", entry.name, self.epoch - 1))
        self._add(entry)

    def reinstall(self, cmd: C.Reinstall) -> list:
        """Make a read-only program live (SPEC C5): from its stored IR or a
        new file, exporting the same names; it catches up from its stored
        inputs and its stand-in's traces follow it (importers stay)."""
        entry = self.programs.get(self.canonical(cmd.name))
        if entry is None:
            raise UnknownName(f'no program named "{cmd.name}"')
        if not entry.readonly:
            state = f"has failed ({entry.failed})" if entry.failed else "is live"
            raise UpdateRefused(f'"{entry.name}" {state}: only a read-only program can be '
                                "reinstalled")
        program = cmd.program if cmd.program is not None else entry.program
        if program is None:
            raise InvalidProgram(f'reinstall "{entry.name}": its stored program cannot be used '
                                 f"({entry.readonly}); give its source: reinstall {entry.name} <file>")
        functions = self.functions
        if cmd.functions is not None:  # validated here, imported by the workers only if it is used
            added = load_functions(cmd.functions, fresh=True)
            functions = added if functions is None else functions.merged(added)
        try:
            calls = check_calls(program, functions, program.file)
        except C.ProgramError as e:
            have = functions.table if functions is not None else {}
            missing = [n for n in calls_of(program) if n not in have]
            if missing and cmd.functions is None:  # the fix is an option of this command
                raise InvalidProgram(
                    f'reinstall "{entry.name}": it calls {missing_names(missing)}, which this '
                    f"server does not have: name the module that has them, reinstall "
                    f"{entry.name} functions=MODULE") from None
            raise InvalidProgram(str(e)) from None
        exports = tuple(n for n, _ in program.exports)
        if sorted(exports) != sorted(entry.exports):
            shown = lambda names: ", ".join(f'"{n}"' for n in names) or "nothing"  # noqa: E731
            raise InvalidProgram(f'reinstall "{entry.name}": it must export the same traces '
                                 f"({shown(entry.exports)}), not {shown(exports)}")
        aliases = []
        for trace in program.imports:
            name = self.canonical(trace)
            producer = self.programs.get(self.traces.get(name, ""))
            if producer is None:
                raise UnknownName(f'reinstall "{entry.name}": imports unknown trace "{trace}"')
            if producer.seq >= entry.seq:  # it runs before its importers, as installed
                raise InvalidProgram(f'reinstall "{entry.name}": it imports "{name}", which '
                                     f'"{producer.name}" publishes, installed after it')
            aliases.append((trace, name))
        self.check_import_shapes(program)
        journal = self.journal.get(entry.name)
        stored = journal.entries() if journal is not None else []
        unread = sorted({n for n, _, _ in stored} - set(program.inputs))
        if unread:
            raise InvalidProgram(f'reinstall "{entry.name}": it has stored updates for input '
                                 f"{unread[0]}, which the program does not read")
        if functions is not self.functions:
            refused = [r["error"] for r in self.cluster.broadcast(("functions", cmd.functions))
                       if "error" in r]
            if refused:
                raise InvalidProgram(f'reinstall "{entry.name}": {refused[0]}')
            self.functions = functions
        self.cluster.broadcast(("reinstall", entry.name, program, aliases, self.max_rounds))
        for n, time, batch in stored:
            self.stage_batch(entry.name, n, time, batch, journal=False)
        replies = self.cluster.broadcast(("reconnect", entry.name, self.epoch))
        failed = sorted(r["failed"] for r in replies if "failed" in r)
        if failed:  # every worker has put the stand-in back
            raise InstallFailed(f'reinstall "{entry.name}": {failed[0]}')
        entry.readonly = None
        entry.program, entry.functions, entry.inputs = program, calls, program.inputs
        entry.imports = tuple(sorted({a for _, a in aliases}))
        if cmd.program is not None:
            entry.path, entry.file, entry.source = cmd.path, program.file, cmd.source
        return [{"kind": "reinstalled", "name": entry.name}] + self._collect(replies)

    def canonical(self, name: str) -> str:
        """``name`` itself, or a recipe's canonical spelling (any key order,
        omitted defaults) when that is what is installed."""
        if name in self.programs or name in self.traces:
            return name
        try:
            recipe = parse_recipe(name)
        except RecipeError:
            return name
        return recipe.name if recipe is not None else name

    def drop(self, cmd: C.Drop) -> list:
        entry = self.programs.get(self.canonical(cmd.name))
        if entry is None:
            raise UnknownName(f'no program named "{cmd.name}"')
        for trace in entry.exports:
            users = self.importers(trace)
            if users:
                names = ", ".join(f'"{u}"' for u in users)
                raise DropRefused(f'cannot drop "{entry.name}": trace "{trace}" is imported by {names}'
                                  f" (drop {'them' if len(users) > 1 else 'it'} first)")
        self.cluster.broadcast(("drop", entry.name))
        del self.programs[entry.name]
        self.journal.pop(entry.name, None)
        for trace in entry.exports:
            self.traces.pop(trace, None)
            self.cursors.release_trace(trace)
        records = [{"kind": "dropped", "name": entry.name}]
        for sub in [s for s in self.subscriptions.values() if s.trace in entry.exports]:
            records += self._end(sub, "its producer was dropped")
        return records

    # ------------------------------------------------------------ feed / tick

    def feed(self, cmd: C.Feed) -> list:
        if cmd.diff == 0:
            raise UpdateRefused("diff=0 changes nothing")
        self.feed_rows(cmd.program, cmd.input, [(cmd.key, cmd.val, cmd.diff)], cmd.time)
        return []

    def feed_rows(self, program: str, n: int, rows: list, time: int | None = None) -> None:
        """Stage ``[(key, val, diff)]`` for input ``n`` of ``program`` at
        ``time`` (default: the current epoch), each row on the worker owning
        its key: one message per worker however many rows."""
        time = self.check_target(program, n, time)
        self.check_shape(program, n, rows)
        self.journal.setdefault(program, Journal()).add(n, time, rows)
        for owner, batch in enumerate(split_by_owner(rows, self.cluster.shards)):
            if batch:
                self.cluster.send(owner, ("stage", program, n, time, batch))

    def check_target(self, program: str, n: int, time: int | None) -> int:
        """Refuse a feed/load to ``program`` input ``n`` at ``time`` that
        cannot be staged; the time to stage at."""
        entry = self.programs.get(program)
        if entry is None:
            raise UnknownName(f'no program named "{program}"')
        if entry.origin != "program":
            raise UpdateRefused(f'"{program}" is a generated source and cannot be fed')
        if entry.failed:
            raise UpdateRefused(f'"{program}" has failed and cannot be fed ({entry.failed}); '
                                "drop it and install it again")
        if entry.readonly:
            raise UpdateRefused(f'"{program}" is read-only and cannot be fed ({entry.readonly}); '
                                f'`reinstall {program}` once it can run')
        if n not in entry.inputs:
            reads = ", ".join(str(i) for i in entry.inputs) or "none"
            raise UnknownName(f'"{program}" has no input {n} (it reads: {reads})')
        time = self.epoch if time is None else time
        if time < self.epoch:
            raise UpdateRefused(f"time={time} is in the closed past (the current epoch is {self.epoch})")
        return time

    def stage_batch(self, program: str, n: int, time: int, batch, update=None,
                    journal: bool = True) -> None:
        """Stage a validated batch (:class:`staged.IntColumns` or a list of rows)
        on the owners of its keys, in messages of at most ``STAGE_CHUNK`` rows;
        ``update(done)`` after each. Nothing here can refuse: check first.
        ``journal=False``: updates the journal already holds (a reinstall's
        catch-up) or that are not inputs (a stand-in's contents)."""
        shards = self.cluster.shards
        # in one process nothing is gained by cutting a batch up (and the
        # engine would concatenate the pieces again)
        as_rows = isinstance(batch, list)
        chunk = STAGE_CHUNK if shards > 1 else max(1, len(batch) if as_rows else batch.count)
        done = 0
        if journal:
            self.journal.setdefault(program, Journal()).add(n, time, batch)
        if not as_rows:  # IntColumns (numpy is loaded: they are numpy arrays)
            from .staged import split_columns
            for owner, part in enumerate(split_columns(batch, shards)):
                for start in range(0, part.count, chunk):
                    piece = part.slice(start, start + chunk)
                    self.cluster.send(owner, ("stage_columns", program, n, time) + piece.message())
                    done += piece.count
                    if update:
                        update(done)
            return
        if shards == 1:  # one owner: no key needs hashing (a copy: the journal keeps batch)
            if batch:
                self.cluster.send(0, ("stage", program, n, time, batch[:]))
            if update:
                update(len(batch))
            return
        for start in range(0, len(batch), chunk):
            piece = batch[start:start + chunk]
            for owner, rows in enumerate(split_by_owner(piece, shards)):
                if rows:
                    self.cluster.send(owner, ("stage", program, n, time, rows))
            done += len(piece)
            if update:
                update(done)

    def load(self, cmd: C.Load) -> list:
        from . import bulk
        time = self.check_target(cmd.program, cmd.input, cmd.time)
        with self.progress(f"load {cmd.path}", None) as update:
            quote = not cmd.confined  # a network client's file: quote nothing (SPEC E2)
            table = bulk.read_table(cmd.resolved, cmd.path, quote)
            batch = bulk.table_to_batch(table, cmd.path, cmd.resolved, cmd.key, cmd.val, cmd.diff,
                                        quote)
            del table
            count = len(batch) if isinstance(batch, list) else batch.count
            self.check_shape(cmd.program, cmd.input, batch, f"load {cmd.path}: ")
            update(0, count)
            self.stage_batch(cmd.program, cmd.input, time, batch, update)
        return [{"kind": "loaded", "program": cmd.program, "input": cmd.input, "rows": count}]

    def save(self, cmd: C.Save) -> list:
        from . import bulk
        if self.canonical(cmd.trace) not in self.traces:
            raise UnknownName(f'unknown trace "{cmd.trace}"')
        bulk.file_format(cmd.path, "save")
        name, table, records = self.table(cmd.trace)
        with self.progress(f"save {cmd.path}", table.num_rows) as update:
            bulk.write_table(table, cmd.resolved or cmd.path, cmd.path)
            update(table.num_rows)
        return records + [{"kind": "saved", "trace": name, "file": cmd.path,
                           "rows": table.num_rows}]

    def tick(self, cmd: C.Tick) -> list:
        closing = self.epoch
        watched = sorted({s.trace for s in self.subscriptions.values()})
        self.cursors.epoch = self.epoch + 1  # a lease too far behind ends (cursor.MAX_LAG)
        replies = self.cluster.broadcast(("tick", closing, watched, self.cursors.active()))
        self.epoch += 1
        records = self._collect(replies)
        records += self._fail(replies, closing)
        if watched:  # next to the inspect events
            at = sum(1 for r in records if r["kind"] == "inspect")
            records[at:at] = self._changes(replies, closing)
        records.append({"kind": "tick", "epoch": self.epoch})
        self._fold(closing)
        return records

    def _fold(self, closed: int) -> None:
        """Keep the journal bounded (server.journal): a failed program's is
        never folded (nothing is fed to it any more)."""
        for name, journal in self.journal.items():
            entry = self.programs.get(name)
            if entry is not None and not entry.failed:
                journal.maybe_fold(closed)

    def advance(self, epoch: int) -> list:
        """Close every epoch up to ``epoch - 1`` in one step (a restore's
        replay, where no one sees the epochs between): the records of a tick
        closing ``epoch - 1``."""
        closing = epoch - 1
        if closing <= self.epoch:
            return self.tick(C.Tick()) if closing == self.epoch else []
        replies = self.cluster.broadcast(("advance", self.epoch - 1, closing))
        self.epoch = epoch
        records = self._collect(replies) + self._fail(replies, closing)
        self._fold(closing)
        return records + [{"kind": "tick", "epoch": self.epoch}]

    # ------------------------------------------------------------ subscriptions

    def subscribe(self, cmd: C.Subscribe, owner=None, deliver=None) -> list:
        """Replay the trace as `peek` shows it; its changes follow at each tick."""
        name, rows, records = self.contents(cmd.trace, cmd.key, cmd.has_key)
        rows.sort(key=lambda r: (order_key(r[0]), order_key(r[1])))
        self._sub_seq += 1
        sub = Subscription(self._sub_seq, name, cmd.key, cmd.has_key, owner, deliver)
        self.subscriptions[sub.id] = sub
        return records + [{"kind": "subscribed", "trace": name, "key": cmd.key,
                           "has_key": cmd.has_key, "epoch": self.epoch, "rows": rows,
                           "sub": sub.id}]

    def unsubscribe(self, cmd: C.Unsubscribe, owner=None) -> list:
        name = self.canonical(cmd.trace)
        mine = [s for s in self.subscriptions.values() if s.trace == name and s.owner is owner]
        if not mine:
            if name not in self.traces:
                raise UnknownName(f'unknown trace "{cmd.trace}"')
            raise UnknownName(f'no subscription to "{name}"')
        for sub in mine:
            del self.subscriptions[sub.id]
        return [{"kind": "unsubscribed", "trace": name}]

    def end_subscription(self, sub_id: int, reason: str | None = None) -> list:
        """End one subscription (a client's overflowed queue, an API
        ``Subscription.close()``); with a reason its ``ended`` record is
        delivered (or returned). Unknown ids are ignored."""
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            return []
        if reason is None:
            del self.subscriptions[sub_id]
            return []
        return self._end(sub, reason)

    def release_owner(self, owner) -> None:
        """A client went away: its subscriptions end. The leases of cursors it
        used stay until unused for 60 s, so that a client whose connection
        dropped goes on paging after reconnecting (SPEC C4)."""
        for sub in [s for s in self.subscriptions.values() if s.owner is owner]:
            del self.subscriptions[sub.id]

    def _end(self, sub: Subscription, reason: str) -> list:
        del self.subscriptions[sub.id]
        record = {"kind": "ended", "trace": sub.trace, "reason": reason, "sub": sub.id}
        if sub.deliver is not None:
            sub.deliver([record])
            return []
        return [record]

    def _changes(self, replies, epoch: int) -> list:
        """Each subscription's net changes at ``epoch`` (consolidated over
        workers, sorted by key and val): delivered, or returned as records
        sorted by trace. A program that failed in this tick shows none: its
        traces stay as they were before ``epoch``."""
        per_trace: dict = {}
        for reply in replies:
            for trace, rows in reply.get("changes", ()):
                merged = per_trace.setdefault(trace, {})
                for k, v, d in rows:
                    merged[(k, v)] = merged.get((k, v), 0) + d
        records = []
        # one list of rows per (trace, key): ten subscribers of one trace
        # share one filtered, sorted list (and serve renders it once)
        shared: dict = {}
        for sub in sorted(self.subscriptions.values(), key=lambda s: (s.trace, s.id)):
            producer = self.programs.get(self.traces.get(sub.trace, ""))
            if producer is None or producer.failed:
                continue
            wanted = order_key(sub.key) if sub.has_key else None
            rows = shared.get((sub.trace, sub.has_key, wanted))
            if rows is None:
                merged = per_trace.get(sub.trace, {})
                if sub.has_key:
                    rows = [(k, v, d) for (k, v), d in merged.items()
                            if d and order_key(k) == wanted]
                else:
                    rows = [(k, v, d) for (k, v), d in merged.items() if d]
                rows.sort(key=lambda r: (order_key(r[0]), order_key(r[1])))
                shared[(sub.trace, sub.has_key, wanted)] = rows
            if not rows:
                continue
            record = {"kind": "change", "trace": sub.trace, "epoch": epoch, "rows": rows,
                      "sub": sub.id}
            if sub.deliver is not None:
                sub.deliver([record])
            else:
                records.append(record)
        return records

    def _fail(self, replies, epoch: int) -> list:
        """A program whose scope hit the iteration bound (on any worker) did
        only part of this tick. Rather than let anyone see half a tick, it
        *fails*: frozen on every worker with its traces as they were before
        ``epoch``, never run again, fed never again; `list` says why; it can
        be dropped. Its live importers read half of its tick, so they fail
        too, and so on downstream. (Rolling the tick back instead would need
        a snapshot of every operator's state before every tick.)"""
        reasons = {}
        for reply in replies:
            for name, message in reply.get("failures", ()):
                reasons[name] = min(reasons.get(name, message), message)
        if not reasons:
            return []
        records = []
        for entry in self.programs.values():  # install order: producers before importers
            if entry.failed:
                continue
            if entry.name in reasons:
                cause = f"{reasons[entry.name]} at epoch {epoch}"
            else:
                source = next((self.traces[t] for t in entry.imports
                               if self.traces.get(t) in reasons), None)
                if source is None:
                    continue
                trace = next(t for t in entry.imports if self.traces.get(t) == source)
                reasons[entry.name] = cause = (f'it imports "{trace}" from "{source}", '
                                               f"which failed at epoch {epoch}")
            entry.failed = cause
            records.append({"kind": "error", "message":
                            f"{entry.name}: {cause}; it has stopped, and its traces keep their "
                            f"contents from before epoch {epoch}"})
        self.cluster.broadcast(("fail", sorted(reasons), epoch))
        return records

    def _collect(self, replies) -> list:
        """Inspect events (consolidated over workers, sorted), then term errors
        (failed rows consolidated over workers and counted, the least message,
        by program and location): the same records for any number of workers."""
        totals: dict = {}
        errors: dict = {}
        for reply in replies:
            for label, k, v, t, d in reply["events"]:
                key = (label, t, k, v)
                totals[key] = totals.get(key, 0) + d
            for name, operator, loc, rows in reply["errors"]:
                failed = errors.setdefault((name, loc, operator), {})
                for k, v, t, d, message in rows:
                    entry = failed.get((k, v, t))
                    if entry is None:
                        failed[(k, v, t)] = [d, message]
                    else:
                        entry[0] += d
        ordered = sorted((item for item in totals.items() if item[1]),
                         key=lambda item: (item[0][0], item[0][1], order_key(item[0][2]),
                                           order_key(item[0][3])))
        records = [{"kind": "inspect", "label": label, "key": k, "val": v, "time": t, "diff": d}
                   for (label, t, k, v), d in ordered if INT_MIN <= d <= INT_MAX]
        overflowed: dict = {}  # label -> events whose summed diff left i64 (SPEC A1): not shown
        for (label, _, _, _), d in ordered:
            if not INT_MIN <= d <= INT_MAX:
                overflowed[label] = overflowed.get(label, 0) + 1
        for label, count in overflowed.items():
            records.append({"kind": "error", "message":
                            f"inspect [{label}]: multiplicity overflow: the net diff of {count} "
                            f"event{'s' if count != 1 else ''} left the signed 64-bit range "
                            "(not shown)"})
        rank = {name: i for i, name in enumerate(self.programs)}
        for (name, loc, operator), failed in sorted(
                errors.items(), key=lambda i: (rank.get(i[0][0], -1), i[0][1], i[0][2])):
            # the rows whose failed diffs did not cancel over all workers: the
            # same rows, so the same count and least message, for any N
            messages = [message for d, message in failed.values() if d]
            if not messages:
                continue
            count, message = len(messages), min(messages)
            file = self.programs[name].file if name in self.programs else ""
            # SPEC A3's template, literally (as peek's `(<n> rows)`): 1 rows too
            records.append({"kind": "error", "message":
                            f"{name}: {operator} at {file}:{loc[0]}:{loc[1]}: {message} "
                            f"({count} rows dropped)"})
        return records

    # ------------------------------------------------------------ reading

    def contents(self, trace: str, key=None, has_key: bool = False, columns: bool = False) -> tuple:
        """(canonical name, consolidated rows unsorted, error records) of a
        trace as of the closed past, merged over workers. With ``columns``,
        a trace every worker holds as int64 runs comes as one
        :class:`staged.IntColumns` in (key, val) order instead of rows."""
        name = self.canonical(trace)
        if name not in self.traces:
            raise UnknownName(f'unknown trace "{trace}"')
        replies = self.cluster.broadcast(("peek", name, key, has_key, columns))
        if any("columns" in r for r in replies):
            from . import staged
            parts = _column_parts(replies)
            if parts is not None:
                return name, staged.merged(parts), []  # int64 sums: no overflow to report
            replies = [{"rows": list(staged.from_message(*r["columns"]).rows())}
                       if "columns" in r else r for r in replies]
        if len(replies) == 1:  # one worker: already consolidated
            rows = [r for r in replies[0]["rows"] if r[2]]
        else:
            merged: dict = {}
            for reply in replies:
                for k, v, d in reply["rows"]:
                    merged[(k, v)] = merged.get((k, v), 0) + d
            rows = [(k, v, d) for (k, v), d in merged.items() if d]
        records = []
        diffs = list(map(itemgetter(2), rows))  # C-level: rows leave i64 rarely
        if diffs and (max(diffs) > INT_MAX or min(diffs) < INT_MIN):
            # accumulated over epochs past i64 (SPEC A1): not shown
            overflowed = sum(1 for d in diffs if not INT_MIN <= d <= INT_MAX)
            rows = [r for r in rows if INT_MIN <= r[2] <= INT_MAX]
            records.append({"kind": "error", "message":
                            f'trace "{name}": multiplicity overflow: the net diff of '
                            f"{overflowed} row{'s' if overflowed != 1 else ''} "
                            "left the signed 64-bit range (not shown)"})
        return name, rows, records

    def table(self, trace: str) -> tuple:
        """(canonical name, pyarrow table with save's columns, error records)
        of a trace's contents: what ``save``, ``peek_arrow`` and checkpoints
        write. A trace of Tuples of Ints comes from the workers as int64
        column bytes and never becomes Python rows."""
        from . import bulk
        name = self.canonical(trace)
        if name not in self.traces:
            raise UnknownName(f'unknown trace "{trace}"')
        parts = _column_parts(self.cluster.broadcast(("peek_columns", name)))
        if parts is None:
            name, rows, records = self.contents(trace)
            return name, bulk.rows_to_table(rows), records
        return name, bulk.columns_to_table(parts), []

    def peek(self, cmd: C.Peek) -> list:
        name, rows, records = self.contents(cmd.trace, cmd.key, cmd.has_key,
                                            columns=not cmd.has_key)
        end = None if cmd.limit is None else cmd.offset + cmd.limit
        if isinstance(rows, list):
            sort_rows(rows)  # Value order; fast for Tuples of Ints (ddir.engine.order)
            total, shown_rows = len(rows), rows[cmd.offset:end]
        else:  # int64 columns in (key, val) order, which is Value order: rows for the page only
            total = rows.count
            shown_rows = list(rows.slice(cmd.offset, total if end is None else end).rows())
        record = {"kind": "peek", "trace": name, "key": cmd.key if cmd.has_key else None,
                  "has_key": cmd.has_key, "rows": shown_rows, "total": total,
                  "offset": cmd.offset}
        shown = cmd.offset + len(shown_rows)
        # a cursor to the rest (SPEC C4); limit=0 asks for the total alone, and
        # a cursor that pages nothing would never advance
        if cmd.limit and shown < total:
            after = shown_rows[-1][:2] if shown_rows else None
            record["cursor"] = self._cursor(name, self.epoch, cmd.has_key, cmd.key, after, shown,
                                            total, cmd.limit, index=True)
        return records + [record]

    def _cursor(self, name, epoch, has_key, key, after, offset, total, limit, index=False):
        """A token for the rows after ``after`` as of ``epoch``, with the
        lease that keeps the epoch readable."""
        if index:  # each worker prepares the lease's pages once (cursor.PageIndex)
            self.cluster.broadcast(("cursor_index", name, epoch, key, has_key,
                                    None if after is None else list(after)))
        self.cursors.renew(name, epoch)
        seq = self.programs[self.traces[name]].seq
        return self.cursors.encode(name, seq, epoch, has_key, key, after, offset, total, limit)

    def page(self, cmd: C.Peek) -> list:
        """``peek cursor=``: the next page as of the cursor's epoch; each
        worker returns its first rows after the cursor's position, in order,
        and the intake merges the first ``limit``: a page costs in proportion
        to the page."""
        (name, seq, epoch, has_key, key, after, offset, total,
         limit) = self.cursors.decode(cmd.cursor)
        if cmd.trace and self.canonical(cmd.trace) != name:
            raise CursorError(f'this cursor pages "{name}", not "{cmd.trace}"')
        if cmd.has_key and (not has_key or order_key(cmd.key) != order_key(key)):
            raise CursorError(f'this cursor pages "{name}"'
                              + (f" key={format_value(key)}" if has_key else " (every key)")
                              + f", not key={format_value(cmd.key)}")
        producer = self.programs.get(self.traces.get(name, ""))
        if producer is None or producer.seq != seq:
            raise CursorError(f'cursor expired: trace "{name}" was dropped')
        if not self.cursors.held(name, epoch):
            raise CursorError(f'cursor expired: peek "{name}" again')
        limit = limit if cmd.limit is None else cmd.limit
        if limit < 1:  # a typed command skips the parser's check
            raise CommandError(f"limit= must be at least 1, got {limit}")
        replies = self.cluster.broadcast(("page", name, epoch, key, has_key,
                                          None if after is None else list(after), limit))
        rank = lambda r: (order_key(r[0]), order_key(r[1]))  # noqa: E731
        rows = [tuple(r) for r in heapq.merge(*(reply["rows"] for reply in replies),
                                              key=rank)][:limit]
        record = {"kind": "peek", "trace": name, "key": key if has_key else None,
                  "has_key": has_key, "rows": rows, "total": total, "offset": offset,
                  "page": True}
        shown = offset + len(rows)
        if shown < total:
            record["cursor"] = self._cursor(name, epoch, has_key, key,
                                            rows[-1][:2] if rows else after,
                                            shown, total, limit)
        else:
            self.cursors.renew(name, epoch)
        return [record]

    def checkpoint(self, cmd: C.Checkpoint) -> list:
        from .checkpoint import write_checkpoint
        return [write_checkpoint(self, cmd.path, cmd.resolved)]

    def list(self, cmd=None) -> list:
        traces = [{"name": t, "importers": len(self.importers(t))} for t in sorted(self.traces)]
        programs = [{"name": p.name, "origin": p.origin, "inputs": list(p.inputs),
                     "imports": list(p.imports), "exports": list(p.exports),
                     **({"failed": p.failed} if p.failed else {}),
                     **({"readonly": p.readonly} if p.readonly else {})}
                    for p in sorted(self.programs.values(), key=lambda p: p.name)]
        return [{"kind": "list", "epoch": self.epoch, "traces": traces, "programs": programs}]

    def help(self, cmd: C.Help) -> list:
        topic = cmd.topic if cmd.topic != "quit" else "exit"
        topics = ([t for t in C.HELP if t == topic or t.startswith(topic + " ")] if cmd.topic
                  else list(C.HELP))
        return [{"kind": "help", "commands": [
            {"name": t, "usage": C.HELP[t][0], "summary": C.HELP[t][1]} for t in topics]}]


def _column_parts(replies: list):
    """The workers' int64 column payloads of one trace when together they are
    all of it (each reply columns, or an empty trace's ``empty``) and share
    one shape; else None. Each worker's trace has one shape, but workers may
    differ (keys of two fields here, three there): then only rows hold it."""
    if any("rows" in r for r in replies):
        return None
    parts = [r["columns"] for r in replies if "columns" in r]
    if not parts or len({(len(p[0]), len(p[1])) for p in parts}) > 1:
        return None
    return parts
