"""Sorted runs: the columnar part of a :class:`ddir.engine.trace.Trace`.

A run holds updates whose key and val are Tuples of Ints, sorted by key:

* ``pk``: the key of each update as one int64 (the key itself for one
  field, the fields packed with :func:`ddir.engine.columns.pack` for more,
  zero for the unit key), sorted, so that a key's history is one slice
  found by binary search;
* ``vals``: one int64 column per val field; ``d``: the diffs;
* ``times``: the distinct times of the run (a tuple of time tuples) and
  ``tid``: for each update the index of its time (None when the run has a
  single time, as every run made from one batch has).

An update costs 8 bytes for its key, 8 per val field, 8 for its diff and 4
for its time (none while the run has one time), against ~180 bytes as
Python tuples in a dict of lists.

Small readers (the row path: a handful of keys) search ``pk`` through a
memoryview with :mod:`bisect` and slice the columns through memoryviews:
no numpy call, so a small tick pays no per-call overhead. Large readers
(columnar join and reduce) search all their keys at once with
``searchsorted``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

import numpy as np

from .batch import Cols
from .columns import (I64, consolidate_columns, max_abs, pack, pack_spec, positions, run_starts,
                      sums_fit, unpack)
from .time import advance


# From this many query keys, a run with an exact index finds their slices
# through it (see Run.ranges); fewer cost less as two binary searches.
RANGES_BY_INDEX = 64


class Run:
    __slots__ = ("pk", "spec", "ka", "vals", "d", "times", "tid", "n", "first_epoch",
                 "_views", "_index", "_offsets", "_time_array", "_max_abs")

    def __init__(self, pk, spec, ka: int, vals: tuple, d, times: tuple, tid):
        self.pk = pk
        self.spec = spec      # None: pk is the key (one field) or zero (no field)
        self.ka = ka
        self.vals = vals
        self.d = d
        self.times = times
        self.tid = tid
        self.n = len(d)
        self.first_epoch = min(s[0] for s in times) if times else 0
        self._views = None
        self._index = None
        self._offsets = None  # the index's offsets as an array, when one per key value
        self._time_array = None
        self._max_abs = None

    def relabel(self, times: tuple) -> None:
        """New times for the run's time table, one for one (compaction
        folding epochs where no two times become one)."""
        self.times = times
        self.first_epoch = min(s[0] for s in times) if times else 0
        self._time_array = None

    def max_abs(self) -> int:
        """The largest absolute diff (kept: a join checks it against every
        new batch, and a loaded run has 200k diffs)."""
        m = self._max_abs
        if m is None:
            m = self._max_abs = max_abs(self.d)
        return m

    def time_array(self):
        """The time table as an int64 array, one row per time (built on first
        use): the columnar reduce compares a whole table with a time in one
        numpy call instead of a Python comparison per entry."""
        a = self._time_array
        if a is None:
            a = self._time_array = np.array(self.times, dtype=I64).reshape(len(self.times), -1)
        return a

    # ------------------------------------------------------------ keys

    def keys(self) -> tuple:
        """The key columns."""
        if self.spec is None:
            return (self.pk,) if self.ka == 1 else ()
        return unpack(self.pk, self.spec)

    def pack_one(self, key):
        """``key`` packed as this run's ``pk``, or None when no update of
        the run can have it."""
        if type(key) is not tuple or len(key) != self.ka:
            return None
        if self.spec is None:
            if self.ka == 0:
                return 0
            k = key[0]
            return k if type(k) is int else None
        q = 0
        for x, (lo, shift, mask) in zip(key, self.spec):
            if type(x) is not int:
                return None
            x -= lo
            if x < 0 or x > mask:
                return None
            q |= x << shift
        return q

    def pack_many(self, keys: tuple, n: int):
        """(packed query, valid) for ``n`` keys given as columns ``keys``:
        valid is None when every query is in range."""
        if self.spec is None:
            if self.ka == 0:
                return np.zeros(n, dtype=I64), None
            return keys[0], None
        valid = None
        for c, (lo, shift, mask) in zip(keys, self.spec):
            ok = (c >= lo) & (c <= lo + mask)
            valid = ok if valid is None else valid & ok
        return pack(keys, self.spec), valid

    def ranges(self, keys: tuple, n: int):
        """(lo, hi) positions of each of ``n`` query keys' slice."""
        q, valid = self.pack_many(keys, n)
        offsets = self._offsets
        if offsets is not None and n >= RANGES_BY_INDEX:
            # one bucket per key value (see index): two gathers, where two
            # binary searches cost ~12-25 ns a query (most of a large reduce
            # step's gathering). Queries are clipped to the keys' span first
            # (no i64 overflow); one outside it gets an empty slice.
            least, most = self._index[0], self._index[1]
            c = np.maximum(q, least)  # np.clip costs ~15 us more a call
            np.minimum(c, most, out=c)
            b = c - I64(least)
            lo = offsets[b]
            hi = offsets[b + 1]
            inside = c == q
            if valid is not None:
                inside &= valid
            return lo, np.where(inside, hi, lo)
        lo = self.pk.searchsorted(q, "left")
        hi = self.pk.searchsorted(q, "right")
        if valid is not None:
            hi = np.where(valid, hi, lo)
        return lo, hi

    def find_in(self, keys: tuple, n: int):
        """(query index, position) of each update whose key is one of the
        ``n`` distinct query keys ``keys``, given in key order; None when some
        query lies outside the span of this run's packed keys (packing it
        would not keep the queries in order). One search per update among
        the queries: cheaper than :meth:`ranges` when the run is the smaller
        side, and it needs no expansion of slices."""
        q, valid = self.pack_many(keys, n)
        if valid is not None and not valid.all():
            return None
        pos = q.searchsorted(self.pk)
        np.minimum(pos, n - 1, out=pos)
        ri = positions(q[pos] == self.pk)
        return pos[ri], ri

    # ------------------------------------------------------------ the row path

    def views(self):
        v = self._views
        if v is None:
            v = self._views = (memoryview(self.pk), tuple(memoryview(c) for c in self.vals),
                               memoryview(self.d),
                               None if self.tid is None else memoryview(self.tid))
        return v

    def index(self):
        """(least key, greatest key, shift, offsets) where the updates of
        the keys ``k`` with ``(k - least) >> shift == b`` are the slice
        ``offsets[b]:offsets[b + 1]``: about one bucket per update, so a
        key's slice is found in O(1) (a short bisect when shift > 0);
        built on the first small lookup, 2-4 bytes per update. None when the
        keys span more than 2^62."""
        idx = self._index
        if idx is None:
            pk, n = self.pk, self.n
            least, most = int(pk[0]), int(pk[-1])
            span = most - least
            if span >= 1 << 62:
                idx = self._index = (least, most, -1, None)
                return idx
            shift = max(0, span.bit_length() - max(1, n.bit_length()))
            buckets = (span >> shift) + 1
            counts = np.bincount((pk - I64(least)) >> I64(shift), minlength=buckets)
            offsets = np.zeros(buckets + 1, dtype=np.int32 if n < 1 << 31 else I64)
            np.cumsum(counts, out=offsets[1:])
            idx = self._index = (least, most, shift, memoryview(offsets))
            if not shift:
                self._offsets = offsets
        return idx

    def history(self, key, out: list) -> None:
        """Append ``key``'s updates as ``(val, time, diff)`` to ``out``.
        The row path's lookup of a few keys: no numpy call, no per-call
        setup beyond two memoryview reads (see :meth:`index`)."""
        if self.spec is None and self.ka == 1:
            if type(key) is not tuple or len(key) != 1:
                return
            q = key[0]
            if type(q) is not int:
                return
        else:
            q = self.pack_one(key)
            if q is None:
                return
        least, most, shift, offsets = self._index or self.index()
        if q < least or q > most:
            return
        pk, vals, d, tid = self._views or self.views()
        if offsets is None:
            lo = bisect_left(pk, q)
            hi = bisect_right(pk, q, lo)
        else:
            b = (q - least) >> shift
            lo, hi = offsets[b], offsets[b + 1]
            if shift:
                lo = bisect_left(pk, q, lo, hi)
                hi = bisect_right(pk, q, lo, hi)
        if hi - lo == 1:  # the common case: one update
            if len(vals) == 1:
                v = (vals[0][lo],)
            else:
                v = tuple([c[lo] for c in vals])
            out.append((v, self.times[0] if tid is None else self.times[tid[lo]], d[lo]))
            return
        if lo == hi:
            return
        if not vals:
            vs = [()] * (hi - lo)
        elif len(vals) == 1:
            vs = list(zip(vals[0][lo:hi].tolist()))
        else:
            vs = list(zip(*(c[lo:hi].tolist() for c in vals)))
        if tid is None:
            ts = [self.times[0]] * (hi - lo)
        else:
            times = self.times
            ts = [times[i] for i in tid[lo:hi].tolist()]
        out.extend(zip(vs, ts, d[lo:hi].tolist()))

    def histories(self, keys: list, out: dict) -> None:
        """:meth:`history` for many keys at once: one ``searchsorted`` and
        one conversion of every update found, instead of a search and a few
        slices per key."""
        qs, ks = [], []
        pack_one = self.pack_one
        for k in keys:
            q = pack_one(k)
            if q is not None:
                qs.append(q)
                ks.append(k)
        if not qs:
            return
        q = np.array(qs, dtype=I64)
        lo = self.pk.searchsorted(q, "left")
        cnt = self.pk.searchsorted(q, "right") - lo
        hit = positions(cnt)
        if not len(hit):
            return
        lo, cnt = lo[hit], cnt[hit]
        counts = cnt.tolist()
        total = sum(counts)
        ri = np.arange(total, dtype=I64) - np.repeat(cnt.cumsum() - cnt - lo, cnt)
        vals = self.vals
        if not vals:
            vs = [()] * total
        elif len(vals) == 1:
            vs = list(zip(vals[0][ri].tolist()))
        else:
            vs = list(zip(*(c[ri].tolist() for c in vals)))
        if self.tid is None:
            ts = [self.times[0]] * total
        else:
            times = self.times
            ts = [times[i] for i in self.tid[ri].tolist()]
        entries = list(zip(vs, ts, self.d[ri].tolist()))
        pos = 0
        for i, c in zip(hit.tolist(), counts):
            k = ks[i]
            h = out.get(k)
            if h is None:
                out[k] = entries[pos:pos + c]
            else:
                h.extend(entries[pos:pos + c])
            pos += c

    def nbytes(self) -> int:
        return (self.pk.nbytes + sum(c.nbytes for c in self.vals) + self.d.nbytes
                + (0 if self.tid is None else self.tid.nbytes))


def _tid_dtype(m: int):
    return np.int8 if m <= 127 else np.int16 if m <= 32767 else np.int32


def make_run(c: Cols, t: tuple) -> Run | None:
    """A run of the consolidated batch ``c`` at time ``t`` (None if its keys
    are too wide to pack)."""
    ka = len(c.keys)
    if ka <= 1:
        spec = None
        pk = c.keys[0] if ka else np.zeros(c.n, dtype=I64)
    else:
        packed = pack_spec(c.keys)
        if packed is None:
            return None
        spec = packed[0]
        pk = pack(c.keys, spec)
    vals, d = c.vals, c.d
    if not c.sorted and ka:
        order = pk.argsort(kind="stable")
        pk = pk[order]
        vals = tuple(v[order] for v in vals)
        d = d[order]
    return Run(pk, spec, ka, vals, d, (t,), None)


def run_from_entries(ka: int, keys: list, vals: list, times: list, diffs: list):
    """A run of row entries (Python values at any times), or None when they
    are not Tuples of Ints of ``ka`` key fields with diffs in i64."""
    from .columns import int_columns
    n = len(diffs)
    kcols = int_columns(tuple(keys), n)
    if kcols is None or len(kcols) != ka:
        return None
    vcols = int_columns(tuple(vals), n)
    if vcols is None:
        return None
    try:
        d = np.array(diffs, dtype=I64)
    except OverflowError:
        return None
    table = sorted(set(times))
    index = {s: i for i, s in enumerate(table)}
    tid = np.array(list(map(index.__getitem__, times)), dtype=_tid_dtype(len(table)))
    return merge([(kcols, vcols, d, tuple(table), tid)], None)


def merge(parts: list, epoch: int | None) -> Run | None:
    """One run holding every update of ``parts`` (runs, or ``(key columns,
    val columns, diffs, times, tid)`` of one arity), times advanced to
    ``epoch`` (None: as they are), updates at the same key, val and time
    summed (unless a sum could leave i64: then they stay apart, which
    changes no accumulation; runs whose times are all different need no
    sum and are only sorted together by key). None if the keys cannot be
    packed; a run of no updates if they all cancel."""
    keys, vals, ds, tids, table, index = [], [], [], [], [], {}
    runs = all(type(p) is Run for p in parts)
    for p in parts:
        if type(p) is Run:
            folds = epoch is not None and p.first_epoch < epoch
            p = (p.keys(), p.vals, p.d, p.times, p.tid)
        else:
            folds = epoch is not None
        kc, vc, d, times, tid = p
        keys.append(kc)
        vals.append(vc)
        ds.append(d)
        if folds:
            times = [advance(s, epoch) for s in times]
        remap = None
        if not table:
            # the first part's times, distinct as in every run: numbered as they are
            index.update(zip(times, range(len(times))))
            if len(index) == len(times):
                table.extend(times)
                remap = np.arange(len(times), dtype=np.int64)
            else:
                index.clear()
        if remap is None:
            remap = []
            for s in times:
                i = index.get(s)
                if i is None:
                    i = index[s] = len(table)
                    table.append(s)
                remap.append(i)
            remap = np.array(remap, dtype=np.int64)
        tids.append(np.full(len(d), remap[0], dtype=np.int64) if tid is None else remap[tid])
    ka, va = len(keys[0]), len(vals[0])
    cat = (lambda xs: xs[0]) if len(parts) == 1 else np.concatenate
    kcols = tuple(cat([k[i] for k in keys]) for i in range(ka))
    vcols = tuple(cat([v[i] for v in vals]) for i in range(va))
    d = cat(ds)
    tid = cat(tids)
    many = len(table) > 1
    # No time of one run a time of another: no two updates of different runs
    # can be summed, and each run is already summed, so the merge only
    # interleaves them by key (a tick's runs hold its own iterations' times;
    # a merge with a sum is the exception: compaction folding epochs, or a
    # settle after it).
    disjoint = runs and len(table) == sum(len(p.times) for p in parts)
    if not disjoint and sums_fit(d):
        cols, d = consolidate_columns(kcols + vcols + ((tid,) if many else ()), d, len(d))
        kcols, vcols = cols[:ka], cols[ka:ka + va]
        tid = cols[ka + va] if many else None
        ordered = True
    else:
        tid = tid if many else None
        ordered = False
    n = len(d)
    if ka <= 1:
        spec = None
        pk = kcols[0] if ka else np.zeros(n, dtype=I64)
    elif not n:
        spec, pk = tuple((0, 0, 0) for _ in range(ka)), np.zeros(0, dtype=I64)
    else:
        packed = pack_spec(kcols)
        if packed is None:
            return None
        spec = packed[0]
        pk = pack(kcols, spec)
    if not ordered and ka:
        order = pk.argsort(kind="stable")
        pk = pk[order]
        vcols = tuple(v[order] for v in vcols)
        d = d[order]
        tid = None if tid is None else tid[order]
    if tid is not None:
        used = positions(np.bincount(tid, minlength=len(table)))
        if len(used) < len(table):  # some times lost every update: drop them
            table = [table[i] for i in used.tolist()]
            remap = np.zeros(len(used) and int(used[-1]) + 1, dtype=np.int64)
            remap[used] = np.arange(len(used))
            tid = remap[tid]
        if len(table) == 1:
            tid = None
        else:
            tid = tid.astype(_tid_dtype(len(table)))
    return Run(pk, spec, ka, vcols, d, tuple(table), tid)


# ------------------------------------------------------------ whole-trace readers

def distinct_keys(runs: list) -> list:
    """The keys of ``runs`` as tuples (each run's once, in key order)."""
    from .columns import key_tuples
    out = []
    for r in runs:
        if not r.n:
            continue
        uniq = r.pk[run_starts(r.pk)]
        cols = (uniq,) if r.spec is None and r.ka == 1 else \
            () if r.ka == 0 else unpack(uniq, r.spec)
        out.extend(key_tuples(cols, len(uniq)))
    return out


def accumulate_runs(runs: list, before: int | None, acc: dict | None):
    """Add each (key, val)'s net diff over ``runs`` (epochs before
    ``before``, or all) to ``acc``; with ``acc`` None, return them as rows
    ``(key, val, diff)`` in (key, val) order, zeros left out."""
    from .columns import key_tuples, no_gc
    gathered = gather_columns(runs, before)
    if gathered is None:
        return [] if acc is None else None
    kcols, vcols, d = gathered
    n = len(d)
    fits = sums_fit(d)
    if fits:
        cols, d = consolidate_columns(kcols + vcols, d, n)
        kcols, vcols = cols[:len(kcols)], cols[len(kcols):]
        n = len(d)
    with no_gc():
        ks, vs = key_tuples(kcols, n), key_tuples(vcols, n)
        if acc is None and fits:
            return list(zip(ks, vs, d.tolist()))
        if acc is None:
            acc = {}
            for kv, x in zip(zip(ks, vs), d.tolist()):
                acc[kv] = acc.get(kv, 0) + x
            from .order import sort_rows
            rows = [(k, v, x) for (k, v), x in acc.items() if x]
            sort_rows(rows)
            return rows
        if not acc and fits:
            acc.update(zip(zip(ks, vs), d.tolist()))
            return None
        for kv, x in zip(zip(ks, vs), d.tolist()):
            acc[kv] = acc.get(kv, 0) + x
        return None


def gather_columns(runs: list, before: int | None = None):
    """(key columns, val columns, diffs) of every update in ``runs`` (at
    epochs before ``before``, or all), concatenated, not consolidated; None
    when there is none."""
    keys, vals, ds = [], [], []
    for r in runs:
        if before is None or all(s[0] < before for s in r.times):
            sel = None
        else:
            ok = np.array([s[0] < before for s in r.times])
            if not ok.any():
                continue
            sel = positions(ok[r.tid]) if r.tid is not None else None
        kc = r.keys()
        if sel is None:
            keys.append(kc)
            vals.append(r.vals)
            ds.append(r.d)
        else:
            keys.append(tuple(c[sel] for c in kc))
            vals.append(tuple(c[sel] for c in r.vals))
            ds.append(r.d[sel])
    if not ds:
        return None
    ka, va = len(keys[0]), len(vals[0])
    kcols = tuple(np.concatenate([k[i] for k in keys]) for i in range(ka))
    vcols = tuple(np.concatenate([v[i] for v in vals]) for i in range(va))
    d = np.concatenate(ds)
    return kcols, vcols, d
