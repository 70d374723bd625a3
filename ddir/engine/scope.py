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
"""

from __future__ import annotations


class NonConvergence(Exception):
    """A scope ran past the iteration bound without reaching a fixed point."""


class ScopeRunner:
    def __init__(self, ir_scope, parent, max_rounds: int, exchange=None):
        self.ir = ir_scope
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
        its times with the other workers iff it or a child exchanges rows."""
        self.synced = self.exchange is not None and any(
            item.synced if isinstance(item, ScopeRunner) else item.exchanged
            for item in self.items)

    def schedule(self, t: tuple) -> None:
        scope = self
        while scope is not None and t not in scope.pending:
            scope.pending.add(t)
            t = t[:-1]
            scope = scope.parent

    def run_time(self, t: tuple) -> None:
        for item in self.items:
            if isinstance(item, ScopeRunner):
                item.run_prefix(t)
            else:
                if item.exchanged:
                    item.exchange_at(t)
                if item.has_work(t):
                    item.step(t)

    def run_prefix(self, prefix: tuple, limit: int | None = None) -> None:
        """Process every pending time extending ``prefix`` (at the root:
        every pending epoch <= ``limit``), smallest first."""
        n = len(prefix)
        rounds = 0
        while True:
            if limit is None:
                due = [t for t in self.pending if t[:n] == prefix]
            else:
                due = [t for t in self.pending if t[0] <= limit]
            t = min(due) if due else None
            if self.synced:
                t = self.exchange.agree_min(t)
            if t is None:
                return
            rounds += 1
            if rounds > self.max_rounds:
                raise NonConvergence(
                    f"scope `{self.ir.name}` did not converge within {self.max_rounds} rounds")
            self.run_time(t)
            self.pending.discard(t)
            self.rounds += 1
