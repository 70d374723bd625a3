"""Stand-ins: a program's exported traces without the program (SPEC C5).

A program that cannot run after a restore (a function is missing, its IR
is in a format this version does not read), or that had failed before the
checkpoint, comes back as a *stand-in*: a dataflow that only holds the
checkpointed contents of its exported traces (``export "t" = input i;``
for its i-th export). Importers attach to a stand-in's arrangements like to
any export, so a consumer of a read-only trace works normally.

``reinstall`` makes the program live again without moving its importers:
the live dataflow runs beside the stand-in (:class:`Republished`), and the
stand-in's arrangements, which importers, peeks, cursors and subscriptions
already read, become the live program's exports. At the reinstall the
stand-in receives, at the open epoch, the difference between what the live
program computed for the closed past and what it held; from then on every
batch the live exports emit. So importers and subscribers see the switch as
one change at the next tick, and nothing is ever seen twice.
"""

from __future__ import annotations

from ..ir.lower import lower
from ..lang.parser import parse_program


def standin_program(name: str, exports: list):
    """The IR of a stand-in for ``exports`` (trace names, in order)."""
    text = "".join(f'export "{_escape(t)}" = input {i};\n' for i, t in enumerate(exports))
    return lower(parse_program(text, f"<{name}>", syntax="ddp"))


def _escape(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


class Republished:
    """A reinstalled program: ``live`` computes, ``standin`` publishes.

    Looks like a :class:`ddir.engine.dataflow.Dataflow` to the worker (run,
    compact, freeze, stage, events and errors, sizes); its exports are the
    stand-in's."""

    def __init__(self, live, standin) -> None:
        self.live = live
        self.standin = standin
        self.exports = standin.exports
        self.inputs = live.inputs

    @property
    def frozen_at(self):
        return self.live.frozen_at

    def connect(self, epoch: int) -> None:
        """After ``live`` has caught up to ``epoch - 1``: stage each export's
        difference (live minus held) at ``epoch`` and forward the live
        exports' batches from now on. Keys live on their owners in both, so
        each worker does this for its own keys."""
        for i, (name, live_op) in enumerate(self.live.exports.items()):
            held = self.standin.exports[name].trace.contents(None)
            now = live_op.trace.contents(None)
            delta = [(k, v, d - held.get((k, v), 0)) for (k, v), d in now.items()
                     if d != held.get((k, v), 0)]
            delta += [(k, v, -d) for (k, v), d in held.items() if (k, v) not in now]
            target = self.standin.inputs[i]
            if delta:
                target.receive(0, (epoch,), delta)
            live_op.subscribers.append(target)

    def stage(self, n: int, t: tuple, rows) -> None:
        self.live.stage(n, t, rows)

    def run(self, epoch: int) -> None:
        try:
            self.live.run(epoch)
        finally:  # a live run that gave up still hands on what it made
            self.standin.run(epoch)

    def compact(self, epoch: int) -> None:
        self.live.compact(epoch)
        self.standin.compact(epoch)

    def freeze(self, epoch: int) -> None:
        self.live.freeze(epoch)
        self.standin.freeze(epoch)

    def take_events(self) -> list:
        return self.live.take_events()

    def take_errors(self) -> dict:
        return self.live.take_errors()

    def detach(self) -> None:
        self.live.detach()

    def dispose(self) -> None:
        self.live.dispose()
        self.standin.dispose()

    def stored_updates(self) -> int:
        return self.live.stored_updates() + self.standin.stored_updates()

    def pending_updates(self) -> int:
        return self.live.pending_updates() + self.standin.pending_updates()
