"""Arrangements: per key, the consolidated history of ``(val, time, diff)``.

Compaction is lazy and per key: only keys touched since the last compaction
are folded (see :func:`ddir.engine.time.advance`), so closing an epoch costs
work proportional to what changed, not to the size of the trace.
"""

from __future__ import annotations

from .time import advance, less_equal


class Trace:
    __slots__ = ("data", "dirty")

    def __init__(self) -> None:
        self.data: dict = {}     # key -> list of (val, time, diff)
        self.dirty: set = set()  # keys appended to since the last compaction

    def insert(self, rows, t: tuple) -> None:
        data = self.data
        for k, v, d in rows:
            hist = data.get(k)
            if hist is None:
                data[k] = [(v, t, d)]
            else:
                hist.append((v, t, d))
        self.dirty.update(k for k, _, _ in rows)

    def accumulate(self, key, t: tuple) -> dict:
        """val -> net diff over history at times <= ``t`` (zeros left out)."""
        acc: dict = {}
        for v, s, d in self.data.get(key, ()):
            if less_equal(s, t):
                acc[v] = acc.get(v, 0) + d
        return {v: d for v, d in acc.items() if d}

    def compact(self, epoch: int) -> None:
        data = self.data
        for k in self.dirty:
            hist = data.get(k)
            if hist is None:
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
        self.dirty.clear()

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
