"""The server state and command semantics (SPEC Part B).

Installed programs (each a running :class:`Dataflow`), the traces they
publish, the epoch. ``execute`` takes a typed command and returns output
*records* (dicts with a ``kind``); printing them is someone else's job.
Every command either completes or leaves the state exactly as it was.

Importer counts are derived from the live programs' imports rather than
stored, so they cannot drift from the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import commands as C
from .generated import Recipe, RecipeError, parse_recipe, source_program
from ..engine.dataflow import Dataflow
from ..engine.scope import NonConvergence
from ..values import order_key


class ServerError(Exception):
    """A refused command: one message, state unchanged."""


@dataclass
class Installed:
    name: str
    path: str
    dataflow: Dataflow
    origin: str = "program"           # "program" | "generated" | "clock"
    recipe: Recipe | None = None
    inputs: tuple = ()
    imports: tuple = ()
    exports: tuple = ()
    seq: int = 0


@dataclass
class Server:
    epoch: int = 0
    programs: dict = field(default_factory=dict)   # name -> Installed, in install order
    traces: dict = field(default_factory=dict)     # trace name -> program name
    max_rounds: int | None = None
    _seq: int = 0

    # ------------------------------------------------------------ queries

    def importers(self, trace: str) -> list:
        return [p.name for p in self.programs.values() if trace in p.imports]

    def export_op(self, trace: str):
        return self.programs[self.traces[trace]].dataflow.exports[trace]

    # ------------------------------------------------------------ dispatch

    def execute(self, cmd) -> list:
        """Records for one command; a refused command gives one error record."""
        handler = {
            C.Install: self.install, C.Feed: self.feed, C.Tick: self.tick, C.Drop: self.drop,
            C.Peek: self.peek, C.ListCmd: self.list, C.Help: self.help,
        }[type(cmd)]
        try:
            return handler(cmd)
        except (ServerError, RecipeError) as e:
            return [{"kind": "error", "message": str(e)}]

    # ------------------------------------------------------------ install / drop

    def _taken(self, name: str) -> bool:
        return name in self.programs

    def install(self, cmd: C.Install) -> list:
        program = cmd.program
        if self._taken(cmd.name):
            raise ServerError(f'a program named "{cmd.name}" is already installed')
        if parse_recipe(cmd.name) is not None:
            raise ServerError(f'"{cmd.name}" names a generated source; choose another program name')
        for name, _ in program.exports:
            if name in self.traces:
                raise ServerError(f'trace "{name}" is already published by "{self.traces[name]}"')
            if parse_recipe(name) is not None:
                raise ServerError(f'export "{name}" would shadow a generated source')
        new_sources = []
        for trace in program.imports:
            if trace in self.traces:
                continue
            recipe = parse_recipe(trace)
            if recipe is None:
                raise ServerError(f'{cmd.path}: imports unknown trace "{trace}"')
            if recipe.name in self.traces:
                continue
            if self._taken(recipe.name):
                raise ServerError(f'generated source "{recipe.name}" clashes with a program of that name')
            new_sources.append(recipe)
        records = []
        for recipe in dict.fromkeys(new_sources):
            self._install_source(recipe)
        aliases = {t: self.canonical(t) for t in program.imports}
        imports = {t: self.export_op(aliases[t]) for t in program.imports}
        dataflow = self._dataflow(program, imports)
        self._add(Installed(cmd.name, cmd.path, dataflow, inputs=program.inputs,
                            imports=tuple(sorted(set(aliases.values()))),
                            exports=tuple(n for n, _ in program.exports)))
        records.append({"kind": "installed", "name": cmd.name})
        if self.epoch > 0:
            try:
                dataflow.catch_up(self.epoch - 1)
            except NonConvergence as e:
                self._remove(cmd.name)
                raise ServerError(f'install "{cmd.name}": {e}') from None
            dataflow.compact(self.epoch - 1)
        records += self._collect([self.programs[cmd.name]])
        return records

    def _dataflow(self, program, imports) -> Dataflow:
        if self.max_rounds is None:
            return Dataflow(program, imports)
        return Dataflow(program, imports, max_rounds=self.max_rounds)

    def _add(self, entry: Installed) -> None:
        self._seq += 1
        entry.seq = self._seq
        self.programs[entry.name] = entry
        for name in entry.exports:
            self.traces[name] = entry.name

    def _install_source(self, recipe: Recipe) -> None:
        dataflow = self._dataflow(source_program(recipe), {})
        rows = [(k, v, 1) for k, v in recipe.rows(self.epoch)]
        dataflow.stage(0, (self.epoch,), rows)
        self._add(Installed(recipe.name, recipe.name, dataflow, origin=recipe.origin,
                            recipe=recipe, inputs=(0,), exports=(recipe.name,)))

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
            raise ServerError(f'no program named "{cmd.name}"')
        for trace in entry.exports:
            users = self.importers(trace)
            if users:
                names = ", ".join(f'"{u}"' for u in users)
                raise ServerError(f'cannot drop "{entry.name}": trace "{trace}" is imported by {names}'
                                  f" (drop {'them' if len(users) > 1 else 'it'} first)")
        self._remove(entry.name)
        return [{"kind": "dropped", "name": entry.name}]

    def _remove(self, name: str) -> None:
        entry = self.programs.pop(name)
        entry.dataflow.detach()
        for trace in entry.exports:
            self.traces.pop(trace, None)

    # ------------------------------------------------------------ feed / tick

    def feed(self, cmd: C.Feed) -> list:
        entry = self.programs.get(cmd.program)
        if entry is None:
            raise ServerError(f'no program named "{cmd.program}"')
        if entry.origin != "program":
            raise ServerError(f'"{cmd.program}" is a generated source and cannot be fed')
        if cmd.input not in entry.inputs:
            reads = ", ".join(str(i) for i in entry.inputs) or "none"
            raise ServerError(f'"{cmd.program}" has no input {cmd.input} (it reads: {reads})')
        time = self.epoch if cmd.time is None else cmd.time
        if time < self.epoch:
            raise ServerError(f"time={time} is in the closed past (the current epoch is {self.epoch})")
        if cmd.diff == 0:
            raise ServerError("diff=0 changes nothing")
        entry.dataflow.stage(cmd.input, (time,), [(cmd.key, cmd.val, cmd.diff)])
        return []

    def tick(self, cmd: C.Tick) -> list:
        epoch = self.epoch
        failures = []
        for entry in self.programs.values():
            try:
                entry.dataflow.run(epoch)
            except NonConvergence as e:
                failures.append({"kind": "error", "message": f"{entry.name}: {e}"})
        for entry in self.programs.values():
            if entry.origin == "clock":
                entry.dataflow.stage(0, (epoch + 1,), [((epoch,), (), -1), ((epoch + 1,), (), 1)])
            entry.dataflow.compact(epoch)
        self.epoch = epoch + 1
        records = self._collect(list(self.programs.values())) + failures
        records.append({"kind": "tick", "epoch": self.epoch})
        return records

    def _collect(self, entries) -> list:
        """Inspect events (consolidated, sorted) then term errors of a step."""
        totals: dict = {}
        for entry in entries:
            for label, k, v, t, d in entry.dataflow.take_events():
                key = (label, t, k, v)
                totals[key] = totals.get(key, 0) + d
        ordered = sorted((item for item in totals.items() if item[1]),
                         key=lambda item: (item[0][0], item[0][1], order_key(item[0][2]),
                                           order_key(item[0][3])))
        records = [{"kind": "inspect", "label": label, "key": k, "val": v, "time": t, "diff": d}
                   for (label, t, k, v), d in ordered]
        for entry in entries:
            errors = entry.dataflow.take_errors()
            for (operator, loc), (count, message) in sorted(errors.items(), key=lambda i: i[0][1]):
                file = entry.dataflow.program.file
                records.append({"kind": "error", "message":
                                f"{entry.name}: {operator} at {file}:{loc[0]}:{loc[1]}: {message} "
                                f"({count} row{'s' if count != 1 else ''} dropped)"})
        return records

    # ------------------------------------------------------------ reading

    def peek(self, cmd: C.Peek) -> list:
        name = self.canonical(cmd.trace)
        if name not in self.traces:
            raise ServerError(f'unknown trace "{cmd.trace}"')
        trace = self.export_op(name).trace
        contents = trace.key_contents(cmd.key) if cmd.has_key else trace.contents()
        rows = sorted(((k, v, d) for (k, v), d in contents.items()),
                      key=lambda r: (order_key(r[0]), order_key(r[1])))
        end = None if cmd.limit is None else cmd.offset + cmd.limit
        return [{"kind": "peek", "trace": name, "key": cmd.key if cmd.has_key else None,
                 "has_key": cmd.has_key, "rows": rows[cmd.offset:end], "total": len(rows),
                 "offset": cmd.offset}]

    def list(self, cmd=None) -> list:
        traces = [{"name": t, "importers": len(self.importers(t))} for t in sorted(self.traces)]
        programs = [{"name": p.name, "origin": p.origin, "inputs": list(p.inputs),
                     "imports": list(p.imports), "exports": list(p.exports)}
                    for p in sorted(self.programs.values(), key=lambda p: p.name)]
        return [{"kind": "list", "epoch": self.epoch, "traces": traces, "programs": programs}]

    def help(self, cmd: C.Help) -> list:
        topics = [cmd.topic if cmd.topic != "quit" else "exit"] if cmd.topic else list(C.HELP)
        return [{"kind": "help", "commands": [
            {"name": t, "usage": C.HELP[t][0], "summary": C.HELP[t][1]} for t in topics]}]
