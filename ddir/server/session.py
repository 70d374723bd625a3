"""The intake loop: lines in, records out.

A :class:`Session` is a client of the Python API (:class:`ddir.api.Server`):
it turns each command line into a typed command, has the API execute it (the
one code path of every command) and writes the rendered records; a refused
command comes back as a :class:`ddir.DdirError` and is printed as one error
record. Script errors carry ``file:line``; with ``strict`` the first error
stops the session.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading

from . import commands as C
from .output import error_record, render_json, render_text
from .registry import Server
from ..errors import DdirError, ServerStopped


class Session:
    def __init__(self, out=None, json_mode: bool = False, strict: bool = False,
                 server: Server | None = None, interactive: bool = False, client=None):
        from ..api import Server as Client
        self.client = client if client is not None else Client.attach(server or Server())
        self.out = out or sys.stdout
        self.json_mode = json_mode
        self.strict = strict
        self.interactive = interactive
        self.failed = False    # an error was reported
        self.finished = False  # exit/quit was executed
        self._script = ("", None)  # (script file, its directory) of the last line run

    @property
    def server(self) -> Server:
        """The server state behind the API (names for completion, the epoch)."""
        return self.client.core

    def emit(self, records) -> None:
        for record in records:
            text = render_json(record) if self.json_mode else render_text(record)
            self.out.write(text + "\n")
        self.out.flush()

    def run_line(self, line: str, file: str | None = None, lineno: int | None = None) -> bool:
        """Execute one line; False once the session should stop."""
        if file != self._script[0]:  # every line of a script asks: resolve once
            self._script = (file, os.path.dirname(os.path.abspath(file)) if file else None)
        script_dir = self._script[1]
        try:
            cmd = C.parse_command(line, script_dir)
        except C.CommandError as e:
            return self._report([error_record(str(e), file, lineno)])
        if cmd is None:
            return True
        if isinstance(cmd, C.Exit):
            self.finished = True
            return False
        if isinstance(cmd, C.Peek) and self.interactive and cmd.limit is None:
            cmd = dataclasses.replace(cmd, limit=50)
        try:
            records = _uninterruptible(lambda: self.client.execute(cmd))
        except ServerStopped:
            raise  # a worker died: the server cannot go on (the CLI exits)
        except DdirError as e:
            records = [{"kind": "error", "message": str(e)}]
        if file is not None:
            records = [error_record(r["message"], file, lineno) if r["kind"] == "error" else r
                       for r in records]
        return self._report(records)

    def _report(self, records) -> bool:
        self.emit(records)
        if any(r["kind"] == "error" for r in records):
            self.failed = True
            if self.strict:
                return False
        return True

    def run_script(self, path: str, lines) -> bool:
        """Run lines of a script; False if it stopped early (exit or strict).
        The Ctrl-C handler is installed once for the whole script rather than
        swapped in and out per command (two ``signal.signal`` calls a line
        were a quarter of a feed line's cost); it behaves the same."""
        with _Interrupts():
            for lineno, line in enumerate(lines, start=1):
                if not self.run_line(line.rstrip("\n"), path, lineno):
                    return False
        return True


def _uninterruptible(run):
    """Run a command with Ctrl-C deferred: a tick is finished, never left
    half-applied (SPEC B); the interrupt is dropped once it completes. The
    first Ctrl-C says so on stderr, so a long tick does not look hung."""
    if _Interrupts.active is not None:
        return _Interrupts.active.running(run)
    with _Interrupts() as interrupts:
        return interrupts.running(run)


class _Interrupts:
    """SIGINT while a command runs is refused (said once on stderr); between
    commands it interrupts as usual. Main thread only; nests."""

    active = None  # the installed one

    def __enter__(self) -> "_Interrupts":
        self.busy = False
        self.told = False
        self.installed = False
        if _Interrupts.active is not None or threading.current_thread() is not threading.main_thread():
            return self
        try:
            self.previous = signal.signal(signal.SIGINT, self._signal)
        except ValueError:  # no signal support here
            return self
        self.installed = True
        _Interrupts.active = self
        return self

    def __exit__(self, *exc) -> None:
        if self.installed:  # None: a handler not set from Python; the default then
            signal.signal(signal.SIGINT, self.previous if self.previous is not None else signal.SIG_DFL)
            _Interrupts.active = None

    def running(self, run):
        self.told = False  # said once per command
        self.busy = True
        try:
            return run()
        finally:
            self.busy = False

    def _signal(self, signum, frame):
        if not self.busy:
            raise KeyboardInterrupt
        if not self.told:
            self.told = True
            sys.stderr.write("ddir: a command is running and finishes first (Ctrl-C cannot stop "
                             "it half-way; --max-rounds bounds a loop that never converges)\n")
            sys.stderr.flush()
