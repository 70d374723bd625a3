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
import sys

from . import commands as C
from .output import (PROMPT_PAGE, error_record, prompt_page, render_json, render_text,
                     text_order)
from .interrupts import InterruptGuard, defer_interrupts
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
        if not self.json_mode:
            records = text_order(records)
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
        paged = self.interactive and C.pages_at_prompt(cmd)
        if paged:
            cmd = dataclasses.replace(cmd, limit=PROMPT_PAGE)
        try:
            records = _uninterruptible(lambda: self.client.execute(cmd), self.client.cancel)
            if paged:
                records = prompt_page(records)
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
        One Ctrl-C guard covers the whole script (``server/interrupts.py``).

        Consecutive plain ``feed P N a,b`` lines (a bulk script) are staged
        together, one ``feed_many`` per program input, when the next other
        command comes (or every ``FEED_BATCH`` lines, or when piped input
        pauses): a feed prints nothing, and the updates of one epoch are a
        set, so nothing can tell, except the cost: ~12 µs a line alone."""
        stream = not isinstance(lines, (list, tuple))
        feeds: list = []  # [(lineno, line, Feed)] not staged yet
        with InterruptGuard(INTERRUPT_NOTICE, self.client.cancel):
            try:
                for lineno, line in enumerate(lines, start=1):
                    line = line.rstrip("\n")
                    feed = C.plain_feed(line)
                    if feed is not None:
                        feeds.append((lineno, line, feed))
                        if len(feeds) < FEED_BATCH and not (stream and _paused(lines)):
                            continue
                    if feeds:
                        batch, feeds = feeds, []
                        if not self._feed_batch(path, batch):
                            return False
                    if feed is None and not self.run_line(line, path, lineno):
                        return False
                batch, feeds = feeds, []
                return not batch or self._feed_batch(path, batch)
            except KeyboardInterrupt:  # between commands: what was read is staged
                if feeds:
                    self._feed_batch(path, feeds)
                raise

    def _feed_batch(self, path: str, feeds: list) -> bool:
        """Stage plain feed lines, grouped by program input. If one of them
        would be refused (an unknown program, a read-only one...), every
        line runs on its own instead, so each error is reported at its line,
        in order, and a strict session stops where it would have."""
        groups: dict = {}
        for _, _, feed in feeds:
            groups.setdefault((feed.program, feed.input), []).append(feed.key)
        try:
            for (program, n), keys in groups.items():
                self.client.core.check_target(program, n, None)
                self.client.core.check_shape(program, n, [(k, (), 1) for k in keys])
        except DdirError:
            for lineno, line, _ in feeds:
                if not self.run_line(line, path, lineno):
                    return False
            return True
        for (program, n), keys in groups.items():
            _uninterruptible(lambda: self.client.feed_many(program, n, keys=keys))
        return True


FEED_BATCH = 1 << 16

# said once per command when Ctrl-C comes while it runs (server/interrupts.py):
# a tick stops at its workers' next round, its unfinished programs failed
INTERRUPT_NOTICE = ("ddir: cancelling the running command (a tick's unfinished programs "
                    "fail; nothing is left half-applied)\n")


def _paused(stream) -> bool:
    """Nothing more to read from ``stream`` right now (a pipe someone types
    into): stage what came, so its errors are not held back."""
    import select
    try:
        ready, _, _ = select.select([stream], [], [], 0)
    except (OSError, ValueError, TypeError):
        return False
    return not ready


def _uninterruptible(run, cancel=None):
    """Run a command with Ctrl-C held: a tick is never left half-applied
    (SPEC B); a Ctrl-C calls ``cancel`` (the tick stops, its unfinished
    programs fail: SPEC E3) and is dropped once the command returns."""
    return defer_interrupts(run, INTERRUPT_NOTICE, cancel)[0]
