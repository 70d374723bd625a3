"""Arrangements: per key, the consolidated history of ``(val, time, diff)``.

Compaction is lazy and per key: only keys touched since the last compaction
are folded (see :func:`ddir.engine.time.advance`), so closing an epoch costs
work proportional to what changed, not to the size of the trace.
"""

from __future__ import annotations

from .time import advance


class Trace:
    __slots__ = ("data", "dirty", "hold")

    def __init__(self) -> None:
        self.data: dict = {}     # key -> list of (val, time, diff)
        # the latest epoch compaction may fold onto while a reader (a cursor's
        # lease, ddir.server.cursor) still reads the history before a later
        # epoch; None: no limit
        self.hold: int | None = None
        # epoch -> keys that gained an entry at that epoch while holding
        # entries of an earlier one. Compaction only moves the epoch
        # coordinate, so entries of one epoch (different iterations) never
        # merge: a key whose history lies in one epoch is left alone, and a
        # load leaves nothing to compact (it used to rebuild every history
        # and remove nothing). Folding a time forward without merging changes
        # no accumulation, so skipping it is always correct.
        self.dirty: dict = {}

    def insert(self, rows, t: tuple) -> None:
        data = self.data
        if not data and len(rows) > 64:
            # the first batch of a fresh trace (a load): built by a
            # comprehension, twice as fast as the loop, when its keys are distinct
            fresh = {k: [(v, t, d)] for k, v, d in rows}
            if len(fresh) == len(rows):
                data.update(fresh)
                return
        dirty = None
        for k, v, d in rows:
            hist = data.get(k)
            if hist is None:
                data[k] = [(v, t, d)]
            else:
                hist.append((v, t, d))
                if hist[0][1][0] != t[0]:  # spans epochs: folding may merge entries
                    if dirty is None:
                        dirty = self.dirty.setdefault(t[0], set())
                    dirty.add(k)

    def compact(self, epoch: int) -> None:
        """Fold the entries of epochs before ``epoch`` onto it, for the keys
        that gained entries before ``epoch`` (the others have nothing to fold);
        never past ``hold``."""
        if self.hold is not None and self.hold < epoch:
            epoch = self.hold
        due = [e for e in self.dirty if e < epoch]
        if not due:
            return
        keys = set().union(*(self.dirty.pop(e) for e in due))
        data = self.data
        for k in keys:
            hist = data.get(k)
            if hist is None or len(hist) == 1:
                continue
            acc: dict = {}
            for v, s, d in hist:
                s = advance(s, epoch)
                acc[(v, s)] = acc.get((v, s), 0) + d
            hist = [(v, s, d) for (v, s), d in acc.items() if d]
            if hist:
                data[k] = hist
            else:
                del data[k]

    def contents(self, before: int | None = None) -> dict:
        """(key, val) -> net diff over the whole history, or over the epochs
        before ``before`` (zeros left out)."""
        acc: dict = {}
        for k, hist in self.data.items():
            for v, s, d in hist:
                if before is None or s[0] < before:
                    acc[(k, v)] = acc.get((k, v), 0) + d
        return {kv: d for kv, d in acc.items() if d}

    def key_contents(self, key, before: int | None = None) -> dict:
        acc: dict = {}
        for v, s, d in self.data.get(key, ()):
            if before is None or s[0] < before:
                acc[(key, v)] = acc.get((key, v), 0) + d
        return {kv: d for kv, d in acc.items() if d}

    def size(self) -> int:
        """Number of stored updates (what compaction keeps bounded)."""
        return sum(len(h) for h in self.data.values())
