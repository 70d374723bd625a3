"""Scope scheduling without distributed progress tracking (DESIGN).

Every update an operator emits is at a time >= the time that caused it, and
lexicographic order extends the product order; so a scope processes its
pending times smallest-first, operators in topological order, and when it
processes ``t`` nothing at a time <= ``t`` can still arrive.

A child scope is one item of its parent: when the parent processes ``p`` the
child processes every pending time extending ``p`` until none is left. A
child's pending times are also registered, projected, in every ancestor, so
work a child schedules for a later outer time makes the parent visit it.

Sharded over N workers (an ``exchange`` is given), every shard processes the
same times in the same order: the next time is the least pending time of any
worker (``agree_min``), and an exchanged operator swaps its batches for the
time with every worker before it steps, so it sees all its input at ``t``.
A scope with no exchange in it or below it is *local*: each shard's keys
never meet another shard's, so it runs its own times without agreeing.

Inside a loop, agreeing costs a collective step per iteration. A loop scope
with an exchange of its own skips it by *guessing*: after a time ``t`` the
next time is at least ``succ(t)`` (last coordinate + 1, the lexicographic
successor), so every worker goes on with ``succ(t)`` and sends, with the
first exchange of that time, its least pending time from before. If that
least is ``succ(t)`` the guess was right; otherwise no worker had work there,
processing it did nothing anywhere, and the least says where to go next (or
that the loop is done). Near the iteration bound the scope agrees first
again, so it stops at exactly the same point as a single worker.

A cancel or the memory budget (:mod:`ddir.engine.limits`) stops a scope the
same way, at the top of a round: a scope that agrees on its times stops on
what every worker knows alike after the last collective step, so every
worker stops at the same round.
"""

from __future__ import annotations

from time import monotonic


class NonConvergence(Exception):
    """A scope ran past the iteration bound without reaching a fixed point.

    Raised by :meth:`ddir.engine.dataflow.Dataflow.run` only once the run is
    over: the scope that hits the bound abandons its remaining times and the
    rest of the dataflow runs on, so that every worker still takes every
    collective step (a scope with no exchange hits the bound on some workers
    only; raising there would leave the others waiting for ever)."""


class ScopeRunner:
    def __init__(self, ir_scope, parent, max_rounds: int, exchange=None, failures=None,
                 limits=None):
        self.ir = ir_scope
        self.limits = limits       # the worker's ddir.engine.limits.Limits (None: no stops)
        self.failures = failures if failures is not None else []  # bound-hit messages
        self.parent = parent
        self.depth = ir_scope.depth
        self.items: list = []      # operators and child ScopeRunners, in order
        self.pending: set = set()  # times (length depth + 1) with work
        self.max_rounds = max_rounds
        self.rounds = 0            # processed times, for statistics
        self.exchange = exchange   # None: this is the only worker
        self.synced = False        # agree on times with the other workers (see finish)

    def finish(self) -> None:
        """Once every item is in place (children first): a scope agrees on
        its times with the other workers iff it or a child exchanges rows;
        a loop with an exchange of its own guesses its next time."""
        self.synced = self.exchange is not None and any(
            item.synced if isinstance(item, ScopeRunner) else item.exchanged
            for item in self.items)
        self.lead = next((item for item in self.items
                          if not isinstance(item, ScopeRunner) and item.exchanged), None)

    def schedule(self, t: tuple) -> None:
        scope = self
        while scope is not None and t not in scope.pending:
            scope.pending.add(t)
            t = t[:-1]
            scope = scope.parent

    def abandon(self, prefix: tuple) -> None:
        """Forget every pending time extending ``prefix``, here and in every
        child scope (the bound was hit: the dataflow is failed)."""
        n = len(prefix)
        self.pending = {t for t in self.pending if t[:n] != prefix}
        for item in self.items:
            if isinstance(item, ScopeRunner):
                item.abandon(prefix)

    def run_time(self, t: tuple, note=None):
        """Process ``t``; returns the least ``note`` of all workers, sent
        with the first exchange (None without one)."""
        least = None
        limits = self.limits
        stopped = limits is not None and self._stopped(limits)
        for item in self.items:
            if isinstance(item, ScopeRunner):
                item.run_prefix(t)
                stopped = limits is not None and self._stopped(limits)
            else:
                if item.exchanged:  # taken even when stopped: every worker takes every step
                    if item is self.lead:
                        least = item.exchange_at(t, note)
                    else:
                        item.exchange_at(t)
                    stopped = limits is not None and self._stopped(limits)
                if stopped:
                    continue  # the program fails: what is left of this time is never read
                if item.has_work(t):
                    item.step(t)
        return least

    def _stopped(self, limits) -> int:
        """The stop bits this scope acts on (see the module doc)."""
        return limits.agreed if self.synced else limits.agreed | limits.local

    def _least_pending(self, prefix: tuple, limit):
        n = len(prefix)
        if limit is None:
            due = [t for t in self.pending if t[:n] == prefix]
        else:
            due = [t for t in self.pending if t[0] <= limit]
        return min(due) if due else None

    def _next(self, prefix: tuple, limit):
        t = self._least_pending(prefix, limit)
        return self.exchange.agree_min(t) if self.synced else t

    def _process(self, t: tuple, note=None):
        least = self.run_time(t, note)
        self.pending.discard(t)
        return least

    def run_prefix(self, prefix: tuple, limit: int | None = None) -> None:
        """Process every pending time extending ``prefix`` (at the root:
        every pending epoch <= ``limit``), smallest first."""
        guess = self.synced and self.lead is not None and limit is None
        limits = self.limits
        rounds = 0
        t = self._next(prefix, limit)  # the next time some worker has work at
        done = False                   # whether t was processed already (a right guess)
        while t is not None:
            rounds += 1
            if rounds > self.max_rounds:
                self.failures.append(
                    f"scope `{self.ir.name}` did not converge within {self.max_rounds} rounds")
                self.abandon(prefix)
                return
            if limits is not None:
                if monotonic() >= limits.due:
                    limits.poll()
                stop = self._stopped(limits)  # synced: what every worker knows alike
                if stop:
                    self.failures.append(limits.reason(stop))
                    self.abandon(prefix)
                    return
            if not done:
                self._process(t)
            self.rounds += 1
            if not guess or rounds == self.max_rounds:
                t, done = self._next(prefix, limit), False
                continue
            # Guess the successor (see the module doc): one collective step
            # per iteration instead of two.
            s = t[:-1] + (t[-1] + 1,)
            least = self._process(s, self._least_pending(prefix, None))
            if least == s:
                t, done = s, True       # someone had work there: it was a real round
            else:
                t, done = least, False  # idle everywhere; least is the next real time
