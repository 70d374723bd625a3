"""What each installed program was fed, kept by the intake for checkpoints
and ``reinstall`` (SPEC C5).

A checkpoint stores each program input's contents with their times, and a
restore replays them; ``reinstall`` catches a program up from them. Keeping
every staged update forever would grow without bound on a server fed for
hours, even when its traces do not (a stream of +1 then -1), so the journal
*folds* its past: every update at a time up to a closed epoch ``F`` is
consolidated onto ``F``, and only later updates keep their own times.

Folding is sound for the replay: a dataflow's collections at any time
``t >= F`` depend only on the inputs accumulated up to ``t``, which folding
keeps, so after replaying the folded history every later tick prints what
the original printed. What it loses is how the past was spread over epochs,
which only the replay's own (discarded) output would show — with one
exception: a scope's iteration bound counts the rounds of one tick, and one
folded tick may need more rounds than any of the original ticks did. The
restore therefore replays up to the fold frontier without a bound (the
original converged at every one of those epochs, so the folded tick
converges too), and a program that failed keeps its journal unfolded from
then on (its failure is replayed at its own epoch).

Folding is amortised: it happens at a tick once the unfolded updates
outnumber the folded ones (and a floor), so each update is folded O(1)
times on average and memory stays within a constant factor of the inputs'
net contents. Loads (int64 columns) fold column-wise with numpy.
"""

from __future__ import annotations

FOLD_FLOOR = 50_000   # unfolded rows below this are never worth a fold


class Journal:
    def __init__(self) -> None:
        self.frontier: int | None = None  # every update at a time <= this is folded onto it
        self.folded: dict = {}            # input -> rows or IntColumns at frontier (consolidated
                                          # unless one batch was all there was to fold)
        self.recent: list = []            # [(input, time, rows or IntColumns)], times > frontier
        self.folded_rows = 0
        self.recent_rows = 0

    def add(self, n: int, time: int, batch) -> None:
        self.recent.append((n, time, batch))
        self.recent_rows += _count(batch)

    def entries(self) -> list:
        """[(input, time, rows or IntColumns)]: the folded past, then the rest."""
        out = [(n, self.frontier, batch) for n, batch in sorted(self.folded.items())]
        return out + self.recent

    def maybe_fold(self, closed: int) -> None:
        """After the tick that closed epoch ``closed``: fold when worth it."""
        if self.recent_rows > max(FOLD_FLOOR, self.folded_rows):
            self.fold(closed)

    def fold(self, upto: int) -> None:
        """Consolidate every update at a time <= ``upto`` onto ``upto``."""
        if self.frontier is not None and upto <= self.frontier:
            return
        by_input: dict = {}
        keep = []
        for n, time, batch in self.recent:
            if time <= upto:
                by_input.setdefault(n, []).append(batch)
            else:
                keep.append((n, time, batch))
        for n, batch in self.folded.items():
            by_input.setdefault(n, []).insert(0, batch)
        # One batch alone is kept as it came: consolidating it only pays when
        # batches meet (a load's first fold would sort a million rows for
        # nothing); the next fold of that input consolidates it with the rest.
        self.folded = {n: batches[0] if len(batches) == 1 else consolidate(batches)
                       for n, batches in by_input.items()}
        self.folded = {n: b for n, b in self.folded.items() if _count(b)}
        self.frontier = upto
        self.recent = keep
        self.folded_rows = sum(_count(b) for b in self.folded.values())
        self.recent_rows = sum(_count(b) for _, _, b in keep)


def _count(batch) -> int:
    return len(batch) if isinstance(batch, list) else batch.count


def consolidate(batches: list):
    """One consolidated batch of ``batches``: int64 columns when they all are
    (and of one shape), else rows."""
    if not any(isinstance(b, list) for b in batches):  # all IntColumns
        shapes = {(len(b.keys), len(b.vals)) for b in batches}
        if len(shapes) == 1:
            from .staged import consolidated
            merged = consolidated(batches)
            if merged is not None:
                return merged
    acc: dict = {}
    for batch in batches:
        for k, v, d in rows_of(batch):
            acc[(k, v)] = acc.get((k, v), 0) + d
    return [(k, v, d) for (k, v), d in acc.items() if d]


def rows_of(batch):
    """(key, val, diff) rows of a batch (a list of rows or IntColumns)."""
    return batch if isinstance(batch, list) else batch.rows()
