"""Ctrl-C while a command runs: it ends first (SPEC B), never leaving half a
tick or half a load behind, and a long tick is cancelled (SPEC E3).

An :class:`InterruptGuard` owns SIGINT for the span it is installed (a whole
script, or one API call). Between commands a Ctrl-C interrupts as usual;
during one (:meth:`InterruptGuard.running`) it is held, and the guard's
``cancel`` (``ddir.Server.cancel``) is called: the workers stop the tick at
their next round, and its programs fail as a loop that does not converge
does. The command still returns whole. What a held Ctrl-C then becomes is
the outermost guard's caller's choice: the CLI drops it (and says once per
command that it cancels), the Python API raises ``KeyboardInterrupt`` once
the call has returned. A command run inside another guard (the API's
``feed_many`` under a CLI script) leaves it to that guard. Signals reach the
main thread only; elsewhere nothing is deferred.

The guard stays installed for a whole script rather than being swapped in
and out per command: two ``signal.signal`` calls a line were a quarter of a
feed line's cost.
"""

from __future__ import annotations

import signal
import sys
import threading


class InterruptGuard:
    active: "InterruptGuard | None" = None  # the installed one (main thread only)

    def __init__(self, notice: str | None = None, cancel=None):
        self.notice = notice  # written to stderr at a command's first Ctrl-C
        self.cancel = cancel  # called at each Ctrl-C during a command (stops a tick)
        self.busy = False
        self.held = False     # a Ctrl-C came during the current command
        self.installed = False

    def __enter__(self) -> "InterruptGuard":
        if InterruptGuard.active is not None or threading.current_thread() is not threading.main_thread():
            return self
        try:
            self.previous = signal.signal(signal.SIGINT, self._signal)
        except ValueError:  # no signal support here
            return self
        self.installed = True
        InterruptGuard.active = self
        return self

    def __exit__(self, *exc) -> None:
        if self.installed:  # None: a handler not set from Python; the default then
            signal.signal(signal.SIGINT, self.previous if self.previous is not None else signal.SIG_DFL)
            InterruptGuard.active = None

    def running(self, run):
        """``run()`` with Ctrl-C held; nested calls belong to the outer one."""
        outer = self.busy
        if not outer:
            self.held = False
        self.busy = True
        try:
            return run()
        finally:
            self.busy = outer

    def _signal(self, signum, frame):
        if not self.busy:
            raise KeyboardInterrupt
        if self.cancel is not None:
            self.cancel()  # sets a byte: safe here, between two bytecodes of the command
        if not self.held and self.notice:
            sys.stderr.write(self.notice)
            sys.stderr.flush()
        self.held = True


def defer_interrupts(run, notice: str | None = None, cancel=None) -> tuple:
    """``(run(), held)``: ``run()`` with Ctrl-C held until it returns (and
    ``cancel()`` called at each one); ``held`` is True when one came and no
    outer guard owns it, for the caller to act on."""
    if threading.current_thread() is not threading.main_thread():
        return run(), False  # signals reach the main thread only; its guard is not ours
    outer = InterruptGuard.active
    if outer is not None:
        return outer.running(run), False
    with InterruptGuard(notice, cancel) as guard:
        result = guard.running(run)
    return result, guard.held
