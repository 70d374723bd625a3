"""numpy work on :class:`ddir.engine.batch.Cols`: conversion from and to
rows, consolidation, and terms over Int columns.

Consolidation packs the columns of a row into one int64 where their ranges
allow (``(c - min) << shift``, order-preserving, so a sort of the packed
values is the lexicographic sort of the rows), then sums equal rows with a
``bincount`` when the packed range is dense, else with a sort and
``add.reduceat``; only rows too wide to pack take a ``lexsort``. Every sum is
exact: a caller checks first that no sum can leave i64 (:func:`sums_fit`),
and takes the row path (Python ints) when one could.
"""

from __future__ import annotations

import gc
from bisect import bisect_left
from contextlib import contextmanager
from itertools import chain, repeat
from operator import itemgetter

import numpy as np

from ..ir import nodes as N
from ..lang.ast import Splice
from ..terms.ast import And, Arith, Call, Cmp, Index, Lit, Neg, Row
from ..values import INT_MAX, INT_MIN
from .batch import Cols

I64 = np.int64
_KEY, _VAL, _DIFF = itemgetter(0), itemgetter(1), itemgetter(2)
_EMPTY = np.zeros(0, dtype=I64)

# The ufuncs' reductions called directly: ``a.max()`` and ``np.flatnonzero``
# go through Python wrappers (~1 us a call), and a deep tick of the columnar
# engine makes a few thousand such calls on small arrays.
_MAX, _MIN = np.maximum.reduce, np.minimum.reduce


def positions(mask):
    """The positions of the true (non-zero) entries of a 1-d array."""
    return mask.nonzero()[0]


def run_starts(a):
    """The positions where each run of equal values of a sorted, non-empty
    1-d array starts (the first is 0)."""
    return positions(np.concatenate(([True], a[1:] != a[:-1])))


def float_sums_exact(d, n: int) -> bool:
    """Whether sums of up to ``n`` of the diffs ``d`` are exact in float64
    (what ``np.bincount`` with weights adds in)."""
    return max_abs(d) * n < (1 << 53)


@contextmanager
def no_gc():
    """Build many tuples without the cyclic GC rescanning the heap after
    every 700 of them (none of them can be part of a cycle)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# ------------------------------------------------------------ rows <-> columns

def int_columns(values, n: int):
    """The columns of ``n`` Tuples of Ints of one arity, or None."""
    first = values[0]
    if type(first) is not tuple:
        return None
    arity = len(first)
    if not arity:  # the unit (a singleton: counted by identity)
        return () if values.count(()) == n else None
    kinds = set(map(type, values))
    if len(kinds) != 1 or tuple not in kinds:
        return None
    lengths = set(map(len, values))
    if len(lengths) != 1:
        return None
    if arity == 0:
        return ()
    flat = list(chain.from_iterable(values))
    kinds = set(map(type, flat))
    if len(kinds) != 1 or int not in kinds:  # no bool, no nested values
        return None
    try:
        matrix = np.fromiter(flat, dtype=I64, count=len(flat))
    except OverflowError:
        return None
    if arity == 1:
        return (matrix,)
    return tuple(matrix.reshape(n, arity).T.copy())


def from_rows(rows) -> Cols | None:
    """Rows whose keys (and vals) are Tuples of Ints of one arity, and whose
    diffs fit in i64, as a :class:`Cols`; None for any other batch."""
    n = len(rows)
    if not n:
        return None
    keys = list(map(_KEY, rows))
    kcols = int_columns(keys, n)
    if kcols is None:
        return None
    vcols = int_columns(list(map(_VAL, rows)), n)
    if vcols is None:
        return None
    try:
        d = np.array(list(map(_DIFF, rows)), dtype=I64)
    except OverflowError:
        return None
    return Cols(kcols, vcols, d)


def _tuples(cols: tuple, n: int):
    if not cols:
        return repeat((), n)
    if len(cols) == 1:
        return zip(cols[0].tolist())
    return zip(*(c.tolist() for c in cols))


def to_rows(c: Cols) -> list:
    with no_gc():
        return list(zip(_tuples(c.keys, c.n), _tuples(c.vals, c.n), c.d.tolist()))


def key_tuples(cols: tuple, n: int) -> list:
    with no_gc():
        return list(_tuples(cols, n))


def from_buffers(keys, vals, diffs, count: int) -> Cols:
    """A ``stage_columns`` payload (little-endian int64 bytes per column,
    ``diffs`` None for all +1)."""
    def col(b):
        return np.frombuffer(b, dtype="<i8").astype(I64, copy=False)
    d = np.ones(count, dtype=I64) if diffs is None else col(diffs)
    return Cols(tuple(col(b) for b in keys), tuple(col(b) for b in vals), d)


def to_message(c: Cols) -> tuple:
    """A batch as plain msgpack-able bytes (for other worker processes)."""
    return ("cols", [a.tobytes() for a in c.keys], [a.tobytes() for a in c.vals],
            c.d.tobytes(), c.sorted)


def from_message(m) -> Cols:
    _, keys, vals, d, is_sorted = m
    col = lambda b: np.frombuffer(b, dtype=I64)  # noqa: E731
    return Cols(tuple(map(col, keys)), tuple(map(col, vals)), col(d), is_sorted)


def is_message(batch) -> bool:
    return len(batch) == 5 and batch[0] == "cols"


def concat(batches: list) -> Cols | None:
    """One Cols of several (None if their arities differ)."""
    if len(batches) == 1:
        return batches[0]
    ka, va = len(batches[0].keys), len(batches[0].vals)
    if any(len(b.keys) != ka or len(b.vals) != va for b in batches):
        return None
    return Cols(tuple(np.concatenate([b.keys[i] for b in batches]) for i in range(ka)),
                tuple(np.concatenate([b.vals[i] for b in batches]) for i in range(va)),
                np.concatenate([b.d for b in batches]))


def gather(chunks, threshold: int):
    """The chunks of one pending time (rows and Cols) as one Cols, or None
    when they are fewer than ``threshold`` rows or not all of one Int shape."""
    total = sum(map(len, chunks))
    if total < threshold or not total:
        return None
    parts = []
    rows: list = []
    for chunk in chunks:
        if type(chunk) is Cols:
            if chunk.n:
                parts.append(chunk)
        else:
            rows.extend(chunk)
    if rows:
        c = from_rows(rows)
        if c is None:
            return None
        parts.append(c)
    return concat(parts)


def take(c: Cols, index) -> Cols:
    return Cols(tuple(a[index] for a in c.keys), tuple(a[index] for a in c.vals), c.d[index])


# ------------------------------------------------------------ bounds

def max_abs(d) -> int:
    if not len(d):
        return 0
    return max(int(_MAX(d)), -int(_MIN(d)))


def sums_fit(d, n: int | None = None) -> bool:
    """No sum of at most ``n`` (default: all) of the diffs ``d`` can leave i64."""
    return max_abs(d) * (len(d) if n is None else n) <= INT_MAX


# ------------------------------------------------------------ packing

def pack_spec(cols) -> tuple | None:
    """((min, shift, mask) per column, total bits) packing the columns into
    one non-negative int64 that sorts like the rows, or None (too wide)."""
    spec = []
    total = 0
    for c in reversed(cols):
        lo, hi = int(_MIN(c)), int(_MAX(c))
        width = (hi - lo).bit_length()
        spec.append((lo, total, (1 << width) - 1))
        total += width
    if total > 62:
        return None
    spec.reverse()
    return tuple(spec), total


def pack(cols, spec) -> np.ndarray:
    """The packed value of each row (see :func:`pack_spec`); may return one
    of ``cols`` itself (never written to)."""
    out = None
    for c, (lo, shift, mask) in zip(cols, spec):
        if not mask:
            continue
        part = c - I64(lo) if lo else c
        if shift:
            part = part << I64(shift)
        out = part if out is None else out | part
    if out is None:
        return np.zeros(len(cols[0]), dtype=I64)
    return out


def unpack(packed, spec) -> tuple:
    out = []
    for lo, shift, mask in spec:
        if not mask:
            out.append(np.full(len(packed), lo, dtype=I64))
            continue
        part = packed >> I64(shift) if shift else packed
        part = part & I64(mask)
        out.append(part + I64(lo) if lo else part)
    return tuple(out)


# ------------------------------------------------------------ consolidation

def consolidate_columns(cols: tuple, d, n: int):
    """(columns, sums) of the distinct rows of ``cols`` in lexicographic
    order with the sums of their diffs, zero sums left out. The caller has
    checked :func:`sums_fit`."""
    if not cols:
        s = int(d.sum()) if n else 0
        return (), (np.array([s], dtype=I64) if s else _EMPTY)
    if n == 0:
        return tuple(_EMPTY for _ in cols), _EMPTY
    if n == 1:
        return (cols, d) if d[0] else (tuple(_EMPTY for _ in cols), _EMPTY)
    packed = pack_spec(cols)
    if packed is not None:
        spec, bits = packed
        pk = pack(cols, spec)
        size = 1 << bits
        if size <= 4 * n + 4096:
            # dense: one counting pass, the result comes out sorted
            if float_sums_exact(d, n):
                sums = np.bincount(pk, weights=d, minlength=size)
                nz = positions(sums)
                return unpack(nz, spec), sums[nz].astype(I64)
        if d[0] == 1 and not (d != 1).any():
            # every diff +1 (a load without a diff column): sorting the
            # values is ~40% cheaper than argsort and gathering; sums are counts
            spk = np.sort(pk)
            starts = run_starts(spk)
            return unpack(spk[starts], spec), np.diff(np.append(starts, n)).astype(I64)
        order = pk.argsort(kind="stable")
        spk = pk[order]
        starts = run_starts(spk)
        sums = np.add.reduceat(d[order], starts)
        keep = positions(sums)
        return unpack(spk[starts[keep]], spec), sums[keep]
    order = np.lexsort(cols[::-1])
    scols = [c[order] for c in cols]
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for c in scols:
        change[1:] |= c[1:] != c[:-1]
    starts = positions(change)
    sums = np.add.reduceat(d[order], starts)
    keep = starts[positions(sums)]
    return tuple(c[keep] for c in scols), sums[sums != 0]


def consolidate(c: Cols) -> Cols | None:
    """``c`` consolidated, in (key, val) order; None when a sum could leave
    i64 (the caller then consolidates rows, which reports overflow)."""
    if c.sorted:
        return c
    if not sums_fit(c.d):
        return None
    ka = len(c.keys)
    cols, sums = consolidate_columns(c.keys + c.vals, c.d, c.n)
    return Cols(cols[:ka], cols[ka:], sums, True)


# ------------------------------------------------------------ owners
#
# owners_of: crc32(packb(key)) % shards for every row at once, equal bit for
# bit to shard_of. CRC-32 is linear over GF(2). With R(s, B) the CRC register
# after bytes B from state s (no final inversion):
#
#   R(s, B) = R(s, zeros(len(B))) ^ R(0, B), and leading zero bytes leave R(0, .)
#
# So a key column's msgpack bytes (a tag, then the low 1, 2, 4 or 8 bytes of
# the value, big-endian; or one fixint byte) contribute
#
#   R(0, encoding) = V(x) ^ K[class]
#
# V(x) = R(0, the 8 big-endian bytes of x): one lookup per 16-bit chunk of x
# (a chunk that is sign extension in every row of the column, 0x0000, or 0xFFFF
# in a negative row, is not looked up: its part folds into K). K[class] is a
# constant per msgpack class (ten: the tag, and for a negative value the 0xFF
# bytes the encoding leaves out). Moving the register s over a later column's L
# bytes is S_L(s) = R(s, zeros(L)): two lookups, by 16-bit halves of s. A column
# whose rows share a class takes scalar constants; otherwise each row's class
# (a few comparisons) picks its K and its S_L. Rows go in blocks so the scratch
# buffers stay in cache: a fresh array of megabytes costs its page faults, as
# much as the lookups it would hold.

def _crc_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table[i] = c
    return table


_CRC_TABLE = _crc_table()
_U32 = np.uint32

# class(x) = how many bounds lie below x; per class (by value, low to high):
# (encoded length, tag (None: a fixint), value bytes encoded, negative)
_CLASS_BOUNDS = (-2 ** 31 - 1, -32769, -129, -33, -1, 127, 255, 65535, 2 ** 32 - 1)
_CLASS_FORMS = ((9, 0xD3, 8, True), (5, 0xD2, 4, True), (3, 0xD1, 2, True), (2, 0xD0, 1, True),
                (1, None, 1, True), (1, None, 1, False), (2, 0xCC, 1, False),
                (3, 0xCD, 2, False), (5, 0xCE, 4, False), (9, 0xCF, 8, False))
_LENGTHS = (1, 2, 3, 5, 9)
# per class: where the shift tables of its length start (stacked by length)
_CLASS_SHIFT_AT = np.array([_LENGTHS.index(form[0]) << 16 for form in _CLASS_FORMS], dtype=np.intp)
_OWNER_BLOCK = 1 << 15  # rows per pass


def _register(state: int, data: bytes) -> int:
    for b in data:
        state = int(_CRC_TABLE[(state ^ b) & 0xFF]) ^ (state >> 8)
    return state


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 65536:
        return bytes([0xDC]) + n.to_bytes(2, "big")
    return bytes([0xDD]) + n.to_bytes(4, "big")


def _shift1(r: np.ndarray) -> np.ndarray:
    return _CRC_TABLE[r & 0xFF] ^ (r >> _U32(8))


_OWNER_CACHE: dict = {}


def _owner_tables() -> tuple:
    """``(value, shift_lo, shift_hi)``, built on first use (3.5 MB):
    ``value[w][v]`` = R(0, v as two big-endian bytes + 2w zero bytes);
    ``shift_lo[(i << 16) | v]`` = R(v, zeros(_LENGTHS[i])), ``shift_hi`` the
    same for the state ``v << 16``."""
    tables = _OWNER_CACHE.get("tables")
    if tables is None:
        value = [(_shift1(_CRC_TABLE)[:, None] ^ _CRC_TABLE[None, :]).ravel()]
        for _ in range(3):
            value.append(_shift1(_shift1(value[-1])))
        lo = np.arange(65536, dtype=_U32)
        hi = lo << _U32(16)
        los, his, done = [], [], 0
        for length in _LENGTHS:
            for _ in range(length - done):
                lo, hi = _shift1(lo), _shift1(hi)
            done = length
            los.append(lo)
            his.append(hi)
        tables = _OWNER_CACHE["tables"] = (value, np.concatenate(los), np.concatenate(his))
    return tables


def _class_constants(chunks: int, start: int | None) -> np.ndarray:
    """K[class] when V looks up the low ``chunks`` 16-bit chunks; for the first
    column (``start``: the register after the array header) with the move of
    ``start`` over the column's bytes folded in."""
    key = (chunks, start)
    ks = _OWNER_CACHE.get(key)
    if ks is None:
        ks = []
        for length, tag, size, negative in _CLASS_FORMS:
            k = 0 if tag is None else _register(0, bytes([tag]) + bytes(size))
            if negative:  # the 0xFF bytes above the encoded ones, and above V's chunks
                k ^= _register(0, b"\xff" * (8 - size) + bytes(size))
                k ^= _register(0, b"\xff" * (8 - 2 * chunks) + bytes(2 * chunks))
            if start is not None:
                k ^= _register(start, bytes(length))
            ks.append(k)
        ks = _OWNER_CACHE[key] = np.array(ks, dtype=_U32)
    return ks


def owners_of(keys, count: int, shards: int) -> np.ndarray:
    """The owner of each key ``tuple(keys[0][i], keys[1][i], ...)``:
    ``crc32(packb(key)) % shards`` (:func:`ddir.engine.exchange.shard_of`)
    for every row at once (int64)."""
    if shards == 1 or count == 0:
        return np.zeros(count, dtype=I64)
    start = _register(0xFFFFFFFF, _array_header(len(keys)))
    if not keys:
        return np.full(count, (start ^ 0xFFFFFFFF) % shards, dtype=I64)
    value, shift_lo, shift_hi = _owner_tables()
    plans = []  # per column: values, chunks looked up, first class, bounds crossed, K, at
    for j, col in enumerate(keys):
        x = np.ascontiguousarray(col, dtype="<i8")
        lo, hi = int(x.min()), int(x.max())
        chunks = (max(hi, ~lo).bit_length() + 15) >> 4
        first, last = bisect_left(_CLASS_BOUNDS, lo), bisect_left(_CLASS_BOUNDS, hi)
        ks = _class_constants(chunks, None if j else start)
        if first == last:  # one class: a scalar K, one length
            plans.append((x, chunks, first, None, ks[first], int(_CLASS_SHIFT_AT[first])))
        else:
            plans.append((x, chunks, first, _CLASS_BOUNDS[first:last], ks, None))
    owners = np.empty(count, dtype=I64)
    size = min(count, _OWNER_BLOCK)
    acc_b, tmp_b, k_b = (np.empty(size, dtype=_U32) for _ in range(3))
    idx_b, at_b = np.empty(size, dtype=np.intp), np.empty(size, dtype=np.intp)
    cls_b, flags_b = np.empty(size, dtype=np.uint8), np.empty(size, dtype=bool)
    take, xor = np.take, np.bitwise_xor
    for i in range(0, count, size):
        stop = min(i + size, count)
        m = stop - i
        acc, tmp, row_k, idx, at = acc_b[:m], tmp_b[:m], k_b[:m], idx_b[:m], at_b[:m]
        cls, flags = cls_b[:m], flags_b[:m]
        for j, (x, chunks, first, bounds, k, shift_at) in enumerate(plans):
            x = x[i:stop]
            if bounds is None:
                if j == 0:
                    acc.fill(k)
                else:  # acc = S_L(acc) ^ K
                    np.bitwise_and(acc, 0xFFFF, out=idx)
                    if shift_at:
                        np.bitwise_or(idx, shift_at, out=idx)
                    take(shift_lo, idx, out=tmp, mode="wrap")
                    np.right_shift(acc, 16, out=idx)
                    if shift_at:
                        np.bitwise_or(idx, shift_at, out=idx)
                    take(shift_hi, idx, out=acc, mode="wrap")
                    xor(acc, tmp, out=acc)
                    if k:
                        xor(acc, k, out=acc)
            else:  # each row's class
                cls.fill(first)
                for bound in bounds:
                    np.greater(x, bound, out=flags)
                    np.add(cls, flags, out=cls)
                np.copyto(idx, cls)
                if j == 0:
                    take(k, idx, out=acc, mode="wrap")
                else:
                    take(k, idx, out=row_k, mode="wrap")
                    take(_CLASS_SHIFT_AT, idx, out=at, mode="wrap")
                    np.bitwise_and(acc, 0xFFFF, out=idx)
                    np.bitwise_or(idx, at, out=idx)
                    take(shift_lo, idx, out=tmp, mode="wrap")
                    np.right_shift(acc, 16, out=idx)
                    np.bitwise_or(idx, at, out=idx)
                    take(shift_hi, idx, out=acc, mode="wrap")
                    xor(acc, tmp, out=acc)
                    xor(acc, row_k, out=acc)
            if chunks:  # acc ^= V(x)
                halves = x.view("<u2").reshape(m, 4)
                for w in range(chunks):
                    np.copyto(idx, halves[:, w])
                    take(value[w], idx, out=tmp, mode="wrap")
                    xor(acc, tmp, out=acc)
        np.invert(acc, out=acc)
        if shards & (shards - 1) == 0:
            np.bitwise_and(acc, shards - 1, out=owners[i:stop])
        else:
            np.remainder(acc, _U32(shards), out=owners[i:stop])
    return owners


def split_by_owner(c: Cols, shards: int) -> list:
    """One Cols per worker: the rows whose key it owns."""
    owners = owners_of(c.keys, c.n, shards)
    order = owners.argsort(kind="stable")
    bounds = owners[order].searchsorted(np.arange(shards + 1)).tolist()
    return [take(c, order[bounds[w]:bounds[w + 1]]) for w in range(shards)]


# ------------------------------------------------------------ terms over columns

class Fallback(Exception):
    """A columnar step cannot give the row path's result (an overflow that
    is a term error there): run the step on rows instead."""


def _exact(r):
    if not INT_MIN <= r <= INT_MAX:
        raise Fallback()
    return r


def _wrap_add(a, b):
    if type(a) is int and type(b) is int:
        return _exact(a + b)
    r = a + b
    if np.any((a ^ r) & (b ^ r) < 0):
        raise Fallback()
    return r


def _wrap_sub(a, b):
    if type(a) is int and type(b) is int:
        return _exact(a - b)
    r = a - b
    if np.any((a ^ b) & (a ^ r) < 0):
        raise Fallback()
    return r


def _mul(a, b):
    def bound(x):
        return abs(x) if type(x) is int else max_abs(x)
    if bound(a) * bound(b) > INT_MAX:
        raise Fallback()
    return a * b


def _neg(a):
    if type(a) is int:
        if a == INT_MIN:
            raise Fallback()
        return -a
    if len(a) and int(a.min()) == INT_MIN:
        raise Fallback()
    return -a


_ARITH = {"+": _wrap_add, "-": _wrap_sub, "*": _mul}
_CMP = {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
        ">": np.greater, ">=": np.greater_equal}


def _int_lit(term) -> bool:
    return isinstance(term, Lit) and type(term.value) is int and INT_MIN <= term.value <= INT_MAX


def column_term(term, arities: tuple):
    """``f(rows) -> int64 array or int`` computing ``term`` over columns,
    where ``rows[n]`` is the tuple of columns of row ``n`` (arity
    ``arities[n]``), or None when the term is not a plain Int computation
    over fields (it then runs on rows). ``f`` raises :class:`Fallback` where
    the row path would raise a term error (an overflow)."""
    if isinstance(term, Index) or (isinstance(term, Call) and term.name == "proj"
                                   and len(term.args) == 2 and _int_lit(term.args[1])):
        arg, i = (term.arg, term.index) if isinstance(term, Index) else (term.args[0],
                                                                        term.args[1].value)
        if isinstance(arg, Row) and arg.n < len(arities) and 0 <= i < arities[arg.n]:
            n = arg.n
            return lambda rows: rows[n][i]
        return None
    if _int_lit(term):
        v = term.value
        return lambda rows: v
    if isinstance(term, Neg):
        f = column_term(term.arg, arities)
        return None if f is None else (lambda rows: _neg(f(rows)))
    if isinstance(term, Arith):
        first = column_term(term.first, arities)
        rest = [(_ARITH[op], column_term(t, arities)) for op, t in term.rest]
        if first is None or any(f is None for _, f in rest):
            return None

        def arith(rows):
            acc = first(rows)
            for op, f in rest:
                acc = op(acc, f(rows))
            return acc
        return arith
    if isinstance(term, Cmp):
        a, b = column_term(term.left, arities), column_term(term.right, arities)
        if a is None or b is None:
            return None
        cmp = _CMP[term.op]
        return lambda rows: _as_int(cmp(a(rows), b(rows)))
    if isinstance(term, And):
        args = [column_term(t, arities) for t in term.args]
        if any(f is None for f in args):
            return None

        def conj(rows):
            acc = None
            for f in args:
                x = f(rows)
                truth = (x != 0) if type(x) is not int else bool(x)
                acc = truth if acc is None else (acc & truth)
            return _as_int(acc)
        return conj
    if isinstance(term, Call) and term.name == "not" and len(term.args) == 1:
        f = column_term(term.args[0], arities)
        return None if f is None else (lambda rows: _as_int(_not(f(rows))))
    return None


def _not(x):
    return (x == 0) if type(x) is not int else (x == 0)


def _as_int(x):
    if type(x) is bool or isinstance(x, np.bool_):
        return int(x)
    return x.astype(I64)


def _materialise(x, n: int):
    if type(x) is int:
        return np.full(n, x, dtype=I64)
    return x


def column_fields(fields: tuple, arities: tuple):
    """``f(rows, n) -> tuple of columns`` building a projection side
    (``Splice``s and Int terms), or None."""
    parts = []
    for f in fields:
        if isinstance(f, Splice):
            if f.n >= len(arities):
                return None
            parts.append(("splice", f.n))
        else:
            g = column_term(f, arities)
            if g is None:
                return None
            parts.append(("term", g))

    def build(rows, n):
        out = []
        for kind, x in parts:
            if kind == "splice":
                out.extend(rows[x])
            else:
                out.append(_materialise(x(rows), n))
        return tuple(out)
    return build


def projection_uses(proj) -> set:
    """The (row, field) pairs a projection reads (a splice reads all fields:
    (row, None))."""
    used = set()

    def walk(t):
        if isinstance(t, Index) and isinstance(t.arg, Row):
            used.add((t.arg.n, t.index))
            return
        if isinstance(t, Row):
            used.add((t.n, None))
            return
        for name in getattr(t, "__dataclass_fields__", ()):
            x = getattr(t, name)
            for y in (x if isinstance(x, tuple) else (x,)):
                if isinstance(y, tuple):
                    for z in y:
                        walk(z)
                elif hasattr(y, "__dataclass_fields__"):
                    walk(y)
    for f in proj.key + proj.val:
        if isinstance(f, Splice):
            used.add((f.n, None))
        else:
            walk(f)
    return used


def column_projection(proj, arities: tuple):
    """``f(rows, n) -> (key columns, val columns)``, or None."""
    if proj.bare:  # `value(t)`: a val that is not a Tuple has no columns
        return None
    key = column_fields(proj.key, arities)
    val = column_fields(proj.val, arities)
    if key is None or val is None:
        return None
    return lambda rows, n: (key(rows, n), val(rows, n))


def column_chain(steps: tuple, ka: int, va: int):
    """``f(c: Cols, it) -> (Cols, still consolidated)`` running fused linear
    steps on columns, or None when a step needs rows (flatmap, inspect,
    terms beyond Int arithmetic and comparison, a field that does not
    exist). ``f`` raises :class:`Fallback` where the row path would find a
    term error. A step that maps the fields one to one (a permutation of
    them) keeps a consolidated batch consolidated."""
    ops = []
    keeps = True
    ordered = True  # (key, val) order survives every step
    for step in steps:
        arities = (ka, va)
        if isinstance(step, N.MapStep):
            f = column_projection(step.proj, arities)
            if f is None:
                return None
            fields = step.proj.key + step.proj.val
            perm = (all(isinstance(x, Splice) or isinstance(x, Index) for x in fields)
                    and _covers(step.proj, arities))
            keeps = keeps and perm
            ordered = ordered and _same_layout(step.proj, arities)
            ops.append(("map", f))
            ka, va = _side_arity(step.proj.key, arities), _side_arity(step.proj.val, arities)
        elif isinstance(step, N.FilterStep):
            f = column_term(step.term, arities)
            if f is None:
                return None
            ops.append(("filter", f))
        elif isinstance(step, N.NegateStep):
            ops.append(("negate", None))
        elif isinstance(step, N.LiftIterStep):
            ops.append(("lift", None))
            va += 1
            # (v) -> (v, it): one to one, keeps consolidation
        else:  # flatmap, inspect: per row
            return None

    def run(c: Cols, it: int):
        keys, vals, d, n = c.keys, c.vals, c.d, c.n
        for kind, f in ops:
            if kind == "map":
                keys, vals = f((keys, vals), n)
            elif kind == "filter":
                x = f((keys, vals))
                if type(x) is int:
                    if x != 0:
                        continue
                    mask = np.zeros(n, dtype=bool)
                else:
                    mask = x != 0
                idx = positions(mask)
                if len(idx) == n:
                    continue
                keys = tuple(a[idx] for a in keys)
                vals = tuple(a[idx] for a in vals)
                d = d[idx]
                n = len(idx)
                if not n:
                    break
            elif kind == "negate":
                d = _neg(d)
            elif kind == "lift":
                vals = vals + (np.full(n, it, dtype=I64),)
        return Cols(keys, vals, d, c.sorted and keeps and ordered), keeps
    return run


def _same_layout(proj, arities: tuple) -> bool:
    """The projection lists the input fields in their order (however it
    splits them between key and val): rows keep their (key, val) order."""
    fields = []
    for f in proj.key + proj.val:
        if isinstance(f, Splice):
            fields.extend((f.n, i) for i in range(arities[f.n]))
        elif isinstance(f, Index) and isinstance(f.arg, Row):
            fields.append((f.arg.n, f.index))
        else:
            return False
    return fields == [(n, i) for n in range(len(arities)) for i in range(arities[n])]


def _side_arity(fields: tuple, arities: tuple) -> int:
    return sum(arities[f.n] if isinstance(f, Splice) else 1 for f in fields)


def _covers(proj, arities: tuple) -> bool:
    """Every input field appears in the output (so distinct inputs stay
    distinct outputs)."""
    seen = set()
    for f in proj.key + proj.val:
        if isinstance(f, Splice):
            seen.update((f.n, i) for i in range(arities[f.n]))
        elif isinstance(f, Index) and isinstance(f.arg, Row):
            seen.add((f.arg.n, f.index))
    return all((n, i) in seen for n in range(len(arities)) for i in range(arities[n]))
