"""Stateless peek cursors (SPEC C4): tokens and the leases behind them.

A token is self-contained: the msgpack of ``[version, trace, seq, epoch,
has_key, key, after, offset, total, limit]`` (``seq`` tells a trace from one
of the same name published again after a drop; ``after`` is the last
``(key, val)`` returned, None before the first row), followed by an HMAC
(SHA-256, 16 bytes) under a fixed secret (see ``DEFAULT_SECRET``), all base64url without
padding: one whitespace-free command-line token. No session holds it.

What the server does hold is a *lease* per (trace, epoch): while one is held,
the workers compact that trace only up to ``epoch - 1``, so its history before
``epoch`` stays readable (as an importer's catch-up reads it). A page renews
the lease; a lease unused for :data:`LEASE_SECONDS` is released. The clock is
injectable (``Cursors(clock=...)``) for tests.

Each worker reads the pages of a lease through a :class:`PageIndex` (the
intake side is :class:`Cursors`).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import hmac
import os
import time
from collections import OrderedDict

from ..engine.order import sorted_keys
from ..errors import CursorError
from ..ir.codec import packb, unpackb
from ..terms.runtime import MAX_NESTING
from ..values import INT_MAX, INT_MIN, order_key, value_problem

LEASE_SECONDS = 60.0
LEASE_LIFE = 900.0  # s: the most a lease lives however often it is renewed (SPEC E1)
MAX_LAG = 16        # epochs: a lease whose epoch is further behind ends (SPEC E3)
MAC_BYTES = 16
VERSION = 1
KEPT_KEYS = 16   # keys per lease whose sorted rows a worker keeps for the next page

# History entries and index rows a worker's pages have touched. A test reads
# it (with -w 1 the worker runs in its process) to check that a page costs in
# proportion to the page, without timing anything.
PAGE_STATS = {"touched": 0}


# Local use (scripts, the prompt, the API) signs with a fixed secret, so that
# a token is a function of the rows and the epoch alone: output is
# byte-identical for every -w N, every run, and after a restore (SPEC B, C5);
# the process is the user's own, so there is nobody to forge against.
# `ddir serve` signs with a secret made at its start (or --cursor-secret-file;
# SPEC E1), so a network client can neither forge a token (skip ahead, claim
# a total) nor bring one from another server. DDIR_CURSOR_SECRET sets one too.
DEFAULT_SECRET = b"ddir cursor tokens, version 1"


def _secret() -> bytes:
    fixed = os.environ.get("DDIR_CURSOR_SECRET")
    return fixed.encode() if fixed else DEFAULT_SECRET


class Cursors:
    def __init__(self, clock=time.monotonic, lease_seconds: float = LEASE_SECONDS,
                 secret: bytes | None = None, lease_life: float = LEASE_LIFE):
        self.clock = clock
        self.lease_seconds = lease_seconds
        # A cursor re-paged every epoch would otherwise hold its epoch's
        # history back from compaction for ever (one client pinning memory)
        self.lease_life = lease_life
        self.born: dict = {}  # (trace, epoch) -> when its lease was first taken
        # ... and however young it is, a lease MAX_LAG epochs behind the
        # server's epoch ends: the history it holds grows with every tick
        # (a cursor re-paged each epoch of a 200k-row churn held 1.2 GB after
        # 30 epochs, and made another client's program fail its budget)
        self.epoch = 0        # the server's epoch, set by the registry at each tick
        self.max_lag = MAX_LAG
        self.secret = secret if secret is not None else _secret()
        # (trace, epoch) -> when a page last used it. No client owns a lease:
        # a token is self-contained, so it works on another connection or
        # after a reconnect (SPEC C4), and a lease ends only by disuse or drop.
        self.leases: dict = {}

    # ------------------------------------------------------------ tokens

    def encode(self, trace: str, seq: int, epoch: int, has_key: bool, key, after,
               offset: int, total: int, limit: int) -> str:
        payload = packb([VERSION, trace, seq, epoch, has_key, key,
                         None if after is None else list(after), offset, total, limit])
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode("ascii")

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.secret, payload, hashlib.sha256).digest()[:MAC_BYTES]

    def decode(self, token: str) -> tuple:
        """(trace, seq, epoch, has_key, key, after, offset, total, limit), or
        :class:`CursorError` for a token this server did not issue."""
        bad = CursorError("invalid cursor: the token is damaged or was not issued by this server")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise bad from None
        payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if len(raw) <= MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload)):
            raise bad
        try:
            fields = unpackb(payload)
            version, trace, seq, epoch, has_key, key, after, offset, total, limit = fields
        except Exception:  # another version's format, or forged (the secret is public)
            raise bad from None
        # checked field by field: a forged token must never reach a worker
        if (version != VERSION or type(trace) is not str or not _count(seq) or not _count(epoch)
                or type(has_key) is not bool or not _count(offset) or not _count(total)
                or not _count(limit) or limit < 1 or offset > total
                or not (after is None or (type(after) in (tuple, list) and len(after) == 2
                                          and all(_is_value(x) for x in after)))
                or not (has_key is False or _is_value(key))):
            raise bad
        return (trace, seq, epoch, has_key, key, None if after is None else tuple(after),
                offset, total, limit)

    # ------------------------------------------------------------ leases

    def expire(self) -> None:
        """Release the leases unused for ``lease_seconds``."""
        now = self.clock()
        for lease in [lease for lease, used in self.leases.items()
                      if now - used >= self.lease_seconds
                      or now - self.born.get(lease, now) >= self.lease_life
                      or self.epoch - lease[1] > self.max_lag]:
            del self.leases[lease]
            self.born.pop(lease, None)

    def held(self, trace: str, epoch: int) -> bool:
        self.expire()
        return (trace, epoch) in self.leases

    def renew(self, trace: str, epoch: int) -> None:
        now = self.clock()
        self.leases[(trace, epoch)] = now
        self.born.setdefault((trace, epoch), now)

    def release_trace(self, trace: str) -> None:
        for lease in [lease for lease in self.leases if lease[0] == trace]:
            del self.leases[lease]
            self.born.pop(lease, None)

    def active(self) -> list:
        """``[[trace, epoch], ...]`` of the held leases, for the workers."""
        self.expire()
        return sorted([t, e] for t, e in self.leases)


def _count(n) -> bool:
    return type(n) is int and 0 <= n <= INT_MAX


def _is_value(v) -> bool:
    """Whether a decoded token field is a ddir value no deeper than a
    trace's key or val can be (``runtime.MAX_NESTING``: computed values, not
    only fed ones)."""
    return value_problem(v, MAX_NESTING) is None


def _val_order(row) -> tuple:
    return order_key(row[0])


class PageIndex:
    """One worker's reading state for the pages of one lease: the trace as
    of ``before`` (the lease's epoch; a frozen program's, if earlier). The
    contents as of a leased epoch never change (compaction stops short of
    it), so what is built here stays true for the lease's life.

    * ``keys``: the worker's keys of the trace in Value order, sorted once
      (at the first page that leaves rows out, when the peek has just read
      the whole trace anyway), for pages over every key.
    * ``kept``: for up to :data:`KEPT_KEYS` keys (least recently used go
      first), the key's rows as of ``before``, sorted by val. A page that
      ends inside a key keeps it, and so does the first page (for its last
      row's key, or a key cursor's key), so the next page bisects into it
      instead of summing and sorting the key's whole history again.

    A page then costs the rows it returns, a bisection, and the histories of
    the keys it enters for the first time in this lease. So a key cursor's
    later pages cost the page alone, however many rows the key holds, and
    over a whole paging each key's history is read about once."""

    __slots__ = ("trace", "before", "okeys", "keys", "kept")

    def __init__(self, trace, before: int):
        self.trace = trace
        self.before = before
        self.okeys = self.keys = None
        self.kept: OrderedDict = OrderedDict()  # key -> [(val, diff)] sorted by val

    def prepare(self, key, has_key: bool, after) -> None:
        """At the first page: the sorted keys, and the rows of the key the
        next page starts in."""
        if not has_key:
            self._sorted_keys()
        resume = key if has_key else (after[0] if after is not None else None)
        if (has_key or after is not None) and self.trace.get(resume):
            self._keep(resume, self._rows(resume))

    def page(self, key, has_key: bool, after, n: int) -> list:
        """The first ``n`` rows ``(key, val, diff)`` after ``after`` (a
        ``(key, val)`` or None), in (key, val) order."""
        if n <= 0:
            return []
        if has_key:
            okeys, keys = [order_key(key)], [key]
        else:
            okeys, keys = self._sorted_keys()
        start = 0
        after_key = after_val = None
        if after is not None:
            after_key, after_val = order_key(after[0]), order_key(after[1])
            start = bisect.bisect_left(okeys, after_key)
        rows: list = []
        for i in range(start, len(keys)):
            k = keys[i]
            vals = self._rows(k)
            j = 0
            if i == start and okeys[i] == after_key:  # (order keys of log n vals only)
                j = bisect.bisect_right(vals, after_val, key=_val_order)
            take = vals[j:j + n - len(rows)]
            PAGE_STATS["touched"] += len(take)
            rows.extend((k, v, d) for v, d in take)
            if len(rows) >= n:
                if j + len(take) < len(vals):  # the next page starts inside k
                    self._keep(k, vals)
                break
        return rows

    def _sorted_keys(self) -> tuple:
        if self.keys is None:
            keys = self.trace.keys()
            PAGE_STATS["touched"] += len(keys)
            self.okeys, self.keys = sorted_keys(keys)
        return self.okeys, self.keys

    def _rows(self, key) -> list:
        """``[(val, diff)]`` of ``key`` as of ``before``, sorted by val: kept,
        or summed from its history."""
        entry = self.kept.get(key)
        if entry is not None:
            self.kept.move_to_end(key)
            return entry
        hist = self.trace.get(key)
        PAGE_STATS["touched"] += len(hist)
        before = self.before
        acc: dict = {}
        for v, s, d in hist:
            if s[0] < before:
                acc[v] = acc.get(v, 0) + d
        # a net diff outside i64 is left out, as peek leaves it out
        return sorted(((v, d) for v, d in acc.items() if d and INT_MIN <= d <= INT_MAX),
                      key=_val_order)

    def _keep(self, key, entry) -> None:
        self.kept[key] = entry
        self.kept.move_to_end(key)
        while len(self.kept) > KEPT_KEYS:
            self.kept.popitem(last=False)
