"""Arrangements: per key, the history of ``(val, time, diff)``.

A trace has two parts:

* the *row part* ``data``: key -> list of ``(val, time, diff)`` Python
  tuples. Small batches (a tick's handful of changes) and values that are
  not Tuples of Ints (Lists, Variants, mixed arities) live here; a lookup is
  a dict access.
* the *columnar part* ``runs``: sorted runs of int64 columns
  (:mod:`ddir.engine.runs`), one per large batch of Int-tuple updates,
  merged like a spine: a new run is merged into the one before it while
  that one is at most :data:`MERGE_FACTOR` times larger, so a trace of n
  updates has O(log n) runs and each update is merged O(log n) times.

A key's history is the union of both parts. Readers go through
:meth:`Trace.lookup` / :meth:`Trace.get` (the row path: a dict of
histories for the keys asked, ``data`` itself when there are no runs) or,
for the columnar join and reduce, :meth:`Trace.columnar` and ``runs``.

Compaction is lazy and per key in the row part: only keys touched since
the last compaction are folded (see :func:`ddir.engine.time.advance`), so
closing an epoch costs work proportional to what changed. A run folds its
times table; only when two of its times become one are its updates summed.
"""

from __future__ import annotations

from .batch import Cols
from .time import advance

# A run is merged into the previous one while that one is at most this many
# times larger (see the module doc).
MERGE_FACTOR = 4

# From this many keys, a row-path lookup searches each run once for all of
# them (numpy) instead of once per key (bisect); 16 times as many when the
# trace knows which runs hold which key (see Trace._present).
LOOKUP_MANY = 24

# At most this many keys' run updates are kept as rows for small lookups.
HOT_KEYS = 1 << 16


class Trace:
    __slots__ = ("data", "dirty", "hold", "runs", "shape", "frontier", "mixed", "added",
                 "_presence", "_hot")

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
        self.runs: list = []     # the columnar part (ddir.engine.runs.Run)
        self.shape = None        # (key fields, val fields) of every run
        self.frontier = None     # the epoch last compacted to (merges may fold onto it)
        self.mixed = False       # the row part holds updates no run can
        self.added = 0           # updates put in runs since the last settle
        self._presence = None    # see _present; None: to be built
        self._hot: dict = {}     # key -> its updates in runs, as rows (see lookup)

    # ------------------------------------------------------------ writing

    def insert(self, rows, t: tuple, as_run: bool = False) -> None:
        """Add a batch at ``t``. A large :class:`Cols` becomes a run; with
        ``as_run`` one of any size does while the row part is empty (the
        columnar reduce's output: its next columnar step reads the trace as
        runs, and rows would only be converted back)."""
        if type(rows) is Cols:
            if self._insert_run(rows, t, as_run):
                return
            rows = rows.rows()
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

    def _insert_run(self, c: Cols, t: tuple, as_run: bool = False) -> bool:
        from . import batch
        if c.n < batch.COLUMNAR_MIN and not (as_run and not self.data):
            return False
        shape = (len(c.keys), len(c.vals))
        if self.shape is not None and shape != self.shape:
            return False
        from .runs import make_run
        run = make_run(c, t)
        if run is None:
            return False
        self.shape = shape
        self._append(run)
        self.added += run.n
        self._tier()
        return True

    def _append(self, run) -> None:
        self.runs.append(run)
        self._hot = {}
        present = self._presence
        if present is not None and present[0] is not None:
            least, most, bits, _ = present
            i = len(self.runs) - 1
            if i < 8 and run.spec is None and run.ka == 1 and run.n \
                    and least <= int(run.pk[0]) and int(run.pk[-1]) <= most:
                bits[run.pk - least] |= bits.dtype.type(1 << i)
                return
        self._presence = None

    def _tier(self) -> None:
        runs = self.runs
        while len(runs) >= 2 and runs[-2].n <= MERGE_FACTOR * runs[-1].n:
            if not self._merge_last(2):
                break

    def _merge_last(self, count: int) -> bool:
        from .runs import merge
        runs = self.runs
        old = runs[-count:]
        merged = merge(old, self.frontier)
        if merged is None:  # keys too wide to pack together: leave them apart
            return False
        first = len(runs) - count
        del runs[-count:]
        if merged.n:
            runs.append(merged)
        self._hot = {}
        present = self._presence
        if present is not None and present[0] is not None:
            # runs first.. became one run at first (or none): clear their
            # bits where their keys are, set bit ``first`` where the merged
            # run's keys are. Only the merged runs' positions are touched: a
            # tick merges runs of a few hundred updates into a key span of
            # 100k values, where rewriting the whole bit array cost ~100 us.
            least, bits = present[0], present[2]
            low, bit = bits.dtype.type((1 << first) - 1), bits.dtype.type(1 << first)
            if merged.n == sum(run.n for run in old):
                # nothing summed away: the merged run has exactly their keys
                idx = merged.pk - least
                bits[idx] = (bits[idx] & low) | bit
            else:
                for run in old:
                    bits[run.pk - least] &= low
                if merged.n:
                    bits[merged.pk - least] |= bit
        elif present is not None:
            self._presence = None
        return True

    def settle(self) -> None:
        """After a tick: merge every run into one when the tick added at
        least a quarter of the columnar part (so the merge costs at most a
        few times what the tick did), so that the small ticks after a load
        search one run per key."""
        if self.added and len(self.runs) > 1:
            total = sum(r.n for r in self.runs)
            if 4 * self.added >= total:
                self._merge_last(len(self.runs))
        self.added = 0
        self._prepare()

    def _prepare(self) -> None:
        """Build what small lookups need (run indexes, which runs hold which
        key) after a tick or compaction that changed the runs, so that the
        small tick after a large one does not pay it."""
        if self.runs:
            for run in self.runs:
                if run._index is None:
                    run.index()
            if self._presence is None:
                self._present()

    def columnar(self) -> bool:
        """Whether every update is in runs, moving the row part into a run if
        it can (for the columnar join and reduce, which read runs only)."""
        data = self.data
        if not data:
            return True
        if self.mixed:
            return False
        # one comprehension and one transpose (~0.2 us an entry, where
        # four appends per entry cost ~1 us)
        entries = [(k, v, s, d) for k, hist in data.items() for v, s, d in hist]
        if not entries:
            self.data, self.dirty = {}, {}
            return True
        keys, vals, times, diffs = zip(*entries)
        from .runs import run_from_entries
        shape = self.shape
        run = run_from_entries(shape[0] if shape else _arity(keys[0]), keys, vals, times, diffs)
        if run is None or (shape is not None and len(run.vals) != shape[1]):
            self.mixed = True
            return False
        self.shape = (run.ka, len(run.vals))
        self.data = {}
        self.dirty = {}
        if run.n:
            self._append(run)
            self.added += run.n
            self._tier()
        return True

    def compact(self, epoch: int) -> None:
        """Fold the entries of epochs before ``epoch`` onto it, for the keys
        that gained entries before ``epoch`` (the others have nothing to fold);
        never past ``hold``."""
        if self.hold is not None and self.hold < epoch:
            epoch = self.hold
        if self.frontier is None or epoch > self.frontier:
            self.frontier = epoch
        if self.runs:
            self._compact_runs(epoch)
            self._prepare()
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
        if not data:
            self.mixed = False

    def _compact_runs(self, epoch: int) -> None:
        from .runs import merge
        runs = self.runs
        for i, run in enumerate(runs):
            if run.first_epoch >= epoch:
                continue
            times = tuple(advance(s, epoch) for s in run.times)
            if len(set(times)) == len(times):
                run.relabel(times)  # nothing merges
                continue
            merged = merge([run], epoch)
            if merged is not None:
                runs[i] = merged
                # it holds a subset of the run's keys: which runs hold which
                # key stays true unless a run disappears
                self._hot = {}
                if not merged.n:
                    self._presence = None
        self.runs = [r for r in runs if r.n]

    # ------------------------------------------------------------ reading

    def lookup(self, keys) -> dict:
        """key -> history (a list of ``(val, time, diff)``) for ``keys``, for
        the row path; ``data`` itself when there are no runs."""
        if not self.runs:
            return self.data
        out: dict = {}
        data, runs = self.data, self.runs
        keys = list(dict.fromkeys(keys))
        present = self._presence or self._present()
        if len(keys) >= (LOOKUP_MANY if present[0] is None else 16 * LOOKUP_MANY):
            for run in runs:
                run.histories(keys, out)
            for k in keys:
                h = data.get(k)
                if h:
                    hist = out.get(k)
                    if hist is None:
                        out[k] = list(h)
                    else:
                        hist.extend(h)
            return out
        if present[0] is not None:  # one Int key field, dense: search only the runs holding it
            least, most, _, bits = present
            # A key's updates in runs, as rows, are kept until the runs change:
            # a small tick often reads a key at several times (interesting
            # times), and readers never modify what lookup returns. (Their
            # times may be older than the runs' after compaction relabels
            # them; every read is at a time the relabeling does not affect.)
            hot = self._hot
            for k in keys:
                h = data.get(k)
                if type(k) is tuple and len(k) == 1 and type(k[0]) is int and least <= k[0] <= most:
                    b = bits[k[0] - least]
                else:
                    b = 0
                if not b:  # not in any run: the row part's list as it is
                    if h:
                        out[k] = h
                    continue
                cached = hot.get(k)
                if cached is None:
                    cached = []
                    i = 0
                    while b:
                        if b & 1:
                            runs[i].history(k, cached)
                        b >>= 1
                        i += 1
                    if len(hot) >= HOT_KEYS:
                        hot.clear()
                    hot[k] = cached
                if h:
                    out[k] = cached + h
                elif cached:
                    out[k] = cached
            return out
        for k in keys:
            hist = []
            for run in runs:
                run.history(k, hist)
            h = data.get(k)
            if h:
                hist.extend(h)
            if hist:
                out[k] = hist
        return out

    def _present(self) -> tuple:
        """(least key, greatest key, bits, a memoryview of bits): for traces
        whose runs hold keys of one Int field spanning at most a few times as
        many values as updates, ``bits[k - least]`` has bit i set when run i
        may hold key ``(k,)`` (up to 8 runs; kept up to date as runs are
        added and merged), so a small lookup searches only those runs, none
        for a key the runs do not hold. All None otherwise."""
        runs = self.runs
        self._presence = (None, None, None, None)
        if len(runs) > 8 or any(r.spec is not None or r.ka != 1 or not r.n for r in runs):
            return self._presence
        least = min(int(r.pk[0]) for r in runs)
        most = max(int(r.pk[-1]) for r in runs)
        total = sum(r.n for r in runs)
        if most - least > 4 * total + 4096:
            return self._presence
        import numpy as np
        bits = np.zeros(most - least + 1, dtype=np.uint8)
        for i, r in enumerate(runs):
            idx = r.pk - least
            bits[idx] |= np.uint8(1 << i)
        self._presence = (least, most, bits, memoryview(bits))
        return self._presence

    def get(self, key) -> list:
        """``key``'s history (a list of ``(val, time, diff)``)."""
        if not self.runs:
            return self.data.get(key, [])
        hist: list = []
        for run in self.runs:
            run.history(key, hist)
        hist.extend(self.data.get(key, ()))
        return hist

    def keys(self) -> list:
        """Every key with a history (each once)."""
        if not self.runs:
            return list(self.data)
        from .runs import distinct_keys
        keys = dict.fromkeys(distinct_keys(self.runs))
        keys.update(dict.fromkeys(self.data))
        return list(keys)

    def contents(self, before: int | None = None) -> dict:
        """(key, val) -> net diff over the whole history, or over the epochs
        before ``before`` (zeros left out)."""
        acc: dict = {}
        if self.runs:
            from .runs import accumulate_runs
            accumulate_runs(self.runs, before, acc)
        for k, hist in self.data.items():
            for v, s, d in hist:
                if before is None or s[0] < before:
                    acc[(k, v)] = acc.get((k, v), 0) + d
        return {kv: d for kv, d in acc.items() if d}

    def rows(self, before: int | None = None) -> list:
        """:meth:`contents` as rows ``(key, val, diff)`` (a trace holding only
        runs gives them in (key, val) order without a dict)."""
        if self.runs and not self.data:
            from .runs import accumulate_runs
            return accumulate_runs(self.runs, before, None)
        return [(k, v, d) for (k, v), d in self.contents(before).items()]

    def int_columns(self, before: int | None = None):
        """:meth:`contents` as consolidated int64 columns ``(key columns,
        val columns, diffs)`` in (key, val) order, without a Python row: for
        ``save`` and checkpoints of large traces. The row part goes into a
        run first (:meth:`columnar`, as before a columnar join). None when
        some key or val is not a Tuple of Ints of the trace's arity, or a sum
        could leave int64 (the caller takes :meth:`rows`)."""
        from .columns import consolidate_columns, sums_fit
        from .runs import gather_columns
        if not self.columnar():
            return None
        gathered = gather_columns(self.runs, before)
        if gathered is None or not sums_fit(gathered[2]):
            return None
        kcols, vcols, d = gathered
        cols, d = consolidate_columns(kcols + vcols, d, len(d))
        return cols[:len(kcols)], cols[len(kcols):], d

    def key_contents(self, key, before: int | None = None) -> dict:
        acc: dict = {}
        for v, s, d in self.get(key):
            if before is None or s[0] < before:
                acc[(key, v)] = acc.get((key, v), 0) + d
        return {kv: d for kv, d in acc.items() if d}

    def size(self) -> int:
        """Number of stored updates (what compaction keeps bounded)."""
        return sum(len(h) for h in self.data.values()) + sum(r.n for r in self.runs)


def _arity(key) -> int:
    return len(key) if type(key) is tuple else -1
