"""The columnar bodies of join and reduce (see :mod:`ddir.engine.operators`
for the row bodies they replace on large Int-tuple batches).

Both read the columnar part of a trace only (:meth:`Trace.columnar` first
moves the row part into a run, or says it cannot). Times are handled per
*distinct* time: every run has a small table of times, so comparing with
``t`` and joining with ``t`` is Python work per table entry, and numpy
work per update only to index the result.
"""

from __future__ import annotations

import numpy as np

from .batch import Cols
from .columns import (I64, Fallback, consolidate_columns, float_sums_exact, key_tuples, max_abs,
                      positions, run_starts, sums_fit)
from .limits import OverBudget, column_pair_bytes
from ..values import INT_MAX


def expand(lo, cnt, total: int):
    """The positions ``lo[i] .. lo[i] + cnt[i] - 1`` for every i, concatenated."""
    starts = cnt.cumsum() - cnt
    return np.arange(total, dtype=I64) - np.repeat(starts - lo, cnt)


class _Picked:
    """The columns of one row of a join's pairs, gathered on first use (a
    projection reads only some of them)."""

    __slots__ = ("cols", "index", "cache")

    def __init__(self, cols: tuple, index):
        self.cols, self.index, self.cache = cols, index, {}

    def __getitem__(self, i: int):
        c = self.cache.get(i)
        if c is None:
            c = self.cache[i] = self.cols[i][self.index]
        return c

    def __len__(self) -> int:
        return len(self.cols)

    def __iter__(self):
        return (self[i] for i in range(len(self.cols)))


# ------------------------------------------------------------ join

def join_half(delta: Cols, runs: list, t: tuple, project, delta_left: bool, skip_now: bool,
              out: dict, allow=None) -> None:
    """The pairs of ``delta`` with the updates of ``runs``, projected, added
    to ``out`` (output time -> list of Cols). ``delta_left``: delta holds the
    join's left rows; ``skip_now``: trace updates at ``t`` are left out (the
    right delta meets the left trace before this time's rows). Raises
    :class:`Fallback` where a product could leave i64 (the row path reports
    it) or the projection overflows. ``allow(nbytes)``: whether the memory
    budget lets the pairs of a run be made (:mod:`ddir.engine.limits`);
    if not, :class:`~ddir.engine.limits.OverBudget` is raised first."""
    dmax = max_abs(delta.d)
    if any(dmax * r.max_abs() > INT_MAX for r in runs):
        raise Fallback()
    m = delta.n
    root = len(t) == 1
    for run in runs:
        lo, hi = run.ranges(delta.keys, m)
        cnt = hi - lo
        total = int(cnt.sum())
        if not total:
            continue
        if allow is not None and not allow(
                total * column_pair_bytes(len(delta.keys) + len(delta.vals) + len(run.vals))):
            raise OverBudget()
        di = np.arange(m, dtype=I64).repeat(cnt)
        ri = expand(lo, cnt, total)
        # per time of the run's table: the output time join(s, t), or -1
        # when it is skipped; ``targets`` numbers the distinct output times
        gid, targets = _targets(run, t, root, skip_now)
        if run.tid is None:
            if gid[0] < 0:
                continue
            bounds = None
        else:
            g = np.array(gid, dtype=I64)[run.tid[ri]]
            if len(targets) > 1 or gid.count(-1):
                # rows ordered by output time, each time's rows one slice
                # (rows skipped, at -1, come first and are dropped)
                order = g.argsort(kind="stable")
                g = g[order]
                bounds = g.searchsorted(np.arange(-1, len(targets)), "right").tolist()
                skipped = bounds[0]
                if skipped == len(g):
                    continue
                order = order[skipped:]
                di, ri = di[order], ri[order]
                bounds = [b - skipped for b in bounds]  # bounds[0] becomes 0
            else:
                bounds = None
        d = delta.d[di] * run.d[ri]
        mine = _Picked(delta.vals, di)
        theirs = _Picked(run.vals, ri)
        key = _Picked(delta.keys, di)
        rows = (key, mine, theirs) if delta_left else (key, theirs, mine)
        kcols, vcols = project(rows, len(d))
        if bounds is None:
            out.setdefault(targets[0], []).append(Cols(kcols, vcols, d))
            continue
        for i, s in enumerate(targets):
            lo, hi = bounds[i], bounds[i + 1]
            if hi > lo:
                c = Cols(tuple(x[lo:hi] for x in kcols), tuple(x[lo:hi] for x in vcols), d[lo:hi])
                out.setdefault(s, []).append(c)


def _targets(run, t: tuple, root: bool, skip_now: bool):
    """(per time of ``run``'s table the index of its output time in the
    list of distinct output times, or -1 where it is skipped; that list).
    The output time of a trace time ``s`` is join(s, t): ``t`` itself for
    every ``s <= t``; at the root every ``s`` is."""
    gid, index = [], {}
    if root:
        for s in run.times:
            gid.append(-1 if skip_now and s == t else 0)
        return gid, [t]
    joined = np.maximum(run.time_array(), np.array(t, dtype=I64)).tolist()
    for s, j in zip(run.times, joined):
        if skip_now and s == t:
            gid.append(-1)
        else:
            gid.append(index.setdefault(tuple(j), len(index)))
    return gid, list(index) or [t]


# ------------------------------------------------------------ reduce

def unique_keys(c: Cols) -> tuple:
    """The distinct keys of ``c`` in lexicographic order (key columns)."""
    if not c.keys:
        return ()
    if c.sorted:
        change = np.zeros(c.n, dtype=bool)
        change[0] = True
        for k in c.keys:
            change[1:] |= k[1:] != k[:-1]
        idx = positions(change)
        return tuple(k[idx] for k in c.keys)
    cols, _ = consolidate_columns(c.keys, np.ones(c.n, dtype=I64), c.n)
    return cols


def gather_runs(runs: list, keys: tuple, m: int):
    """Every update of ``runs`` whose key is one of the ``m`` query ``keys``
    (distinct, in key order): (query index, val columns, time index into the
    table, diffs, table, the table as an array of one row per time), grouped
    by run (callers consolidate)."""
    qis, vals, tids, ds, table, arrays = [], [], [], [], [], []
    for run in runs:
        found = run.find_in(keys, m) if run.n <= m else None
        if found is not None:
            # a run smaller than the query: its updates are searched for
            # among the queries instead (n searches, no expansion)
            qi, ri = found
            total = len(ri)
            if not total:
                continue
            qis.append(qi)
        else:
            lo, hi = run.ranges(keys, m)
            cnt = hi - lo
            hit = positions(cnt)
            if not len(hit):
                continue
            total = int(cnt.sum())
            if total == len(hit):
                # one update per key found, the common case: no expansion
                qis.append(hit)
                ri = lo[hit]
            else:
                qis.append(np.arange(m, dtype=I64).repeat(cnt))
                ri = expand(lo, cnt, total)
        vals.append(tuple(v[ri] for v in run.vals))
        ds.append(run.d[ri])
        base = len(table)
        table.extend(run.times)
        arrays.append(run.time_array())
        tids.append(np.full(total, base, dtype=I64) if run.tid is None
                    else run.tid[ri].astype(I64) + base)
    if not ds:
        return None
    if len(ds) == 1:
        return qis[0], vals[0], tids[0], ds[0], table, arrays[0]
    va = len(vals[0])
    return (np.concatenate(qis), tuple(np.concatenate([v[i] for v in vals]) for i in range(va)),
            np.concatenate(tids), np.concatenate(ds), table, np.concatenate(arrays))


def _accumulate(g, t: tuple, root: bool, m: int):
    """(query index, val columns, sums) of a gathered history at times
    <= ``t``, consolidated and in (query, val) order; also the entries not
    <= t as (query index, time index, the table's times not <= t as indexes)
    for interesting times. ``m``: the number of queries."""
    qi, vals, tid, d, table, times = g
    later = None
    if not root:
        le = (times <= np.array(t, dtype=I64)).all(axis=1)
        if not le.all():
            ok = le[tid]
            bad = positions(~ok)
            later = (qi[bad], tid[bad], positions(~le))
            sel = positions(ok)
            qi, vals, d = qi[sel], tuple(v[sel] for v in vals), d[sel]
    if not vals:
        q, sums = sum_per_query(qi, d, m)
        return q, (), sums, later
    cols, sums = consolidate_columns((qi,) + vals, d, len(d))
    return cols[0], cols[1:], sums, later


def sum_per_query(qi, d, m: int):
    """(the query indexes in order, the sum of their diffs), zero sums left
    out: for histories without val fields (``distinct`` and ``count``
    inputs, ``distinct`` outputs) one ``bincount`` over the ``m`` queries,
    where the general consolidation packs and sorts. The caller has checked
    :func:`sums_fit`; sums too large for float64 take the general way."""
    n = len(d)
    if n and float_sums_exact(d, n) and m <= 4 * n + 4096:
        sums = np.bincount(qi, weights=d, minlength=m)
        q = positions(sums)
        return q, sums[q].astype(I64)
    cols, sums = consolidate_columns((qi,), d, n)
    return cols[0], sums


def _schedule_later(op, K: tuple, t: tuple, parts, m: int) -> None:
    """Schedule ``join(s, t)`` for each key of ``K`` with a history entry at a
    time ``s`` not <= ``t``: ``parts`` are (gathered history, its entries not
    <= t) of the input and the output. The distinct (joined time, key) pairs
    are found on columns, then each joined time's keys are added to its set
    at once (a Python call per pair cost ~1 us, thousands of pairs a step).
    ``m``: the number of queries (keys of ``K``)."""
    qs, js, joined = [], [], {}
    for g, later in parts:
        if later is None or not len(later[0]):
            continue
        # join(s, t) per time of the table not <= t (the others are never
        # indexed), numbered in ``joined``
        table, times = g[4], g[5]
        jmap = np.zeros(len(table), dtype=I64)
        idx = later[2]
        rows = np.maximum(times[idx], np.array(t, dtype=I64)).tolist()
        jmap[idx] = [joined.setdefault(tuple(r), len(joined)) for r in rows]
        qs.append(later[0])
        js.append(jmap[later[1]])
    if not qs:
        return
    jid, q = (js[0], qs[0]) if len(qs) == 1 else (np.concatenate(js), np.concatenate(qs))
    # the distinct (joined time, query) pairs, numbered jid * m + q: in
    # order of joined time, then of query (key order)
    pair = jid * m + q
    size = len(joined) * m
    if size <= 4 * len(pair) + 4096:
        pair = positions(np.bincount(pair, minlength=size))
    else:
        pair.sort()
        pair = pair[run_starts(pair)]
    uj, uq = np.divmod(pair, m)
    bounds = positions(uj[1:] != uj[:-1]) + 1
    starts = [0] + bounds.tolist()
    ends = starts[1:] + [len(uq)]
    jtimes = list(joined)
    times = [jtimes[j] for j in uj[starts].tolist()]
    if not K:
        for s in times:
            op._schedule((), s)
        return
    keys = tuple(c[uq] for c in K)
    op.schedule_chunks([(s, tuple(c[a:b] for c in keys), b - a)
                        for s, a, b in zip(times, starts, ends)])


def reduce_keys(batch, due, ka: int):
    """The keys a reduce step processes (those of its input ``batch``, rows
    or Cols, and the ``due`` keys scheduled at this time) as sorted,
    distinct key columns of ``ka`` fields; None if some key is not a Tuple
    of ``ka`` Ints."""
    from .columns import int_columns
    parts = []
    if type(batch) is Cols:
        if len(batch.keys) != ka:
            return None
        if batch.n:
            parts.append(unique_keys(batch) if ka else ())
    elif batch:
        keys = list(dict.fromkeys(k for k, _, _ in batch))
        cols = int_columns(keys, len(keys))
        if cols is None or len(cols) != ka:
            return None
        parts.append(cols)
    if due:
        if due.tuples:
            keys = list(due.tuples)
            cols = int_columns(keys, len(keys))
            if cols is None or len(cols) != ka:
                return None
            parts.append(cols)
        parts.extend(cols for cols, _ in due.columns)  # columns of this reduce's keys
    if not ka:
        return ()
    if len(parts) == 1 and type(batch) is Cols and not due:
        return parts[0]
    cols = tuple(np.concatenate([p[i] for p in parts]) for i in range(ka))
    if ka == 1:  # one field: sort, drop repeats
        k = cols[0]
        k.sort()
        return (k[run_starts(k)],)
    cols, _ = consolidate_columns(cols, np.ones(len(cols[0]), dtype=I64), len(cols[0]))
    return cols


def reduce_columns(op, batch, t: tuple, due):
    """Reduce (distinct, count, min) at ``t`` on columns for every key of
    ``batch`` (rows or Cols) and ``due``: the emitted Cols, or None when this
    step must run on rows (a key or value that is not an Int tuple, a sum
    that could leave i64)."""
    source, output = op.source.trace, op.output
    if not source.columnar() or not output.columnar() or source.shape is None:
        return None
    K = reduce_keys(batch, due, source.shape[0])
    if K is None:
        return None
    m = len(K[0]) if K else 1
    root = len(t) == 1
    g_in = gather_runs(source.runs, K, m)
    g_out = gather_runs(output.runs, K, m) if output.runs else None
    for g in (g_in, g_out):
        if g is not None and not sums_fit(g[3]):
            return None
    reducer = op.node.reducer
    # input accumulated at t
    if g_in is None:
        qa = np.zeros(0, dtype=I64)
        va_cols = tuple(np.zeros(0, dtype=I64) for _ in range(source.shape[1]))
        sa = qa
        later_in = None
    else:
        qa, va_cols, sa, later_in = _accumulate(g_in, t, root, m)
    # want: what the reducer gives per key
    if len(qa):
        starts = run_starts(qa)
    else:
        starts = np.zeros(0, dtype=I64)
    if reducer == "distinct":
        wq, wv, wd = qa[starts], (), np.ones(len(starts), dtype=I64)
    elif reducer == "count":
        n = np.add.reduceat(sa, starts) if len(starts) else sa
        pos = positions(n > 0)
        wq, wv, wd = qa[starts][pos], (n[pos],), np.ones(len(pos), dtype=I64)
    elif reducer == "min":
        wq, wv, wd = qa[starts], tuple(v[starts] for v in va_cols), np.ones(len(starts), dtype=I64)
    else:
        return None
    # have: the output accumulated at t
    later_out = None
    if g_out is not None:
        hq, hv, hs, later_out = _accumulate(g_out, t, root, m)
        if len(hv) != len(wv) or not sums_fit(hs, len(hs) + 1):
            return None
        if wv:
            cols, sums = consolidate_columns(
                (np.concatenate((wq, hq)),) + tuple(np.concatenate((a, b)) for a, b in zip(wv, hv)),
                np.concatenate((wd, -hs)), len(wq) + len(hq))
            eq, ev, ed = cols[0], cols[1:], sums
        else:
            eq, ed = sum_per_query(np.concatenate((wq, hq)), np.concatenate((wd, -hs)), m)
            ev = ()
    else:
        eq, ev, ed = wq, wv, wd
    # interesting times: join(s, t) for every history time s not <= t
    if not root:
        _schedule_later(op, K, t, ((g_in, later_in), (g_out, later_out)), m)
        times = op.incomparable(t) if op.scheduled else None
        if times:
            op.join_scheduled(set(key_tuples(K, m)) if K else {()}, t, times)
    return Cols(tuple(k[eq] for k in K) if K else (), tuple(ev), ed, True)
